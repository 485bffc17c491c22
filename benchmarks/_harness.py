"""Shared benchmark plumbing: a simulator in its own process, its control API, the bound."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.queues
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from resilient_canvas.testing import (
    RouteProfile,
    SimulatorSettings,
    ThrottleSettings,
    bucket_lower_bound,
)
from resilient_canvas.testing._simulator import serve


@dataclass(frozen=True)
class Workload:
    """A bulk job: *calls* GETs, each taking *service* seconds and costing *cost*."""

    name: str
    calls: int
    service: float
    cost: float

    def settings(self, **changes: Any) -> SimulatorSettings:
        """Simulator settings at Canvas defaults with this workload's route profile."""
        profile = RouteProfile(
            service_time=self.service, cost_rate=self.cost / self.service, base_cost=0.0
        )
        changes.setdefault("throttle", ThrottleSettings())
        changes.setdefault("record_timeline", True)
        return SimulatorSettings(default_route=profile, token="bench-token", **changes)


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
    """The shortest wall time Canvas's default bucket allows for *workload*."""
    return bucket_lower_bound(workload.calls, service_time=workload.service, cost=workload.cost)
