"""Tests for @resilient and the retry engine: decisions, waits, deadline, cancellation, logs."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import tenacity
from aiohttp import web
from structlog.testing import capture_logs

from resilient_canvas import (
    BudgetSettings,
    CanvasClient,
    RetryBudget,
    RetryPolicy,
    raise_for_canvas_status,
    resilient,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._retry import call_with_retries
from resilient_canvas.exceptions import classify_response
from resilient_canvas.testing import (
    CanvasSimulator,
    FakeClock,
    Fault,
    FaultSettings,
    SimulatorSettings,
    set_testing,
)


class Failing:
    """A coroutine that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def throttled(remaining: str = "0.0") -> exc.CanvasException:
    return classify_response(
        403,
        {"X-Rate-Limit-Remaining": remaining},
        b"403 Forbidden (Rate Limit Exceeded)\n",
        method="GET",
        url="https://c.test/api/v1/courses",
    )


def unavailable(retry_after: str | None = None, method: str = "GET") -> exc.CanvasException:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return classify_response(
        503, headers, b"<html>down</html>", method=method, url="https://c.test/api/v1/x"
    )


def decorated(
    target: Callable[[], Awaitable[str]], clock: FakeClock, **options: Any
) -> Callable[[], Awaitable[str]]:
    @resilient(clock=clock, sleep=clock.sleep, **options)
    async def call() -> str:
        return await target()

    return call


# ------------------------------------------------------------ reason x method


@pytest.fixture
async def sim_and_clock() -> AsyncIterator[tuple[CanvasSimulator, FakeClock]]:
    """A simulator and client sharing one virtual clock."""
    clock = FakeClock()
    async with CanvasSimulator(
        SimulatorSettings.instant(), clock=clock, sleep=clock.sleep
    ) as simulator:
        yield simulator, clock


def _schedule(sim: CanvasSimulator, fault: Fault) -> None:
    sim.reset()
    object.__setattr__(sim._canvas._faults.settings, "schedule", {1: fault})


CALLS = {
    "GET": ("GET", "courses/101", None),
    "PUT": (
        "PUT",
        "courses/101/assignments/101001/submissions/101",
        {"submission": {"posted_grade": "9"}},
    ),
    "DELETE": ("DELETE", "courses/101", None),
    # A route without a built-in check: the failure is raised as it is (issue 18).
    "POST": ("POST", "courses/101/assignments", {"assignment": {"name": "Quiz"}}),
}


@pytest.mark.parametrize(
    ("fault", "method", "retried"),
    [
        (Fault.MAINTENANCE, "GET", True),
        (Fault.MAINTENANCE, "PUT", True),
        (Fault.MAINTENANCE, "POST", True),
        (Fault.BAD_GATEWAY, "GET", True),
        (Fault.BAD_GATEWAY, "PUT", True),
        (Fault.BAD_GATEWAY, "POST", False),
        (Fault.GATEWAY_TIMEOUT, "GET", True),
        (Fault.GATEWAY_TIMEOUT, "PUT", True),
        (Fault.GATEWAY_TIMEOUT, "POST", False),
        # A complete 200 that is not JSON is the same next time (issue 14 §3).
        (Fault.MALFORMED_JSON, "GET", False),
        (Fault.MALFORMED_JSON, "POST", False),
        (Fault.SERVER_ERROR, "GET", False),
        (Fault.SERVER_ERROR, "POST", False),
    ],
)
async def test_reason_by_method(
    sim_and_clock: tuple[CanvasSimulator, FakeClock], fault: Fault, method: str, retried: bool
) -> None:
    """Not-applied failures are retried for any method; maybe-applied ones only when idempotent."""
    sim, clock = sim_and_clock
    _schedule(sim, fault)
    http_method, path, data = CALLS[method]
    async with CanvasClient(
        sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep
    ) as canvas:
        if retried:
            await canvas.request(http_method, path, data=data)
        else:
            with pytest.raises(exc.CanvasException) as raised:
                await canvas.request(http_method, path, data=data)
            assert 1 == raised.value.attempts.count  # type: ignore[union-attr]

    assert (2 if retried else 1) == sim.stats.requests
    assert 0 == sim.stats.duplicate_writes


async def test_declared_idempotent_post_is_retried_after_gateway_timeout(
    sim_and_clock: tuple[CanvasSimulator, FakeClock],
) -> None:
    """idempotent=True lets a POST be repeated after a failure that may have applied."""
    sim, clock = sim_and_clock
    _schedule(sim, Fault.GATEWAY_TIMEOUT)
    async with CanvasClient(
        sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep
    ) as canvas:
        await canvas.post(
            "courses/101/assignments", data={"assignment": {"name": "Quiz"}}, idempotent=True
        )

    assert 2 == sim.stats.requests


async def test_throttled_post_is_retried_and_applied_once(
    sim_and_clock: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A throttled POST never reached Canvas, so it is retried and applied exactly once."""
    sim, clock = sim_and_clock
    for _ in range(12):
        sim.bucket().reserve()
    async with CanvasClient(
        sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep
    ) as canvas:
        created = await canvas.post(
            "courses/101/enrollments", data={"enrollment": {"user_id": 101}}
        )

    assert 101 == created["user_id"]
    assert (1, 1, 0) == (sim.stats.throttled, sim.stats.applied_writes, sim.stats.duplicate_writes)
    # The wait came from the bucket model: (50 + 5 - 0) / 10 s, plus < 0.25 s jitter.
    assert 5.5 <= clock.sleeps[-1] < 5.75


async def test_could_not_connect_is_retried_for_post() -> None:
    """A refused connection never sent the POST, so it is retried; attempts run out."""
    clock = FakeClock()
    async with CanvasSimulator() as sim:
        url = sim.base_url
    policy = RetryPolicy(attempts=3)
    async with CanvasClient(
        url, "t", throttle=None, policy=policy, clock=clock, sleep=clock.sleep
    ) as canvas:
        with pytest.raises(exc.ConnectError) as raised:
            await canvas.post("courses/1/enrollments", data={"x": 1})

    history = raised.value.attempts
    assert history is not None
    assert (3, "attempts_exhausted") == (history.count, history.gave_up_because)
    assert ["connect_error"] * 3 == history.reasons


async def test_read_timeout_retried_for_get_not_for_post() -> None:
    """A real, short per-attempt timeout: GET is retried, POST raises ReadTimeout at once."""
    faults = FaultSettings(schedule={1: Fault.HANG, 2: Fault.HANG, 3: Fault.HANG}, hang_seconds=1.0)
    policy = RetryPolicy(attempt_timeout=0.05, attempts=2)
    clock = FakeClock()
    async with CanvasSimulator(SimulatorSettings(faults=faults)) as sim:
        async with CanvasClient(
            sim.base_url, sim.token, throttle=None, policy=policy, clock=clock, sleep=clock.sleep
        ) as canvas:
            with pytest.raises(exc.ReadTimeout) as post_error:
                await canvas.post("courses/101/assignments", data={"assignment": {"name": "Q"}})
            with pytest.raises(exc.ReadTimeout) as get_error:
                await canvas.get("courses/101")

    assert 1 == post_error.value.attempts.count  # type: ignore[union-attr]
    assert "may_have_been_applied" == post_error.value.attempts.gave_up_because  # type: ignore[union-attr]
    assert 2 == get_error.value.attempts.count  # type: ignore[union-attr]


async def test_dropped_post_is_not_repeated(
    sim_and_clock: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A POST without a check whose connection dropped after the write is raised, not repeated."""
    sim, clock = sim_and_clock
    _schedule(sim, Fault.DROP_AFTER_WRITE)
    async with CanvasClient(
        sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep
    ) as canvas:
        with pytest.raises(exc.ConnectionDropped) as raised:
            await canvas.post("courses/101/assignments", data={"assignment": {"name": "Quiz"}})

    assert raised.value.may_have_been_applied
    assert (1, 0) == (sim.stats.applied_writes, sim.stats.duplicate_writes)


async def test_response_is_released_before_retrying(
    sim_and_clock: tuple[CanvasSimulator, FakeClock],
) -> None:
    """With a one-connection pool, a retry only proceeds if the failed response was released."""
    sim, clock = sim_and_clock
    _schedule(sim, Fault.MAINTENANCE)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=5)
    ) as session:
        async with CanvasClient(
            sim.base_url, sim.token, throttle=None, session=session, clock=clock, sleep=clock.sleep
        ) as canvas:
            assert 101 == (await canvas.get("courses/101"))["id"]


# ------------------------------------------------------------------ waits


@pytest.mark.parametrize(
    ("retry_after", "expected_wait", "source"),
    [("2", 2.0, "server"), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, "server")],
)
async def test_retry_after_is_honoured(retry_after: str, expected_wait: float, source: str) -> None:
    """Retry-After in seconds or as an HTTP date sets the wait."""
    clock = FakeClock()
    target = Failing(unavailable(retry_after))

    with capture_logs() as logs:
        assert "ok" == await decorated(target, clock)()

    assert [expected_wait] == clock.sleeps
    assert source == logs[0]["wait_source"]


async def test_garbage_retry_after_falls_back_to_backoff() -> None:
    """An unreadable Retry-After is ignored: full-jitter backoff below the first ceiling."""
    clock = FakeClock()

    with capture_logs() as logs:
        await decorated(Failing(unavailable("soon-ish")), clock)()

    assert "backoff" == logs[0]["wait_source"]
    assert 0.0 <= clock.sleeps[0] <= 0.5


@pytest.mark.parametrize("hint", ["86400", "61"])
async def test_absurd_retry_after_fails_fast_with_hint(hint: str) -> None:
    """A server asking for more than max_wait makes the call fail at once, hint attached."""
    clock = FakeClock()
    target = Failing(unavailable(hint))

    with pytest.raises(exc.ServiceUnavailable) as raised:
        await decorated(target, clock)()

    assert [] == clock.sleeps
    assert float(hint) == raised.value.wait_hint
    assert "wait_exceeds_cap" == raised.value.attempts.gave_up_because  # type: ignore[union-attr]


async def test_never_sleeps_past_the_deadline() -> None:
    """A wait that would cross the deadline is not taken; the call fails with the hint."""
    clock = FakeClock()
    policy = RetryPolicy(deadline=10.0)
    target = Failing(unavailable("4"), unavailable("4"), unavailable("4"))

    with pytest.raises(exc.ServiceUnavailable) as raised:
        await decorated(target, clock, policy=policy)()

    assert [4.0, 4.0] == clock.sleeps
    assert "wait_exceeds_deadline" == raised.value.attempts.gave_up_because  # type: ignore[union-attr]
    assert 4.0 == raised.value.wait_hint


async def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    """Backoff waits lie in [0, min(cap, base * 2^(n-1))]."""
    clock = FakeClock()
    policy = RetryPolicy(attempts=8, backoff_base=1.0, backoff_cap=4.0, max_wait=60)
    target = Failing(*(unavailable() for _ in range(7)))

    await decorated(target, clock, policy=policy)()

    ceilings = [1, 2, 4, 4, 4, 4, 4]
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(clock.sleeps, ceilings, strict=True))


async def test_throttle_wait_comes_from_remaining_header() -> None:
    """A throttle without Retry-After waits for the bucket to drain, from the header."""
    clock = FakeClock()

    await decorated(Failing(throttled("-20")), clock)()

    # (50 + 5 - (-20)) / 10 = 7.5 s, plus up to 0.25 s of jitter.
    assert 7.5 <= clock.sleeps[0] < 7.75


# ------------------------------------------------------- what is not retried


async def test_last_classified_exception_is_raised_with_history() -> None:
    """When attempts run out the last real exception is raised, never tenacity.RetryError."""
    clock = FakeClock()
    last = unavailable("1")
    target = Failing(unavailable("1"), unavailable("1"), last)

    with pytest.raises(exc.ServiceUnavailable) as raised:
        await decorated(target, clock, policy=RetryPolicy(attempts=3))()

    assert raised.value is last
    assert not isinstance(raised.value, tenacity.RetryError)
    history = raised.value.attempts
    assert history is not None
    assert (3, 2.0, ["unavailable"] * 3) == (history.count, history.total_wait_s, history.reasons)


async def test_unrelated_exceptions_pass_through_untouched() -> None:
    """A KeyError from user code is raised as is, after one call."""
    clock = FakeClock()
    error = KeyError("x")
    target = Failing(error)

    with pytest.raises(KeyError) as raised:
        await decorated(target, clock)()

    assert (raised.value, target.calls) == (error, 1)


async def test_cancellation_is_never_retried() -> None:
    """CancelledError propagates after one call, whatever the policy."""
    clock = FakeClock()
    target = Failing(asyncio.CancelledError())

    with pytest.raises(asyncio.CancelledError):
        await decorated(target, clock)()

    assert 1 == target.calls


async def test_cancelling_during_a_backoff_sleep_returns_at_once() -> None:
    """A task cancelled while waiting to retry ends promptly and never calls again."""
    scheduled = asyncio.Event()
    target = Failing(unavailable("30"))

    async def sleep(seconds: float) -> None:
        scheduled.set()
        await asyncio.sleep(seconds)

    @resilient(sleep=sleep)
    async def call() -> str:
        return await target()

    task = asyncio.create_task(call())
    await scheduled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1.0)
    assert 1 == target.calls


async def test_permission_errors_are_not_retried() -> None:
    """A permission 403 is raised after one attempt."""
    clock = FakeClock()
    target = Failing(classify_response(403, {}, b'{"errors":[{"message":"no"}]}', method="GET"))

    with pytest.raises(exc.Forbidden) as raised:
        await decorated(target, clock)()

    assert (1, "not_retryable") == (target.calls, raised.value.attempts.gave_up_because)  # type: ignore[union-attr]


async def test_unknown_method_maybe_applied_needs_declaration() -> None:
    """A decorated call of unknown method retries a maybe-applied failure only if declared."""
    clock = FakeClock()

    with pytest.raises(exc.ReadTimeout):
        await decorated(Failing(exc.ReadTimeout("t")), clock)()
    assert "ok" == await decorated(Failing(exc.ReadTimeout("t")), clock, idempotent=True)()


async def test_aiohttp_errors_are_classified_and_retried() -> None:
    """Raw aiohttp errors from hand-written code are classified before deciding."""
    clock = FakeClock()
    target = Failing(aiohttp.ServerDisconnectedError(), TimeoutError())

    assert "ok" == await decorated(target, clock, idempotent=True)()
    assert 3 == target.calls


# ------------------------------------------------------------- budget, state


async def test_retry_budget_stops_a_retry_storm() -> None:
    """Once the shared budget is spent, failures are raised at once."""
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(capacity=10, retry_cost=5))
    target = Failing(*(unavailable("0") for _ in range(10)))

    with pytest.raises(exc.ServiceUnavailable) as raised:
        await decorated(target, clock, budget=budget)()

    assert 3 == target.calls
    assert "retry_budget_exhausted" == raised.value.attempts.gave_up_because  # type: ignore[union-attr]


async def test_success_refunds_the_budget() -> None:
    """A success after retries gives back what it spent."""
    clock = FakeClock()
    budget = RetryBudget(BudgetSettings(capacity=100, retry_cost=5))

    await decorated(Failing(unavailable("0"), unavailable("0")), clock, budget=budget)()

    assert 100 == budget.tokens


async def test_concurrent_calls_keep_separate_attempt_state() -> None:
    """100 concurrent calls each see their own attempts (unlike tenacity #93)."""
    clock = FakeClock()
    targets = [Failing(*(unavailable("0") for _ in range(n % 4))) for n in range(100)]

    @resilient(clock=clock, sleep=clock.sleep)
    async def call(index: int) -> int:
        await targets[index]()
        return index

    assert list(range(100)) == await asyncio.gather(*(call(n) for n in range(100)))
    assert [n % 4 + 1 for n in range(100)] == [target.calls for target in targets]


async def test_testing_mode_makes_waits_zero_and_caps_attempts() -> None:
    """set_testing(True) turns every wait to zero; attempts= caps the attempts."""
    recorded: list[float] = []

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)

    set_testing(True, attempts=2)

    @resilient(sleep=sleep)
    async def call() -> str:
        return await target()

    target = Failing(unavailable("9"), unavailable("9"))
    with pytest.raises(exc.ServiceUnavailable):
        await call()

    assert ([0.0], 2) == (recorded, target.calls)


# --------------------------------------------------------------------- logs


async def test_retry_and_failure_events_are_structured() -> None:
    """Whole events: constant names, flat fields, rounded floats, quiet without traceback."""
    clock = FakeClock()
    target = Failing(
        unavailable("1.23456"),
        classify_response(
            404, {}, b'{"errors":[{"message":"gone"}]}', method="GET", url="https://c.test/x"
        ),
    )

    with capture_logs() as logs, pytest.raises(exc.ResourceDoesNotExist):
        await decorated(target, clock)()

    label = "decorated.<locals>.call"
    assert [
        {
            "event": "canvas.retry_scheduled",
            "log_level": "warning",
            "attempt": 1,
            "reason": "unavailable",
            "method": "GET",
            "url": "https://c.test/api/v1/x",
            "status": 503,
            "rate_limit_remaining": None,
            "request_cost": None,
            "callable": label,
            "wait_s": 1.235,
            "wait_source": "server",
            "deadline_left_s": 120.0,
        },
        {
            "event": "canvas.request_failed",
            "log_level": "warning",
            "attempt": 2,
            "reason": "not_found",
            "method": "GET",
            "url": "https://c.test/x",
            "status": 404,
            "rate_limit_remaining": None,
            "request_cost": None,
            "callable": label,
            "gave_up_because": "not_retryable",
            "total_wait_s": 1.235,
            "wait_hint_s": None,
        },
    ] == logs


async def test_loud_errors_are_logged_with_traceback_at_error() -> None:
    """A non-quiet failure (500) is logged at error level with its traceback as text."""
    clock = FakeClock()
    error = classify_response(500, {}, b"{}", method="GET", url="https://c.test/x")

    with capture_logs() as logs, pytest.raises(exc.ServerError):
        await decorated(Failing(error), clock)()

    assert "error" == logs[0]["log_level"]
    assert "exc_info" not in logs[0]
    assert "resilient_canvas.exceptions.ServerError" in logs[0]["exception"]


async def test_token_never_logged(sim_and_clock: tuple[CanvasSimulator, FakeClock]) -> None:
    """Client logs carry a token fingerprint, never the token."""
    sim, clock = sim_and_clock
    _schedule(sim, Fault.MAINTENANCE)
    with capture_logs() as logs:
        async with CanvasClient(
            sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep
        ) as canvas:
            await canvas.get("courses/101")

    assert sim.token not in repr(logs)
    assert canvas.fingerprint == logs[0]["token"]


# ------------------------------------------------------------ decorator shape


async def test_decorator_works_on_methods_and_keeps_metadata() -> None:
    """@resilient decorates methods and keeps the wrapped name and docstring."""

    class Api:
        @resilient
        async def fetch(self, value: int) -> int:
            """Fetch a value."""
            return value * 2

    assert 4 == await Api().fetch(2)
    assert ("fetch", "Fetch a value.") == (Api.fetch.__name__, Api.fetch.__doc__)


def test_decorator_refuses_plain_functions() -> None:
    """A non-coroutine function is a TypeError at decoration time."""
    with pytest.raises(TypeError, match="coroutine function"):
        resilient(lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"deadline": 0},
        {"backoff_base": 2, "backoff_cap": 1},
        {"retry_on": (KeyError,)},
    ],
)
def test_policy_validation(kwargs: dict[str, Any]) -> None:
    """Nonsensical policies are refused when built."""
    with pytest.raises((ValueError, TypeError)):
        RetryPolicy(**kwargs)


async def test_raise_for_canvas_status_reads_the_legacy_throttle(
    sim_and_clock: tuple[CanvasSimulator, FakeClock],
) -> None:
    """The helper raises RateLimitExceeded for a legacy 403 by reading its body."""
    sim, _ = sim_and_clock
    for _ in range(12):
        sim.bucket().reserve()
    async with aiohttp.ClientSession() as session:
        response = await session.get(
            f"{sim.base_url}/api/v1/courses", headers={"Authorization": f"Bearer {sim.token}"}
        )
        with pytest.raises(exc.RateLimitExceeded) as raised:
            await raise_for_canvas_status(response)

    assert response.closed
    assert 0.0 == raised.value.rate_limit_remaining


async def test_call_with_retries_uses_the_attempt_timeout() -> None:
    """A hanging attempt is cut by the per-attempt timeout and classified."""

    async def hang() -> None:
        await asyncio.sleep(10)

    with pytest.raises(exc.ReadTimeout):
        await call_with_retries(hang, policy=RetryPolicy(attempt_timeout=0.01, attempts=1))


async def test_events_reach_plain_stdlib_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Configured for the stdlib, the library's events land in ordinary logging handlers."""
    import logging

    import structlog

    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        clock = FakeClock()
        with caplog.at_level(logging.WARNING, logger="resilient_canvas"):
            await decorated(Failing(unavailable("1")), clock)()
    finally:
        structlog.reset_defaults()

    record = caplog.records[0]
    assert ("resilient_canvas", logging.WARNING) == (record.name, record.levelno)
    assert record.getMessage().startswith("event='canvas.retry_scheduled'")


async def test_deadline_bounds_the_wait_for_the_throttle() -> None:
    """A call that cannot get a place before its deadline fails as not sent, promptly."""
    from resilient_canvas import Observation, Throttle

    throttle = Throttle()  # real clock: its pause really lasts
    permit = await throttle.acquire()
    throttle.release(permit, Observation(remaining=0.0, throttled=True))
    assert throttle.pause_remaining() > 5

    async def never_called() -> str:
        raise AssertionError("the request must not be sent")

    with pytest.raises(exc.ThrottleTimeout) as raised:
        await call_with_retries(never_called, throttle=throttle, policy=RetryPolicy(deadline=0.05))

    assert raised.value.request_sent is False
    assert not raised.value.may_have_been_applied
    assert "throttle_timeout" == raised.value.attempts.reasons[-1]  # type: ignore[union-attr]


# ------------------------------------------------ deterministic failures (issue 14 §3)


class Counting:
    """An aiohttp server whose answers cannot heal, counting the requests it gets."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.url = ""

    def route(self, answer: Callable[[], web.StreamResponse]) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            return answer()

        return handle


@pytest.fixture
async def counting() -> AsyncIterator[Counting]:
    """Answers that are the same every time: HTML, oversized, not JSON, loops, bad links."""
    server = Counting()

    def loop() -> web.StreamResponse:
        raise web.HTTPFound("/api/v1/loop")

    answers: dict[str, Callable[[], web.StreamResponse]] = {
        "html": lambda: web.Response(
            text="<!DOCTYPE html><html>Log in</html>", content_type="text/html"
        ),
        "big": lambda: web.Response(
            body=b"[" + b"1," * 2000 + b"1]", content_type="application/json"
        ),
        # The guard is stripped (issue 17); what follows it is still cut short.
        "while1": lambda: web.Response(text='while(1);{"id": ', content_type="application/json"),
        "loop": loop,
        "elsewhere": lambda: web.json_response(
            [1], headers={"Link": '<https://evil.test/api/v1/x?page=2>; rel="next"'}
        ),
    }
    app = web.Application()
    for name, answer in answers.items():
        app.router.add_route("*", f"/api/v1/{name}", server.route(answer))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


def _quick_client(url: str, clock: FakeClock) -> CanvasClient:
    return CanvasClient(
        url,
        "tok",
        throttle=None,
        policy=RetryPolicy(attempts=5),
        max_body_size=1024,
        clock=clock,
        sleep=clock.sleep,
    )


@pytest.mark.parametrize(
    ("path", "requests", "match"),
    [
        ("html", 1, "not valid JSON"),
        ("big", 1, "larger than 1,024 bytes"),
        ("while1", 1, "not valid JSON"),
        # aiohttp follows 10 redirects within the one attempt.
        ("loop", 10, "redirect loop"),
    ],
)
async def test_deterministic_failures_get_one_attempt(
    counting: Counting, path: str, requests: int, match: str
) -> None:
    """A complete answer that cannot be used is not retried: one attempt, a clear error."""
    clock = FakeClock()
    async with _quick_client(counting.url, clock) as client:
        with pytest.raises(exc.InvalidResponse, match=match) as raised:
            await client.get(path)

    assert requests == counting.hits[f"/api/v1/{path}"]
    assert (1, "not_retryable") == (
        raised.value.attempts.count,  # type: ignore[union-attr]
        raised.value.attempts.gave_up_because,  # type: ignore[union-attr]
    )
    assert not raised.value.retryable


async def test_a_bad_link_target_is_not_followed_or_retried(counting: Counting) -> None:
    """A next link to another origin stops the listing at once with one request sent."""
    clock = FakeClock()
    async with _quick_client(counting.url, clock) as client:
        with pytest.raises(exc.InvalidResponse, match="another origin"):
            async for _ in client.paginate("elsewhere"):
                pass

    assert 1 == counting.hits["/api/v1/elsewhere"]


async def _raw_server(answer: bytes) -> tuple[asyncio.Server, str, list[int]]:
    """A socket server that answers every request with *answer*, then hangs up."""
    count: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        count.append(1)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", count


TRUNCATED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[1, 2"
RESET = b""


@pytest.mark.parametrize(
    ("answer", "method", "attempts", "error"),
    [
        (TRUNCATED, "GET", 5, exc.InvalidResponse),
        (TRUNCATED, "POST", 1, exc.InvalidResponse),
        (RESET, "GET", 5, exc.ConnectionDropped),
        (RESET, "POST", 1, exc.ConnectionDropped),
    ],
)
async def test_truncated_bodies_and_resets_stay_retryable_by_method(
    answer: bytes, method: str, attempts: int, error: type[exc.CanvasException]
) -> None:
    """A body cut short or a dropped connection is retried when the method allows it."""
    clock = FakeClock()
    server, url, count = await _raw_server(answer)
    async with server, _quick_client(url, clock) as client:
        with pytest.raises(error) as raised:
            await client.request(method, "x")

    # (aiohttp itself may resend an idempotent request once on a closed connection.)
    assert attempts == raised.value.attempts.count  # type: ignore[union-attr]
    assert attempts <= len(count)
    assert raised.value.retryable


async def test_errors_from_decorated_code_keep_the_callers_frames() -> None:
    """Sealing drops the library's frames from a traceback, never the caller's own."""

    @resilient(policy=RetryPolicy(attempts=1))
    async def caller_code() -> None:
        raise exc.BadRequest("The caller refused its own input.")

    with pytest.raises(exc.BadRequest) as raised:
        await caller_code()

    names = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "caller_code" in names
    assert "attempt" not in names


async def test_a_paced_call_waits_out_throttles_that_an_unpaced_one_gives_up_on() -> None:
    """Under a throttle, throttled attempts count against throttled_attempts, not attempts.

    Regression (bench_distributed, processes sharing a token without Redis):
    up to 70 calls of 1,500 failed with "attempts exhausted" after ten
    throttles, though a throttle had made each wait for room and none did
    any work at Canvas.
    """
    from resilient_canvas import Throttle

    clock = FakeClock()
    # Deadline and waits are not what this is about: no headers, so the pauses double.
    policy = RetryPolicy(attempts=3, throttled_attempts=12, deadline=3600, max_wait=3600)

    def throttled_then_ok(throttles: int) -> Callable[[], Awaitable[str]]:
        calls = 0

        async def attempt() -> str:
            nonlocal calls
            calls += 1
            if calls <= throttles:
                raise exc.RateLimitExceeded()
            return "ok"

        return attempt

    paced = Throttle(clock=clock, sleep=clock.sleep)
    result = await call_with_retries(
        throttled_then_ok(11), policy=policy, throttle=paced, clock=clock, sleep=clock.sleep
    )
    with pytest.raises(exc.RateLimitExceeded) as too_many:
        await call_with_retries(
            throttled_then_ok(12), policy=policy, throttle=paced, clock=clock, sleep=clock.sleep
        )
    with pytest.raises(exc.RateLimitExceeded) as unpaced:
        await call_with_retries(
            throttled_then_ok(11), policy=policy, throttle=None, clock=clock, sleep=clock.sleep
        )

    assert "ok" == result
    assert 12 == len(too_many.value.attempts.attempts)  # type: ignore[union-attr]
    assert 3 == len(unpaced.value.attempts.attempts)  # type: ignore[union-attr]
