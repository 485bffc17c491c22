"""The fastest a bulk job can go under Canvas's throttle: a leaky-bucket lower bound.

The bound replays Canvas's own bucket arithmetic (``_bucket``) on the server's
side of the network with a clairvoyant client: each call is started the
moment the bucket would admit it (``count + up_front_cost < hwm``), in order,
never throttled, and ends after its service time, when its reservation is
refunded and its cost added. Between events the whole count leaks at
``outflow`` while positive, exactly as Canvas leaks it. Network latency adds
one round trip: the first request must travel to Canvas and the last answer
back. No real client can do better, because it knows neither the costs nor
the bucket's level in advance.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from resilient_canvas.testing._bucket import ThrottleSettings
from resilient_canvas.testing._settings import SimulatorSettings, work_rng


@dataclass(frozen=True, slots=True)
class CallShape:
    """One call as the server sees it.

    Attributes:
        service_time: Seconds the application works on it.
        cost: What it finally costs against the bucket.
        up_front_cost: What Canvas reserves for it; None for the throttle's global value.
    """

    service_time: float
    cost: float
    up_front_cost: float | None = None

    def __post_init__(self) -> None:
        values = (self.service_time, self.cost, self.up_front_cost or 0.0)
        if not all(math.isfinite(value) and value >= 0 for value in values):
            raise ValueError(f"A call's times and costs must be finite and >= 0: {self}.")


def schedule_bound(
    calls: Sequence[CallShape],
    throttle: ThrottleSettings | None = None,
    *,
    latency: float = 0.0,
) -> float:
    """Return the shortest wall time, in seconds, Canvas's bucket allows for *calls*.

    Args:
        calls: Every call of the job, in the order a client would start them.
        throttle: The install's throttle (Canvas's defaults when None).
        latency: One-way network delay in seconds (use the mean for a
            random one); one round trip is added.

    Raises:
        ValueError: When a call reserves hwm or more (Canvas would refuse it forever).
    """
    settings = throttle or ThrottleSettings()
    reserves = [
        settings.up_front_cost if call.up_front_cost is None else call.up_front_cost
        for call in calls
    ]
    if any(reserve >= settings.hwm for reserve in reserves):
        raise ValueError("A call whose up_front_cost reaches hwm is never admitted.")
    if not calls:
        return 0.0
    return _replay(calls, reserves, settings) + 2 * latency


def _replay(calls: Sequence[CallShape], reserves: list[float], settings: ThrottleSettings) -> float:
    hwm, maximum, outflow = settings.hwm, settings.maximum, settings.outflow
    now = count = 0.0
    running: list[tuple[float, int]] = []  # (end time, call index), soonest first
    upcoming = 0
    while upcoming < len(calls) or running:
        # Start every call the bucket admits now.
        while upcoming < len(calls) and count + reserves[upcoming] < hwm:
            count = min(maximum, count + reserves[upcoming])
            heapq.heappush(running, (now + calls[upcoming].service_time, upcoming))
            upcoming += 1
        next_end = running[0][0] if running else math.inf
        # Otherwise the next call waits for the leak to bring the count to
        # hwm - reserve (positive, since reserve < hwm); admit it right then.
        admitted_at = math.inf
        if upcoming < len(calls):
            admitted_at = now + (count - (hwm - reserves[upcoming])) / outflow
        if admitted_at < next_end:
            now, count = admitted_at, hwm
            heapq.heappush(running, (now + calls[upcoming].service_time, upcoming))
            upcoming += 1
            continue
        count = max(0.0, count - outflow * (next_end - now))
        now = next_end
        while running and running[0][0] <= now:
            _, index = heapq.heappop(running)
            # Settlement: refund the very reservation, add the real cost.
            count = min(maximum, max(0.0, count - reserves[index] + calls[index].cost))
    return now


def sample_calls(
    settings: SimulatorSettings, requests: Sequence[tuple[str, str]]
) -> list[CallShape]:
    """Draw each request's service time, cost and reservation as the simulator will.

    Uses the simulator's seed and stream: when the requests reach a fresh
    simulator in this order and none is throttled or faulted, it serves
    them with exactly these service times and costs.

    Args:
        settings: The simulator's settings (routes, throttle, seed).
        requests: ``(method, path)`` per call, e.g. ``("GET", "/api/v1/courses/101")``.
    """
    rng = work_rng(settings.seed)
    shapes = []
    for method, path in requests:
        seconds, cost = settings.profile_for_path(method, path).sample(rng)
        reserve = settings.throttle.up_front_cost_for(path)
        shapes.append(CallShape(seconds, cost, reserve))
    return shapes


def settings_lower_bound(settings: SimulatorSettings, requests: Sequence[tuple[str, str]]) -> float:
    """The bound for *requests* against a simulator with *settings*.

    Draws the calls with :func:`sample_calls` and adds one round trip at the
    mean of ``settings.latency``.
    """
    calls = sample_calls(settings, requests)
    return schedule_bound(calls, settings.throttle, latency=settings.latency.mean)


def bucket_lower_bound(
    calls: int,
    *,
    service_time: float,
    cost: float,
    hwm: float = 600.0,
    up_front_cost: float = 50.0,
    outflow: float = 10.0,
    step: float = 0.001,
) -> float:
    """Return the shortest wall time Canvas's bucket allows for *calls* identical calls.

    The original, uniform-job form of :func:`schedule_bound` (no latency).
    *step* is accepted for compatibility and no longer used: the replay is
    exact, event by event.

    Raises:
        ValueError: For non-positive parameters or a bucket that admits nothing.
    """
    if calls < 0 or service_time <= 0 or step <= 0 or outflow <= 0:
        raise ValueError("calls must not be negative; service_time, step, outflow positive.")
    if up_front_cost >= hwm:
        raise ValueError("A bucket whose up_front_cost reaches hwm admits no request.")
    throttle = ThrottleSettings(
        hwm=hwm, maximum=max(800.0, hwm), outflow=outflow, up_front_cost=up_front_cost
    )
    return schedule_bound([CallShape(service_time, cost)] * calls, throttle)
