"""Tests for the circuit breaker: its sans-IO decisions, and calls held through an outage."""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from resilient_canvas import (
    BreakerSettings,
    CanvasClient,
    CircuitBreaker,
    CircuitOpen,
    CircuitState,
    RetryPolicy,
    Throttle,
    ThrottleConfig,
    breaker_for,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._breaker import ADMITTED, Admission, Outcome, outcome_of
from resilient_canvas.exceptions import classify_response
from resilient_canvas.testing import CanvasSimulator, FakeClock, SimulatorSettings

FAIL, OK, IGNORED = Outcome.FAILURE, Outcome.SUCCESS, Outcome.IGNORED


def feed(breaker: CircuitBreaker, *outcomes: Outcome) -> None:
    """Send one admitted request per outcome through *breaker*."""
    for outcome in outcomes:
        breaker.finish(breaker.admit(), outcome)


def opened(clock: FakeClock, **settings: float) -> CircuitBreaker:
    """A breaker on *clock*, opened by 10 failures in a row."""
    breaker = CircuitBreaker(BreakerSettings(**settings), clock=clock, name="https://c.test")
    feed(breaker, *[FAIL] * 10)
    assert CircuitState.OPEN == breaker.state
    return breaker


def response_error(status: int, body: bytes = b"", **headers: str) -> exc.CanvasException:
    """The classified error of a response."""
    return classify_response(status, headers, body, method="GET", url="https://c.test/x")


# ------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, OK),
        (response_error(500), FAIL),
        (response_error(502), FAIL),
        (response_error(503, b"<html>maintenance</html>"), FAIL),
        (response_error(504), FAIL),
        (exc.ConnectError("refused"), FAIL),
        (exc.ConnectionDropped("reset"), FAIL),
        (exc.ReadTimeout("hang"), FAIL),
        (response_error(429, **{"X-Rate-Limit-Remaining": "0"}), OK),
        (response_error(403, b"403 Forbidden (Rate Limit Exceeded)"), OK),
        (response_error(404), OK),
        (response_error(408), OK),
        (response_error(422), OK),
        (exc.ThrottleTimeout("deadline"), IGNORED),
        (CircuitOpen("held"), IGNORED),
        (ValueError("unrelated"), IGNORED),
    ],
)
def test_outcome_of_classifies_outage_symptoms_only(
    error: BaseException | None, expected: Outcome
) -> None:
    """5xx and connection failures are failures; throttles and 4xx mean Canvas answered."""
    assert expected == outcome_of(error)


# ------------------------------------------------------------------ opening


def test_closed_breaker_admits_without_bookkeeping() -> None:
    """A closed circuit answers with the shared ADMITTED admission."""
    assert ADMITTED is CircuitBreaker().admit()


def test_does_not_open_below_minimum_throughput() -> None:
    """19 outcomes, half of them failures but never 10 in a row, are not enough evidence."""
    breaker = CircuitBreaker(clock=FakeClock())
    feed(breaker, *[FAIL, FAIL, OK] * 6, FAIL)
    assert (13, 19) == (breaker.estimate().failures, breaker.estimate().total)
    assert CircuitState.CLOSED == breaker.state


def test_consecutive_failures_open_at_once() -> None:
    """Ten failures in a row open the circuit even among many successes (a sudden outage)."""
    breaker = CircuitBreaker(clock=FakeClock())
    feed(breaker, *[OK] * 500, *[FAIL] * 9, OK, *[FAIL] * 9)
    assert CircuitState.CLOSED == breaker.state
    transition = breaker.finish(breaker.admit(), FAIL)
    assert transition is not None
    assert ("open", "consecutive_failures") == (transition.state.value, transition.reason)


def test_opens_at_the_failure_ratio() -> None:
    """Half failures among 20 outcomes opens the circuit, 9 of 20 do not."""
    below, at = CircuitBreaker(clock=FakeClock()), CircuitBreaker(clock=FakeClock())
    feed(below, *[OK, FAIL] * 9, OK, OK)
    feed(at, *[OK, FAIL] * 10)
    assert (CircuitState.CLOSED, CircuitState.OPEN) == (below.state, at.state)
    assert 1 == at.estimate().opened


def test_throttling_and_client_errors_never_open() -> None:
    """A storm of 429s and 404s is Canvas answering: the circuit stays closed."""
    breaker = CircuitBreaker(clock=FakeClock())
    errors = [response_error(429), response_error(404), response_error(403, b"Rate Limit Exceeded")]
    feed(breaker, *[outcome_of(errors[i % 3]) for i in range(300)])
    assert CircuitState.CLOSED == breaker.state


def test_old_failures_leave_the_window() -> None:
    """Failures older than the window no longer count toward opening."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    feed(breaker, *[FAIL, OK] * 8)
    clock.advance(11.0)
    feed(breaker, *[FAIL, OK] * 8)
    assert (8, 16) == (breaker.estimate().failures, breaker.estimate().total)
    assert CircuitState.CLOSED == breaker.state


def test_late_failures_while_open_change_nothing() -> None:
    """Answers to requests sent before opening neither extend nor close the outage."""
    clock = FakeClock()
    breaker = opened(clock)
    before = breaker.estimate()
    breaker.finish(ADMITTED, FAIL)
    breaker.finish(ADMITTED, OK)
    assert before == breaker.estimate()


# ------------------------------------------------------------ open, probing


def test_open_holds_calls_until_the_probe_is_due() -> None:
    """While open every call waits for the probe time, then exactly one probes."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(2.0)
    held = breaker.admit()
    assert Admission(False, wait=3.0, next_probe_in=3.0, down_for=2.0) == held
    clock.advance(3.0)
    probe = breaker.admit()
    assert (True, True) == (probe.go, probe.probe)
    assert CircuitState.HALF_OPEN == breaker.state
    others = [breaker.admit() for _ in range(50)]
    assert [False] * 50 == [admission.go for admission in others]
    assert 1 == breaker.estimate().probes


def test_failed_probe_reopens_with_a_doubled_break_up_to_the_cap() -> None:
    """Each failed probe doubles the wait for the next one, up to max_break_duration."""
    clock = FakeClock()
    breaker = opened(clock, break_duration=5.0, max_break_duration=15.0)
    waits = []
    for _ in range(3):
        clock.advance(breaker.admit().wait)
        breaker.finish(breaker.admit(), FAIL)
        waits.append(breaker.estimate().next_probe_in_s)
    assert [10.0, 15.0, 15.0] == waits
    assert CircuitState.OPEN == breaker.state


def test_cancelled_probe_lets_another_call_probe_at_once() -> None:
    """A probe that ends without an answer does not delay the next probe."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(5.0)
    breaker.finish(breaker.admit(), IGNORED)
    assert breaker.admit().probe


def test_lost_probe_frees_the_circuit_after_probe_timeout() -> None:
    """Regression: a probe never reported wedged the circuit half-open for good.

    A probe's call can end before it is sent (its deadline passes while it
    waits for a throttle place, or it is cancelled) without telling the
    breaker; after ``probe_timeout`` another call probes, and the lost
    probe's late answer decides nothing.
    """
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(5.0)
    lost = breaker.admit()
    clock.advance(BreakerSettings().probe_timeout - 0.1)
    assert not breaker.admit().go
    clock.advance(0.1)
    second = breaker.admit()
    assert (True, True, 2) == (lost.probe, second.probe, breaker.estimate().probes)
    assert breaker.take_transition() is not None
    breaker.finish(lost, OK)
    assert CircuitState.HALF_OPEN == breaker.state
    breaker.finish(second, OK)
    assert CircuitState.CLOSED == breaker.state


async def test_probe_that_never_got_a_throttle_place_frees_the_circuit_at_once() -> None:
    """A probe whose deadline passes while it waits for a throttle place is no probe.

    Regression: it left the circuit half-open until ``probe_timeout`` (30 s).
    """
    from resilient_canvas._retry import CallInfo, _enter

    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(5.0)
    probe = breaker.admit()
    full = Throttle(ThrottleConfig(max_in_flight=1))
    held = full.try_acquire()

    with pytest.raises(exc.CanvasException):
        await _enter(breaker, probe, full, CallInfo(), lambda: 0.01, asyncio.sleep)
    next_call = breaker.admit()

    assert (True, True) == (probe.probe, next_call.probe)
    assert held is not None
    full.release(held)


def test_successful_probe_closes_and_releases_gradually() -> None:
    """After a good probe, calls in flight start at 1 and double until the release ends."""
    clock = FakeClock()
    breaker = opened(clock, release_duration=5.0)
    clock.advance(5.0)
    breaker.finish(breaker.admit(), OK)
    assert CircuitState.CLOSED == breaker.state
    assert [True, False] == [breaker.admit().go, breaker.admit().go]
    clock.advance(1.0)  # two steps of 0.5 s: 4 in flight
    assert [True, True, True, False] == [breaker.admit().go for _ in range(4)]
    clock.advance(4.0)
    assert ADMITTED is breaker.admit()


def test_transitions_report_reason_and_counts() -> None:
    """Opening, probing and closing each report a transition with their reason."""
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, name="https://c.test")
    feed(breaker, *[OK] * 10, *[FAIL] * 9)
    opening = breaker.finish(breaker.admit(), FAIL)
    clock.advance(5.0)
    probe = breaker.admit()
    half_open = breaker.take_transition()
    closing = breaker.finish(probe, OK)
    assert opening is not None
    assert half_open is not None
    assert closing is not None
    assert [
        ("open", "consecutive_failures", 10, 20, 0.0),
        ("half_open", "break_elapsed", 0, 20, 5.0),
        ("closed", "probe_succeeded", 0, 20, 5.0),
    ] == [
        (t.state.value, t.reason, t.failures if t is opening else 0, t.total, t.down_for_s)
        for t in (opening, half_open, closing)
    ]
    assert breaker.take_transition() is None


def test_estimate_reads_like_the_throttle_estimate() -> None:
    """The snapshot says how long Canvas has been down and when the next probe goes."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(1.5)
    breaker.admit()
    estimate = breaker.estimate()
    assert (CircuitState.OPEN, 1.5, 3.5, 1, 1) == (
        estimate.state,
        estimate.down_for_s,
        estimate.next_probe_in_s,
        estimate.opened,
        estimate.waits,
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"failure_ratio": 0.0},
        {"failure_ratio": 1.5},
        {"minimum_throughput": 0},
        {"consecutive_failures": 0},
        {"window": 0.0},
        {"break_duration": -1.0},
        {"break_duration": 10.0, "max_break_duration": 5.0},
    ],
)
def test_settings_refuse_nonsense(settings: dict[str, float]) -> None:
    """Settings that would never open, or open on anything, are refused."""
    with pytest.raises(ValueError, match="must"):
        BreakerSettings(**settings)  # type: ignore[arg-type]


def test_registry_shares_one_breaker_per_origin() -> None:
    """Every client on an origin gets the same circuit; another origin its own."""
    assert breaker_for("https://a.test") is breaker_for("https://a.test")
    assert breaker_for("https://a.test") is not breaker_for("https://b.test")


# ------------------------------------------------------- through the client


class FastClock:
    """Real time sped up SPEED times, for the client and the simulator alike.

    The default settings (5 s break, 120 s deadline) then run in a fraction
    of a second, every real sleep well under 0.1 s.
    """

    def __init__(self, speed: float = 50.0) -> None:
        self.speed = speed
        self._origin = time.monotonic()

    def __call__(self) -> float:
        return 1_000.0 + (time.monotonic() - self._origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


async def test_outage_shorter_than_deadline_loses_no_call() -> None:
    """Regression (issue 19): 300 GETs through a 10 s maintenance window all succeed.

    Before the breaker every one failed, the retry budget spent; now the
    calls are held and only the probes reach the server while it is down.
    """
    clock = FastClock()
    settings = SimulatorSettings.instant()
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        sim.maintenance(10.0)
        async with CanvasClient(
            sim.base_url, sim.token, throttle=Throttle(), clock=clock, sleep=clock.sleep
        ) as canvas:
            with capture_logs() as logs:
                results = await asyncio.gather(
                    *(canvas.get(f"courses/{101 + i % 3}") for i in range(300)),
                    return_exceptions=True,
                )
            estimate = canvas.breaker.estimate() if canvas.breaker else None
    failures = [r for r in results if isinstance(r, BaseException)]
    assert [] == failures
    assert estimate is not None
    assert 1 == estimate.opened
    assert estimate.probes <= 4
    # Down-time requests: those that opened the circuit, those already in flight
    # then (at most the throttle's cap), and the probes; no retry storm.
    in_flight_cap = Throttle().config.max_in_flight
    opening = BreakerSettings().consecutive_failures
    assert sim.stats.faults["maintenance"] <= opening + in_flight_cap + estimate.probes
    events = [e["event"] for e in logs if e["event"].startswith("canvas.circuit")]
    assert "canvas.circuit_opened" == events[0]
    assert "canvas.circuit_closed" == events[-1]
    assert "canvas.circuit_half_open" in events


async def test_outage_longer_than_deadline_fails_fast_with_circuit_open() -> None:
    """With the next probe past the deadline, held calls fail at once, well within it."""
    clock = FastClock()
    async with CanvasSimulator(SimulatorSettings.instant(), clock=clock, sleep=clock.sleep) as sim:
        sim.maintenance(600.0)
        policy = RetryPolicy(deadline=30.0)
        async with CanvasClient(
            sim.base_url,
            sim.token,
            policy=policy,
            throttle=Throttle(),
            clock=clock,
            sleep=clock.sleep,
        ) as canvas:
            started = clock()
            results = await asyncio.gather(
                *(canvas.get("courses/101") for _ in range(100)), return_exceptions=True
            )
            elapsed = clock() - started
    assert {CircuitOpen} == {type(r) for r in results}
    assert elapsed < 30.0
    first = results[0]
    assert isinstance(first, CircuitOpen)
    assert "circuit_open" == (first.attempts.gave_up_because if first.attempts else None)
    assert first.quiet
    assert first.down_for >= 0.0
    assert sim.token not in str(first) + repr(first)


async def test_circuit_open_message_names_downtime_and_next_probe() -> None:
    """CircuitOpen says how long Canvas has been down and when the next probe goes."""
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(4.0)
    async with CanvasClient(
        "http://127.0.0.1:9", "secret-token", throttle=None, breaker=breaker, clock=clock
    ) as canvas:
        with pytest.raises(CircuitOpen) as caught:
            await canvas.get("courses/1", deadline=0.5)
    error = caught.value
    assert (4.0, 1.0, False) == (error.down_for, error.next_probe_in, error.request_sent)
    assert "has been failing for 4.0 s" in str(error)
    assert "next probe is in 1.0 s" in str(error)


async def test_clients_on_one_origin_share_the_circuit() -> None:
    """Two clients with different tokens on one Canvas hold together."""
    async with (
        CanvasClient("https://canvas.test", "token-one", throttle=None) as one,
        CanvasClient("https://canvas.test/", "token-two", throttle=None) as two,
    ):
        assert one.breaker is two.breaker


async def test_breaker_none_disables_holding() -> None:
    """breaker=None sends every attempt, as before the breaker existed."""
    async with CanvasClient("https://canvas.test", "t", throttle=None, breaker=None) as canvas:
        assert canvas.breaker is None
