"""Tests for CanvasClient against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import gc
import gzip
import inspect
import json
import traceback
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import brotli
import pytest
from aiohttp import web
from aioresponses import aioresponses
from structlog.testing import capture_logs

from resilient_canvas import (
    CanvasClient,
    ClientState,
    InsecureURLWarning,
    RetryPolicy,
    Throttle,
    encode_params,
    require,
    route_template,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._agent import DEFAULT_USER_AGENT
from resilient_canvas.testing import (
    CanvasSimulator,
    DataSettings,
    FakeClock,
    Fault,
    RouteProfile,
    SimulatorSettings,
)


@pytest.fixture
async def canvas(sim: CanvasSimulator) -> AsyncIterator[CanvasClient]:
    """A client of the simulator whose waits pass instantly."""
    clock = FakeClock()
    async with CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as client:
        yield client


def _schedule(sim: CanvasSimulator, faults: dict[int, Fault]) -> None:
    object.__setattr__(sim._canvas._faults.settings, "schedule", faults)


# ---------------------------------------------------------------- lifecycle


async def test_client_refuses_to_reopen(sim: CanvasSimulator) -> None:
    """A closed client cannot be entered again or used."""
    client = CanvasClient(sim.base_url, sim.token)
    async with client:
        assert ClientState.OPENED == client.state
    with pytest.raises(RuntimeError, match="opened twice"):
        await client.__aenter__()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("courses/101")


async def test_aclose_is_idempotent(sim: CanvasSimulator) -> None:
    """aclose() twice is fine."""
    client = CanvasClient(sim.base_url, sim.token)
    await client.get("courses/101")
    await client.aclose()
    await client.aclose()

    assert ClientState.CLOSED == client.state


async def test_collected_open_client_warns(sim: CanvasSimulator) -> None:
    """A client garbage-collected while open emits a ResourceWarning."""
    client = CanvasClient(sim.base_url, sim.token)
    await client.get("courses/101")
    session = client._session
    assert session is not None
    with pytest.warns(ResourceWarning, match="never closed"):  # noqa: PT031 - del triggers it
        del client
        gc.collect()
    await session.close()


async def test_caller_session_is_left_open(sim: CanvasSimulator) -> None:
    """A session passed in is used and not closed by the client."""
    async with aiohttp.ClientSession() as session:
        async with CanvasClient(sim.base_url, sim.token, session=session) as client:
            await client.get("courses/101")
        assert not session.closed


def test_constructor_validates(sim: CanvasSimulator) -> None:
    """Relative base URLs, empty tokens and bad per_page are refused."""
    with pytest.raises(ValueError, match="absolute"):
        CanvasClient("canvas.test", "t")
    with pytest.raises(ValueError, match="empty"):
        CanvasClient("https://canvas.test", "")
    with pytest.raises(ValueError, match="per_page"):
        CanvasClient("https://canvas.test", "t", per_page=500)


def test_plain_http_to_a_remote_host_warns() -> None:
    """http:// on a non-loopback host warns that the token would travel in clear."""
    with pytest.warns(InsecureURLWarning, match="unencrypted"):
        CanvasClient("http://canvas.example.edu", "t")


# ------------------------------------------------------------------ requests


async def test_a_response_is_the_dataclass_of_its_fields(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """Built through its slots, a response still has every field and stays frozen."""
    response = await canvas.request("GET", "courses/101/enrollments", params={"per_page": 1})

    rebuilt = dataclasses.replace(response)

    assert rebuilt == response
    assert (200, False) == (response.status, response.reconciled)
    assert response.next_url is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        response.status = 500  # type: ignore[misc]


async def test_verbs_return_decoded_json(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """get/post/put/delete return the JSON body."""
    course = await canvas.get("courses/101")
    enrollment = await canvas.post("courses/101/enrollments", data={"enrollment": {"user_id": 101}})
    graded = await canvas.put(
        "courses/101/assignments/101001/submissions/101",
        data={"submission": {"posted_grade": "10"}},
    )

    ended = await canvas.delete(
        f"courses/101/enrollments/{enrollment['id']}", params={"task": "delete"}
    )

    assert 101 == course["id"]
    assert 101 == enrollment["user_id"]
    assert 10.0 == graded["score"]
    assert "deleted" == ended["enrollment_state"]
    with pytest.raises(exc.ResourceDoesNotExist):
        await canvas.delete("courses/101/enrollments/99999")


async def test_request_returns_rate_limit_fields(canvas: CanvasClient) -> None:
    """request() exposes status, headers, data and the quota headers."""
    response = await canvas.request("GET", "courses/101")

    assert 200 == response.status
    assert response.request_cost is not None
    # The virtual clock stands still, so nothing leaked: remaining is hwm minus the cost.
    assert 600.0 - response.request_cost == pytest.approx(response.rate_limit_remaining)
    assert 101 == response.data["id"]


@pytest.mark.parametrize(
    "path", ["courses/101", "/api/v1/courses/101", "{base}/api/v1/courses/101"]
)
async def test_path_forms(canvas: CanvasClient, sim: CanvasSimulator, path: str) -> None:
    """Relative, absolute-path and same-origin full URLs all reach the same resource."""
    assert 101 == (await canvas.get(path.format(base=sim.base_url)))["id"]


async def test_other_origin_is_refused_before_sending(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A full URL on another origin raises before any request."""
    with pytest.raises(ValueError, match="Refusing to send the access token"):
        await canvas.get("https://evil.example/api/v1/courses")

    assert 0 == sim.stats.requests


async def test_json_and_form_bodies(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """Both JSON and nested form bodies reach Canvas as parameters."""
    by_json = await canvas.post("courses/101/assignments", json={"assignment": {"name": "A"}})
    by_form = await canvas.post("courses/101/assignments", data={"assignment": {"name": "B"}})

    assert ("A", "B") == (by_json["name"], by_form["name"])


async def test_invalid_json_is_an_invalid_response(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A truncated JSON body on a POST raises InvalidResponse, not a decode crash."""
    _schedule(sim, {1: Fault.MALFORMED_JSON})

    with pytest.raises(exc.InvalidResponse, match="not valid JSON"):
        await canvas.post("courses/101/enrollments", data={"enrollment": {"user_id": 101}})


def test_request_building_with_aioresponses() -> None:
    """Nested params are encoded the Canvas way in the query and the body."""

    async def run() -> None:
        with aioresponses() as mocked:
            mocked.post(
                "https://canvas.test/api/v1/courses/1/enrollments?include%5B%5D=a",
                payload={"ok": True},
            )
            async with CanvasClient("https://canvas.test", "tok", throttle=None) as client:
                await client.post(
                    "courses/1/enrollments",
                    params={"include": ["a"]},
                    data={"enrollment": {"user_id": 5, "notify": False}},
                )
            ((_, call),) = [(k, v) for k, v in mocked.requests.items()]
            sent = call[0].kwargs

        assert [("enrollment[user_id]", "5"), ("enrollment[notify]", "false")] == sent["data"]
        assert "Bearer tok" == sent["headers"]["Authorization"]

    asyncio.run(run())


def test_canvas_parameter_encoding() -> None:
    """Dicts nest, lists get [], dicts in lists get indices [0][k], None drops, dates are ISO."""
    params = {
        "user": {"name": "Jo", "sis": {"id": 5}},
        "include": ["a", "b"],
        "flag": True,
        "skip": None,
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "rows": [{"a": 1}, {"a": 2}],
        "sub": {"k": ["x"]},
    }

    assert [
        ("user[name]", "Jo"),
        ("user[sis][id]", "5"),
        ("include[]", "a"),
        ("include[]", "b"),
        ("flag", "true"),
        ("when", "2026-01-02T03:04:05+00:00"),
        ("rows[0][a]", "1"),
        ("rows[1][a]", "2"),
        ("sub[k][]", "x"),
    ] == encode_params(params)
    with pytest.raises(TypeError, match="cannot take"):
        encode_params({"bad": {1, 2}})


def test_required_fields_are_checked_client_side() -> None:
    """require() raises RequiredFieldMissing before any request is made."""
    with pytest.raises(exc.RequiredFieldMissing, match="'user' is required"):
        require({}, "name", within="user")
    with pytest.raises(exc.RequiredFieldMissing, match="'name'"):
        require({"user": {}}, "name", within="user")
    require({"user": {"name": "x"}}, "name", within="user")


def test_route_templates() -> None:
    """Ids, self and sis ids become :id in route templates."""
    assert "/api/v1/courses/:id/enrollments" == route_template("/api/v1/courses/12/enrollments")
    assert "/api/v1/users/:id" == route_template("/api/v1/users/sis_user_id:abc")
    assert "/api/v1/users/:id/profile" == route_template("/api/v1/users/self/profile")


# --------------------------------------------------------------- pagination


async def test_paginate_bookmarks_and_ordinal(canvas: CanvasClient) -> None:
    """Every item of bookmark and ordinal listings, in order, across pages."""
    enrollments = [e["id"] async for e in canvas.paginate("courses/101/enrollments", per_page=7)]
    submissions = [
        s["user_id"]
        async for s in canvas.paginate("courses/101/assignments/101001/submissions", per_page=9)
    ]

    assert list(range(1, 42)) == enrollments
    assert 40 == len(set(submissions)) == len(submissions)


async def test_paginate_streams_lazily(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """The first item arrives after one request: pages are fetched as items are consumed."""
    listing = canvas.paginate("courses/101/enrollments", per_page=5)
    await anext(listing)  # type: ignore[arg-type]
    await listing.aclose()  # type: ignore[attr-defined]

    assert 1 == sim.stats.requests


async def test_paginate_retries_one_page_not_the_listing(
    canvas: CanvasClient, sim: CanvasSimulator
) -> None:
    """A failure on page 3 repeats page 3 alone."""
    _schedule(sim, {3: Fault.MAINTENANCE})

    items = [e async for e in canvas.paginate("courses/101/enrollments", per_page=10)]

    assert 41 == len(items)
    assert 5 + 1 == sim.stats.requests


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A server with hostile Link headers, recording every request's headers."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        kind = request.match_info["kind"]
        base = f"http://{request.host}"
        links = {
            "loop": f'<{base}/api/v1/loop?page=1>; rel="next"',
            "twice": f"<{base}/api/v1/twice?page={int(request.query.get('page', 0)) + 1}>; "
            'rel="next"',
            "foreign": '<http://127.0.0.2:9/api/v1/x?page=2>; rel="next"',
            "garbage": "<<<>>>; rel=, ;;;" * 50,
            "redirect": "",
        }
        if kind == "redirect":
            raise web.HTTPFound(request.query["to"])
        if kind == "redirect_loop":
            raise web.HTTPFound(request.path)
        return web.json_response([{"id": 1}], headers={"Link": links[kind]})

    app = web.Application()
    app.router.add_get("/api/v1/{kind}", handler)
    runner, url = await _serve(app)
    yield url, seen
    await runner.cleanup()


async def test_page_served_twice_is_detected(
    hostile: tuple[str, list[dict[str, str]]],
) -> None:
    """A next link that repeats a page, or the same page content again, stops the listing."""
    url, _ = hostile
    async with CanvasClient(url, "tok", throttle=None) as client:
        with pytest.raises(exc.InvalidResponse, match=r"same page twice|repeats a page"):
            _ = [item async for item in client.paginate("loop")]
        with pytest.raises(exc.InvalidResponse, match="same page twice"):
            _ = [item async for item in client.paginate("twice")]


async def test_foreign_next_link_is_refused(hostile: tuple[str, list[dict[str, str]]]) -> None:
    """A Link to another origin is an InvalidResponse, and nothing is sent there."""
    url, _ = hostile
    async with CanvasClient(url, "tok", throttle=None) as client:
        with pytest.raises(exc.InvalidResponse, match="another origin"):
            _ = [item async for item in client.paginate("foreign")]


async def test_garbage_link_header_ends_the_listing(
    hostile: tuple[str, list[dict[str, str]]],
) -> None:
    """An unparseable Link header is not a crash: there is simply no next page."""
    url, _ = hostile
    async with CanvasClient(url, "tok", throttle=None) as client:
        assert [{"id": 1}] == [item async for item in client.paginate("garbage")]


async def test_redirect_to_another_origin_drops_the_token(
    hostile: tuple[str, list[dict[str, str]]],
) -> None:
    """Following a redirect to another origin never carries the Authorization header."""
    url, seen = hostile
    other_seen: list[dict[str, str]] = []

    async def other(request: web.Request) -> web.Response:
        other_seen.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/landing", other)
    runner, other_url = await _serve(app)
    try:
        async with CanvasClient(url, "tok", throttle=None) as client:
            await client.get("redirect", params={"to": f"{other_url}/landing"})
    finally:
        await runner.cleanup()

    assert "Bearer tok" == seen[0]["Authorization"]
    assert "Authorization" not in other_seen[0]


async def test_token_absent_from_repr_errors_and_logs(sim: CanvasSimulator) -> None:
    """The token never appears in repr, exception text or logs."""
    with capture_logs() as logs:
        async with CanvasClient(sim.base_url, sim.token, policy=RetryPolicy(attempts=1)) as client:
            with pytest.raises(exc.ResourceDoesNotExist) as raised:
                await client.get("courses/999", params={"access_token": sim.token})

    text = (
        repr(client)
        + str(raised.value)
        + repr(raised.value)
        + json.dumps(raised.value.extra)
        + repr(logs)
    )
    assert sim.token not in text
    assert client.fingerprint in repr(client)


# --------------------------------------------------------------------- bulk


async def test_map_keeps_every_outcome_in_order(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """Bulk runs return each result or classified error, in order, and report progress."""
    grades = ["9", "banana", "7", "8"]
    progress: list[int] = []

    async def grade(item: tuple[int, str]) -> Any:
        user_id, value = item
        return await canvas.put(
            f"courses/101/assignments/101001/submissions/{user_id}",
            data={"submission": {"posted_grade": value}},
        )

    result = await canvas.map(
        grade,
        list(zip([101, 102, 103, 104], grades, strict=True)),
        concurrency=2,
        on_progress=lambda p: progress.append(p.done),
    )

    assert [9.0, None, 7.0, 8.0] == [r["score"] if r else None for r in result.results]
    assert [1] == [f.index for f in result.failures]
    assert isinstance(result.failures[0].error, exc.BadRequest)
    assert 4 == progress[-1]
    assert sim.stats.peak_in_flight <= 2


# ------------------------------------------------------------ cancellation


class Gate:
    """Holds every simulated service time until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.entered.set()
        await self.release.wait()


CANCELLABLE: dict[str, Callable[[CanvasClient], Awaitable[Any]]] = {
    "get": lambda c: c.get("courses/101"),
    "post": lambda c: c.post("courses/101/enrollments", data={"enrollment": {"user_id": 101}}),
    "put": lambda c: c.put(
        "courses/101/assignments/101001/submissions/101", data={"submission": {"posted_grade": "1"}}
    ),
    "patch": lambda c: c.patch("courses/101"),
    "delete": lambda c: c.delete("courses/101/enrollments/2"),
    "request": lambda c: c.request("GET", "courses/101"),
    "paginate": lambda c: anext(c.paginate("courses/101/enrollments")),  # type: ignore[arg-type]
    "map": lambda c: c.map(lambda _: c.get("courses/101"), [1, 2, 3]),
    "wait_for_progress": lambda c: c.wait_for_progress(1),
    # Workflows (issue 17): cancelled during their first Canvas request.
    "upload": lambda c: c.upload(b"x", to="courses/101/files", name="x.txt"),
    "download": lambda c: c.download(f"{c.base_url}files/1/download", "never-written.bin"),
    "graphql": lambda c: c.graphql("{ allCourses { _id } }"),
    "graphql_nodes": lambda c: anext(  # type: ignore[arg-type]
        c.graphql_nodes("{ allCourses { _id } }", connection="allCourses")
    ),
    "start_sis_import": lambda c: c.start_sis_import(1, b"user_id,login_id\n"),
    "wait_for_sis_import": lambda c: c.wait_for_sis_import(1, 1),
}


@pytest.mark.parametrize("name", sorted(CANCELLABLE))
async def test_every_public_coroutine_is_cancellation_safe(name: str) -> None:
    """Cancelling mid-request ends promptly, frees the throttle and leaks nothing."""
    gate = Gate()
    settings = SimulatorSettings(default_route=RouteProfile(service_time=1.0))
    async with CanvasSimulator(settings, sleep=gate.sleep) as sim:
        throttle = Throttle()
        async with CanvasClient(sim.base_url, sim.token, throttle=throttle) as client:
            task = asyncio.create_task(CANCELLABLE[name](client))
            await gate.entered.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=2)
            assert 0 == throttle.estimate().in_flight
            gate.release.set()


async def test_clients_of_one_token_share_a_throttle(sim: CanvasSimulator) -> None:
    """Two clients with the same token and origin share one throttle; the key hides the token."""
    first = CanvasClient(sim.base_url, sim.token)
    second = CanvasClient(sim.base_url + "/", sim.token)
    other = CanvasClient(sim.base_url, "another-token")

    assert first.throttle is second.throttle
    assert first.throttle is not other.throttle
    assert sim.token not in repr(first.throttle)


async def test_large_listing_with_the_default_data(sim: CanvasSimulator) -> None:
    """A bigger seeded institution paginates completely."""
    async with CanvasSimulator(
        SimulatorSettings.instant(), data=DataSettings(courses=1, students_per_course=450)
    ) as big:
        async with CanvasClient(big.base_url, big.token) as client:
            count = sum([1 async for _ in client.paginate("courses/101/enrollments")])

    assert 451 == count


RAW_ANSWERS = {
    "oversized header": b"HTTP/1.1 200 OK\r\nX-Junk: "
    + b"a" * 20_000
    + b"\r\nContent-Length: 2\r\n\r\n{}",
    "not HTTP at all": b"\x00\x01\x02 garbage\r\n\r\n",
    "bad status line": b"HTTP/1.1 abc Nope\r\nContent-Length: 0\r\n\r\n",
    "body shorter than declared": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{}",
    "declared body too large": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: 5000\r\n\r\n" + b" " * 5000,
    "chunked body too large": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"400\r\n" + b" " * 1024 + b"\r\n" for _ in range(5))
    + b"0\r\n\r\n",
}


@pytest.mark.parametrize("answer", sorted(RAW_ANSWERS))
async def test_hostile_raw_answers_are_invalid_responses(answer: str) -> None:
    """Unparseable or oversized answers are InvalidResponse, never a fake 400 or a crash."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(RAW_ANSWERS[answer])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        CanvasClient(
            f"http://127.0.0.1:{port}",
            "tok",
            throttle=None,
            policy=RetryPolicy(attempts=1),
            max_body_size=2048,
        ) as client,
    ):
        with pytest.raises(exc.InvalidResponse) as raised:
            await client.get("x")

    assert raised.value.may_have_been_applied


async def test_token_absent_from_rendered_tracebacks(
    hostile: tuple[str, list[dict[str, str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Under structlog's default renderer (which shows frame locals) no token is printed."""
    import structlog

    structlog.reset_defaults()
    structlog.configure()  # an application that uses structlog's defaults
    url, _ = hostile
    async with CanvasClient(
        url, "SECRET-TOKEN-123", throttle=None, policy=RetryPolicy(attempts=1)
    ) as client:
        with pytest.raises(exc.InvalidResponse):
            await client.get("redirect_loop")

    printed = capsys.readouterr()
    assert "TooManyRedirects" in printed.out + printed.err
    assert "SECRET-TOKEN-123" not in printed.out + printed.err


async def test_wait_for_progress_completes(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """update_grades returns a Progress; waiting polls it to completion and grades apply."""
    progress = await canvas.post(
        "courses/101/assignments/101001/submissions/update_grades",
        data={"grade_data": {"101": {"posted_grade": "5"}}},
    )

    final = await canvas.wait_for_progress(progress, poll_every=2.0)

    assert ("completed", 100) == (final["workflow_state"], final["completion"])
    assert 5.0 == sim.data.submissions[(101, 101001)][101]["score"]


async def test_wait_for_progress_raises_when_the_job_fails(canvas: CanvasClient) -> None:
    """A failed job is a ProgressFailed carrying Canvas's message."""
    progress = await canvas.post(
        "courses/101/assignments/101001/submissions/update_grades",
        data={"grade_data": {"999999": {"posted_grade": "5"}}},
    )

    with pytest.raises(exc.ProgressFailed, match="Could not grade 999999") as raised:
        await canvas.wait_for_progress(progress["id"])

    assert progress["id"] == raised.value.context["progress_id"]


async def test_wait_for_progress_gives_up_within_its_limit(sim: CanvasSimulator) -> None:
    """A job still running when the limit comes is a RequestTimeout, on the injected clock."""
    clock = FakeClock()
    async with CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as client:
        progress = await client.post(
            "courses/101/assignments/101001/submissions/update_grades",
            data={"grade_data": {"101": {"posted_grade": "5"}}},
        )
        with pytest.raises(exc.RequestTimeout, match=r"within 0\.5 s \(last state: running\)"):
            await client.wait_for_progress(progress, poll_every=1.0, within=0.5)

    # The next poll would have come after the limit, so it never slept past it.
    assert [] == clock.sleeps


async def test_client_without_throttle_shares_one_retry_budget() -> None:
    """Every call of a client draws on one budget: an outage stops being retried."""
    from resilient_canvas import BudgetSettings
    from resilient_canvas.testing import FaultSettings

    clock = FakeClock()
    policy = RetryPolicy(budget=BudgetSettings(capacity=10, retry_cost=5))
    outage = SimulatorSettings(faults=FaultSettings(rates={Fault.MAINTENANCE: 1.0}))
    async with CanvasSimulator(outage) as sim:
        async with CanvasClient(
            sim.base_url, sim.token, throttle=None, policy=policy, clock=clock, sleep=clock.sleep
        ) as client:
            with pytest.raises(exc.ServiceUnavailable) as first:
                await client.get("courses/101")
            with pytest.raises(exc.ServiceUnavailable) as second:
                await client.get("courses/101")

    assert (3, "retry_budget_exhausted") == (
        first.value.attempts.count,  # type: ignore[union-attr]
        first.value.attempts.gave_up_because,
    )  # type: ignore[union-attr]
    assert 1 == second.value.attempts.count  # type: ignore[union-attr]
    assert 4 == sim.stats.requests


# ------------------------------------------------- bodies, timeouts, lifecycle

#: A JSON body of 8 MiB once decoded, to be sent compressed under a 1 MiB limit.
_INFLATED = b'["' + b"a" * (8 * 1024 * 1024) + b'"]'
_ERROR_BODY = b"x" * (1024 * 1024)


@functools.cache
def _compressed(encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(_INFLATED, compresslevel=6)
    if encoding == "deflate":
        return zlib.compress(_INFLATED)
    return bytes(brotli.compress(_INFLATED, quality=4))


@pytest.fixture
async def odd() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A server of answers the simulator does not give: bombs, CSV, hangs, big errors."""
    seen: dict[str, Any] = {"entered": asyncio.Event()}

    async def bomb(request: web.Request) -> web.Response:
        encoding = request.match_info["encoding"]
        headers = {"Content-Encoding": encoding, "Content-Type": "application/json"}
        return web.Response(body=_compressed(encoding), headers=headers)

    async def small_gzip(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=gzip.compress(b'{"ok": true}'), headers=headers)

    async def big_error(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=404)  # chunked: no Content-Length
        await response.prepare(request)
        for start in range(0, len(_ERROR_BODY), 65536):
            await response.write(_ERROR_BODY[start : start + 65536])
        await response.write_eof()
        return response

    async def hang(request: web.Request) -> web.Response:
        seen["entered"].set()
        await asyncio.Event().wait()  # until the server is shut down
        raise AssertionError("unreachable")

    async def user_agent(request: web.Request) -> web.Response:
        seen["user_agent"] = request.headers.get("User-Agent")
        return web.json_response({})

    bodies = {
        "report.csv": (b"id,name\n1,Jo\xe9\n", "text/csv; charset=latin-1"),
        "file.bin": (b"\x89PNG\r\n\x1a\n\xff\xfe", "application/octet-stream"),
        "page.html": (b"<!doctype html><p>Log in</p>", "text/html"),
        "bad.json": (b'{"truncated": ', "application/json"),
    }

    async def raw(request: web.Request) -> web.Response:
        body, content_type = bodies[request.match_info["name"]]
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/api/v1/bomb/{encoding}", bomb)
    app.router.add_get("/api/v1/small_gzip", small_gzip)
    app.router.add_get("/api/v1/big_error", big_error)
    app.router.add_get("/api/v1/hang", hang)
    app.router.add_get("/api/v1/user_agent", user_agent)
    app.router.add_get("/api/v1/raw/{name}", raw)
    runner, url = await _serve(app)
    yield url, seen
    await runner.cleanup()


def _one_attempt(url: str, **options: Any) -> CanvasClient:
    return CanvasClient(url, "tok", throttle=None, policy=RetryPolicy(attempts=1), **options)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_body_is_limited_by_its_decoded_size(
    odd: tuple[str, dict[str, Any]], encoding: str
) -> None:
    """A small compressed body inflating past max_body_size is refused (r4)."""
    url, _ = odd
    async with _one_attempt(url, max_body_size=1024 * 1024) as client:
        assert {"ok": True} == await client.get("small_gzip")
        with pytest.raises(exc.InvalidResponse, match="larger than 1,048,576 bytes once decoded"):
            await client.get(f"bomb/{encoding}")

    assert len(_compressed(encoding)) < 1024 * 1024


def _largest_local(error: BaseException) -> int:
    """Size of the largest bytes or text held by a frame of the error's traceback."""
    sizes = [0]
    for frame, _ in traceback.walk_tb(error.__traceback__):
        sizes += [
            len(value)
            for value in frame.f_locals.values()
            if isinstance(value, bytes | bytearray | str)
        ]
    return max(sizes)


async def test_error_body_is_kept_as_a_bounded_prefix(odd: tuple[str, dict[str, Any]]) -> None:
    """A 1 MiB error body: its length is counted, only a prefix is kept, frames hold none."""
    url, _ = odd
    async with _one_attempt(url) as client:
        with pytest.raises(exc.ResourceDoesNotExist) as raised:
            await client.get("big_error")

    assert len(_ERROR_BODY) == raised.value.extra["body_length"]
    assert len(raised.value.extra["body_excerpt"]) <= 501
    assert _largest_local(raised.value) <= 64 * 1024


async def test_error_body_over_max_body_size_is_refused(odd: tuple[str, dict[str, Any]]) -> None:
    """An error body larger than max_body_size is not drained without end."""
    url, _ = odd
    async with _one_attempt(url, max_body_size=100_000) as client:
        with pytest.raises(exc.InvalidResponse, match="larger than 100,000 bytes"):
            await client.get("big_error")


async def test_request_returns_a_body_that_is_not_json(odd: tuple[str, dict[str, Any]]) -> None:
    """request() hands over CSV and binary bodies; the JSON verbs still refuse them."""
    url, _ = odd
    async with _one_attempt(url) as client:
        report = await client.request("GET", "raw/report.csv")
        blob = await client.request("GET", "raw/file.bin")
        with pytest.raises(exc.InvalidResponse, match="not valid JSON"):
            await client.get("raw/page.html")
        with pytest.raises(exc.InvalidResponse, match="not valid JSON"):
            await client.request("GET", "raw/bad.json")

    assert (None, b"id,name\n1,Jo\xe9\n", "id,name\n1,Joé\n") == (
        report.data,
        report.content,
        report.text(),
    )
    assert (None, b"\x89PNG\r\n\x1a\n\xff\xfe") == (blob.data, blob.content)


def test_timeout_accepts_seconds(sim: CanvasSimulator) -> None:
    """timeout= takes a number or a timedelta (connect and read), or aiohttp's form."""
    from resilient_canvas._client import client_timeout

    assert aiohttp.ClientTimeout(total=None, connect=1.5, sock_read=1.5) == client_timeout(1.5)
    assert aiohttp.ClientTimeout(total=None, connect=2.0, sock_read=2.0) == client_timeout(
        dt.timedelta(seconds=2)
    )
    assert aiohttp.ClientTimeout(total=None) == client_timeout(None)
    with pytest.raises(ValueError, match="positive"):
        CanvasClient(sim.base_url, sim.token, timeout=0)
    with pytest.raises(TypeError, match="seconds"):
        CanvasClient(sim.base_url, sim.token, timeout="1")  # type: ignore[arg-type]


async def test_numeric_timeout_opens_and_works(sim: CanvasSimulator) -> None:
    """timeout=1.0 no longer fails when the client opens."""
    async with CanvasClient(sim.base_url, sim.token, timeout=1.0) as client:
        assert 101 == (await client.get("courses/101"))["id"]


async def test_per_call_timeout_and_deadline(odd: tuple[str, dict[str, Any]]) -> None:
    """A call's own timeout= and deadline= bound it, whatever the client's settings."""
    url, _ = odd
    async with _one_attempt(url) as client:
        with pytest.raises(exc.ReadTimeout):
            await asyncio.wait_for(client.get("hang", timeout=0.05), 2)
        with pytest.raises(exc.ReadTimeout):
            await asyncio.wait_for(anext(client.paginate("hang", timeout=0.05)), 2)
    async with CanvasClient(url, "tok", throttle=None) as client:
        with pytest.raises(exc.RequestTimeout) as raised:
            await asyncio.wait_for(client.request("GET", "hang", deadline=0.05), 2)

    assert 1 == raised.value.attempts.count  # type: ignore[union-attr]


VERBS = ["get", "post", "put", "patch", "delete", "request", "paginate"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_takes_per_call_options(verb: str) -> None:
    """Every verb takes timeout= and deadline=; all but paginate take idempotent=."""
    parameters = inspect.signature(getattr(CanvasClient, verb)).parameters
    expected = {"timeout", "deadline"} | ({"idempotent"} if verb != "paginate" else set())

    assert expected <= set(parameters)
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in expected)


@pytest.mark.parametrize(
    ("verb", "path"),
    [
        ("put", "courses/101/assignments/101001/submissions/101"),
        ("delete", "courses/101/enrollments/2"),
    ],
)
async def test_idempotent_false_stops_a_retry(
    canvas: CanvasClient, sim: CanvasSimulator, verb: str, path: str
) -> None:
    """put/delete declared not idempotent are not repeated, by us or by aiohttp."""
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})

    with pytest.raises(exc.ConnectionDropped):
        await getattr(canvas, verb)(path, idempotent=False)

    assert 1 == sim.stats.requests


async def test_external_session_gets_user_agent_and_timeout(
    odd: tuple[str, dict[str, Any]],
) -> None:
    """With a caller's session, user_agent= and timeout= still apply to each request."""
    url, seen = odd
    async with aiohttp.ClientSession() as session:
        async with _one_attempt(
            url, session=session, user_agent="grade-sync/2.0", timeout=0.05
        ) as client:
            await client.get("user_agent")
            with pytest.raises(exc.ReadTimeout):
                await asyncio.wait_for(client.get("hang"), 2)

    assert f"grade-sync/2.0 {DEFAULT_USER_AGENT}" == seen["user_agent"]


async def test_aclose_fails_calls_in_flight_with_a_canvas_exception(
    odd: tuple[str, dict[str, Any]],
) -> None:
    """A call in flight when the client closes gets a TransportError, not a raw RuntimeError."""
    url, seen = odd
    clock = FakeClock()
    client = CanvasClient(url, "tok", throttle=None, clock=clock, sleep=clock.sleep)
    async with client:
        task = asyncio.create_task(client.get("hang"))
        await seen["entered"].wait()
    with pytest.raises(exc.TransportError, match="closed while the call was in flight") as raised:
        await asyncio.wait_for(task, 2)

    assert not raised.value.retryable


async def test_head_of_a_large_resource_is_not_too_large(sim: CanvasSimulator) -> None:
    """HEAD declares a Content-Length larger than max_body_size but sends no body."""
    async with CanvasClient(sim.base_url, sim.token, max_body_size=10) as client:
        response = await client.request("HEAD", "courses/101")

    assert (200, b"") == (response.status, response.content)
    assert int(response.headers["Content-Length"]) > 10
