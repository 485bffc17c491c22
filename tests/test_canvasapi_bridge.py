"""Tests for canvasapi.install(): real canvasapi against the simulator over real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import canvasapi.exceptions as canvasapi_errors
import pytest
import requests
from canvasapi import Canvas

from resilient_canvas import ThrottleConfig, throttle_for
from resilient_canvas import exceptions as ours
from resilient_canvas._config import set_testing
from resilient_canvas.canvasapi import (
    TRANSPORT_ERROR_MAP,
    CanvasapiConnectionError,
    CanvasapiConnectTimeout,
    CanvasapiReadTimeout,
    CanvasapiSSLError,
    CanvasapiTimeout,
    CanvasapiTransportError,
    _BridgeSession,
    _transport_error,
    install,
)
from resilient_canvas.testing import Fault, FaultSettings, SimulatorSettings
from tests._interrupt import CAN_INTERRUPT, ctrl_c_when
from tests._simulator_thread import ThreadedSimulator, simulator_thread
from tests.test_sync import _costly_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """An instant simulator served from its own thread."""
    with simulator_thread() as served:
        yield served


def _canvas(base_url: str, token: str) -> Canvas:
    """A canvasapi Canvas of the simulator (canvasapi warns about its plain-http URL)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`base_url`", UserWarning)
        warnings.filterwarnings("ignore", ".*http", UserWarning)
        return Canvas(base_url, token)


def _schedule(sim: ThreadedSimulator, faults: dict[int, Fault], **changes: float) -> None:
    """Force *faults* on the given request numbers of a fresh simulator."""

    def apply() -> None:
        canvas_app = sim.simulator._canvas
        fault_settings = FaultSettings(schedule=faults, **changes)  # type: ignore[arg-type]
        canvas_app.settings = SimulatorSettings.instant(faults=fault_settings)
        canvas_app.reset()

    sim.call(apply)


# ---------------------------------------------------------------- successes


def test_paginated_lists_read_every_page(sim: ThreadedSimulator) -> None:
    """canvasapi's PaginatedList follows our responses' Link headers to the last page."""
    canvas = install(_canvas(sim.base_url, sim.token))

    enrollments = list(canvas.get_course(101).get_enrollments(per_page=7))

    expected = sim.call(lambda: [e["id"] for e in sim.simulator.data.enrollments[101]])
    assert expected == [enrollment.id for enrollment in enrollments]
    assert 1 + -(-len(expected) // 7) == sim.simulator.stats.requests


def test_canvasapi_objects_and_writes_work(sim: ThreadedSimulator) -> None:
    """A canvasapi POST returns canvasapi's object, applied once."""
    canvas = install(_canvas(sim.base_url, sim.token))
    user_id = sim.call(lambda: sim.simulator.data.enrollments[102][1]["user_id"])

    enrollment = canvas.get_course(101).enroll_user(
        user_id, enrollment={"type": "StudentEnrollment", "enrollment_state": "active"}
    )

    assert ("Enrollment", user_id, "active") == (
        type(enrollment).__name__,
        enrollment.user_id,
        enrollment.enrollment_state,
    )
    assert (1, 0) == (sim.simulator.stats.applied_writes, sim.simulator.stats.duplicate_writes)


def test_a_transient_failure_is_retried(sim: ThreadedSimulator) -> None:
    """A 503 maintenance page, which plain canvasapi raises, is retried into a success."""
    set_testing(True)
    _schedule(sim, {1: Fault.MAINTENANCE, 2: Fault.MAINTENANCE})
    plain = _canvas(sim.base_url, sim.token)
    with pytest.raises(canvasapi_errors.CanvasException, match="status code 503"):
        plain.get_course(101)

    course = install(_canvas(sim.base_url, sim.token)).get_course(101)

    assert (101, 3) == (course.id, sim.simulator.stats.requests)


def test_sixteen_threads_of_canvasapi_share_the_throttle() -> None:
    """A 16-thread pool of canvasapi calls is not throttled once installed; plain is."""
    calls = 64
    with simulator_thread(_costly_settings()) as sim:
        config = ThrottleConfig(hwm=100.0, up_front_cost=25.0, headerless_in_flight=1)
        throttle_for(sim.base_url, sim.token, config=config)
        canvas = install(_canvas(sim.base_url, sim.token))
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(lambda _: canvas.get_course(101).id, range(calls)))
        paced = (sim.simulator.stats.requests, sim.simulator.stats.throttled)
        sim.call(sim.simulator.reset)
        plain = _canvas(sim.base_url, sim.token)

        def plain_call(_: int) -> bool:
            try:
                plain.get_course(101)
            except canvasapi_errors.Forbidden:
                return False
            return True

        with ThreadPoolExecutor(16) as pool:
            plain_ok = list(pool.map(plain_call, range(calls)))

    requests, throttled = paced
    assert [101] * calls == ids
    # Paced: at most one throttled request (retried unseen) on a loaded machine.
    assert throttled <= 1
    assert calls + throttled == requests
    # The control: the same pool without install loses calls to the throttle.
    assert False in plain_ok


# ---------------------------------------------------------------- failures


def test_an_error_status_raises_canvasapis_class_with_ours_as_cause(
    sim: ThreadedSimulator,
) -> None:
    """A 404 is canvasapi's ResourceDoesNotExist; its __cause__ is our classified error."""
    canvas = install(_canvas(sim.base_url, sim.token))

    with pytest.raises(canvasapi_errors.ResourceDoesNotExist) as raised:
        canvas.get_course(999999)

    cause = raised.value.__cause__
    assert isinstance(cause, ours.ResourceDoesNotExist)
    assert ("GET", 404) == (cause.method, cause.status_code)


def test_error_bodies_reach_canvasapi(sim: ThreadedSimulator) -> None:
    """canvasapi reads the error body as usual: 403 text, 401 JSON with WWW-Authenticate."""
    canvas = install(_canvas(sim.base_url, sim.token))
    with pytest.raises(canvasapi_errors.Forbidden, match="user not authorized"):
        canvas.get_account(1)

    stranger = install(_canvas(sim.base_url, "not-the-token"))
    with pytest.raises(canvasapi_errors.InvalidAccessToken) as raised:
        stranger.get_course(101)

    assert [{"message": "Invalid access token."}] == raised.value.message
    assert isinstance(raised.value.__cause__, ours.InvalidAccessToken)


def test_a_post_whose_answer_is_lost_is_found_not_repeated(sim: ThreadedSimulator) -> None:
    """A dropped enrollment POST is looked up (write reconciliation), not resent: no duplicate."""
    set_testing(True)
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    canvas = install(_canvas(sim.base_url, sim.token))
    course = canvas.get_course(101)  # request 2
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    user_id = sim.call(lambda: sim.simulator.data.enrollments[102][1]["user_id"])

    enrollment = course.enroll_user(user_id, enrollment={"type": "StudentEnrollment"})

    assert user_id == enrollment.user_id
    stats = sim.simulator.stats
    assert (1, 0) == (stats.applied_writes, stats.duplicate_writes)


def test_a_post_without_a_check_whose_outcome_is_unknown_is_raised(
    sim: ThreadedSimulator,
) -> None:
    """A dropped POST with no check is raised, not resent: one write, a ConnectionError."""
    set_testing(True)
    canvas = install(_canvas(sim.base_url, sim.token))
    course = canvas.get_course(101)
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})

    with pytest.raises(CanvasapiConnectionError) as raised:
        course.create_assignment({"name": "Essay"})

    assert isinstance(raised.value, canvasapi_errors.CanvasException)
    assert isinstance(raised.value, requests.ConnectionError)
    assert isinstance(raised.value.__cause__, ours.ConnectionDropped)
    stats = sim.simulator.stats
    assert (1, 1, 0) == (stats.requests, stats.applied_writes, stats.duplicate_writes)


def test_a_post_that_times_out_is_a_read_timeout(sim: ThreadedSimulator) -> None:
    """With install's timeout, a hanging POST (no check for it) raises a ReadTimeout of both."""
    _schedule(sim, {2: Fault.HANG}, hang_seconds=5.0)
    canvas = install(_canvas(sim.base_url, sim.token), timeout=0.05)
    course = canvas.get_course(101)

    with pytest.raises(CanvasapiReadTimeout) as raised:
        course.create_assignment({"name": "Essay"})

    assert isinstance(raised.value, requests.ReadTimeout)
    assert isinstance(raised.value.__cause__, ours.ReadTimeout)


def test_no_server_is_a_connection_error() -> None:
    """Nothing listening: retried, then a ConnectionError canvasapi users can catch."""
    set_testing(True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    canvas = install(_canvas(f"http://127.0.0.1:{port}", "token"))

    with pytest.raises(canvasapi_errors.CanvasException) as raised:
        canvas.get_course(101)

    assert isinstance(raised.value, requests.ConnectionError)
    assert isinstance(raised.value.__cause__, ours.ConnectError)
    assert 10 == len(raised.value.__cause__.attempts.attempts)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ours.ConnectError(), CanvasapiConnectionError),
        (ours.ConnectionDropped(), CanvasapiConnectionError),
        (ours.TLSError(), CanvasapiSSLError),
        (ours.ConnectTimeout(), CanvasapiConnectTimeout),
        (ours.ReadTimeout(), CanvasapiReadTimeout),
        (ours.ThrottleTimeout(), CanvasapiTimeout),
        (ours.RequestTimeout(), CanvasapiTimeout),
        (ours.InvalidResponse(), CanvasapiTransportError),
        (ours.TransportError(), CanvasapiConnectionError),
    ],
)
def test_failures_without_a_response_map_to_both_libraries(
    error: ours.CanvasException, expected: type[CanvasapiTransportError]
) -> None:
    """Each response-less failure maps to a class that is canvasapi's and requests' at once."""
    mapped = _transport_error(error)

    assert expected is type(mapped)
    assert isinstance(mapped, canvasapi_errors.CanvasException)
    assert isinstance(mapped, requests.RequestException)


def test_every_response_less_failure_class_is_mapped() -> None:
    """No class of our tree without a response falls through to the generic mapping."""
    response_less = {ours.TransportError, ours.RequestTimeout}
    classes = {
        cls
        for cls in vars(ours).values()
        if isinstance(cls, type) and any(issubclass(cls, base) for base in response_less)
    }
    unmapped = {cls.__name__ for cls in classes if not set(cls.__mro__) & set(TRANSPORT_ERROR_MAP)}
    generic = {
        cls.__name__
        for cls in classes
        if TRANSPORT_ERROR_MAP[next(b for b in cls.__mro__ if b in TRANSPORT_ERROR_MAP)]
        is CanvasapiTransportError
        and cls is not ours.InvalidResponse
    }

    assert (set(), set()) == (unmapped, generic - {"GatewayTimeout"})


@pytest.mark.skipif(not CAN_INTERRUPT, reason="needs POSIX signals")
def test_ctrl_c_reaches_the_script_as_is_and_the_canvas_goes_on(sim: ThreadedSimulator) -> None:
    """Ctrl-C in a canvasapi call raises KeyboardInterrupt, not a canvasapi error; then works on."""
    _schedule(sim, {1: Fault.HANG})
    canvas = install(_canvas(sim.base_url, sim.token))

    with (
        ctrl_c_when(lambda: sim.simulator.stats.in_flight > 0),
        pytest.raises(KeyboardInterrupt),
    ):
        canvas.get_course(101)

    assert 101 == canvas.get_course(101).id


# ---------------------------------------------------------------- plumbing


def test_requests_without_the_token_go_through_requests(sim: ThreadedSimulator) -> None:
    """canvasapi's use_auth=False requests (file bodies) bypass the client: not retried."""
    _schedule(sim, {1: Fault.MAINTENANCE})
    canvas = install(_canvas(sim.base_url, sim.token))
    requester = canvas._Canvas__requester

    with pytest.raises(canvasapi_errors.CanvasException, match="status code 503"):
        requester.request("GET", _url=f"{sim.base_url}/api/v1/courses/101", use_auth=False)

    assert 1 == sim.simulator.stats.requests


def test_install_twice_changes_nothing_and_hides_the_token(sim: ThreadedSimulator) -> None:
    """A second install keeps the first bridge; its repr never shows the token."""
    canvas = install(_canvas(sim.base_url, sim.token))
    bridge = canvas._Canvas__requester._session

    assert canvas is install(canvas)
    assert bridge is canvas._Canvas__requester._session
    assert isinstance(bridge, _BridgeSession)
    assert sim.token not in repr(bridge)


def test_an_installed_script_leaves_nothing_behind_at_exit() -> None:
    """A canvasapi script with install exits with one thread and no ResourceWarning."""
    code = """
        import atexit, gc, threading, warnings
        atexit.register(lambda: (gc.collect(), print([t.name for t in threading.enumerate()])))
        from tests._simulator_thread import simulator_thread
        from canvasapi import Canvas
        from resilient_canvas.canvasapi import install
        sim_context = simulator_thread()
        sim = sim_context.__enter__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            canvas = install(Canvas(sim.base_url, sim.token))
        print(len(list(canvas.get_courses(per_page=1))))
        atexit.register(sim_context.__exit__, None, None, None)
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )

    assert ("", "3\n['MainThread']\n") == (result.stderr, result.stdout)
    assert threading.active_count() >= 1
