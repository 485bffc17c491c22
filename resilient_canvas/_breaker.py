"""The circuit breaker's decisions, sans-IO: while Canvas is down, hold calls, do not fail them.

One :class:`CircuitBreaker` per Canvas origin, shared by every client and
token on it in this process (:func:`breaker_for`). It counts outcomes over a
sliding time window and *opens* when the window holds at least
``minimum_throughput`` outcomes and the share of outage failures (5xx,
connection failures, timeouts) reaches ``failure_ratio`` (a partial
outage), or after ``consecutive_failures`` failures in a row (a sudden full
one, detected before the retry budget is spent). Throttling (429, legacy
403) and other 4xx answers count as successes: Canvas answered.

While open, :meth:`CircuitBreaker.admit` tells callers to wait; after
``break_duration`` the next caller is the *probe* (half-open: one request).
A probe that succeeds closes the circuit and releases the held calls
gradually (slow start: the number in flight doubles every
``release_duration / 10``); one that fails reopens it with a break twice as
long, up to ``max_break_duration``.

No asyncio, no I/O: the async shell that holds calls is ``_circuit``, and a
shared (Redis) implementation only needs to satisfy :class:`Circuit`.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from resilient_canvas._errors import (
    CanvasException,
    ConnectError,
    ConnectionDropped,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    ThrottleTimeout,
)

Clock = Callable[[], float]


class CircuitState(enum.Enum):
    """Where a circuit is: closed (normal), open (holding calls), half-open (probing)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(enum.Enum):
    """What one request tells the breaker about Canvas."""

    #: Canvas answered (any 2xx-4xx, throttles included).
    SUCCESS = "success"
    #: An outage symptom: 5xx, could not connect, connection dropped, timed out.
    FAILURE = "failure"
    #: Tells nothing about Canvas (cancelled, unrelated error, refused before sending).
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSettings:
    """When a circuit opens and how it recovers (defaults discussed in docs/operations.md).

    Attributes:
        failure_ratio: Share of failures in the window that opens the circuit.
        consecutive_failures: Failures in a row that open the circuit at once,
            whatever the window holds.
        window: Length of the sliding window, in seconds.
        minimum_throughput: Outcomes the window must hold before it can open:
            a handful of unlucky calls is not an outage.
        break_duration: Seconds from opening to the first probe.
        max_break_duration: Longest wait between probes; each failed probe
            doubles the wait up to this.
        release_duration: Seconds over which held calls are released after
            a successful probe.
    """

    failure_ratio: float = 0.5
    consecutive_failures: int = 10
    window: float = 10.0
    minimum_throughput: int = 20
    break_duration: float = 5.0
    max_break_duration: float = 30.0
    release_duration: float = 5.0

    def __post_init__(self) -> None:
        # A ratio of 0 would open on the first outcome; above 1 never opens.
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError(f"failure_ratio must be in (0, 1], not {self.failure_ratio}.")
        if self.minimum_throughput < 1 or self.consecutive_failures < 1:
            raise ValueError("minimum_throughput and consecutive_failures must be at least 1.")
        for name in ("window", "break_duration", "release_duration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}.")
        if self.max_break_duration < self.break_duration:
            raise ValueError("max_break_duration must not be smaller than break_duration.")


@dataclass(frozen=True, slots=True)
class Admission:
    """The breaker's answer to "may I send now?" (times relative: clocks may differ).

    Attributes:
        go: Whether the request may be sent now.
        probe: Whether this request is the half-open probe (its outcome decides).
        ramp: Whether it was admitted under the gradual release (counted in flight).
        wait: Seconds after which asking again may succeed, if *go* is false.
        next_probe_in: Seconds until the next probe is due, if the circuit is open.
        down_for: Seconds since the circuit opened, if it is not closed.
    """

    go: bool
    probe: bool = False
    ramp: bool = False
    wait: float = 0.0
    next_probe_in: float | None = None
    down_for: float = 0.0


#: The answer in the common case, built once: a closed circuit costs nothing per call.
ADMITTED = Admission(True)


@dataclass(frozen=True, slots=True)
class BreakerEstimate:
    """A snapshot of a circuit for logs, progress and tests (like ``throttle.estimate()``).

    Attributes:
        state: Closed, open or half-open.
        failures: Outage failures in the window.
        total: Outcomes in the window.
        down_for_s: Seconds since the circuit opened; 0 when closed.
        next_probe_in_s: Seconds until the next probe may go; None unless open.
        opened: Times the circuit has opened.
        probes: Probes sent.
        waits: Times a call was told to wait since the circuit last opened
            (a held call asks again after each wait).
    """

    state: CircuitState
    failures: int
    total: int
    down_for_s: float
    next_probe_in_s: float | None
    opened: int
    probes: int
    waits: int


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the shell to log (``canvas.circuit_*``) and count."""

    state: CircuitState
    reason: str
    failures: int
    total: int
    down_for_s: float
    waits: int


class Circuit(Protocol):
    """What the async shell needs from a breaker: the in-process one, or a shared one."""

    name: str

    @property
    def state(self) -> CircuitState:
        """The current state."""
        ...

    def admit(self) -> Admission:
        """Decide whether a request may be sent now."""
        ...

    def finish(self, admission: Admission, outcome: Outcome) -> Transition | None:
        """Record the outcome of an admitted request; return a state change, if any."""
        ...

    def take_transition(self) -> Transition | None:
        """Return (once) a state change made by :meth:`admit`, if any."""
        ...

    def estimate(self) -> BreakerEstimate:
        """A snapshot of the circuit."""
        ...


def outcome_of(error: BaseException | None) -> Outcome:
    """Classify how an attempt ended; None means a response Canvas sent successfully."""
    if error is None:
        return Outcome.SUCCESS
    if not isinstance(error, CanvasException) or isinstance(error, ThrottleTimeout):
        return Outcome.IGNORED
    if isinstance(
        error, ServerError | ServiceUnavailable | ConnectError | ConnectionDropped | RequestTimeout
    ):
        # RequestTimeout covers 504 and hangs; a plain 408 is Canvas answering.
        return Outcome.SUCCESS if error.response_status == 408 else Outcome.FAILURE
    if error.response_status is not None or error.status_code < 500:
        # 4xx, throttles (429 / legacy 403) included: Canvas is up and answering.
        return Outcome.SUCCESS
    return Outcome.IGNORED


class _Window:
    """Outcome counts over the last *span* seconds, in ten buckets (O(1) memory)."""

    _BUCKETS = 10

    def __init__(self, span: float) -> None:
        self._width = span / self._BUCKETS
        self._slots: list[list[int]] = [[-1, 0, 0] for _ in range(self._BUCKETS)]

    def add(self, now: float, failed: bool) -> None:
        index = int(now // self._width)
        slot = self._slots[index % self._BUCKETS]
        if slot[0] != index:
            slot[0], slot[1], slot[2] = index, 0, 0
        slot[1] += 1
        slot[2] += failed

    def counts(self, now: float) -> tuple[int, int]:
        """Return ``(failures, total)`` within the window."""
        oldest = int(now // self._width) - self._BUCKETS + 1
        total = failures = 0
        for index, count, failed in self._slots:
            if index >= oldest:
                total += count
                failures += failed
        return failures, total

    def clear(self) -> None:
        for slot in self._slots:
            slot[0] = -1


class CircuitBreaker:
    """The in-process circuit of one Canvas origin. Thread-safe; no I/O.

    Args:
        settings: Thresholds and timings.
        clock: Time source (inject a fake one in tests).
        name: The origin, for logs.
    """

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Clock = time.monotonic,
        name: str = "",
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._window = _Window(self.settings.window)
        self._state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._next_probe_at = 0.0
        self._break = self.settings.break_duration
        self._closed_at: float | None = None
        self._ramp_in_flight = 0
        self._opened = self._probes = self._waits = 0
        self._streak = 0
        self._pending: Transition | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"

    @property
    def state(self) -> CircuitState:
        """The current state."""
        return self._state

    # ------------------------------------------------------------- decisions

    def admit(self) -> Admission:
        """Decide whether a request may be sent now.

        Returns:
            ``go`` to send (maybe as the probe), else when to ask again.
        """
        # The common case without the lock: closed and done releasing.
        if self._state is CircuitState.CLOSED and self._closed_at is None:
            return ADMITTED
        with self._lock:
            now = self._clock()
            if self._state is CircuitState.CLOSED:
                return self._admit_ramp(now)
            if self._state is CircuitState.OPEN and now >= self._next_probe_at:
                self._state = CircuitState.HALF_OPEN
                self._probes += 1
                self._pending = self._transition(now, "break_elapsed")
                return Admission(True, probe=True, down_for=now - self._opened_at)
            self._waits += 1
            if self._state is CircuitState.OPEN:
                wait = self._next_probe_at - now
                return Admission(
                    False, wait=wait, next_probe_in=wait, down_for=now - self._opened_at
                )
            # Half-open: the probe's answer decides; look again shortly.
            return Admission(False, wait=_POLL, down_for=now - self._opened_at)

    def finish(self, admission: Admission, outcome: Outcome) -> Transition | None:
        """Record how an admitted request ended.

        Returns:
            The state change it caused, if any (for the shell to report).
        """
        if not admission.go:
            return None
        # Closed with nothing to count: the common success costs one window update.
        with self._lock:
            now = self._clock()
            if admission.ramp:
                self._ramp_in_flight -= 1
            if admission.probe:
                return self._end_probe(now, outcome)
            if outcome is Outcome.IGNORED or self._state is not CircuitState.CLOSED:
                # Late answers to requests sent before the circuit opened decide nothing.
                return None
            failed = outcome is Outcome.FAILURE
            self._window.add(now, failed)
            self._streak = self._streak + 1 if failed else 0
            return self._maybe_open(now) if failed else None

    def take_transition(self) -> Transition | None:
        """Return (once) the state change :meth:`admit` made, if any."""
        if self._pending is None:
            return None
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    def estimate(self) -> BreakerEstimate:
        """A snapshot of the circuit."""
        with self._lock:
            now = self._clock()
            failures, total = self._window.counts(now)
            closed = self._state is CircuitState.CLOSED
            return BreakerEstimate(
                state=self._state,
                failures=failures,
                total=total,
                down_for_s=0.0 if closed else round(now - self._opened_at, 3),
                next_probe_in_s=(
                    round(max(0.0, self._next_probe_at - now), 3)
                    if self._state is CircuitState.OPEN
                    else None
                ),
                opened=self._opened,
                probes=self._probes,
                waits=self._waits,
            )

    # -------------------------------------------------------------- internals

    def _admit_ramp(self, now: float) -> Admission:
        assert self._closed_at is not None
        elapsed = now - self._closed_at
        if elapsed >= self.settings.release_duration:
            self._closed_at = None
            return ADMITTED
        # Slow start: 1 in flight at first, doubling ten times over the release.
        limit = 2 ** math.floor(10 * elapsed / self.settings.release_duration)
        if self._ramp_in_flight >= limit:
            self._waits += 1
            return Admission(False, wait=_POLL)
        self._ramp_in_flight += 1
        return Admission(True, ramp=True)

    def _maybe_open(self, now: float) -> Transition | None:
        failures, total = self._window.counts(now)
        if self._streak >= self.settings.consecutive_failures:
            reason = "consecutive_failures"
        elif (
            total >= self.settings.minimum_throughput
            and failures >= self.settings.failure_ratio * total
        ):
            reason = "failure_ratio"
        else:
            return None
        self._streak = 0
        self._state = CircuitState.OPEN
        self._opened_at = now
        self._break = self.settings.break_duration
        self._next_probe_at = now + self._break
        self._closed_at = None
        self._opened += 1
        self._waits = 0
        return self._transition(now, reason, failures, total)

    def _end_probe(self, now: float, outcome: Outcome) -> Transition | None:
        if outcome is Outcome.SUCCESS:
            self._state = CircuitState.CLOSED
            transition = self._transition(now, "probe_succeeded")
            self._window.clear()
            self._streak = 0
            self._closed_at = now
            self._ramp_in_flight = 0
            return transition
        self._state = CircuitState.OPEN
        if outcome is Outcome.IGNORED:
            # The probe was cancelled or never reached Canvas: let another go now.
            self._next_probe_at = now
            return None
        self._break = min(2 * self._break, self.settings.max_break_duration)
        self._next_probe_at = now + self._break
        return self._transition(now, "probe_failed")

    def _transition(self, now: float, reason: str, failures: int = 0, total: int = 0) -> Transition:
        if not total:
            failures, total = self._window.counts(now)
        return Transition(
            state=self._state,
            reason=reason,
            failures=failures,
            total=total,
            down_for_s=round(now - self._opened_at, 3),
            waits=self._waits,
        )


#: How soon a held call asks again when no time is known (a probe in flight, a ramp).
_POLL = 0.05

_REGISTRY: dict[str, CircuitBreaker] = {}
_REGISTRY_LOCK = threading.Lock()


def breaker_for(
    origin: str, *, settings: BreakerSettings | None = None, clock: Clock = time.monotonic
) -> CircuitBreaker:
    """Return the process-wide circuit of *origin*, creating it once.

    Shared by every client and token on the origin: an outage is Canvas's,
    not a token's. *settings* and *clock* apply only when it is created.
    """
    with _REGISTRY_LOCK:
        breaker = _REGISTRY.get(origin)
        if breaker is None:
            breaker = _REGISTRY[origin] = CircuitBreaker(settings, clock=clock, name=origin)
        return breaker


def breakers() -> dict[str, CircuitBreaker]:
    """Every circuit of this process, by origin (for metrics)."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def clear_breakers() -> None:
    """Forget every circuit (for tests)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
