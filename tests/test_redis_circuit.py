"""Tests for RedisCircuit: the per-origin circuit breaker shared through a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis
from structlog.testing import capture_logs

from resilient_canvas import (
    CanvasClient,
    CircuitBreaker,
    CircuitState,
    RedisCircuit,
    RedisThrottle,
    clear_breakers,
    clear_throttles,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._breaker import Admission, BreakerSettings, Outcome, breakers, outcome_of
from resilient_canvas.exceptions import classify_response
from resilient_canvas.testing import CanvasSimulator, FakeClock, SimulatorSettings
from tests._redis_server import free_port
from tests.test_breaker import FastClock

FAIL, OK = Outcome.FAILURE, Outcome.SUCCESS
ORIGIN = "https://canvas.test"
PROBE_TIMEOUT = BreakerSettings().probe_timeout


def feed(circuit: RedisCircuit, *outcomes: Outcome) -> None:
    """Send one admitted request per outcome through *circuit*."""
    for outcome in outcomes:
        circuit.finish(circuit.admit(), outcome)


def events(logs: list[dict[str, object]]) -> list[object]:
    """The circuit events among captured logs, in order."""
    return [log["event"] for log in logs if str(log["event"]).startswith("canvas.circuit")]


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisCircuit, RedisCircuit, FakeClock]]:
    """Two circuits of one origin, as two processes would have, on one virtual clock."""
    redis.Redis.from_url(redis_url).flushall()
    clock = FakeClock()
    one, two = (RedisCircuit(redis_url, ORIGIN, clock=clock) for _ in range(2))
    yield one, two, clock
    await one.aclose()
    await two.aclose()


async def open_through(one: RedisCircuit, two: RedisCircuit) -> None:
    """Open the shared circuit with failures seen by *one*; *two* reads it."""
    feed(one, *[FAIL] * 10)
    await one.sync()
    await two.sync()


async def probe_of(one: RedisCircuit, two: RedisCircuit) -> tuple[RedisCircuit, Admission]:
    """With the probe due, let both claim it; return who got it and its admission."""
    one.admit()
    two.admit()
    await asyncio.gather(one.sync(), two.sync())
    grants = [(circuit, circuit.admit()) for circuit in (one, two, one, two)]
    probes = [(circuit, admission) for circuit, admission in grants if admission.go]
    assert 1 == len(probes)
    return probes[0]


class SlowProxy:
    """Forwards to Redis, its replies after ``delay`` seconds; closes every connection at once."""

    def __init__(self, redis_url: str, delay: float) -> None:
        self.delay = delay
        self._upstream = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; return the URL to give the circuit."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        self._writers += [writer, up_writer]
        for source, sink, slow in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.ensure_future(self._pipe(source, sink, slow))
            self._tasks.add(task)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, slow: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if slow:
                    await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()

    async def close(self) -> None:
        """Stop listening and close every connection, waiting or not."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self._server.wait_closed()


# --------------------------------------------------------------------- opening


async def test_failures_in_one_process_open_the_circuit_for_the_other(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """Ten failures seen by one process open the circuit; the other then holds its calls."""
    one, two, clock = pair
    with capture_logs() as logs:
        await open_through(one, two)
    clock.advance(2.0)
    assert (CircuitState.OPEN, CircuitState.OPEN) == (one.state, two.state)
    assert Admission(False, wait=3.0, next_probe_in=3.0, down_for=2.0) == two.admit()
    assert ["canvas.circuit_opened"] == events(logs)
    assert "consecutive_failures" == logs[0]["reason"]
    assert 1 == two.estimate().opened


async def test_outcomes_of_both_processes_count_in_one_window(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """Half failures over 20 outcomes open it, though each process saw only 10 (below minimum)."""
    one, two, _ = pair
    feed(one, *[OK, FAIL] * 5)
    await one.sync()
    assert CircuitState.CLOSED == one.state
    with capture_logs() as logs:
        feed(two, *[OK, FAIL] * 5)
        await two.sync()
    await one.sync()
    assert (CircuitState.OPEN, CircuitState.OPEN) == (one.state, two.state)
    assert [("canvas.circuit_opened", "failure_ratio", 10, 20)] == [
        (log["event"], log["reason"], log["failures"], log["total"]) for log in logs
    ]


async def test_processes_racing_to_open_open_it_once(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """Both see enough failures at once: one opening, one event, one count."""
    one, two, _ = pair
    feed(one, *[FAIL] * 10)
    feed(two, *[FAIL] * 10)
    with capture_logs() as logs:
        await asyncio.gather(one.sync(), two.sync())
    await asyncio.gather(one.sync(), two.sync())
    assert ["canvas.circuit_opened"] == events(logs)
    assert (1, 1) == (one.estimate().opened, two.estimate().opened)


async def test_throttling_and_client_errors_never_open_the_shared_circuit(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """429s, legacy 403 throttles and 404s in both processes are Canvas answering."""
    one, two, _ = pair
    errors = [
        classify_response(429, {"X-Rate-Limit-Remaining": "0"}, b"", method="GET", url="u"),
        classify_response(403, {}, b"403 Forbidden (Rate Limit Exceeded)", method="GET", url="u"),
        classify_response(404, {}, b"", method="GET", url="u"),
    ]
    assert all(isinstance(error, exc.CanvasException) for error in errors)
    for circuit in (one, two):
        feed(circuit, *[outcome_of(errors[i % 3]) for i in range(150)])
        await circuit.sync()
    estimate = await one.sync()
    assert (CircuitState.CLOSED, 0, 300) == (estimate.state, estimate.failures, estimate.total)


# --------------------------------------------------------------------- probing


async def test_only_one_probe_across_processes_and_its_success_closes_both(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """Both claim the due probe; one gets it; its success closes the circuit everywhere."""
    one, two, clock = pair
    await open_through(one, two)
    clock.advance(5.0)
    with capture_logs() as logs:
        prober, probe = await probe_of(one, two)
        other = two if prober is one else one
        assert (True, False) == (probe.probe, other.admit().go)
        prober.finish(probe, OK)
        await prober.sync()
        await other.sync()
    assert (CircuitState.CLOSED, CircuitState.CLOSED) == (one.state, two.state)
    assert ["canvas.circuit_half_open", "canvas.circuit_closed"] == events(logs)
    assert 1 == other.estimate().probes
    # Released gradually in each process: one call in flight at first.
    assert [True, False] == [other.admit().go, other.admit().go]


async def test_failed_probe_reopens_for_both_with_a_doubled_break(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """A failed probe in one process reopens the circuit for the other, 10 s to the next."""
    one, two, clock = pair
    await open_through(one, two)
    clock.advance(5.0)
    prober, probe = await probe_of(one, two)
    prober.finish(probe, FAIL)
    await prober.sync()
    other = two if prober is one else one
    estimate = await other.sync()
    assert (CircuitState.OPEN, 10.0) == (estimate.state, estimate.next_probe_in_s)


async def test_a_killed_probers_lease_expires(
    pair: tuple[RedisCircuit, RedisCircuit, FakeClock],
) -> None:
    """A prober that never answers frees the probe after probe_timeout; its late answer is void."""
    one, two, clock = pair
    await open_through(one, two)
    clock.advance(5.0)
    killed, lost = await probe_of(one, two)
    survivor = two if killed is one else one
    clock.advance(PROBE_TIMEOUT - 1.0)
    await survivor.sync()
    assert not survivor.admit().go
    clock.advance(1.0)
    with capture_logs() as logs:
        survivor.admit()
        await survivor.sync()
        second = survivor.admit()
    assert (True, True) == (second.go, second.probe)
    assert [("canvas.circuit_half_open", "probe_expired")] == [
        (log["event"], log["reason"]) for log in logs
    ]
    killed.finish(lost, OK)  # the "killed" process answers after all: it decides nothing
    await killed.sync()
    assert CircuitState.HALF_OPEN == (await survivor.sync()).state
    survivor.finish(second, OK)
    await survivor.sync()
    assert CircuitState.CLOSED == (await killed.sync()).state


# ------------------------------------------------------------------- degraded


async def test_unreachable_redis_degrades_to_the_local_breaker() -> None:
    """With Redis down the circuit decides locally, with one warning; calls never wait."""
    clock = FakeClock()
    circuit = RedisCircuit(f"redis://127.0.0.1:{free_port()}/0", ORIGIN, clock=clock)
    with capture_logs() as logs:
        feed(circuit, FAIL)
        await circuit.sync()
        transitions = [circuit.finish(circuit.admit(), FAIL) for _ in range(10)]
    await circuit.aclose()
    assert circuit.degraded
    assert [None] * 9 == transitions[:9]
    assert transitions[-1] is not None
    assert CircuitState.OPEN == transitions[-1].state == circuit.state
    assert ["canvas.circuit_degraded"] == events(logs)
    assert "ConnectionError" in str(logs[0]["error"])


async def test_slow_redis_costs_a_held_call_one_timeout_then_it_probes_locally(
    redis_url: str,
) -> None:
    """Redis answering too late while a probe is due: the call probes locally and succeeds."""
    proxy = SlowProxy(redis_url, 0.0)
    redis.Redis.from_url(redis_url).flushall()
    clock = FastClock()
    circuit = RedisCircuit(await proxy.start(), ORIGIN, clock=clock, admission_timeout=0.05)
    feed(circuit, *[FAIL] * 10)
    await circuit.sync()
    assert CircuitState.OPEN == circuit.state
    proxy.delay = 1.0
    async with CanvasSimulator(SimulatorSettings.instant(), clock=clock, sleep=clock.sleep) as sim:
        async with CanvasClient(
            sim.base_url, sim.token, throttle=None, breaker=circuit, clock=clock, sleep=clock.sleep
        ) as canvas:
            with capture_logs() as logs:
                course = await asyncio.wait_for(canvas.get("courses/101"), 2.0)
    await proxy.close()
    await circuit.aclose()
    assert 101 == course["id"]
    assert circuit.degraded
    assert [
        "canvas.circuit_degraded",
        "canvas.circuit_half_open",
        "canvas.circuit_closed",
    ] == events(logs)


async def test_redis_back_shares_the_circuit_again(redis_url: str) -> None:
    """Once Redis answers again the shared state decides, with one event saying so."""
    proxy = SlowProxy(redis_url, 1.0)
    redis.Redis.from_url(redis_url).flushall()
    circuit = RedisCircuit(
        await proxy.start(),
        ORIGIN,
        clock=FakeClock(),
        admission_timeout=0.05,
        reconnect_every=0.01,
    )
    with capture_logs() as logs:
        await circuit.sync()
        degraded = circuit.degraded
        proxy.delay = 0.0
        for _ in range(500):  # the reconnect loop asks every 0.01 s
            if not circuit.degraded:
                break
            await asyncio.sleep(0.01)
    await proxy.close()
    await circuit.aclose()
    assert degraded
    assert ["canvas.circuit_degraded", "canvas.circuit_redis_back"] == events(logs)


# ------------------------------------------------------------------ end to end


async def test_second_client_holds_its_calls_when_the_first_saw_the_outage(
    redis_url: str,
) -> None:
    """Two clients sharing a redis_url (as two processes): the second never hits the outage.

    The first client's calls open the shared circuit during a maintenance
    window; the second's calls, started then, are held (only probes reach
    the server) and all of both clients' calls succeed once Canvas is back.
    """
    redis.Redis.from_url(redis_url).flushall()
    clock = FastClock()
    statuses: list[int] = []

    async def on_end(_s: object, _c: object, params: aiohttp.TraceRequestEndParams) -> None:
        statuses.append(params.response.status)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with CanvasSimulator(SimulatorSettings.instant(), clock=clock, sleep=clock.sleep) as sim:
        first = CanvasClient(
            sim.base_url, sim.token, redis_url=redis_url, clock=clock, sleep=clock.sleep
        )
        # The second client is another process: its own throttle and circuit.
        clear_breakers()
        clear_throttles()
        session = aiohttp.ClientSession(trace_configs=[trace])
        second = CanvasClient(
            sim.base_url,
            sim.token,
            redis_url=redis_url,
            clock=clock,
            sleep=clock.sleep,
            session=session,
        )
        assert isinstance(first.breaker, RedisCircuit)
        assert isinstance(second.breaker, RedisCircuit)
        assert first.breaker is not second.breaker
        async with first, second:
            sim.maintenance(20.0)
            with capture_logs() as logs:
                first_calls = asyncio.gather(
                    *(first.get("courses/101") for _ in range(30)), return_exceptions=True
                )
                for _ in range(1000):  # until the first client's failures opened it
                    if (await second.breaker.sync()).state is not CircuitState.CLOSED:
                        break
                    await asyncio.sleep(0.005)
                second_results = await asyncio.gather(
                    *(second.get("courses/101") for _ in range(30)), return_exceptions=True
                )
                first_results = await first_calls
            shared = await second.breaker.sync()
        await session.close()
        for client in (first, second):
            assert isinstance(client.throttle, RedisThrottle)
            await client.throttle.aclose()
            await client.breaker.aclose()

    assert [] == [r for r in [*first_results, *second_results] if isinstance(r, BaseException)]
    # The second client's requests that met the outage were probes, if any.
    assert statuses.count(503) <= shared.probes <= 4
    assert (1, CircuitState.CLOSED) == (shared.opened, shared.state)
    openings = [log["reason"] for log in logs if log["event"] == "canvas.circuit_opened"]
    assert ["consecutive_failures"] == [r for r in openings if r != "probe_failed"]
    assert "canvas.circuit_closed" == events(logs)[-1]
    keys = [
        key.decode() for key in redis.Redis.from_url(redis_url).keys("resilient_canvas:circuit*")
    ]
    assert keys
    assert all(sim.token not in key for key in keys)


async def test_client_breaker_follows_its_throttle(redis_url: str) -> None:
    """A Redis throttle brings the shared circuit (one per origin, every token); else in-process."""
    shared = RedisThrottle(redis_url, "test#one")
    async with (
        CanvasClient(ORIGIN, "token-one", throttle=shared) as one,
        CanvasClient(ORIGIN + "/", "token-two", redis_url=redis_url) as two,
        CanvasClient("https://other.test", "token-one") as local,
    ):
        assert isinstance(one.breaker, RedisCircuit)
        assert one.breaker is two.breaker
        assert isinstance(local.breaker, CircuitBreaker)
        # The circuit-state gauge (OpenTelemetry) reads both kinds.
        assert {ORIGIN: one.breaker, "https://other.test": local.breaker} == breakers()
        assert "token" not in repr(one.breaker)


def test_one_circuit_serves_two_event_loops(redis_url: str) -> None:
    """The registry's circuit works in a second asyncio.run(): a Redis client per loop."""
    redis.Redis.from_url(redis_url).flushall()
    circuit = RedisCircuit(redis_url, ORIGIN, clock=FakeClock())

    async def use() -> int:
        feed(circuit, OK, FAIL, OK)
        total = (await circuit.sync()).total
        await circuit.aclose()
        return total

    assert [3, 6] == [asyncio.run(use()), asyncio.run(use())]
    assert not circuit.degraded
