"""Tests for RedisThrottle against a real redis-server process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from resilient_canvas import (
    CanvasClient,
    Observation,
    Permit,
    RedisThrottle,
    Throttle,
    ThrottleConfig,
    _redis_throttle,
    _registry,
    clear_throttles,
    close_throttles,
)
from resilient_canvas._registry import RECENT_THROTTLES, throttle_for
from resilient_canvas.testing import (
    CanvasSimulator,
    FakeClock,
    RouteProfile,
    SimulatorSettings,
)
from tests._redis_server import free_port as _free_port
from tests._redis_server import start_redis as _start_redis


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


async def _until_blocked(throttle: Throttle) -> list[Permit]:
    """Acquire until an acquire blocks (it is cancelled); return the permits."""
    held: list[Permit] = []
    with contextlib.suppress(TimeoutError):
        while len(held) < 20:
            held.append(await asyncio.wait_for(throttle.acquire(), 0.05))
    return held


async def test_processes_share_the_room_of_one_bucket(redis_url: str) -> None:
    """Two processes together admit what one in-process throttle would, and no more."""
    config = ThrottleConfig(margin=0.0)
    local = Throttle(config)
    seed = await local.acquire()
    local.release(seed, Observation(remaining=600.0, cost=0.0))
    first, second = (RedisThrottle(redis_url, "test#room", config=config) for _ in range(2))
    await _seed(first)

    alone = await _until_blocked(local)
    mine = await _until_blocked(first)
    theirs = await _until_blocked(second)

    assert len(alone) == len(mine) + len(theirs)
    assert len(mine) == (await second.shared_estimate())["in_flight"]
    for permit in mine:
        first.release(permit)
    for permit in theirs:
        second.release(permit)
    await first.aclose()
    await second.aclose()


async def test_the_oldest_waiter_of_any_process_goes_first(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """A process whose waiter tried longer goes first; one that stopped trying holds nobody.

    Regression (4-process soak): after a maintenance window every process's
    held calls came back at once, and one process kept losing the race for a
    lease until 35 of its calls passed their deadline waiting.
    """
    first, second, clock = pair
    await _seed(first)
    since = clock.now
    # The first process tries and loses (no room at the count it computed for).
    assert 0 == await first._take("first|a", None, -2, since)
    clock.advance(1.0 - 0.01)

    refused = await second._take("second|a", None, 100, clock.now)
    clock.advance(0.02)  # the first's claim is no longer fresh: it stopped trying
    admitted = await second._take("second|b", None, 100, clock.now)

    assert (0, 1) == (refused, admitted)
    await asyncio.gather(*first._settling, *second._settling)


async def test_crashed_worker_lease_expires(redis_url: str) -> None:
    """A lease never released stops counting once its TTL passes."""
    clock = FakeClock()
    crashed = RedisThrottle(redis_url, "test#ttl", lease_ttl=5.0, clock=clock, sleep=clock.sleep)
    survivor = RedisThrottle(redis_url, "test#ttl", lease_ttl=5.0, clock=clock, sleep=clock.sleep)
    await _seed(survivor)
    held = await _until_blocked(crashed)  # never released: the worker "crashed"
    assert len(held) == (await survivor.shared_estimate())["in_flight"] > 0

    clock.advance(6.0)

    assert 0 == (await survivor.shared_estimate())["in_flight"]
    await crashed.aclose()
    await survivor.aclose()


async def test_a_throttle_seen_by_one_process_moves_the_others_anchor(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """One process's throttled answer (remaining 5) makes the other wait for the leak."""
    first, second, clock = pair
    await _seed(first)
    permit = await first.acquire()
    first.release(permit, Observation(remaining=5.0, throttled=True))
    await asyncio.gather(*first._settling)

    assert 5.0 == (await second.shared_estimate())["anchor"]
    waited_before = sum(clock.sleeps)
    await second.acquire()
    # At least (50 - 5) / 10 s for one reservation to fit again.
    assert sum(clock.sleeps) - waited_before >= 4.5


async def test_another_process_in_flight_keeps_answers_from_teaching(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """While the other process holds a lease, this one's answers move no parameter.

    Their reservations and costs move Canvas's figure unseen: taken as
    evidence, a figure 45 units lower than ours explain reads as a slower
    leak or a larger reservation (the model's own test shows the leak
    learnt as 95 for 10).
    """
    first, second, clock = pair
    await _seed(first)
    theirs = await second.acquire()  # the other process's request, in flight
    before = first.model.parameters()
    for _ in range(30):
        permit = await first.acquire()
        clock.advance(0.05)
        first.release(permit, Observation(remaining=505.0, cost=0.4))
        await asyncio.gather(*first._settling)

    assert first.model.parameters() == before
    second.release(theirs)


async def test_shared_mode_honours_the_headerless_pause_and_cut(redis_url: str) -> None:
    """A throttle without quota headers in one process pauses and cuts the other (r1 shared)."""
    clock = FakeClock()
    first, second = (
        RedisThrottle(redis_url, "test#cut", heartbeat_ttl=1e4, clock=clock, sleep=clock.sleep)
        for _ in range(2)
    )
    held = [await first.acquire() for _ in range(4)]
    first.release(held.pop(), Observation(throttled=True))
    await asyncio.gather(*first._settling)

    estimate = await second.shared_estimate()
    assert 2.0 == estimate["cap"]
    assert 0.0 < estimate["paused_for_s"]
    waited_before = sum(clock.sleeps)
    blocked = asyncio.ensure_future(second.acquire())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(blocked), 0.1)
    assert sum(clock.sleeps) - waited_before >= estimate["paused_for_s"]
    first.release(held.pop(), Observation())
    permit = await asyncio.wait_for(blocked, 5)

    second.release(permit)
    for permit in held:
        first.release(permit)
    await first.aclose()
    await second.aclose()


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


async def test_idle_pooled_connections_close_after_a_burst(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst opens a connection per command at once; idle, they do not stay open.

    Regression (4-process soak through Redis): the calls held through a
    maintenance window came back together, each process's pool grew by 3-5
    sockets and kept them to the end (the soak's "fds flat" target).
    """
    monkeypatch.setattr(_redis_throttle, "_IDLE_CLOSE_S", 0.05)
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    throttle = RedisThrottle(redis_url, "test#burst", config=ThrottleConfig(margin=0.0))
    await _seed(throttle)
    burst = [asyncio.ensure_future(throttle.shared_estimate()) for _ in range(10)]
    await asyncio.gather(*burst)
    during = len(admin.client_list())
    await asyncio.sleep(0.3)
    after = len(admin.client_list())
    await throttle.aclose()

    assert during - before >= 5
    assert after - before <= 2  # the spare connection, and at most one reopened


def _leases(url: str, key: str) -> int:
    return int(redis.Redis.from_url(url).zcard(f"resilient_canvas:{key}:leases"))


async def _slow_proxy(port: int, delay: list[float]) -> asyncio.Server:
    """Forward requests to Redis at once and its replies after ``delay[0]`` seconds."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, slow: bool
        ) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if slow:
                        await asyncio.sleep(delay[0])
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_cancelled_or_slow_admission_leaves_no_lease(redis_url: str) -> None:
    """A waiter cancelled mid-script, or a reply later than the timeout, leaks no lease (r8a)."""
    delay = [0.0]
    server = await _slow_proxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]), delay)
    port = server.sockets[0].getsockname()[1]
    throttle = RedisThrottle(f"redis://127.0.0.1:{port}/0", "test#leak", admission_timeout=0.05)
    warm = await throttle.acquire()
    throttle.release(warm)
    await asyncio.gather(*throttle._settling)
    delay[0] = 0.04

    waiter = asyncio.ensure_future(throttle.acquire())
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.gather(*throttle._settling)
    after_cancel = _leases(redis_url, "test#leak")
    delay[0] = 0.08
    with capture_logs():
        permit = await throttle.acquire()
    await asyncio.gather(*throttle._settling)
    after_timeout = _leases(redis_url, "test#leak")

    throttle.release(permit)
    await throttle.aclose()
    server.close()
    assert (0, 0) == (after_cancel, after_timeout)
    assert throttle.degraded


class _SwallowingScript:
    """A registered script that, like redis-py at times, eats a cancellation mid-command."""

    def __init__(self, script: object) -> None:
        self._script = script

    async def __call__(self, **kwargs: object) -> object:
        call = asyncio.ensure_future(self._script(**kwargs))  # type: ignore[operator]
        # The cancellation lands mid-command and is swallowed: the reply comes back.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)
        return await call


class _SwallowingClient:
    def __init__(self, client: object) -> None:
        self._client = client

    def register_script(self, source: str) -> _SwallowingScript:
        return _SwallowingScript(self._client.register_script(source))  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


async def test_cancellation_swallowed_by_the_redis_client_is_still_honoured(
    redis_url: str,
) -> None:
    """A waiter whose cancellation the Redis client eats still ends and holds no lease.

    Regression: with redis-py 8, ``asyncio.wait_for(throttle.acquire(), 0.05)``
    could wait a full lease TTL (60 s) and then return a permit.
    """
    import redis.asyncio as redis_asyncio

    client = _SwallowingClient(redis_asyncio.Redis.from_url(redis_url))
    config = ThrottleConfig(margin=0.0)
    owner = RedisThrottle(redis_url, "test#swallow", config=config)
    waiter_side = RedisThrottle(redis_url, "test#swallow", config=config, redis_client=client)
    await _seed(owner)
    held = await _until_blocked(owner)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiter_side.acquire(), 0.005)
    waited = time.monotonic() - started
    await asyncio.gather(*waiter_side._settling)

    assert waited < 5.0, "the cancelled waiter outlived its caller's timeout"
    assert _leases(redis_url, "test#swallow") == len(held)
    for permit in held:
        owner.release(permit)
    await owner.aclose()
    await waiter_side.aclose()


class _SlowFifthReplyClient:
    """A client whose fifth reply arrives 0.2 s after Redis computed it."""

    def __init__(self, client: object) -> None:
        self._client = client
        self.calls = 0

    def register_script(self, source: str) -> object:
        script = self._client.register_script(source)  # type: ignore[attr-defined]

        async def call(**kwargs: object) -> object:
            reply = await script(**kwargs)
            self.calls += 1
            if self.calls == 5:
                await asyncio.sleep(0.2)
            return reply

        return call

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


async def test_a_slow_reply_does_not_place_another_process_s_anchor_late(
    redis_url: str,
) -> None:
    """Our requests sent after another process's answer are charged, however slow Redis was.

    Regression: the offset between Redis's clock and ours was taken when a
    reply arrived; one slow reply placed the other process's anchor 0.2 s
    late on our clock, and the requests we had sent within that time passed
    for counted in it: 14 admitted here where 11 fit (18 in a flaky test).
    """
    import redis.asyncio as redis_asyncio

    admin = redis.Redis.from_url(redis_url)
    seconds, micros = admin.time()
    admin.hset(
        "resilient_canvas:test#slow:state",
        mapping={"anchor": 600.0, "anchor_at": seconds + micros / 1e6, "anchor_seq": 1},
    )
    client = _SlowFifthReplyClient(redis_asyncio.Redis.from_url(redis_url))
    throttle = RedisThrottle(
        redis_url, "test#slow", config=ThrottleConfig(learn=False), redis_client=client
    )
    held = [await throttle.acquire() for _ in range(5)]  # the fifth reply is slow
    held += await _until_blocked(throttle)

    # margin 5: 600 - 50 * 11 > 5, so eleven fit (the 0.2 s leaked 2 units).
    assert len(held) == 11
    for permit in held:
        throttle.release(permit)
    await throttle.aclose()
    await client._client.aclose()  # type: ignore[attr-defined]


_WORKER = """
import asyncio, sys
from resilient_canvas import RedisThrottle
async def main():
    throttle = RedisThrottle(sys.argv[1], "test#killed", heartbeat_ttl=0.1)
    # Every place a fresh throttle has before any answer (its first burst).
    held = [await throttle.acquire() for _ in range(4)]
    print(len(held), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_killed_worker_stalls_nobody(redis_url: str) -> None:
    """A worker killed holding every place frees them within its heartbeat TTL (r8c)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = subprocess.Popen(  # noqa: ASYNC220 - a real process, to kill
        [sys.executable, "-c", _WORKER, redis_url], stdout=subprocess.PIPE, text=True, env=env
    )
    assert worker.stdout is not None
    try:
        held = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
        assert 4 == _leases(redis_url, "test#killed")
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()
    survivor = RedisThrottle(redis_url, "test#killed")

    permit = await asyncio.wait_for(survivor.acquire(), 5)

    assert "4" == held.strip()
    assert permit.lease is not None
    survivor.release(permit)
    await survivor.aclose()


def test_one_throttle_serves_two_event_loops(redis_url: str) -> None:
    """The registry's throttle works in a second asyncio.run(): a client per loop (r8d)."""
    throttle = RedisThrottle(redis_url, "test#loops")

    async def once() -> str | None:
        permit = await throttle.acquire()
        lease = permit.lease
        throttle.release(permit, Observation(remaining=590.0, cost=1.0))
        await asyncio.gather(*throttle._settling)
        return lease

    leases = [asyncio.run(once()), asyncio.run(once())]

    assert [True, True] == [lease is not None for lease in leases]
    assert not throttle.degraded


async def test_unresponsive_redis_never_blocks_admission() -> None:
    """Redis accepting but never answering costs one short timeout, then local pacing (r8e)."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    throttle = RedisThrottle(f"redis://127.0.0.1:{port}/0", "test#hang", admission_timeout=0.05)

    async def call() -> None:
        permit = await throttle.acquire()
        await asyncio.sleep(0)
        throttle.release(permit, Observation())

    with capture_logs() as logs:
        await asyncio.wait_for(asyncio.gather(*(call() for _ in range(40))), 1.0)

    await throttle.aclose()
    server.close()
    assert ["canvas.throttle_degraded"] == [log["event"] for log in logs]
    assert throttle.degraded


async def test_learned_values_never_override_learn_false(redis_url: str) -> None:
    """A value another worker learned is merged only into learning workers (r8f)."""
    client = redis.Redis.from_url(redis_url)
    seconds, micros = client.time()
    client.hset(
        "resilient_canvas:test#poison:state",
        mapping={
            "anchor": 600.0,
            "anchor_at": seconds + micros / 1e6,
            "anchor_seq": 1,
            # What the old design stored, and the new one: a learned 140 sure of itself.
            "up": 140.0,
            "up_front_cost": 140.0,
            "up_front_cost_var": 1.0,
            "params_seq": 1,
            "params_by": "another-worker",
        },
    )
    fixed = RedisThrottle(
        redis_url, "test#poison", config=ThrottleConfig(learn=False), heartbeat_ttl=10.0
    )
    learning = RedisThrottle(redis_url, "test#poison")
    held = []
    while True:
        try:
            held.append(await asyncio.wait_for(fixed.acquire(), 0.05))
        except TimeoutError:
            break
    for permit in held:
        fixed.release(permit)
    probe = await learning.acquire()

    # learn=False, margin 5: 600 - 50 * 11 > 5, so eleven fit an idle bucket.
    assert 11 == len(held)
    assert 50.0 == fixed.up_front_cost
    assert 50.0 < learning.up_front_cost
    learning.release(probe)
    await fixed.aclose()
    await learning.aclose()


def test_shared_config_conflict_raises_clearly() -> None:
    """A second, different config for one token's shared throttle raises, naming both (r12)."""
    throttle_for("https://canvas.example.edu", "token-r12", config=ThrottleConfig(hwm=700.0))

    with pytest.raises(ValueError, match="already runs with") as caught:
        throttle_for("https://canvas.example.edu", "token-r12", config=ThrottleConfig(hwm=500.0))

    assert "hwm=500.0" in str(caught.value)
    assert "token-r12" not in str(caught.value)
    assert throttle_for("https://canvas.example.edu", "token-r12") is throttle_for(
        "https://canvas.example.edu", "token-r12", config=ThrottleConfig(hwm=700.0)
    )


def test_registry_memory_stays_bounded_with_rotating_tokens() -> None:
    """50,000 short-lived tokens (OAuth rotation) keep the registry and memory bounded (r15)."""
    tracemalloc.start()
    for index in range(50_000):
        throttle_for("https://canvas.example.edu", f"rotating-{index}")
        if index == 999:
            gc.collect()
            early, _ = tracemalloc.get_traced_memory()
    gc.collect()
    late, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # The most recent ones, and the last one still referenced here.
    assert RECENT_THROTTLES + 1 >= len(_registry._THROTTLES)
    # Memory after 50,000 tokens is that after 1,000, give or take noise.
    assert late < early + 2**20


async def test_a_bucket_nobody_learnt_is_learnt_by_one_process_alone_first(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock], redis_url: str
) -> None:
    """The first process learns a new bucket alone; the others wait for it, 4 s at most.

    Beside each other no process learns the reservation (their requests move
    the figure unseen), so each charged every other's request the prior's
    doubt: 50 + 2.5 * 25 units, and four processes ran 7 in flight where 11
    fit (bench_distributed 1.5-2.2x the bound).
    """
    first, second, clock = pair
    held = await first.acquire()  # nobody has learnt the bucket: first takes it alone
    started = clock()

    admitted = await second.acquire()

    # Held until the calibrator's turn ran out (it learnt nothing meanwhile).
    assert clock() - started >= 2.0
    state = redis.Redis.from_url(redis_url).hgetall("resilient_canvas:test#abc:state")
    assert b"calibrated" in state
    first.release(held)
    second.release(admitted)


async def test_the_calibrator_hands_on_what_it_learnt_at_once(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """Once the calibrator has learnt the reservation and the network, the others go on
    with its values (the network delay: on the same machine only)."""
    first, second, clock = pair
    held = await first.acquire()
    assert first._view is not None
    assert first._view.state.get("calibrator") == first._worker  # it learns alone
    # As if its answers had taught it: 80 units, sd 1, and 3 throttled round trips of 4 ms.
    first.model.merge_parameters({"up_front_cost": 80.0, "up_front_cost_var": 1.0})
    first.model._network_trips.extend([0.004] * 3)
    busy = await first.acquire()  # still sending: only learning ends its turn
    clock.advance(0.004)
    first.release(held, Observation(remaining=520.0, cost=0.1))
    await asyncio.gather(*first._settling)
    started = clock()

    admitted = await second.acquire()

    assert clock() - started < 0.5
    assert abs(second.up_front_cost - 80.0) < 1.0
    clock.advance(0.01)
    second.release(admitted, Observation(remaining=440.0, cost=0.1))
    assert 0.002 == pytest.approx(second.model.one_way_delay_s)  # not its own bound, 0.005
    first.release(busy)


async def test_without_exploring_nobody_holds_the_others(redis_url: str) -> None:
    """explore=False: no process takes a new bucket alone (nor is it held by one)."""
    clock = FakeClock()
    config = ThrottleConfig(margin=0.0, explore=False)
    first = RedisThrottle(redis_url, "test#calm", config=config, clock=clock, sleep=clock.sleep)
    second = RedisThrottle(redis_url, "test#calm", config=config, clock=clock, sleep=clock.sleep)
    held = await first.acquire()
    started = clock()

    admitted = await second.acquire()

    assert clock() - started < 0.5
    first.release(held)
    second.release(admitted)
    await first.aclose()
    await second.aclose()


async def test_the_learner_is_never_held_back_by_the_waiters_it_holds(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock], redis_url: str
) -> None:
    """Another process's older waiter, which tried lately, does not refuse the learner.

    Otherwise each would hold the other: the learner for the older waiter,
    the waiter for the learner, until the turn ran out.
    """
    first, _, clock = pair
    held = await first.acquire()  # first learns the bucket alone
    now = clock()
    # Another worker's head waiter, waiting a second longer and trying just now.
    redis.Redis.from_url(redis_url).hset(
        "resilient_canvas:test#abc:waiting", "another-worker", f"{now - 1.0}|{now}|{now}"
    )

    more = await asyncio.wait_for(first.acquire(), 1.0)

    assert clock() - now < 0.5
    first.release(more)
    first.release(held)


async def _hang(_: float) -> None:
    """A sleep that never ends: only a wake-up can move a waiter on."""
    await asyncio.Event().wait()


async def _listeners(redis_url: str, key: str, want: int) -> int:
    """The listeners on *key*'s release channel, once there are *want* (2 s at most)."""
    admin = redis.Redis.from_url(redis_url)
    channel = f"resilient_canvas:{key}:state:released"
    count = -1
    for _ in range(200):
        count = int(admin.pubsub_numsub(channel)[0][1])
        if count == want:
            break
        await asyncio.sleep(0.01)
    return count


async def _full_and_waiting(
    redis_url: str, key: str, **second: Any
) -> tuple[RedisThrottle, RedisThrottle, list[Permit], asyncio.Future[Permit]]:
    """One process fills the shared bucket; another (made with *second*) waits for room."""
    config = ThrottleConfig(margin=0.0, learn=False)
    first = RedisThrottle(redis_url, key, config=config)
    waiting = RedisThrottle(redis_url, key, config=config, **second)
    await _seed(first)
    held = await _until_blocked(first)
    return first, waiting, held, asyncio.ensure_future(waiting.acquire())


async def _woken_by_a_release(redis_url: str, key: str) -> tuple[RedisThrottle, RedisThrottle]:
    """A waiter of one process whose timer never fires, admitted by another's release."""
    first, second, held, waiter = await _full_and_waiting(redis_url, key, sleep=_hang)
    assert 1 == await _listeners(redis_url, key, 1)
    assert not waiter.done()

    first.release(held.pop())  # one ends
    permit = await asyncio.wait_for(waiter, 5.0)

    assert permit.lease is not None
    second.release(permit)
    for other in held:
        first.release(other)
    return first, second


async def test_a_release_in_another_process_wakes_our_waiter_at_once(redis_url: str) -> None:
    """A waiter that only another process's release can unblock is woken by it, not a poll.

    Regression (4 processes on workload B, 1.51-1.75x the bound): a process
    with nothing of its own in flight polled up to 0.2 s while the others'
    requests ended every few milliseconds; the processes with requests in
    flight took the room first, and one process's work ended seconds late.
    Here the waiter's timer never fires: only the release can admit it.
    """
    first, second = await _woken_by_a_release(redis_url, "test#wake")
    await first.aclose()
    await second.aclose()


async def test_the_listener_lets_its_connection_go_once_nobody_waits(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process pacing many tokens keeps no listening connection for the idle ones."""
    monkeypatch.setattr(_redis_throttle, "_LISTEN_IDLE_S", 0.05)
    first, second = await _woken_by_a_release(redis_url, "test#idle")

    assert 0 == await _listeners(redis_url, "test#idle", 0)
    await first.aclose()
    await second.aclose()


async def test_a_burst_of_releases_wakes_a_waiting_process_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many releases at once wake our heads once, and a process with no waiter not at all.

    Review: each message woke every head, and each woken head read the state
    again: with 50 processes, every release cost 50 wake-ups.
    """
    first, second, held, waiter = await _full_and_waiting(redis_url, "test#burst", sleep=_hang)
    assert 1 == await _listeners(redis_url, "test#burst", 1)
    wakes, reads = _spy(second, "_notify", monkeypatch), _spy(second, "_take", monkeypatch)
    burst = "for i = 1, 50 do redis.call('PUBLISH', KEYS[1], '') end"
    admin = redis.Redis.from_url(redis_url)

    admin.eval(burst, 1, "resilient_canvas:test#burst:state:released")
    for _ in range(200):
        if reads:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # any later wake-up of this burst has come

    assert not waiter.done()  # the messages freed no room: it waits on
    assert 1 <= len(wakes) <= 2
    assert 1 <= len(reads) <= 2
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    wakes.clear()
    reads.clear()
    assert 1 == await _listeners(redis_url, "test#burst", 1)  # still listening
    admin.eval(burst, 1, "resilient_canvas:test#burst:state:released")
    await asyncio.sleep(0.05)
    assert ([], []) == (wakes, reads)  # nobody waits: nobody is woken, nothing read
    for permit in held:
        first.release(permit)
    await first.aclose()
    await second.aclose()


def _spy(throttle: RedisThrottle, name: str, monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Record each call of *throttle*'s method *name* (still calling it) in the list returned."""
    calls: list[None] = []
    method = getattr(throttle, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(None)
        return method(*args, **kwargs)

    monkeypatch.setattr(throttle, name, spy)
    return calls


async def test_an_anchor_is_placed_when_canvas_computed_it_not_when_redis_heard(
    redis_url: str,
) -> None:
    """The shared anchor's time is the answer's, however late the settlement reaches Redis.

    Regression: the settle script placed the anchor at its own clock less the
    one-way delay. It runs after the answer (in the background, behind a busy
    loop and Redis's round trip), so the requests other processes admitted in
    between passed for counted in it and went uncharged: four processes threw
    up to 124 throttles of 1,500 once their one-way delay was learnt.
    """
    admin = redis.Redis.from_url(redis_url)
    throttle = RedisThrottle(redis_url, "test#anchor", config=ThrottleConfig(learn=False))
    permit = await throttle.acquire()

    throttle.release(permit, Observation(remaining=550.0, cost=0.0))
    time.sleep(0.3)  # noqa: ASYNC251 - a busy event loop delays the settlement
    seconds, micros = admin.time()
    await asyncio.gather(*throttle._settling)

    state = admin.hgetall("resilient_canvas:test#anchor:state")
    assert b"550.0" == state[b"anchor"]
    # Placed before the loop's 0.3 s stall, not after it (the script ran after).
    assert float(state[b"anchor_at"]) < seconds + micros / 1e6 - 0.2
    await throttle.aclose()


async def test_the_calibrator_holds_on_until_it_has_learnt_the_network(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """A calibrator that learnt the reservation but not the network keeps the bucket.

    Beside the others no process learns its network delay (their requests
    move the figure unseen): on workload B, whose costs are not seconds, the
    delay stayed the 22 ms round trip where the network takes 0.2 ms, and
    every request admitted within it was charged twice (1.33-1.48x the bound).
    """
    first, second, clock = pair
    held = await first.acquire()
    first.model.merge_parameters({"up_front_cost": 80.0, "up_front_cost_var": 1.0})
    busy = await first.acquire()
    first.release(held, Observation(remaining=520.0, cost=0.1))
    await asyncio.gather(*first._settling)
    started = clock()

    admitted = await second.acquire()

    # Held until the turn ran out (4 s from the first's first request).
    assert clock() - started >= 3.5
    first.release(busy)
    second.release(admitted)


async def test_a_network_delay_is_shared_only_with_the_same_machine(redis_url: str) -> None:
    """Another machine's network delay is not ours: a process takes only its machine's."""
    config = ThrottleConfig(learn=True)
    here = RedisThrottle(redis_url, "test#net", config=config, network_id="here")
    there = RedisThrottle(redis_url, "test#net", config=config, network_id="there")
    admin = redis.Redis.from_url(redis_url)
    admin.hset(
        "resilient_canvas:test#net:network",
        mapping={"one_way@there": 0.0001, "one_way@here": 0.003},
    )

    for throttle in (here, there):
        permit = await throttle.acquire()
        await asyncio.sleep(0.02)
        throttle.release(permit, Observation(remaining=550.0, cost=0.0))
        await asyncio.gather(*throttle._settling)
        await throttle.acquire()

    assert 0.003 == here.model.one_way_delay_s
    assert 0.0001 == there.model.one_way_delay_s
    await here.aclose()
    await there.aclose()


async def test_our_own_answer_back_from_redis_keeps_the_anchor_exact(
    pair: tuple[RedisThrottle, RedisThrottle, FakeClock],
) -> None:
    """Our own anchor, echoed in Redis's reply, is not taken as another process's.

    Regression: it was adopted again, marked a guess about our requests, and
    the calibrating process could never associate its answers with its
    requests, so it never learnt its network delay while alone (bench
    workload B: 2 associations in 3 s where one process alone makes 100).
    """
    first, _, clock = pair
    await _seed(first)
    permit = await first.acquire()
    clock.advance(0.05)

    first.release(permit, Observation(remaining=580.0, cost=0.1))
    await asyncio.gather(*first._settling)

    assert first.model._anchor_exact


async def test_a_process_with_nothing_in_flight_sees_the_others_answers_while_it_waits(
    redis_url: str,
) -> None:
    """Its model's low anchor is not waited out: another process's answer showing room admits it.

    Regression (bench_distributed, 1.46x the bound): after a throttled answer
    (remaining 4.9) a process with nothing in flight waited its model's 5 s
    for the leak, its view of Redis unread, while the others' answers showed
    room. Here its timer never fires: only the other's answer can admit it.
    """
    config = ThrottleConfig(margin=0.0, learn=False, explore=False)
    first = RedisThrottle(redis_url, "test#low", config=config)
    second = RedisThrottle(redis_url, "test#low", config=config, sleep=_hang)
    await _seed(first)
    low, busy = await first.acquire(), await first.acquire()
    first.release(low, Observation(remaining=5.0, cost=0.1))  # the bucket looks full
    await asyncio.gather(*first._settling)
    waiter = asyncio.ensure_future(second.acquire())
    assert 1 == await _listeners(redis_url, "test#low", 1)
    assert not waiter.done()

    first.release(busy, Observation(remaining=550.0, cost=0.1))  # it was not
    permit = await asyncio.wait_for(waiter, 5.0)

    assert permit.lease is not None
    second.release(permit)
    await first.aclose()
    await second.aclose()


async def test_a_process_never_takes_its_own_shared_delay_back(redis_url: str) -> None:
    """What a process shared is its own bound: taken back, the shared delay could only fall.

    Regression (review): each process took the machine's delay back and
    shared the smaller of it and its own, so one low value stayed for good
    (a network that slowed from 2 to 40 ms kept 2 ms).
    """
    throttle = RedisThrottle(redis_url, "test#own", network_id="here")
    admin = redis.Redis.from_url(redis_url)
    admin.hset(
        "resilient_canvas:test#own:network",
        mapping={"one_way@here": 0.0001, "one_way@here#by": throttle._worker},
    )
    permit = await throttle.acquire()
    await asyncio.sleep(0.02)
    throttle.release(permit, Observation(remaining=550.0, cost=0.0))
    await asyncio.gather(*throttle._settling)

    assert throttle.model.one_way_delay_s > 0.005  # its own round trip's bound
    await throttle.aclose()


async def _publish_network_delay(throttle: RedisThrottle) -> None:
    """Have *throttle* learn its network (3 throttled round trips of 4 ms) and publish it."""
    throttle.model._network_trips.extend([0.004] * 3)
    permit = await throttle.acquire()
    throttle.release(permit, Observation(remaining=550.0, cost=0.0))
    await asyncio.gather(*throttle._settling)


async def test_the_shared_state_does_not_grow_with_the_machines(redis_url: str) -> None:
    """Each machine's network delay lives in the network hash, not the state every call reads.

    Review: each host added two fields to the state hash, which every
    admission and settlement reads whole (HGETALL): with many pods each
    call carried every machine's delay, though a process only takes its own.
    """
    admin = redis.Redis.from_url(redis_url)
    config = ThrottleConfig(explore=False)
    throttles = [
        RedisThrottle(redis_url, "test#pods", config=config, network_id=f"pod-{i}")
        for i in range(50)
    ]
    await _publish_network_delay(throttles[0])
    fields = admin.hlen("resilient_canvas:test#pods:state")

    for throttle in throttles[1:]:
        await _publish_network_delay(throttle)

    assert fields == admin.hlen("resilient_canvas:test#pods:state")
    assert 2 * 50 == admin.hlen("resilient_canvas:test#pods:network")
    for throttle in throttles:
        await throttle.aclose()


async def test_an_older_version_s_delays_in_the_state_are_ignored(redis_url: str) -> None:
    """Delays a worker of the previous version wrote into the state are read past, not taken."""
    admin = redis.Redis.from_url(redis_url)
    admin.hset(
        "resilient_canvas:test#old:state",
        mapping={"one_way@here": 0.0001, "one_way@here#by": "an-old-worker"},
    )
    throttle = RedisThrottle(redis_url, "test#old", network_id="here")
    permit = await throttle.acquire()
    await asyncio.sleep(0.02)
    throttle.release(permit, Observation(remaining=550.0, cost=0.0))
    await asyncio.gather(*throttle._settling)

    assert throttle.model.one_way_delay_s > 0.005  # its own round trip's bound
    assert 550.0 == (await throttle.shared_estimate())["anchor"]
    await throttle.aclose()


async def test_the_network_delays_expire_with_the_state(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network hash is renewed with the state and expires with it: never left behind."""
    admin = redis.Redis.from_url(redis_url)
    throttle = RedisThrottle(redis_url, "test#ttl", config=ThrottleConfig(explore=False))
    await _publish_network_delay(throttle)
    assert 2 == admin.hlen("resilient_canvas:test#ttl:network")
    assert 0 < admin.pttl("resilient_canvas:test#ttl:network")  # not kept forever
    monkeypatch.setattr(_redis_throttle, "_KEY_TTL_MS", 100)

    permit = await throttle.acquire()  # renews the bucket's keys: to 0.1 s now
    throttle.release(permit)
    await asyncio.gather(*throttle._settling)
    for _ in range(100):
        if not admin.exists("resilient_canvas:test#ttl:state"):
            break
        await asyncio.sleep(0.02)

    assert 0 == admin.exists("resilient_canvas:test#ttl:state")
    assert 0 == admin.exists("resilient_canvas:test#ttl:network")
    await throttle.aclose()


class _NoPubSubClient:
    """A Redis client without publish/subscribe (some proxies and test doubles)."""

    def __init__(self, client: object) -> None:
        self._client = client

    def __getattr__(self, name: str) -> object:
        if name == "pubsub":
            raise AttributeError(name)
        return getattr(self._client, name)


async def test_a_client_without_pubsub_leaves_the_waiters_polling(redis_url: str) -> None:
    """An injected client that cannot subscribe is noted once; the waiters poll as before."""
    import redis.asyncio as redis_asyncio

    client = _NoPubSubClient(redis_asyncio.Redis.from_url(redis_url))
    first, second, held, waiter = await _full_and_waiting(
        redis_url, "test#nopubsub", redis_client=client
    )
    await asyncio.sleep(0.05)

    first.release(held.pop())
    permit = await asyncio.wait_for(waiter, 5.0)  # by its poll

    assert not second._connection().listens
    second.release(permit)
    for other in held:
        first.release(other)
    await first.aclose()
    await second.aclose()
    await client._client.aclose()  # type: ignore[attr-defined]


async def test_our_requests_sent_just_before_another_s_answer_are_not_taken_as_counted(
    redis_url: str,
) -> None:
    """Another process's answer counts our requests only if they surely reached Canvas first.

    Regression (bench_distributed, 20-48 throttles of 1,500): a process took
    its own requests admitted a one-way delay before another's answer as
    counted in it, with neither the answer's earliest time nor a busy loop's
    late sending allowed for; once the network delay was learnt (0.5 ms),
    requests sent a few milliseconds before went uncharged.
    """
    config = ThrottleConfig(margin=0.0, learn=False, explore=False)
    first = RedisThrottle(redis_url, "test#mine", config=config)
    second = RedisThrottle(redis_url, "test#mine", config=config)
    await _seed(first)
    sent = [await second.acquire() for _ in range(4)]
    # Canvas answered another request just after: ours had not arrived.
    other = await first.acquire()
    first.release(other, Observation(remaining=590.0, cost=0.1))
    await asyncio.gather(*first._settling)

    more = await _until_blocked(second)

    # 590 - 4 * 50 = 390 units left: 7 more fit, not the 11 of 590.
    assert 7 == len(more)
    for permit in sent + more:
        second.release(permit)
    await first.aclose()
    await second.aclose()
