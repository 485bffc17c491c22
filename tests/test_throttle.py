"""Tests for the client-side throttle: admission, pauses, fairness, learning."""

from __future__ import annotations

import asyncio
import math

import pytest
from structlog.testing import capture_logs

from resilient_canvas import CanvasClient, Observation, Throttle, ThrottleConfig
from resilient_canvas.testing import (
    CanvasSimulator,
    FakeClock,
    RouteProfile,
    SimulatorSettings,
    set_testing,
)


def make(clock: FakeClock, **config: object) -> Throttle:
    return Throttle(ThrottleConfig(**config), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def settle(throttle: Throttle, remaining: float, cost: float = 0.01) -> None:
    """Seed the model with one observation made alone in flight."""
    permit = await throttle.acquire()
    throttle.release(permit, Observation(remaining=remaining, cost=cost))


async def blocked(awaitable: asyncio.Future[object] | asyncio.Task[object]) -> bool:
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return not awaitable.done()


async def test_headerless_concurrency_until_headers_appear() -> None:
    """Without quota headers the throttle allows headerless_in_flight requests."""
    throttle = make(FakeClock(), headerless_in_flight=3)
    permits = [await throttle.acquire() for _ in range(3)]
    fourth = asyncio.ensure_future(throttle.acquire())

    assert await blocked(fourth)
    throttle.release(permits[0])
    await fourth
    assert 3 == throttle.estimate().in_flight


async def test_idle_bucket_admits_eleven() -> None:
    """At Canvas's defaults an idle bucket admits 11 in flight; the 12th waits."""
    clock = FakeClock()
    throttle = make(clock, margin=0.0, learn=False)
    await settle(throttle, 600.0, cost=0.0)
    permits = [await throttle.acquire() for _ in range(11)]
    twelfth = asyncio.ensure_future(throttle.acquire())

    assert await blocked(twelfth)
    assert 11 == throttle.estimate().in_flight_limit
    throttle.release(permits[0], Observation(remaining=100.0, cost=0.0))
    await twelfth


async def test_full_bucket_admits_one_after_the_drain_time() -> None:
    """Never starves: with the bucket full, one request starts once the model says it drained."""
    clock = FakeClock()
    throttle = make(clock, margin=10.0, learn=False)
    await settle(throttle, 20.0, cost=0.0)  # count 580

    await throttle.acquire()

    # Needs remaining >= 50 + 10: 40 units to leak at 10/s.
    assert 4.0 == pytest.approx(sum(clock.sleeps), abs=0.01)


async def test_waiters_are_admitted_in_order() -> None:
    """Waiting is FIFO."""
    throttle = make(FakeClock(), headerless_in_flight=1)
    first = await throttle.acquire()
    order: list[int] = []

    async def wait(number: int) -> None:
        permit = await throttle.acquire()
        order.append(number)
        throttle.release(permit)

    tasks = [asyncio.create_task(wait(n)) for n in range(5)]
    await asyncio.sleep(0)
    throttle.release(first)
    await asyncio.gather(*tasks)

    assert [0, 1, 2, 3, 4] == order


async def _heavy_blocked(clock: FakeClock, fits: dict[str, bool]) -> Throttle:
    """A throttle that has seen ten answers after 0.2 s each, and admits a route
    only while *fits* says so (the heavy one does not fit until told)."""
    throttle = make(clock)
    for _ in range(10):
        permit = await throttle.acquire("GET /light")
        clock.advance(0.2)
        throttle.release(permit, Observation(remaining=600.0, cost=0.01))

    def delay(now: float, route: str | None = None) -> float:
        return 0.0 if fits.get(route or "", True) else math.inf

    throttle.model.delay = delay  # type: ignore[method-assign]
    return throttle


async def test_a_light_route_passes_a_heavy_head_that_does_not_fit() -> None:
    """Per-route queues: a request that fits does not wait behind another route's that does not.

    Canvas reserves per path; one queue would hold every light request behind
    a heavy one waiting for room only it needs (mixed jobs ran 1.15x the
    bound that way, 0.8x with per-route queues).
    """
    clock = FakeClock()
    fits = {"GET /heavy": False}
    throttle = await _heavy_blocked(clock, fits)
    heavy = asyncio.ensure_future(throttle.acquire("GET /heavy"))
    assert await blocked(heavy)

    light = await asyncio.wait_for(throttle.acquire("GET /light"), 1.0)

    assert not heavy.done()
    throttle.release(light)


async def test_a_head_waiting_a_typical_round_trip_is_passed_no_more() -> None:
    """No starvation: once the heavy head has waited a median round trip, others wait for it."""
    clock = FakeClock()
    fits = {"GET /heavy": False}
    throttle = await _heavy_blocked(clock, fits)
    order: list[str] = []

    async def call(route: str) -> None:
        permit = await throttle.acquire(route)
        order.append(route)
        throttle.release(permit)

    heavy = asyncio.ensure_future(call("GET /heavy"))
    assert await blocked(heavy)
    clock.advance(0.25)  # longer than the median round trip (0.2 s)
    light = asyncio.ensure_future(call("GET /light"))
    assert await blocked(light)
    assert 2 == throttle.waiting

    fits["GET /heavy"] = True
    throttle._notify()  # a release: the heads look again
    await asyncio.wait_for(asyncio.gather(heavy, light), 1.0)

    assert ["GET /heavy", "GET /light"] == order
    assert 0 == throttle.waiting


def test_nobody_passes_before_round_trips_are_known() -> None:
    """Until answers show a typical round trip, waiting is FIFO across routes."""
    clock = FakeClock()
    throttle = make(clock)

    assert not throttle.model.may_pass(0.0)


async def test_cancelled_waiter_frees_its_place() -> None:
    """Cancelling the head waiter lets the next one through and leaves nothing behind."""
    throttle = make(FakeClock(), headerless_in_flight=1)
    held = await throttle.acquire()
    head = asyncio.ensure_future(throttle.acquire())
    second = asyncio.ensure_future(throttle.acquire())
    await asyncio.sleep(0)

    head.cancel()
    await asyncio.sleep(0)
    throttle.release(held)
    await second

    assert head.cancelled()
    assert 1 == throttle.estimate().in_flight
    assert 0 == throttle.waiting


async def test_throttle_with_room_left_by_reservations_needs_no_pause() -> None:
    """Throttled while reservations fill the bucket: they free themselves, so no pause."""
    clock = FakeClock()
    throttle = make(clock, margin=10.0, learn=False)
    await settle(throttle, 600.0)
    permits = [await throttle.acquire() for _ in range(6)]
    clock.advance(1.0)

    with capture_logs() as logs:
        throttle.release(permits[0], Observation(remaining=30.0, throttled=True))

    estimate = throttle.estimate()
    assert 0.0 == throttle.pause_remaining()
    assert 1 == estimate.throttled_responses
    assert "canvas.throttle_paused" == logs[0]["event"]
    for permit in permits[1:]:
        throttle.release(permit, Observation(remaining=590.0, cost=0.01))


async def test_throttle_with_a_full_bucket_pauses_for_the_drain_time() -> None:
    """When the count itself is high, the model's wait lasts until one request fits."""
    clock = FakeClock()
    throttle = make(clock, margin=10.0, learn=False)
    await settle(throttle, 600.0)
    permit = await throttle.acquire()

    throttle.release(permit, Observation(remaining=5.0, throttled=True))

    # remaining 5 must reach 50 + 10: 5.5 s at 10/s.
    assert 5.5 == pytest.approx(throttle.pause_remaining())


async def test_throttle_without_headers_backs_off() -> None:
    """A throttled response with no quota header pauses by backoff (0.5 s, doubling)."""
    clock = FakeClock()
    throttle = make(clock)
    for expected in (0.5, 1.0, 2.0):
        permit = await throttle.acquire()
        throttle.release(permit, Observation(throttled=True))
        assert expected == pytest.approx(throttle.pause_remaining())
        clock.advance(expected)


async def test_a_larger_remaining_raises_hwm_and_a_throttle_raises_up_front_cost() -> None:
    """remaining <= hwm always; a throttle says this route reserves about its remaining."""
    clock = FakeClock()
    throttle = make(clock)
    await settle(throttle, 700.0)
    before = throttle.model.up_front_for("GET /x")
    permit = await throttle.acquire("GET /x")
    throttle.release(permit, Observation(remaining=80.0, throttled=True))

    assert 700.0 == pytest.approx(throttle.hwm, abs=0.1)
    assert throttle.model.up_front_for("GET /x") > before


async def test_priors_stay_when_learning_is_off() -> None:
    """learn=False keeps the priors."""
    throttle = make(FakeClock(), learn=False)
    await settle(throttle, 700.0)

    assert 600.0 == throttle.hwm


async def test_route_costs_and_eta() -> None:
    """Costs are averaged per route and drive the ETA of remaining work."""
    clock = FakeClock()
    throttle = make(clock, margin=0.0, learn=False)
    for _ in range(3):
        permit = await throttle.acquire("GET /api/v1/courses/:id")
        throttle.release(permit, Observation(remaining=600.0, cost=2.0))

    assert 2.0 == throttle.route_cost("GET /api/v1/courses/:id")
    # 1000 calls x 2.0 = 2000 units; 600 fit at once, 1400 leak at 10/s.
    assert 140.0 == pytest.approx(throttle.eta(1000, "GET /api/v1/courses/:id"))


async def test_release_is_idempotent() -> None:
    """Releasing a permit twice changes nothing the second time."""
    throttle = make(FakeClock())
    permit = await throttle.acquire()
    throttle.release(permit)
    throttle.release(permit)

    assert 0 == throttle.estimate().in_flight


async def test_testing_mode_skips_the_wait_but_not_the_decision() -> None:
    """In testing mode the model's wait passes on a virtual clock: same decision, no sleep."""
    clock = FakeClock()
    throttle = make(clock, learn=False)
    await settle(throttle, 0.0)
    set_testing(True)
    waited_before = throttle.pause_remaining()

    await throttle.acquire()

    assert [] == clock.sleeps
    assert waited_before == pytest.approx(throttle._skipped, abs=0.05)


def test_config_validation() -> None:
    """Non-positive priors are refused."""
    with pytest.raises(ValueError, match="positive"):
        ThrottleConfig(outflow=0)


async def test_paced_client_avoids_throttles_on_the_simulator() -> None:
    """Against the simulator (shared virtual clock), 300 costly calls at once: none throttled."""
    clock = FakeClock()
    profile = RouteProfile(service_time=0.05, cost_rate=8.0, base_cost=0.0, jitter=0.0)
    settings = SimulatorSettings(default_route=profile)
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        throttle = Throttle(clock=clock, sleep=clock.sleep)
        async with CanvasClient(
            sim.base_url, sim.token, throttle=throttle, clock=clock, sleep=clock.sleep
        ) as canvas:
            result = await canvas.map(lambda _: canvas.get("courses/101"), range(300))

    assert 0 == len(result.failures)
    assert sim.stats.throttled <= 3
    assert sim.stats.peak_in_flight <= 11


async def test_resilient_feeds_successes_back_to_its_throttle() -> None:
    """r14: @resilient(throttle=...) releases every success, so a throttle's cut heals."""
    from resilient_canvas import classify_response, resilient

    throttle = make(FakeClock(), headerless_in_flight=8)
    calls = 0

    @resilient(throttle=throttle, idempotent=True)
    async def fetch(index: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        if calls == 20:
            raise classify_response(429, {}, b"429 Too Many Requests (Rate Limit Exceeded)")
        return index

    set_testing(True)
    await asyncio.gather(*(fetch(i) for i in range(40)))
    assert throttle.estimate().throttled_responses >= 1
    await asyncio.gather(*(fetch(i) for i in range(200)))

    assert 8 == throttle.estimate().in_flight_limit


async def test_headerless_server_recovers_after_one_throttle() -> None:
    """r1b: a proxy strips the quota headers and one 429 comes: concurrency comes back."""
    from aiohttp import web

    state = {"n": 0, "in_flight": 0, "peak_after": 0}

    async def handler(request: web.Request) -> web.Response:
        state["n"] += 1
        number = state["n"]
        state["in_flight"] += 1
        if number > 100:
            state["peak_after"] = max(state["peak_after"], state["in_flight"])
        try:
            # Long enough that eight requests overlap at the server whatever
            # the machine's load (at 2 ms a busy machine saw 6 or 7 at once).
            await asyncio.sleep(0.02)
            if number == 30:
                return web.Response(status=429, text="Too Many Requests")
            return web.json_response({"id": number})
        finally:
            state["in_flight"] -= 1

    app = web.Application()
    app.router.add_get("/api/v1/x/{i}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    set_testing(True)
    try:
        async with CanvasClient(f"http://127.0.0.1:{port}", "tok", throttle=Throttle()) as canvas:
            result = await canvas.map(lambda i: canvas.get(f"x/{i}"), range(300))
    finally:
        await runner.cleanup()

    assert 0 == len(result.failures)
    assert 8 == state["peak_after"]


def test_a_probe_is_marked_as_one_on_a_clock_that_moves_between_calls() -> None:
    """A request admitted beyond the model's caution is a probe, whatever the clock does.

    Regression: the model matched the probe by the time of ``delay()`` and of
    ``admit()``, which the throttle read separately: with ``time.monotonic``
    they never matched, so no probe was ever marked in production, and a
    probe's throttle was charged to the user's calls, not to the estimate.
    """
    ticks = iter(range(1_000_000))
    throttle = Throttle(clock=lambda: next(ticks) * 1e-6)
    model = throttle.model
    first = throttle.try_acquire()
    assert first is not None
    # Canvas shows less room than one reservation: only a probe may go.
    throttle.release(first, Observation(remaining=30.0, cost=0.1))
    model._may_probe = lambda free, doubt: True  # type: ignore[method-assign]

    permit = throttle.try_acquire()

    assert permit is not None
    assert permit.probe
