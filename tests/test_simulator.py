"""Tests for resilient_canvas.testing's Canvas simulator, over real sockets."""

from __future__ import annotations

import asyncio
import heapq
import random
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from resilient_canvas.testing import (
    CallShape,
    CanvasSimulator,
    DataSettings,
    Distribution,
    FakeClock,
    Fault,
    FaultSettings,
    LeakyBucket,
    RouteProfile,
    SimulatorSettings,
    ThrottleSettings,
    bucket_lower_bound,
    ruby_float,
    sample_calls,
    schedule_bound,
    settings_lower_bound,
)

LINK = re.compile(r'<([^>]+)>; rel="([a-z]+)"')


class Gate:
    """An injectable sleep that holds every simulated service time until released."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await self.released.wait()


async def _burst(
    settings: SimulatorSettings, paths: list[str]
) -> tuple[list[int], CanvasSimulator, float, Gate]:
    """Send every path at once over real sockets while the app is held; return the statuses.

    Time stands still (a FakeClock nobody advances), so the bucket sees the
    requests as simultaneous; the level is read while the admitted ones are held.
    """
    clock, gate = FakeClock(), Gate()
    async with CanvasSimulator(settings, clock=clock, sleep=gate.sleep) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
            tasks = [asyncio.create_task(_get(session, path)) for path in paths]
            while sim.stats.requests < len(paths):  # noqa: ASYNC110 - polling the server's counter
                await asyncio.sleep(0.01)
            level_while_held = sim.bucket().count
            gate.released.set()
            results = await asyncio.gather(*tasks)
    return [status for status, _, _ in results], sim, level_while_held, gate


@pytest.fixture
async def http(sim: CanvasSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session authorised with the simulator's token."""
    headers = {"Authorization": f"Bearer {sim.token}"}
    async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
        yield session


async def _get(session: aiohttp.ClientSession, path: str, **params: Any) -> tuple[int, Any, Any]:
    async with session.get(path, params=params) as response:
        body = (
            await response.json()
            if response.content_type == "application/json"
            else (await response.text())
        )
        return response.status, response.headers, body


# ------------------------------------------------------------------ throttle


def test_bucket_leaks_only_while_positive_and_clamps() -> None:
    """The bucket leaks at outflow, clamps to [0, maximum], and remaining can go negative."""
    clock = FakeClock()
    bucket = LeakyBucket(ThrottleSettings(), clock)
    for _ in range(20):
        bucket.reserve()
    assert 800.0 == bucket.count
    assert -200.0 == bucket.remaining
    clock.advance(10)
    assert 700.0 == bucket.level()
    clock.advance(1_000)
    assert 0.0 == bucket.level()


async def test_twelfth_concurrent_request_is_throttled() -> None:
    """From an idle bucket at the defaults, 11 requests fit in flight and the 12th is refused."""
    clock, gate = FakeClock(), Gate()
    settings = SimulatorSettings(default_route=RouteProfile(service_time=0.05))
    async with CanvasSimulator(settings, clock=clock, sleep=gate.sleep) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
            tasks = [asyncio.create_task(_get(session, "/api/v1/courses")) for _ in range(12)]
            while sim.stats.requests < 12:  # noqa: ASYNC110 - polling the server's counter
                await asyncio.sleep(0.01)
            gate.released.set()
            results = await asyncio.gather(*tasks)

    statuses = sorted(status for status, _, _ in results)
    assert [200] * 11 + [403] == statuses
    # The refused request passes through the server briefly too.
    assert sim.stats.peak_in_flight in (11, 12)
    assert 1 == sim.stats.throttled


async def test_throttled_response_is_exactly_canvas_legacy(sim: CanvasSimulator) -> None:
    """A throttled answer: 403 text/plain, exact body, remaining but no cost and no Retry-After."""
    bucket = sim.bucket()
    for _ in range(12):
        bucket.reserve()
    async with (
        aiohttp.ClientSession(sim.base_url) as session,
        session.get(
            "/api/v1/courses", headers={"Authorization": f"Bearer {sim.token}"}
        ) as response,
    ):
        body = await response.text()
        headers = response.headers

    assert 403 == response.status
    assert "403 Forbidden (Rate Limit Exceeded)\n" == body
    assert "text/plain; charset=utf-8" == headers["Content-Type"]
    assert "X-Request-Cost" not in headers
    assert "Retry-After" not in headers
    assert "0.0" == headers["X-Rate-Limit-Remaining"]


async def test_hosted_profile_throttles_with_429() -> None:
    """The hosted profile uses hwm 700 and answers 429."""
    clock = FakeClock()
    async with CanvasSimulator(SimulatorSettings.hosted(), clock=clock, sleep=clock.sleep) as sim:
        for _ in range(14):
            sim.bucket().reserve()
        async with aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as session:
            status, headers, body = await _get(session, "/api/v1/courses")

    assert 429 == status
    assert "429 Too Many Requests (Rate Limit Exceeded)\n" == body
    assert "X-Request-Cost" not in headers


async def test_cost_and_remaining_headers_follow_settlement() -> None:
    """Remaining is hwm minus count after settling the real cost."""
    clock = FakeClock()
    settings = SimulatorSettings(
        default_route=RouteProfile(service_time=0.5, cost_rate=1.0, base_cost=0.0, jitter=0.0)
    )
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        sim.bucket().count = 100.0
        async with aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as session:
            _, headers, _ = await _get(session, "/api/v1/courses")

    assert "0.5" == headers["X-Request-Cost"]
    # 100 + 50 reserved, 5 leaked during the 0.5 s of service, then 0.5 - 50 settled.
    assert "504.5" == headers["X-Rate-Limit-Remaining"]


async def test_tokens_have_separate_buckets(sim: CanvasSimulator) -> None:
    """Each token has its own quota, keyed by its hash."""
    other = "another-token-value"
    sim.bucket(other).reserve()

    assert 50.0 == sim.bucket(other).count
    assert 0.0 == sim.bucket().count
    keys = list(sim._canvas.buckets)
    assert 2 == len(keys)
    assert not any(other in key or sim.token in key for key in keys)
    assert all(re.fullmatch(r"token:[0-9a-f]{64}", key) for key in keys)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (600.0, "600.0"),
        (0.0123, "0.0123"),
        (0.00001, "1.0e-05"),
        (-12.5, "-12.5"),
        (1e16, "1.0e+16"),
    ],
)
def test_ruby_float_format(value: float, expected: str) -> None:
    """Floats print as Ruby prints them."""
    assert expected == ruby_float(value)


# ---------------------------------------------------------------- pagination


@pytest.mark.parametrize(
    ("per_page", "expected"), [(None, 10), ("100", 40), ("500", 40), ("0", 1), ("-3", 1), ("x", 1)]
)
async def test_per_page_default_clamp_and_garbage(
    http: aiohttp.ClientSession, per_page: str | None, expected: int
) -> None:
    """per_page defaults to 10, clamps to 100, and 0, negatives or garbage become 1."""
    params = {} if per_page is None else {"per_page": per_page}
    _, _, body = await _get(http, "/api/v1/courses/101/assignments/101001/submissions", **params)

    assert expected == len(body)


async def test_ordinal_link_header_format(
    http: aiohttp.ClientSession, sim: CanvasSimulator
) -> None:
    """Links are absolute, comma-joined without spaces, page and per_page last."""
    _, headers, body = await _get(
        http,
        "/api/v1/courses/101/assignments/101001/submissions",
        per_page="15",
        page="2",
        include="x",
    )

    base = f"{sim.base_url}/api/v1/courses/101/assignments/101001/submissions?include=x"
    expected = ",".join(
        [
            f'<{base}&page=2&per_page=15>; rel="current"',
            f'<{base}&page=3&per_page=15>; rel="next"',
            f'<{base}&page=1&per_page=15>; rel="prev"',
            f'<{base}&page=1&per_page=15>; rel="first"',
            f'<{base}&page=3&per_page=15>; rel="last"',
        ]
    )
    assert expected == headers["Link"]
    assert 15 == len(body)


async def test_ordinal_page_past_the_end_is_empty(http: aiohttp.ClientSession) -> None:
    """A page after the last one is [] with 200."""
    status, _, body = await _get(http, "/api/v1/courses", page="99")

    assert (200, []) == (status, body)


async def test_bookmark_pagination_walks_everything(http: aiohttp.ClientSession) -> None:
    """Bookmark pages chain through next links with no last link, covering each item once."""
    seen: list[int] = []
    url: str | None = "/api/v1/courses/101/enrollments?per_page=7"
    while url:
        async with http.get(url) as response:
            seen += [item["id"] for item in await response.json()]
            rels = {rel: link for link, rel in LINK.findall(response.headers["Link"])}
        assert "last" not in rels
        url = rels.get("next")

    assert list(range(1, 42)) == seen


async def test_undecodable_bookmark_returns_first_page(http: aiohttp.ClientSession) -> None:
    """A garbage bookmark silently restarts at the first page."""
    _, _, first = await _get(http, "/api/v1/courses/101/enrollments", per_page="5")
    _, _, garbage = await _get(
        http, "/api/v1/courses/101/enrollments", per_page="5", page="bookmark:!!!not-base64"
    )

    assert first == garbage


async def test_access_token_parameter_is_stripped_from_links(sim: CanvasSimulator) -> None:
    """A token sent as a query parameter never appears in the Link header."""
    async with aiohttp.ClientSession(sim.base_url) as session:
        status, headers, _ = await _get(session, "/api/v1/courses", access_token=sim.token)

    assert 200 == status
    assert sim.token not in headers["Link"]


# ------------------------------------------------------------- auth and errors


@pytest.mark.parametrize(
    ("token", "message", "challenge"),
    [
        ("nope", "Invalid access token.", True),
        ("old", "Expired access token.", True),
        ("narrow", "Insufficient scopes on access token.", False),
    ],
)
async def test_auth_failures_match_canvas(token: str, message: str, challenge: bool) -> None:
    """Invalid, expired and under-scoped tokens get Canvas's 401 bodies and headers."""
    settings = SimulatorSettings(
        expired_tokens=frozenset({"old"}), insufficient_scope_tokens=frozenset({"narrow"})
    )
    async with (
        CanvasSimulator(settings) as sim,
        aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {token}"}
        ) as session,
    ):
        status, headers, body = await _get(session, "/api/v1/courses")

    assert 401 == status
    assert message == body["errors"][0]["message"]
    assert challenge == ("WWW-Authenticate" in headers)


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "body"),
    [
        (
            "GET",
            "/api/v1/courses/999",
            None,
            404,
            {"errors": [{"message": "The specified resource does not exist."}]},
        ),
        (
            "GET",
            "/api/v1/accounts/1",
            None,
            403,
            {
                "status": "unauthorized",
                "errors": [{"message": "user not authorized to perform that action"}],
            },
        ),
        ("POST", "/api/v1/courses/101/enrollments", {}, 400, {"message": "No parameters given"}),
        (
            "POST",
            "/api/v1/courses/101/assignments",
            {},
            400,
            {"errors": [{"message": "assignment is missing"}]},
        ),
        (
            "POST",
            "/api/v1/courses/101/assignments",
            {"assignment[name]": " "},
            422,
            {
                "errors": {
                    "name": [{"attribute": "name", "type": "blank", "message": "can't be blank"}]
                }
            },
        ),
        (
            "PUT",
            "/api/v1/courses/101/assignments/101001/submissions/101",
            {"submission[posted_grade]": "banana"},
            400,
            {
                "error": "Invalid grade 'banana': this assignment is graded by points; it takes "
                "points, a percentage or pass/fail. Letter grades need a letter_grade or "
                "gpa_scale assignment."
            },
        ),
    ],
)
async def test_error_bodies_match_canvas(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    data: dict[str, str] | None,
    status: int,
    body: dict[str, Any],
) -> None:
    """Errors use Canvas's statuses and body shapes."""
    async with http.request(method, path, data=data) as response:
        assert (status, body) == (response.status, await response.json())


# ------------------------------------------------------------- writes and jobs


async def test_enrollment_post_is_not_idempotent(
    http: aiohttp.ClientSession, sim: CanvasSimulator
) -> None:
    """Posting the same enrollment twice creates two and counts one duplicate write."""
    ids = []
    for _ in range(2):
        async with http.post(
            "/api/v1/courses/102/enrollments", data={"enrollment[user_id]": "101"}
        ) as response:
            ids.append((await response.json())["id"])

    assert ids[0] != ids[1]
    assert 2 == sim.stats.applied_writes
    assert 1 == sim.stats.duplicate_writes


async def test_grade_put_is_idempotent(http: aiohttp.ClientSession, sim: CanvasSimulator) -> None:
    """Putting the same grade twice changes nothing more and is not a duplicate."""
    path = "/api/v1/courses/101/assignments/101001/submissions/sis_user_id:sis-101"
    for _ in range(2):
        async with http.put(path, data={"submission[posted_grade]": "88"}) as response:
            assert 88.0 == (await response.json())["score"]

    assert 0 == sim.stats.duplicate_writes
    assert 1 == sim.stats.repeated_idempotent_writes


async def test_update_grades_progress_moves_to_completed(http: aiohttp.ClientSession) -> None:
    """update_grades returns a Progress that goes queued, running, completed, then grades show."""
    async with http.post(
        "/api/v1/courses/101/assignments/101001/submissions/update_grades",
        data={"grade_data[101][posted_grade]": "7", "grade_data[102][posted_grade]": "9"},
    ) as response:
        progress = await response.json()
    states = [progress["workflow_state"]]
    for _ in range(3):
        _, _, polled = await _get(http, f"/api/v1/progress/{progress['id']}")
        states.append(polled["workflow_state"])
    _, _, submissions = await _get(
        http, "/api/v1/courses/101/assignments/101001/submissions", per_page="2"
    )

    assert ["queued", "running", "completed", "completed"] == states
    assert [7.0, 9.0] == [s["score"] for s in submissions]


async def test_data_is_deterministic_for_a_seed() -> None:
    """Equal seeds give equal data; another seed gives other data."""
    first = CanvasSimulator(data=DataSettings(seed=5))
    second = CanvasSimulator(data=DataSettings(seed=5))
    other = CanvasSimulator(data=DataSettings(seed=6))

    assert first.data.users == second.data.users
    assert first.data.users != other.data.users


# -------------------------------------------------------------------- faults


async def _one(sim: CanvasSimulator, fault: Fault, method: str = "GET") -> tuple[int, str, Any]:
    sim.reset()
    object.__setattr__(sim._canvas._faults.settings, "schedule", {1: fault})
    path = "/api/v1/courses/101/enrollments" if method == "POST" else "/api/v1/courses"
    async with (
        aiohttp.ClientSession(
            sim.base_url,
            headers={"Authorization": f"Bearer {sim.token}"},
            timeout=aiohttp.ClientTimeout(total=2),
        ) as session,
        session.request(
            method, path, data={"enrollment[user_id]": "101"} if method == "POST" else None
        ) as response,
    ):
        return response.status, await response.text(), response.headers


@pytest.mark.parametrize(
    ("fault", "status", "marker"),
    [
        (Fault.MAINTENANCE, 503, "maintenance"),
        (Fault.BAD_GATEWAY, 502, "Bad Gateway"),
        (Fault.HTML_ERROR, 500, "<html>"),
        (Fault.SERVER_ERROR, 500, "error_report_id"),
    ],
)
async def test_faults_before_the_app(
    sim: CanvasSimulator, fault: Fault, status: int, marker: str
) -> None:
    """Gateway and error faults answer as Canvas's infrastructure does, without running the app."""
    got_status, text, headers = await _one(sim, fault, "POST")

    assert status == got_status
    assert marker in text
    assert 0 == sim.stats.applied_writes
    if fault in (Fault.MAINTENANCE, Fault.BAD_GATEWAY):
        assert "X-Rate-Limit-Remaining" not in headers


async def test_gateway_timeout_applies_the_write(sim: CanvasSimulator) -> None:
    """A 504 comes after the write was applied: the client cannot know it succeeded."""
    status, text, _ = await _one(sim, Fault.GATEWAY_TIMEOUT, "POST")

    assert (504, 1) == (status, sim.stats.applied_writes)
    assert "Gateway Time-out" in text


async def test_drop_after_write_applies_then_disconnects(sim: CanvasSimulator) -> None:
    """A dropped connection after the write: the client sees a disconnect, the write stands."""
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _one(sim, Fault.DROP_AFTER_WRITE, "POST")

    assert 1 == sim.stats.applied_writes


async def test_malformed_json_is_truncated(sim: CanvasSimulator) -> None:
    """MALFORMED_JSON serves 200 with a JSON body cut in half."""
    status, text, _ = await _one(sim, Fault.MALFORMED_JSON)

    assert 200 == status
    with pytest.raises(ValueError, match=r"Expecting|Unterminated|delimiter"):
        __import__("json").loads(text)


async def test_hang_outlasts_a_client_timeout() -> None:
    """A HANG holds the answer longer than the client waits."""
    settings = SimulatorSettings(faults=FaultSettings(schedule={1: Fault.HANG}, hang_seconds=5))
    async with (
        CanvasSimulator(settings) as sim,
        aiohttp.ClientSession(
            sim.base_url,
            headers={"Authorization": f"Bearer {sim.token}"},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ) as session,
    ):
        with pytest.raises(asyncio.TimeoutError):
            await _get(session, "/api/v1/courses")


async def test_slow_answers_late_on_the_injected_clock() -> None:
    """SLOW delays the answer by slow_seconds, measured on the injected clock."""
    clock = FakeClock()
    settings = SimulatorSettings.instant(
        faults=FaultSettings(schedule={1: Fault.SLOW}, slow_seconds=3)
    )
    async with (
        CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim,
        aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as session,
    ):
        status, _, _ = await _get(session, "/api/v1/courses")

    assert 200 == status
    assert [3] == clock.sleeps


def test_random_faults_are_reproducible() -> None:
    """The same seed and rates pick the same faults."""
    from resilient_canvas.testing._faults import FaultPicker

    settings = FaultSettings(rates={Fault.MAINTENANCE: 0.2, Fault.SLOW: 0.1}, seed=11)
    first_picker, second_picker = FaultPicker(settings), FaultPicker(settings)
    first = [first_picker.pick(n, "GET") for n in range(1, 200)]
    second = [second_picker.pick(n, "GET") for n in range(1, 200)]

    assert first == second
    assert 20 < sum(f is Fault.MAINTENANCE for f in first) < 60


def test_invalid_fault_rates_are_refused() -> None:
    """Rates outside [0, 1] or summing past 1 raise ValueError."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultSettings(rates={Fault.SLOW: 1.5})
    with pytest.raises(ValueError, match="sum"):
        FaultSettings(rates={Fault.SLOW: 0.6, Fault.HANG: 0.6})


# ----------------------------------------------------------- lifecycle, plugin


async def test_reset_restores_everything(http: aiohttp.ClientSession, sim: CanvasSimulator) -> None:
    """reset() clears statistics, buckets and data changes."""
    await _get(http, "/api/v1/courses")
    sim.reset()

    assert (0, 0.0) == (sim.stats.requests, sim.bucket().count)


async def test_pytest_fixture_serves(canvas_simulator: CanvasSimulator) -> None:
    """The canvas_simulator fixture from the installed pytest plugin is a running simulator."""
    async with aiohttp.ClientSession(
        canvas_simulator.base_url, headers={"Authorization": f"Bearer {canvas_simulator.token}"}
    ) as session:
        status, _, body = await _get(session, "/api/v1/users/self")

    assert (200, 1) == (status, body["id"])


async def test_starting_twice_is_refused(sim: CanvasSimulator) -> None:
    """A running simulator cannot be started again."""
    with pytest.raises(RuntimeError, match="already running"):
        await sim.start()


# ------------------------------------------------- every throttle setting


def test_custom_hwm_maximum_outflow_and_up_front_cost() -> None:
    """Each ThrottleSettings field changes the bucket: hwm, maximum, outflow, up_front_cost."""
    clock = FakeClock()
    settings = ThrottleSettings(hwm=300.0, maximum=350.0, outflow=5.0, up_front_cost=100.0)
    bucket = LeakyBucket(settings, clock)

    admitted = [not bucket.reserve() for _ in range(4)]
    assert [True, True, False, False] == admitted  # 300 >= hwm 300 refuses the third
    assert 350.0 == bucket.count  # clamped to maximum
    clock.advance(10)
    assert 300.0 == bucket.level()  # leaked 5 units/s


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/courses/7/enrollments", 100.0),
        ("/api/v1/courses/7/enrollments?page=first&per_page=100", 100.0),
        ("/api/v1/courses/7/assignments/9/submissions", 20.0),
        ("/api/v1/users/self?include[]=enrollments", 100.0),
        ("/api/v1/courses/7", 50.0),
    ],
)
def test_per_path_up_front_cost_first_match_wins(path: str, expected: float) -> None:
    """Regexes are searched in the full path and query, in order; no match uses the global one."""
    settings = ThrottleSettings(
        up_front_cost_by_path={
            r"^/api/v1/courses/\d+/enrollments": 100.0,
            r"enrollments": 100.0,
            r"/submissions": 20.0,
            r"/assignments": 70.0,
        }
    )

    assert expected == settings.up_front_cost_for(path)


def test_invalid_per_path_settings_are_refused() -> None:
    """A broken regex or a negative per-path cost fails at construction, not mid-test."""
    with pytest.raises(ValueError, match="negative"):
        ThrottleSettings(up_front_cost_by_path={"x": -1.0})
    with pytest.raises(re.error):
        ThrottleSettings(up_front_cost_by_path={"(": 10.0})


async def test_per_path_reservation_is_refunded_in_full() -> None:
    """A route reserving 100 admits 5 at once from idle, and each refunds exactly its 100."""
    settings = SimulatorSettings(
        throttle=ThrottleSettings(up_front_cost_by_path={r"/enrollments": 100.0}),
        default_route=RouteProfile(Distribution.constant(0.1), cost_rate=0.0, base_cost=0.25),
    )
    statuses, sim, level_while_held, _ = await _burst(
        settings, ["/api/v1/courses/101/enrollments"] * 7
    )

    assert [200] * 5 + [403] * 2 == sorted(statuses)
    assert 500.0 == level_while_held  # 5 x 100 held; the refused ones refunded their 100
    assert 5 * 0.25 == pytest.approx(sim.bucket().count)  # only the real costs remain


async def test_global_up_front_cost_applies_off_the_listed_paths() -> None:
    """Paths no regex matches reserve the global up_front_cost (here 25: 23 fit, the 24th not)."""
    settings = SimulatorSettings(
        throttle=ThrottleSettings(
            up_front_cost=25.0, up_front_cost_by_path={r"/enrollments": 100.0}
        )
    )
    statuses, _, level_while_held, _ = await _burst(settings, ["/api/v1/courses/101"] * 26)

    assert [200] * 23 + [403] * 3 == sorted(statuses)
    assert 575.0 == level_while_held


# ------------------------------------------------------------ distributions


@pytest.mark.parametrize(
    "distribution",
    [
        Distribution.constant(0.4),
        Distribution.uniform(0.4, 0.2),
        Distribution.lognormal(0.4, 0.7),
        Distribution.lognormal(0.4, 1.2),
        Distribution.lognormal(0.4, 1.5),
    ],
)
def test_every_shape_keeps_the_mean(distribution: Distribution) -> None:
    """Constant, uniform and heavy-tailed lognormal draws share the mean they are given."""
    rng = random.Random(1)
    draws = [distribution.sample(rng) for _ in range(40_000)]

    assert 0.4 == pytest.approx(sum(draws) / len(draws), rel=0.05)
    assert all(draw >= 0 for draw in draws)


def test_lognormal_has_a_heavy_tail() -> None:
    """At sigma 1.2 the median is about half the mean and 1% of draws exceed ~8x the mean."""
    rng = random.Random(2)
    heavy = Distribution.lognormal(1.0, 1.2)
    draws = sorted(heavy.sample(rng) for _ in range(40_000))

    assert heavy.median == pytest.approx(draws[len(draws) // 2], rel=0.05)
    assert 0.487 == pytest.approx(heavy.median, abs=0.001)
    assert 7.9 == pytest.approx(draws[int(len(draws) * 0.99)], rel=0.1)


def test_invalid_distributions_are_refused() -> None:
    """Negative means, uniform spreads outside [0, 1) and non-positive sigmas raise."""
    with pytest.raises(ValueError, match="mean"):
        Distribution.constant(-1.0)
    with pytest.raises(ValueError, match="uniform"):
        Distribution.uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        Distribution.lognormal(1.0, 0.0)


def test_route_profile_legacy_keywords_and_cost_modes() -> None:
    """service_time/jitter still work; costs follow service time unless drawn on their own."""
    assert Distribution.uniform(0.05, 0.2) == RouteProfile(service_time=0.05).service
    assert Distribution.constant(0.05) == RouteProfile(service_time=0.05, jitter=0.0).service
    with pytest.raises(ValueError, match="not both"):
        RouteProfile(Distribution.constant(0.1), service_time=0.1)

    rng = random.Random(3)
    tied = RouteProfile(Distribution.lognormal(0.05, 1.2), cost_rate=8.0, base_cost=0.0)
    seconds, cost = tied.sample(rng)
    assert cost == pytest.approx(8.0 * seconds)
    independent = RouteProfile(Distribution.constant(0.05), cost=Distribution.lognormal(0.4, 1.2))
    costs = {independent.sample(rng) for _ in range(5)}
    assert {0.05} == {seconds for seconds, _ in costs}
    assert 5 == len({cost for _, cost in costs})
    assert (0.05, 0.4) == (independent.service_time, independent.mean_cost)


async def _sequential_costs(settings: SimulatorSettings, paths: list[str]) -> list[float]:
    clock = FakeClock()
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        async with aiohttp.ClientSession(sim.base_url, headers=headers) as session:
            return [float((await _get(session, path))[1]["X-Request-Cost"]) for path in paths]


async def test_costs_are_deterministic_under_seed_and_match_the_bound_sampler() -> None:
    """Same seed, same costs; the bound's sampler draws exactly what the simulator serves."""
    enrollments = "GET /api/v1/courses/{course_id}/enrollments"
    settings = SimulatorSettings(
        routes={enrollments: RouteProfile(cost=Distribution.lognormal(2.0, 1.2))},
        latency=Distribution.lognormal(0.05, 1.0),  # its own stream: shifts nothing
        seed=11,
    )
    paths = ["/api/v1/courses/101", "/api/v1/courses/101/enrollments"] * 4

    first = await _sequential_costs(settings, paths)
    again = await _sequential_costs(settings, paths)
    other = await _sequential_costs(replace(settings, seed=12), paths)
    sampled = sample_calls(settings, [("GET", path) for path in paths])

    assert first == again
    assert first != other
    assert first == pytest.approx([call.cost for call in sampled], abs=1e-12)


# ------------------------------------------------------------------ latency


async def test_latency_delays_both_ways_and_headers_are_stale_by_the_answer_transit() -> None:
    """Request transit precedes the bucket; headers are computed before the answer's transit."""
    clock = FakeClock()
    profile = RouteProfile(Distribution.constant(0.1), cost_rate=0.0, base_cost=0.5)
    settings = SimulatorSettings(default_route=profile, latency=Distribution.constant(0.5))
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        sim.bucket().count = 100.0
        async with aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as session:
            _, headers, _ = await _get(session, "/api/v1/courses")
        remaining_now = 600.0 - sim.bucket().level()

    assert [0.5, 0.1, 0.5] == clock.sleeps
    # 100 - 5 leaked in transit + 50, - 1 leaked in service, + 0.5 - 50 settled = 94.5.
    assert 505.5 == pytest.approx(float(headers["X-Rate-Limit-Remaining"]))
    # By the time the client reads it, another 0.5 s has leaked 5 more units.
    assert 510.5 == pytest.approx(remaining_now)


# --------------------------------------------------------- realistic default


def test_default_route_is_realistic_and_instant_is_a_preset() -> None:
    """The default profile works ~0.2 s (lognormal); instant() works 0 s at a 0.002 cost."""
    default = SimulatorSettings().default_route

    assert Distribution.lognormal(0.2, 0.7) == default.service
    assert 0.1 < default.service.median < 0.2
    assert 0.1 < default.mean_cost < 1.0
    assert (0.0, 0.002) == RouteProfile.instant().sample(random.Random(0))
    assert RouteProfile.instant() == SimulatorSettings.instant().default_route


async def test_realistic_default_throttles_the_twelfth_concurrent_request() -> None:
    """Default settings, idle token, 40 concurrent raw GETs: 11 served, the 12th on refused."""
    statuses, sim, _, gate = await _burst(SimulatorSettings(), ["/api/v1/courses"] * 40)

    assert [200] * 11 + [403] * 29 == sorted(statuses)
    assert (40, 29) == (sim.stats.requests, sim.stats.throttled)
    assert 11 == len(gate.slept)
    assert all(seconds > 0 for seconds in gate.slept)


async def test_instant_preset_never_holds_a_request() -> None:
    """The instant preset answers at once, so the same burst is never throttled."""
    statuses, sim, _, gate = await _burst(SimulatorSettings.instant(), ["/api/v1/courses"] * 40)

    assert [200] * 40 == statuses
    assert (0, []) == (sim.stats.throttled, gate.slept)


async def test_realistic_default_never_throttles_a_sequential_client() -> None:
    """One request at a time never fills the bucket, as Canvas's documentation promises."""
    clock = FakeClock()
    async with CanvasSimulator(clock=clock, sleep=clock.sleep) as sim:
        async with aiohttp.ClientSession(
            sim.base_url, headers={"Authorization": f"Bearer {sim.token}"}
        ) as session:
            statuses = [(await _get(session, "/api/v1/courses/101"))[0] for _ in range(60)]

    assert [200] * 60 == statuses
    # Each took realistic time (seeded draws averaging near the 0.2 s mean)...
    assert 60 * 0.2 == pytest.approx(sum(clock.sleeps), rel=0.3)
    # ...during which its own reservation leaked more than it cost.
    assert 0.0 == sim.bucket().level()


# -------------------------------------------------------------------- bound


def test_bound_of_one_call_is_its_service_time_plus_a_round_trip() -> None:
    """One call: its service time, plus twice the one-way latency."""
    assert 0.05 == bucket_lower_bound(1, service_time=0.05, cost=0.04)
    assert 0.25 == pytest.approx(schedule_bound([CallShape(0.05, 0.04)], latency=0.1))


def test_bound_with_free_calls_is_service_time_limited() -> None:
    """Cost-free calls run in waves of 12 (the 12th enters as the count leaks below 550)."""
    free = CallShape(0.5, 0.0)

    assert 0.5 == schedule_bound([free] * 12)
    assert 1.0 == schedule_bound([free] * 24)
    assert 1.5 == schedule_bound([free] * 25)
    # Reserving 100 halves the wave; reserving 25 doubles it.
    assert 1.0 == schedule_bound([CallShape(0.5, 0.0, 100.0)] * 12)
    assert 0.5 == schedule_bound([CallShape(0.5, 0.0, 25.0)] * 24)


def test_bound_with_costly_calls_is_outflow_limited() -> None:
    """Costly calls: about (total cost - what the bucket holds below hwm) / outflow."""
    costly = [CallShape(0.01, 40.0)] * 100
    total_beyond = 100 * 40.0 - 550.0

    assert total_beyond / 10 == pytest.approx(schedule_bound(costly), rel=0.02)
    slow_leak = ThrottleSettings(outflow=5.0)
    assert total_beyond / 5 == pytest.approx(schedule_bound(costly, slow_leak), rel=0.02)


def test_bound_is_what_the_simulators_bucket_really_allows() -> None:
    """A greedy prober on the simulator's own bucket finishes exactly when the bound says."""

    def greedy(calls: int, service: float, cost: float, step: float = 0.0005) -> float:
        clock = FakeClock(0.0)
        bucket = LeakyBucket(ThrottleSettings(), clock)
        running: list[float] = []
        started = done = 0
        while done < calls:
            while running and running[0] <= clock.now + 1e-12:
                heapq.heappop(running)
                bucket.settle(cost)
                done += 1
            while started < calls and not bucket.reserve():
                heapq.heappush(running, clock.now + service)
                started += 1
            if started < calls:
                bucket.settle(0.0)  # the refused probe is refunded
            clock.advance(step)
        return clock.now

    for cost in (0.04, 0.4):
        expected = bucket_lower_bound(1000, service_time=0.05, cost=cost)
        assert expected == pytest.approx(greedy(1000, 0.05, cost), abs=0.01)


def test_settings_bound_uses_per_route_draws_reservations_and_latency() -> None:
    """The settings bound replays sampled calls with per-path reservations and one round trip."""
    settings = SimulatorSettings(
        throttle=ThrottleSettings(up_front_cost_by_path={r"/enrollments": 100.0}),
        default_route=RouteProfile(Distribution.constant(0.5), cost_rate=0.0, base_cost=0.0),
        latency=Distribution.constant(0.1),
    )
    enrollments = [("GET", "/api/v1/courses/101/enrollments")] * 12
    courses = [("GET", "/api/v1/courses/101")] * 12

    assert 1.0 + 0.2 == pytest.approx(settings_lower_bound(settings, enrollments))
    assert 0.5 + 0.2 == pytest.approx(settings_lower_bound(settings, courses))
    assert [100.0] * 12 == [call.up_front_cost for call in sample_calls(settings, enrollments)]


# ------------------------------------------------- grading types and filters


def _points_possible(sim: CanvasSimulator, points: float) -> None:
    """Give every seeded assignment of course 101 the same points_possible."""
    for assignment in sim.data.assignments[101]:
        assignment["points_possible"] = points


def test_every_grading_type_is_seeded(sim: CanvasSimulator) -> None:
    """Course 101's five assignments cover Canvas's five grading types, in a documented order."""
    kinds = {a["id"]: a["grading_type"] for a in sim.data.assignments[101]}

    expected = {
        101001: "points",
        101002: "percent",
        101003: "letter_grade",
        101004: "pass_fail",
        101005: "gpa_scale",
    }
    assert expected == kinds


@pytest.mark.parametrize(
    ("assignment", "posted", "grade", "score"),
    [
        (101001, "13.5", "13.5", 13.5),
        (101001, "25", "25", 25.0),  # extra credit is allowed
        (101001, "85%", "17", 17.0),
        (101001, "pass", "20", 20.0),
        (101002, "17", "85%", 17.0),
        (101002, "85%", "85%", 17.0),
        (101002, "incomplete", "0%", 0.0),
        (101003, "A", "A", 20.0),
        (101003, "b", "B", 17.2),  # the top of B's range, 86%
        (101003, "A-", "A-", 18.6),
        (101003, "85%", "B", 17.0),
        (101003, "17", "B", 17.0),
        (101004, "complete", "complete", 20.0),
        (101004, "fail", "incomplete", 0.0),
        (101004, "20", "complete", 20.0),
        (101004, "100%", "complete", 20.0),
        (101005, "3.7", "3.7", 18.6),
        (101005, "4.0", "4.0", 20.0),
        (101005, "85%", "3.0", 17.0),
    ],
)
async def test_posted_grade_follows_canvas_rules(
    http: aiohttp.ClientSession,
    sim: CanvasSimulator,
    assignment: int,
    posted: str,
    grade: str,
    score: float,
) -> None:
    """Each grading type accepts what Canvas accepts and stores Canvas's grade and score."""
    _points_possible(sim, 20.0)
    path = f"/api/v1/courses/101/assignments/{assignment}/submissions/101"

    async with http.put(path, data={"submission[posted_grade]": posted}) as response:
        body = await response.json()

    assert (200, grade, score, "graded") == (
        response.status,
        body["grade"],
        body["score"],
        body["workflow_state"],
    )


@pytest.mark.parametrize(
    ("assignment", "posted", "says"),
    [
        (101001, "A", "graded by points"),
        (101002, "B+", "graded by percent"),
        (101003, "Z", "grade of the scheme (A, A-, B+"),
        (101004, "10", "pass_fail assignment takes"),
        (101004, "A", "pass_fail assignment takes"),
        (101005, "A", "grade of the scheme (4.0, 3.7"),
        (101001, "Pass", "graded by points"),  # Canvas matches pass/fail case-sensitively
    ],
)
async def test_posted_grade_canvas_rejects_is_a_400_error(
    http: aiohttp.ClientSession, sim: CanvasSimulator, assignment: int, posted: str, says: str
) -> None:
    """A grade the assignment cannot take is Canvas's 400 {"error": ...}, and nothing changes."""
    _points_possible(sim, 20.0)
    path = f"/api/v1/courses/101/assignments/{assignment}/submissions/101"

    async with http.put(path, data={"submission[posted_grade]": posted}) as response:
        body = await response.json()

    assert (400, ["error"]) == (response.status, list(body))
    assert says in body["error"]
    assert None is sim.data.submissions[(101, assignment)][101]["grade"]
    assert 0 == sim.stats.applied_writes


async def test_empty_posted_grade_clears_the_grade(http: aiohttp.ClientSession) -> None:
    """An empty posted_grade removes the grade and score, as in Canvas."""
    path = "/api/v1/courses/101/assignments/101003/submissions/101"
    async with http.put(path, data={"submission[posted_grade]": "A"}):
        pass

    async with http.put(path, data={"submission[posted_grade]": ""}) as response:
        body = await response.json()

    assert (200, None, None) == (response.status, body["grade"], body["score"])


async def test_update_grades_applies_the_grading_rules(http: aiohttp.ClientSession) -> None:
    """A bulk update takes letter grades on a letter-graded assignment and fails on a points one."""
    finals = []
    for assignment in (101003, 101001):
        async with http.post(
            f"/api/v1/courses/101/assignments/{assignment}/submissions/update_grades",
            data={"grade_data[101][posted_grade]": "A"},
        ) as response:
            progress = await response.json()
        for _ in range(2):
            _, _, polled = await _get(http, f"/api/v1/progress/{progress['id']}")
        finals.append(polled["workflow_state"])

    assert ["completed", "failed"] == finals
    assert "graded by points" in polled["message"]


async def _enrollments(http: aiohttp.ClientSession, **params: Any) -> list[dict[str, Any]]:
    status, _, body = await _get(http, "/api/v1/courses/101/enrollments", per_page="100", **params)
    assert 200 == status
    return list(body)


@pytest.mark.parametrize(
    ("params", "types", "count"),
    [
        ({}, {"StudentEnrollment", "TeacherEnrollment"}, 41),
        ({"type[]": "StudentEnrollment"}, {"StudentEnrollment"}, 40),
        ({"type": "TeacherEnrollment"}, {"TeacherEnrollment"}, 1),
        ({"role[]": "TeacherEnrollment", "type[]": "StudentEnrollment"}, {"TeacherEnrollment"}, 1),
        ({"type[]": "TaEnrollment"}, set(), 0),
        ({"user_id": "105"}, {"StudentEnrollment"}, 1),
        ({"user_id": "sis_user_id:sis-105"}, {"StudentEnrollment"}, 1),
        ({"sis_user_id[]": "sis-105"}, {"StudentEnrollment"}, 1),
    ],
)
async def test_enrollment_filters(
    http: aiohttp.ClientSession, params: dict[str, str], types: set[str], count: int
) -> None:
    """type[], role[] (which wins over type[]), user_id and sis_user_id[] filter the roster."""
    listed = await _enrollments(http, **params)

    assert (types, count) == ({e["type"] for e in listed}, len(listed))


async def test_enrollment_state_filter_and_default(http: aiohttp.ClientSession) -> None:
    """Without state[] only active and invited enrollments are listed; state[] picks others."""
    async with http.delete("/api/v1/courses/101/enrollments/2") as response:
        assert "completed" == (await response.json())["enrollment_state"]
    async with http.post(
        "/api/v1/courses/101/enrollments", data={"enrollment[user_id]": "150"}
    ) as response:
        invited = await response.json()

    listed = {e["id"] for e in await _enrollments(http)}
    completed = [e["id"] for e in await _enrollments(http, **{"state[]": "completed"})]

    assert "invited" == invited["enrollment_state"]
    assert (False, True) == (2 in listed, invited["id"] in listed)
    assert [2] == completed


async def test_course_filters(http: aiohttp.ClientSession) -> None:
    """enrollment_type and state[] filter the token user's courses."""
    _, _, teaching = await _get(http, "/api/v1/courses", enrollment_type="teacher")
    _, _, studying = await _get(http, "/api/v1/courses", enrollment_type="student")
    _, _, deleted = await _get(http, "/api/v1/courses", **{"state[]": "deleted"})

    assert ([101, 102, 103], [], []) == ([c["id"] for c in teaching], studying, deleted)


async def test_assignment_filters(http: aiohttp.ClientSession) -> None:
    """search_term, assignment_ids[] and order_by narrow and order the assignments."""
    async with http.post(
        "/api/v1/courses/101/assignments",
        data={"assignment[name]": "Essay", "assignment[grading_type]": "letter_grade"},
    ) as response:
        created = await response.json()
    _, _, found = await _get(http, "/api/v1/courses/101/assignments", search_term="ESS")
    async with http.get(
        "/api/v1/courses/101/assignments",
        params=[("assignment_ids[]", "101002"), ("assignment_ids[]", "101004")],
    ) as response:
        chosen = await response.json()
    _, _, by_name = await _get(http, "/api/v1/courses/101/assignments", order_by="name")

    assert ("letter_grade", ["Essay"]) == (created["grading_type"], [a["name"] for a in found])
    assert [101002, 101004] == [a["id"] for a in chosen]
    assert "Assignment 1" == by_name[0]["name"]
    assert "Essay" == by_name[-1]["name"]


async def test_submissions_include_user(http: aiohttp.ClientSession) -> None:
    """include[]=user adds each submission's user, as Canvas does."""
    _, _, plain = await _get(http, "/api/v1/courses/101/assignments/101001/submissions")
    _, _, with_user = await _get(
        http, "/api/v1/courses/101/assignments/101001/submissions", **{"include[]": "user"}
    )

    assert ("user" in plain[0], 101) == (False, with_user[0]["user"]["id"])
