"""Test support: a faithful Canvas simulator, a virtual clock and the testing switch.

Start the simulator in your own tests::

    from resilient_canvas.testing import CanvasSimulator

    async def test_my_sync_script():
        async with CanvasSimulator() as sim:
            await my_sync(sim.base_url, sim.token)
            assert sim.stats.duplicate_writes == 0

or use the ``canvas_simulator`` pytest fixture that installing this package
provides. ``set_testing(True)`` turns every retry and throttle wait to zero.

The default simulator is realistic (requests take ~0.2 s and cost what Canvas
charges, so concurrent requests are throttled as on a real Canvas);
``SimulatorSettings.instant()`` answers at once. ``schedule_bound`` and
``settings_lower_bound`` give the fastest time Canvas's bucket allows a job.
"""

from __future__ import annotations

from resilient_canvas._config import is_testing, set_testing
from resilient_canvas.testing._bound import (
    CallShape,
    bucket_lower_bound,
    sample_calls,
    schedule_bound,
    settings_lower_bound,
)
from resilient_canvas.testing._bucket import LeakyBucket, ThrottleSettings
from resilient_canvas.testing._clock import FakeClock
from resilient_canvas.testing._data import DataSettings
from resilient_canvas.testing._distribution import Distribution
from resilient_canvas.testing._faults import Fault, FaultSettings
from resilient_canvas.testing._settings import RouteProfile, SimulatorSettings
from resilient_canvas.testing._simulator import (
    CanvasSimulator,
    SimulatorStats,
    ruby_float,
)

__all__ = [
    "CallShape",
    "CanvasSimulator",
    "DataSettings",
    "Distribution",
    "FakeClock",
    "Fault",
    "FaultSettings",
    "LeakyBucket",
    "RouteProfile",
    "SimulatorSettings",
    "SimulatorStats",
    "ThrottleSettings",
    "bucket_lower_bound",
    "is_testing",
    "ruby_float",
    "sample_calls",
    "schedule_bound",
    "set_testing",
    "settings_lower_bound",
]
