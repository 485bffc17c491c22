"""pytest plugin (registered as an entry point): the ``canvas_simulator`` fixture.

It needs pytest-asyncio; without it the fixture is simply not offered, so the
plugin never breaks a test suite that does not use it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

from resilient_canvas.testing._simulator import CanvasSimulator

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def canvas_simulator() -> AsyncIterator[CanvasSimulator]:
        """A running, realistic Canvas simulator (requests take ~0.2 s); stopped after the test.

        For instant answers start your own: ``CanvasSimulator(SimulatorSettings.instant())``.
        """
        async with CanvasSimulator() as simulator:
            yield simulator
