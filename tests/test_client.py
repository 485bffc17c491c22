"""Tests for CanvasClient against the simulator over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
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
    clear_throttles,
    encode_params,
    require,
    route_template,
)
from resilient_canvas import exceptions as exc
from resilient_canvas.testing import (
    CanvasSimulator,
    DataSettings,
    FakeClock,
    Fault,
    RouteProfile,
    SimulatorSettings,
)


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Each test starts with no shared throttle state."""
    clear_throttles()


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
    async with CanvasSimulator(data=DataSettings(courses=1, students_per_course=450)) as big:
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
