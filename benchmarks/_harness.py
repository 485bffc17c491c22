"""Shared benchmark plumbing: workloads, a simulator in its own process, its control API, the bound.

A :class:`Workload` describes one Canvas install and one bulk job on it: the
throttle's settings (hwm, maximum, outflow, up_front_cost, per-path
up_front_cost, 403 or 429), how long calls work and what they cost (constant,
uniform or heavy-tailed, tied to the service time or drawn on their own),
network latency, and a mix of routes. It builds the simulator's settings, the
list of requests to send, and the leaky-bucket lower bound for exactly those
draws (``resilient_canvas.testing.settings_lower_bound``).

Examples::

    Workload("B", calls=1500, service=0.05, cost=0.4)           # issue 6's workload B
    Workload("ufc25", calls=1500, service=0.05, cost=0.4,
             throttle=ThrottleSettings(up_front_cost=25.0))
    Workload("heavy", calls=1500, route=RouteProfile(
        Distribution.constant(0.05), cost=Distribution.lognormal(0.4, 1.2)))
    Workload("mixed", calls=1500,
             throttle=ThrottleSettings(up_front_cost_by_path={r"/enrollments": 100.0}),
             mix=(RouteShare("GET", "/api/v1/courses/101/enrollments",
                             "GET /api/v1/courses/{course_id}/enrollments",
                             RouteProfile(Distribution.lognormal(0.1, 1.2)), weight=1),
                  RouteShare("GET", "/api/v1/courses/101", "GET /api/v1/courses/{course_id}",
                             RouteProfile(service_time=0.05, cost_rate=8.0), weight=3)))
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.queues
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from resilient_canvas.testing import (
    Distribution,
    RouteProfile,
    SimulatorSettings,
    ThrottleSettings,
    settings_lower_bound,
)
from resilient_canvas.testing._simulator import serve

#: The path single-route workloads request.
DEFAULT_PATH = "/api/v1/courses/101"


@dataclass(frozen=True)
class RouteShare:
    """One route of a mixed workload.

    Attributes:
        method: HTTP method sent.
        path: Concrete path sent (its query string counts for per-path up_front_cost).
        template: The simulator's route key, e.g. ``"GET /api/v1/courses/{course_id}"``.
        profile: How the simulator serves it.
        weight: Relative share of the calls.
    """

    method: str
    path: str
    template: str
    profile: RouteProfile
    weight: float = 1.0


@dataclass(frozen=True)
class Workload:
    """A bulk job on one Canvas install.

    Attributes:
        name: Label for tables and plots.
        calls: How many calls the job makes.
        service: Mean service seconds of the single route (ignored with *route* or *mix*).
        cost: Mean cost of the single route (ignored with *route* or *mix*); tied
            to the service time, which varies uniformly by 20%.
        route: The single route's full profile (any distributions).
        mix: Routes and shares for a mixed job; replaces the single route.
        throttle: The install's throttle settings.
        latency: One-way network delay.
        seed: Seed of every draw (the bound replays the same draws).
    """

    name: str
    calls: int
    service: float = 0.05
    cost: float = 0.04
    route: RouteProfile | None = None
    mix: tuple[RouteShare, ...] = ()
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    latency: Distribution = field(default_factory=Distribution)
    seed: int = 3

    @property
    def profile(self) -> RouteProfile:
        """The single route's profile."""
        if self.route is not None:
            return self.route
        return RouteProfile(
            service_time=self.service, cost_rate=self.cost / self.service, base_cost=0.0
        )

    def settings(self, **changes: Any) -> SimulatorSettings:
        """Simulator settings for this install, with a fixed token and a timeline."""
        changes.setdefault("throttle", self.throttle)
        changes.setdefault("record_timeline", True)
        changes.setdefault("latency", self.latency)
        changes.setdefault("seed", self.seed)
        routes = {share.template: share.profile for share in self.mix}
        return SimulatorSettings(
            default_route=self.profile, routes=routes, token="bench-token", **changes
        )

    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every call, the mix interleaved evenly and reproducibly."""
        if not self.mix:
            return [("GET", DEFAULT_PATH)] * self.calls
        total = sum(share.weight for share in self.mix)
        # Smooth weighted round robin: each share gets its weight's fraction of
        # every prefix (up to one call), so no route comes in a burst.
        credit = [0.0] * len(self.mix)
        order = []
        for _ in range(self.calls):
            credit = [c + share.weight for c, share in zip(credit, self.mix, strict=True)]
            best = max(range(len(self.mix)), key=credit.__getitem__)
            credit[best] -= total
            order.append((self.mix[best].method, self.mix[best].path))
        return order

    def bound(self) -> float:
        """The leaky-bucket lower bound of this job on this install (seconds)."""
        return settings_lower_bound(self.settings(), self.requests())


def _run_server(settings: SimulatorSettings, port_queue: multiprocessing.queues.Queue[int]) -> None:
    def ready(simulator: Any) -> None:
        port_queue.put(int(simulator.base_url.rsplit(":", 1)[1]))

    asyncio.run(serve(settings, ready=ready))


@contextmanager
def simulator_process(settings: SimulatorSettings) -> Iterator[str]:
    """Run a simulator in a separate process (its own core); yield its base URL."""
    context = multiprocessing.get_context("spawn")
    port_queue: multiprocessing.queues.Queue[int] = context.Queue()
    process = context.Process(target=_run_server, args=(settings, port_queue), daemon=True)
    process.start()
    try:
        port = port_queue.get(timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.join(timeout=10)


async def control(base_url: str, action: str) -> Any:
    """Call a simulator control endpoint: stats, reset or timeline."""
    method = "POST" if action == "reset" else "GET"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base_url}/_simulator/{action}") as response,
    ):
        return await response.json()


def leaky_bucket_bound(workload: Workload) -> float:
    """The shortest wall time the workload's install allows for it (see ``Workload.bound``)."""
    return workload.bound()


RESULTS = Path(__file__).parent / "results"


def save_results(name: str, report: dict[str, Any], *, partial: bool) -> bool:
    """Write *report* to ``results/<name>`` unless the run covered only part of the benchmark.

    Returns whether it was written (a partial run would overwrite the full
    figures the docs quote with a subset).
    """
    if partial:
        print("partial run: results not written", file=sys.stderr)
        return False
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    return True
