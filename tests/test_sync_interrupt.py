"""Ctrl-C during a blocking call: it stops at once, gives back what it held, the client goes on."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from resilient_canvas import ClientState, ThrottleConfig, throttle_for
from resilient_canvas import exceptions as exc
from resilient_canvas.sync import CanvasClient
from resilient_canvas.testing import Fault, FaultSettings, SimulatorSettings
from tests._interrupt import CAN_INTERRUPT, ctrl_c_when
from tests._simulator_thread import ThreadedSimulator, simulator_thread

pytestmark = pytest.mark.skipif(not CAN_INTERRUPT, reason="needs POSIX signals")


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """An instant simulator whose first request hangs (30 s, far beyond any test)."""
    settings = SimulatorSettings.instant(faults=FaultSettings(schedule={1: Fault.HANG}))
    with simulator_thread(settings) as served:
        yield served


def _in_flight_at_canvas(sim: ThreadedSimulator) -> bool:
    return sim.simulator.stats.in_flight > 0


def test_ctrl_c_gives_the_throttle_place_back_before_it_raises(sim: ThreadedSimulator) -> None:
    """KeyboardInterrupt arrives once the abandoned request has left the throttle."""
    with CanvasClient(sim.base_url, sim.token) as client:
        throttle = client.throttle
        assert throttle is not None

        with ctrl_c_when(lambda: _in_flight_at_canvas(sim)), pytest.raises(KeyboardInterrupt):
            client.get("courses/101")
        in_flight = throttle.estimate().in_flight

        assert (0, 101) == (in_flight, client.get("courses/101")["id"])
        assert ClientState.OPENED == client.state


def test_ctrl_c_while_waiting_for_the_throttle_leaves_its_queue(sim: ThreadedSimulator) -> None:
    """A call queued behind a hanging one is interrupted; the queue and the client recover."""
    throttle = throttle_for(sim.base_url, sim.token, config=ThrottleConfig(max_in_flight=1))
    client = CanvasClient(sim.base_url, sim.token)
    client.__enter__()
    hanging_errors: list[BaseException] = []

    def hang() -> None:
        try:
            client.get("courses/101")  # holds the only place until the client closes
        except exc.CanvasException as error:
            hanging_errors.append(error)

    holder = threading.Thread(target=hang)
    holder.start()
    with ctrl_c_when(lambda: throttle.waiting == 1), pytest.raises(KeyboardInterrupt):
        client.get("courses/102")  # waits in the queue: the place is taken
    queued, in_flight = throttle.waiting, throttle.estimate().in_flight
    client.close()  # the hanging call fails: its client is closed
    holder.join()

    assert (0, 1) == (queued, in_flight)
    assert [exc.TransportError] == [type(error) for error in hanging_errors]
    assert 0 == throttle.estimate().in_flight
    with CanvasClient(sim.base_url, sim.token) as again:
        assert 102 == again.get("courses/102")["id"]


def test_ctrl_c_while_paginating_ends_the_listing(sim: ThreadedSimulator) -> None:
    """Interrupted mid-listing, the loop is left; the listing's request is given up."""
    with CanvasClient(sim.base_url, sim.token) as client:
        throttle = client.throttle
        assert throttle is not None
        listing = client.paginate("courses/101/enrollments", per_page=5)

        with ctrl_c_when(lambda: _in_flight_at_canvas(sim)), pytest.raises(KeyboardInterrupt):
            next(listing)
        in_flight = throttle.estimate().in_flight

        assert 0 == in_flight
        assert 5 == len(list(itertools.islice(client.paginate("courses/101/enrollments"), 5)))
