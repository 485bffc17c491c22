"""The async shell over the circuit breaker: hold a call while Canvas is down.

The decisions are :mod:`resilient_canvas._breaker`'s; this module only waits
(on the call's own clock and sleep) until the circuit admits the call, raises
:class:`CircuitOpen` when the call's deadline would end first, and reports
changes of state as ``canvas.circuit_*`` events and to telemetry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from resilient_canvas import _logging, _telemetry
from resilient_canvas._breaker import Admission, Circuit, CircuitState, Outcome, Transition
from resilient_canvas._config import is_testing
from resilient_canvas._errors import CircuitOpen

Sleep = Callable[[float], Awaitable[None]]

_EVENTS = {
    CircuitState.OPEN: _logging.CIRCUIT_OPENED,
    CircuitState.HALF_OPEN: _logging.CIRCUIT_HALF_OPEN,
    CircuitState.CLOSED: _logging.CIRCUIT_CLOSED,
}


async def hold(
    circuit: Circuit,
    admission: Admission,
    *,
    deadline_left: Callable[[], float],
    sleep: Sleep,
    method: str | None,
    url: str | None,
) -> Admission:
    """Wait until *circuit* admits the call; return the admission.

    Raises:
        CircuitOpen: The call's deadline ends before Canvas can be tried again
            (at once when the next probe is known to come too late).
    """
    while not admission.go:
        if is_testing():
            # Users' test suites run without waits: the call goes, uncounted.
            return admission
        left = deadline_left()
        probe_too_late = admission.next_probe_in is not None and admission.next_probe_in >= left
        if probe_too_late or left <= 0:
            raise _circuit_open(circuit, admission, method, url)
        await sleep(min(admission.wait, left))
        admission = circuit.admit()
    report(circuit, circuit.take_transition())
    return admission


def finish(circuit: Circuit, admission: Admission, outcome: Outcome) -> None:
    """Record how an admitted request ended, and report any change of state."""
    transition = circuit.finish(admission, outcome)
    if transition is not None:
        report(circuit, transition)


def report(circuit: Circuit, transition: Transition | None) -> None:
    """Log a change of state and tell telemetry."""
    if transition is None:
        return
    _logging.circuit_changed(
        _EVENTS[transition.state],
        origin=circuit.name,
        reason=transition.reason,
        failures=transition.failures,
        total=transition.total,
        down_for_s=transition.down_for_s,
        waits=transition.waits,
    )
    hooks = _telemetry.hooks
    if hooks is not None and hooks.active():
        hooks.circuit_changed(circuit.name, transition.state.value)


def _circuit_open(
    circuit: Circuit, admission: Admission, method: str | None, url: str | None
) -> CircuitOpen:
    where = f"{method} {url}" if method and url else "The request"
    down = f"Canvas at {circuit.name} has been failing for {admission.down_for:.1f} s"
    if admission.next_probe_in is not None:
        when = f"the next probe is in {admission.next_probe_in:.1f} s, after this call's deadline"
    else:
        when = "it was still being probed when this call's deadline ended"
    return CircuitOpen(
        f"{where} was not sent: {down} (circuit open) and {when}. Raise the deadline to "
        "wait for Canvas to come back.",
        down_for=round(admission.down_for, 3),
        next_probe_in=None
        if admission.next_probe_in is None
        else round(admission.next_probe_in, 3),
        method=method,
        url=url,
    )
