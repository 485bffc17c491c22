"""Tests for uploads and downloads against the simulator and its file store, over sockets."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from resilient_canvas import CanvasClient, _files
from resilient_canvas import exceptions as exc
from resilient_canvas._http import redact_url
from resilient_canvas.testing import CanvasSimulator, FakeClock

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value


@pytest.fixture
async def canvas(sim: CanvasSimulator) -> AsyncIterator[CanvasClient]:
    """A client of the simulator whose waits pass instantly."""
    clock = FakeClock()
    async with CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as client:
        yield client


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.mark.parametrize("kind", ["path", "bytes", "file"])
async def test_upload_then_download_round_trips(
    canvas: CanvasClient, sim: CanvasSimulator, tmp_path: Path, kind: str
) -> None:
    """A path, bytes or a binary file uploads; downloading the File gives the same bytes."""
    source = tmp_path / "notes.bin"
    source.write_bytes(PAYLOAD)
    file: Any = {"path": source, "bytes": PAYLOAD, "file": io.BytesIO(PAYLOAD)}[kind]
    created = await canvas.upload(file, to="courses/101/files", name="notes.bin")
    written = await canvas.download(created, tmp_path / "copy.bin")
    assert ("notes.bin", len(PAYLOAD), "success") == (
        created["display_name"],
        created["size"],
        created["upload_status"],
    )
    assert PAYLOAD == written.read_bytes()


async def test_the_store_never_sees_the_token(
    canvas: CanvasClient, sim: CanvasSimulator, tmp_path: Path
) -> None:
    """Step 2, the redirected download and its resume reach the store without Authorization."""
    created = await canvas.upload(PAYLOAD, to="users/self/files", name="a.bin")
    sim.files.drop_downloads_after = 1000
    await canvas.download(created["url"], tmp_path)
    assert [None, None, None] == sim.files.authorization_seen


async def test_created_confirmation_returns_the_file(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A store answering 201 with the File (Instructure's file service) needs no step 3."""
    sim.files.confirm = "created"
    created = await canvas.upload(b"abc", to="courses/101/files", name="c.txt")
    assert ("c.txt", 3, "text/plain") == (
        created["display_name"],
        created["size"],
        created["content-type"],
    )


async def test_failed_step_two_restarts_at_step_one(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A 503 from the store uses up the upload URL: the retry asks Canvas for a new one."""
    sim.files.fail_uploads = 1
    created = await canvas.upload(b"retry me", to="courses/101/files", name="r.txt")
    step_one = sim.stats.statuses[200]  # two tickets, one confirmation
    assert (8, 1, 3) == (created["size"], sim.files.uploads, step_one)


async def test_rename_upload_is_retried_after_a_503(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A 503 from the store certainly stored nothing: retried even with on_duplicate=rename."""
    sim.files.fail_uploads = 1
    created = await canvas.upload(b"x", to="courses/101/files", name="d.txt", on_duplicate="rename")
    again = await canvas.upload(b"y", to="courses/101/files", name="d.txt", on_duplicate="rename")
    assert ("d.txt", "d-1.txt") == (created["display_name"], again["display_name"])


async def test_upload_reports_progress(canvas: CanvasClient) -> None:
    """on_progress ends at (size, size), never going back."""
    seen: list[tuple[int, int]] = []
    await canvas.upload(
        PAYLOAD, to="courses/101/files", name="p.bin", on_progress=lambda s, t: seen.append((s, t))
    )
    assert (len(PAYLOAD), len(PAYLOAD)) == seen[-1]
    assert sorted(seen) == seen


async def test_download_resumes_with_range(
    canvas: CanvasClient, sim: CanvasSimulator, tmp_path: Path
) -> None:
    """A connection cut mid-download resumes where it stopped, with one Range request."""
    created = await canvas.upload(PAYLOAD, to="courses/101/files", name="big.bin")
    sim.files.drop_downloads_after = 300_000
    written = await canvas.download(created, tmp_path / "big.bin")
    assert (PAYLOAD, 1) == (written.read_bytes(), sim.files.range_requests)
    assert ["big.bin"] == _names(tmp_path)


async def test_disk_full_leaves_nothing_behind(
    canvas: CanvasClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Too little free space raises LocalFileError; no destination, no partial file."""
    created = await canvas.upload(PAYLOAD, to="courses/101/files", name="f.bin")
    monkeypatch.setattr(_files, "free_bytes", lambda directory: 1000)
    with pytest.raises(exc.LocalFileError, match="Not enough disk space"):
        await canvas.download(created, tmp_path / "f.bin")
    assert [] == _names(tmp_path)


async def test_store_error_keeps_the_old_destination(
    canvas: CanvasClient, sim: CanvasSimulator, tmp_path: Path
) -> None:
    """A refused download never touches an existing destination file."""
    dest = tmp_path / "keep.txt"
    dest.write_bytes(b"old")
    with pytest.raises(exc.Forbidden, match=r"the file store .* refused") as caught:
        await canvas.download(f"{sim.files.base_url}/objects/1/x?sig=forged", dest)
    assert "access token is not allowed" not in str(caught.value)
    assert (b"old", ["keep.txt"]) == (dest.read_bytes(), _names(tmp_path))


# ---------------------------------------------------------------- bad input


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A Canvas whose step-1 answer and store are chosen by each test; records what it sees."""
    state: dict[str, Any] = {"seen": [], "upload_url": None, "store": None}

    async def ticket(request: web.Request) -> web.Response:
        url = state["upload_url"] or f"{state['base']}/store"
        return web.json_response({"upload_url": url, "upload_params": {"k": "v"}})

    async def store(request: web.Request) -> web.Response:
        state["seen"].append(request.headers.get("Authorization"))
        await request.read()
        return await state["store"](request)  # type: ignore[no-any-return]

    async def foreign(request: web.Request) -> web.Response:
        state["seen"].append(request.headers.get("Authorization"))
        return web.json_response({"id": 7, "display_name": "confirmed elsewhere"})

    app = web.Application()
    app.router.add_post("/api/v1/courses/1/files", ticket)
    app.router.add_post("/store", store)
    other = web.Application()
    other.router.add_get("/confirm", foreign)
    runner, base = await _serve(app)
    other_runner, other_base = await _serve(other)
    state.update(base=base, other=other_base)
    yield base, state
    await runner.cleanup()
    await other_runner.cleanup()


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "ftp://files.example/x", "/relative/path", None]
)
async def test_unusable_upload_url_is_refused_before_sending(
    hostile: tuple[str, dict[str, Any]], url: str | None
) -> None:
    """An upload_url that is not absolute http(s) raises InvalidResponse; nothing is sent to it."""
    base, state = hostile
    state["upload_url"] = url or 42
    async with CanvasClient(base, "secret-token") as canvas:
        with pytest.raises(exc.InvalidResponse, match="not an absolute http"):
            await canvas.upload(b"x", to="courses/1/files", name="x.txt")
    assert [] == state["seen"]


async def test_store_answering_html_is_classified(hostile: tuple[str, dict[str, Any]]) -> None:
    """A 200 HTML page from the store raises InvalidResponse once, not retried."""
    base, state = hostile

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Uploaded!</body></html>", content_type="text/html")

    state["store"] = html
    async with CanvasClient(base, "secret-token") as canvas:
        with pytest.raises(exc.InvalidResponse, match="with an HTML page"):
            await canvas.upload(b"x", to="courses/1/files", name="x.txt")
    assert [None] == state["seen"]


async def test_foreign_confirmation_is_followed_without_the_token(
    hostile: tuple[str, dict[str, Any]],
) -> None:
    """A confirmation redirect to another origin is followed, without Authorization."""
    base, state = hostile

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=303, headers={"Location": f"{state['other']}/confirm"})

    state["store"] = redirect
    async with CanvasClient(base, "secret-token") as canvas:
        created = await canvas.upload(b"x", to="courses/1/files", name="x.txt")
    assert (7, [None, None]) == (created["id"], state["seen"])


@pytest.mark.parametrize(("on_duplicate", "store_calls"), [("overwrite", 2), ("rename", 1)])
async def test_dropped_step_two_is_repeated_only_when_harmless(
    hostile: tuple[str, dict[str, Any]], on_duplicate: str, store_calls: int
) -> None:
    """A cut step 2 may have stored the file: repeated if Canvas overwrites, not if it renames."""
    base, state = hostile

    async def drop_first(request: web.Request) -> web.Response:
        if len(state["seen"]) == 1 and request.transport is not None:
            request.transport.abort()
        return web.json_response({"id": 9, "display_name": "x.txt"}, status=201)

    state["store"] = drop_first
    clock = FakeClock()
    async with CanvasClient(base, "secret-token", clock=clock, sleep=clock.sleep) as canvas:
        with contextlib.suppress(exc.ConnectionDropped):
            await canvas.upload(b"x", to="courses/1/files", name="x.txt", on_duplicate=on_duplicate)
    assert store_calls == len(state["seen"])


async def test_logs_hold_neither_the_token_nor_store_signatures(
    canvas: CanvasClient, sim: CanvasSimulator, tmp_path: Path
) -> None:
    """Retries and failures of store requests are logged, without token or signed query."""
    sim.files.fail_uploads = 1
    with capture_logs() as events:
        await canvas.upload(b"x", to="courses/101/files", name="x.txt")
        with pytest.raises(exc.Forbidden):
            await canvas.download(f"{sim.files.base_url}/objects/1/x?sig=SIGNED-SECRET", tmp_path)
    text = repr(events)
    assert {"upload", "download"} == {event.get("callable") for event in events}
    assert (False, False) == (sim.token in text, "SIGNED-SECRET" in text)


def test_signed_query_parameters_are_redacted() -> None:
    """sig, Signature, X-Amz-Signature and verifier are credentials: removed from shown URLs."""
    url = "https://s3.test/b/k?X-Amz-Signature=abc&Signature=d&sig=e&verifier=f&keep=1"
    assert "https://s3.test/b/k?keep=1" == redact_url(url)
