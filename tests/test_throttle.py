"""Tests for the client-side throttle: admission, pauses, fairness, learning."""

from __future__ import annotations

import asyncio

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
    throttle = make(clock, margin=0.0)
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
    throttle = make(clock, margin=10.0)
    await settle(throttle, 20.0, cost=0.0)  # base 580

    await throttle.acquire()

    # Needs base + 50 + 10 < 600: 40 units to leak at 10/s.
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
    assert 0 == len(throttle._queue)


async def test_throttle_with_a_low_base_halves_concurrency_without_pausing() -> None:
    """Throttled by reservations alone: no pause (they free themselves); the limit halves."""
    clock = FakeClock()
    throttle = make(clock, margin=10.0)
    await settle(throttle, 600.0)
    permits = [await throttle.acquire() for _ in range(6)]
    clock.advance(1.0)

    with capture_logs() as logs:
        throttle.release(permits[0], Observation(remaining=30.0, throttled=True))

    estimate = throttle.estimate()
    # Base = 600 - 30 - 5 others * 50 = 320; 320 + 50 + 10 < 600: no drain needed.
    assert 0.0 == estimate.paused_for_s
    assert 1 == estimate.throttled_responses
    assert "canvas.throttle_paused" == logs[0]["event"]
    assert 2 == logs[0]["in_flight_limit"]
    for permit in permits[1:]:
        throttle.release(permit, Observation(remaining=590.0, cost=0.01))


async def test_throttle_with_a_full_base_pauses_for_the_drain_time() -> None:
    """When the base level itself is high, the shared pause lasts until one request fits."""
    clock = FakeClock()
    throttle = make(clock, margin=10.0)
    await settle(throttle, 600.0)
    permit = await throttle.acquire()

    throttle.release(permit, Observation(remaining=5.0, throttled=True))

    # Base 595: (595 + 50 + 10 - 600) / 10 = 5.5 s.
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


async def test_hwm_and_up_front_cost_are_learnt() -> None:
    """hwm rises to what an idle bucket reports; up_front_cost to a throttled remaining."""
    clock = FakeClock()
    throttle = make(clock)
    await settle(throttle, 700.0)
    permit = await throttle.acquire()
    throttle.release(permit, Observation(remaining=80.0, throttled=True))

    assert (700.0, 80.0) == (throttle.hwm, throttle.up_front_cost)


async def test_priors_stay_when_learning_is_off() -> None:
    """learn=False keeps the priors."""
    throttle = make(FakeClock(), learn=False)
    await settle(throttle, 700.0)

    assert 600.0 == throttle.hwm


async def test_route_costs_and_eta() -> None:
    """Costs are averaged per route and drive the ETA of remaining work."""
    clock = FakeClock()
    throttle = make(clock, margin=0.0)
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


async def test_testing_mode_never_waits_on_time() -> None:
    """In testing mode a full bucket does not make anyone wait."""
    clock = FakeClock()
    throttle = make(clock)
    await settle(throttle, 0.0)
    set_testing(True)

    await throttle.acquire()

    assert [] == clock.sleeps


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
