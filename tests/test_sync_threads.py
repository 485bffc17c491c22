"""One token's throttle driven from two event loops in two threads: a blocking client's and ours."""

from __future__ import annotations

import asyncio
import threading

from resilient_canvas import CanvasClient as AsyncCanvasClient
from resilient_canvas import Throttle, ThrottleConfig, throttle_for
from resilient_canvas.sync import CanvasClient
from resilient_canvas.testing import SimulatorSettings, ThrottleSettings
from tests._simulator_thread import simulator_thread

#: One request in flight at a time, whatever the model would allow.
ONE_AT_A_TIME = ThrottleConfig(max_in_flight=1, headerless_in_flight=1)
#: Longest a test waits for its threads: only reached when a wake-up was lost.
HANG_S = 10.0


def _one_at_a_time_canvas() -> SimulatorSettings:
    """An instant Canvas whose bucket refuses a second request while one is in flight."""
    return SimulatorSettings.instant(
        throttle=ThrottleSettings(hwm=100.0, maximum=200.0, up_front_cost=60.0)
    )


def test_async_and_blocking_clients_of_one_token_never_exceed_its_bucket() -> None:
    """An async client and a blocking one (two threads) share the token's throttle: 0 throttled."""
    calls = 30
    errors: list[BaseException] = []
    with simulator_thread(_one_at_a_time_canvas()) as sim:
        throttle_for(sim.base_url, sim.token, config=ONE_AT_A_TIME)
        start = threading.Barrier(3)

        with CanvasClient(sim.base_url, sim.token) as blocking:

            def blocking_calls() -> None:
                start.wait(timeout=HANG_S)
                for _ in range(calls):
                    try:
                        blocking.get("courses/101")
                    except Exception as error:  # every failure is reported
                        errors.append(error)

            async def async_calls() -> None:
                async with AsyncCanvasClient(sim.base_url, sim.token) as client:
                    start.wait(timeout=HANG_S)
                    results = await asyncio.gather(
                        *(client.get("courses/101") for _ in range(calls)),
                        return_exceptions=True,
                    )
                errors.extend(result for result in results if isinstance(result, BaseException))

            def async_side() -> None:
                # Debug mode: resolving this loop's futures from another thread raises.
                asyncio.run(async_calls(), debug=True)

            # Daemons, joined with a timeout: a lost wake-up fails the test, not hangs it.
            threads = [threading.Thread(target=blocking_calls, daemon=True) for _ in range(2)]
            threads.append(threading.Thread(target=async_side, daemon=True))
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=HANG_S)
            finished = [not thread.is_alive() for thread in threads]
        stats = sim.simulator.stats

    assert ([True] * 3, []) == (finished, errors)
    assert (3 * calls, 0, 1) == (stats.requests, stats.throttled, stats.peak_in_flight)


def test_two_event_loops_share_one_throttle_without_losing_a_wake_up() -> None:
    """Waiters on two loops in two threads take turns: never two places, nobody left waiting."""
    throttle = Throttle(ONE_AT_A_TIME)
    guard = threading.Lock()
    held = [0]
    most = [0]
    errors: list[BaseException] = []

    async def worker() -> None:
        for _ in range(100):
            permit = await throttle.acquire()
            with guard:
                held[0] += 1
                most[0] = max(most[0], held[0])
            await asyncio.sleep(0)  # hold the place while the other loop runs
            with guard:
                held[0] -= 1
            throttle.release(permit)

    async def workers() -> None:
        await asyncio.gather(worker(), worker(), worker())

    def run_loop() -> None:
        try:
            asyncio.run(workers(), debug=True)
        except BaseException as error:  # reported by the test
            errors.append(error)

    # Daemons, joined with a timeout: a lost wake-up fails the test, not hangs it.
    threads = [threading.Thread(target=run_loop, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG_S)

    assert [] == errors
    assert [False, False] == [thread.is_alive() for thread in threads]
    assert (1, 0) == (most[0], throttle.estimate().in_flight)
