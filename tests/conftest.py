"""Shared fixtures: global state is reset around every test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from resilient_canvas._breaker import clear_breakers
from resilient_canvas._config import set_testing
from resilient_canvas._registry import clear_throttles
from resilient_canvas.testing import CanvasSimulator, FakeClock, SimulatorSettings

# The session's redis-server, for every test that names the fixture.
from tests._redis_server import redis_url  # noqa: F401


@pytest.fixture(autouse=True)
def _reset_testing_mode() -> Iterator[None]:
    """Every test starts and ends outside testing mode, with no shared throttle or breaker."""
    set_testing(False)
    clear_breakers()
    clear_throttles()
    yield
    set_testing(False)
    clear_breakers()
    clear_throttles()


@pytest.fixture
async def sim() -> AsyncIterator[CanvasSimulator]:
    """A running instant simulator on a virtual clock (waits pass instantly)."""
    clock = FakeClock()
    async with CanvasSimulator(
        SimulatorSettings.instant(), clock=clock, sleep=clock.sleep
    ) as simulator:
        yield simulator
