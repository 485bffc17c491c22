"""A simulator served from its own thread and loop, for tests of blocking clients.

A blocking call holds the test's thread, so the simulator cannot run on the
test's event loop: it gets a loop of its own on a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from resilient_canvas.testing import CanvasSimulator, SimulatorSettings

T = TypeVar("T")


class ThreadedSimulator:
    """A running :class:`CanvasSimulator` and the loop that serves it."""

    def __init__(self, simulator: CanvasSimulator, loop: asyncio.AbstractEventLoop) -> None:
        self.simulator = simulator
        self.loop = loop

    @property
    def base_url(self) -> str:
        """The simulator's base URL."""
        return self.simulator.base_url

    @property
    def token(self) -> str:
        """The simulator's valid token."""
        return self.simulator.token

    def on_loop(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout=10)

    def call(self, func: Callable[[], T]) -> T:
        """Run *func* on the simulator's loop (its state is not thread-safe)."""

        async def run() -> T:
            return func()

        return self.on_loop(run)


@contextmanager
def simulator_thread(settings: SimulatorSettings | None = None) -> Iterator[ThreadedSimulator]:
    """Serve a simulator (instant by default) from a background thread until the block ends."""
    loop = asyncio.new_event_loop()
    simulator = CanvasSimulator(settings or SimulatorSettings.instant())
    thread = threading.Thread(target=loop.run_forever, name="simulator", daemon=True)
    thread.start()
    served = ThreadedSimulator(simulator, loop)
    try:
        served.on_loop(simulator.start)
        yield served
    finally:
        served.on_loop(simulator.stop)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
