"""Tests for RedisThrottle against a real redis-server process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from structlog.testing import capture_logs

from resilient_canvas import (
    CanvasClient,
    Observation,
    RedisThrottle,
    ThrottleConfig,
    clear_throttles,
    close_throttles,
)
from resilient_canvas.testing import (
    CanvasSimulator,
    FakeClock,
    RouteProfile,
    SimulatorSettings,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server must be installed in CI (.ci/run installs it).")
        pytest.skip("redis-server is not installed")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=0.5).ping():
                return process
        except redis.ConnectionError:
            time.sleep(0.02)
    process.kill()
    pytest.fail("redis-server did not start")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole session."""
    port = _free_port()
    process = _start_redis(port)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait()


@pytest.fixture(autouse=True)
def _flush(request: pytest.FixtureRequest) -> None:
    """Each test starts with an empty Redis and no shared throttles."""
    clear_throttles()
    if "redis_url" in request.fixturenames:
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushall()


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisThrottle, RedisThrottle, FakeClock]]:
    """Two throttles on one key, as two processes would have, sharing a virtual clock."""
    clock = FakeClock()
    config = ThrottleConfig(margin=0.0)
    first = RedisThrottle(redis_url, "test#abc", config=config, clock=clock, sleep=clock.sleep)
    second = RedisThrottle(redis_url, "test#abc", config=config, clock=clock, sleep=clock.sleep)
    yield first, second, clock
    await first.aclose()
    await second.aclose()


async def _seed(throttle: RedisThrottle, remaining: float = 600.0) -> None:
    permit = await throttle.acquire()
    throttle.release(permit, Observation(remaining=remaining, cost=0.0))
    await asyncio.gather(*throttle._settling)


async def test_processes_share_the_in_flight_limit(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """Eleven places in all: six taken by one process leave five for the other."""
    first, second, _ = pair
    await _seed(first)
    held = [await first.acquire() for _ in range(6)]
    others = [await second.acquire() for _ in range(5)]

    blocked = asyncio.ensure_future(second.acquire())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(blocked), 0.1)
    first.release(held[0], Observation(remaining=300.0, cost=0.0))
    await asyncio.wait_for(blocked, 5)

    assert 11 == (await second.shared_estimate())["in_flight"]
    for permit in [*held[1:], *others, blocked.result()]:
        (first if permit in held else second).release(permit)


async def test_crashed_worker_lease_expires(redis_url: str) -> None:
    """A lease never released stops counting once its TTL passes."""
    clock = FakeClock()
    crashed = RedisThrottle(redis_url, "test#ttl", lease_ttl=5.0, clock=clock, sleep=clock.sleep)
    survivor = RedisThrottle(redis_url, "test#ttl", lease_ttl=5.0, clock=clock, sleep=clock.sleep)
    await _seed(survivor)
    for _ in range(10):
        await crashed.acquire()  # never released: the worker "crashed"
    assert 10 == (await survivor.shared_estimate())["in_flight"]

    clock.advance(6.0)

    assert 0 == (await survivor.shared_estimate())["in_flight"]
    await crashed.aclose()
    await survivor.aclose()


async def test_a_throttle_seen_by_one_process_pauses_the_other(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """Settlement is shared: one process's throttled response pauses everyone."""
    first, second, clock = pair
    await _seed(first)
    permit = await first.acquire()
    first.release(permit, Observation(remaining=5.0, throttled=True))
    await asyncio.gather(*first._settling)

    estimate = await second.shared_estimate()
    # Base 595 (margin 0): (595 + 50 - 600) / 10 = 4.5 s until one request fits.
    assert 4.5 == pytest.approx(estimate["paused_for_s"], abs=0.01)
    waited_before = sum(clock.sleeps)
    await second.acquire()
    assert sum(clock.sleeps) - waited_before >= 4.5


async def test_unreachable_redis_degrades_to_local_pacing() -> None:
    """With Redis down, requests still proceed, paced locally, with one warning."""
    url = f"redis://127.0.0.1:{_free_port()}/0"
    throttle = RedisThrottle(url, "test#down")
    with capture_logs() as logs:
        permits = [await throttle.acquire() for _ in range(3)]
    for permit in permits:
        throttle.release(permit)
    await throttle.aclose()

    degraded = [log for log in logs if log["event"] == "canvas.throttle_degraded"]
    assert 1 == len(degraded)
    assert "ConnectionError" in degraded[0]["error"]
    assert throttle.degraded


async def test_redis_dying_mid_run_degrades_instead_of_failing() -> None:
    """Killing redis-server between calls turns pacing local; calls keep working."""
    port = _free_port()
    process = _start_redis(port)
    throttle = RedisThrottle(f"redis://127.0.0.1:{port}/0", "test#dies")
    try:
        first = await throttle.acquire()
        assert first.lease is not None
        throttle.release(first)
        await asyncio.gather(*throttle._settling)
        process.kill()
        process.wait()
        with capture_logs() as logs:
            second = await throttle.acquire()
        throttle.release(second)
    finally:
        process.kill()
        await throttle.aclose()

    assert second.lease is None
    assert ["canvas.throttle_degraded"] == [log["event"] for log in logs]


async def test_clients_in_two_processes_pace_together(redis_url: str) -> None:
    """Two clients with separate shared throttles (as two processes) avoid throttles together."""
    clock = FakeClock()
    profile = RouteProfile(service_time=0.05, cost_rate=8.0, base_cost=0.0, jitter=0.0)
    async with CanvasSimulator(
        SimulatorSettings(default_route=profile), clock=clock, sleep=clock.sleep
    ) as sim:
        throttles = [
            RedisThrottle(redis_url, "test#pair", clock=clock, sleep=clock.sleep) for _ in range(2)
        ]
        clients = [
            CanvasClient(sim.base_url, sim.token, throttle=t, clock=clock, sleep=clock.sleep)
            for t in throttles
        ]
        async with clients[0] as one, clients[1] as two:
            results = await asyncio.gather(
                one.map(lambda _: one.get("courses/101"), range(150)),
                two.map(lambda _: two.get("courses/101"), range(150)),
            )
        for throttle in throttles:
            await throttle.aclose()

    assert [0, 0] == [len(result.failures) for result in results]
    assert sim.stats.throttled <= 3
    assert sim.stats.peak_in_flight <= 12


async def test_client_redis_url_uses_a_shared_redis_throttle(redis_url: str) -> None:
    """CanvasClient(redis_url=...) paces through Redis; the key never holds the token."""
    async with CanvasSimulator(SimulatorSettings.instant()) as sim:
        async with CanvasClient(sim.base_url, sim.token, redis_url=redis_url) as canvas:
            await canvas.get("courses/101")
            assert isinstance(canvas.throttle, RedisThrottle)
        await close_throttles()

    keys = [key.decode() for key in redis.Redis.from_url(redis_url).keys("*")]
    assert keys
    assert all(sim.token not in key for key in keys)
