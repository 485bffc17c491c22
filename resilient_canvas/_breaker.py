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

No asyncio, no I/O: the async shell that holds calls is ``_circuit``. The
decisions are functions of a :class:`CircuitData` (:func:`open_reason`,
:func:`trip`, :func:`start_probe`, :func:`held`, :func:`end_probe`,
:func:`release_limit`), so that the shared circuit (``_redis_circuit``), whose
state lives in Redis, decides exactly as the in-process one does.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
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
        probe_timeout: Seconds after which a probe that has not reported
            (its caller gave up before sending it, or its process was killed)
            no longer blocks the next one; the default attempt timeout.
    """

    failure_ratio: float = 0.5
    consecutive_failures: int = 10
    window: float = 10.0
    minimum_throughput: int = 20
    break_duration: float = 5.0
    max_break_duration: float = 30.0
    release_duration: float = 5.0
    probe_timeout: float = 30.0

    def __post_init__(self) -> None:
        # A ratio of 0 would open on the first outcome; above 1 never opens.
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError(f"failure_ratio must be in (0, 1], not {self.failure_ratio}.")
        if self.minimum_throughput < 1 or self.consecutive_failures < 1:
            raise ValueError("minimum_throughput and consecutive_failures must be at least 1.")
        for name in ("window", "break_duration", "release_duration", "probe_timeout"):
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
        probe_number: Which probe this is (the circuit's probe count when it
            was granted): only the current probe's answer decides.
    """

    go: bool
    probe: bool = False
    ramp: bool = False
    wait: float = 0.0
    next_probe_in: float | None = None
    down_for: float = 0.0
    probe_number: int = 0


#: How soon a held call asks again when no time is known (a probe in flight, a ramp).
POLL = 0.05

#: The answer in the common case, built once: a closed circuit costs nothing per call.
ADMITTED = Admission(True)

#: Read by every admission and answer, so looked up once: reading a member
#: through its enum class costs ~0.1 us on Python 3.11 (the metaclass's __getattr__).
_CLOSED = CircuitState.CLOSED
_IGNORED, _FAILURE = Outcome.IGNORED, Outcome.FAILURE


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


@dataclass(slots=True)
class CircuitData:
    """What the decisions read and change: in memory, or in Redis for a shared circuit.

    Times are on the circuit's clock (Redis's for a shared one). The outcome
    counts are not here: they arrive as arguments (a window in memory, or
    counters in Redis).

    Attributes:
        state: Closed, open or half-open.
        opened_at: When the circuit last opened.
        next_probe_at: When the next probe may go, while open.
        probe_until: When the probe in flight stops blocking the next one.
        break_s: The current wait between probes (doubles on each failed probe).
        closed_at: When the last release began; None once it is over.
        opened: Times the circuit has opened.
        probes: Probes granted.
    """

    state: CircuitState = CircuitState.CLOSED
    opened_at: float = 0.0
    next_probe_at: float = 0.0
    probe_until: float = 0.0
    break_s: float = 0.0
    closed_at: float | None = None
    opened: int = 0
    probes: int = 0


# ------------------------------------------------------------------ decisions
# Pure functions of the settings, the state and the time: the in-process
# breaker applies them under its lock, the shared one to the state it read
# from Redis before writing the result back atomically.


def open_reason(settings: BreakerSettings, streak: int, failures: int, total: int) -> str | None:
    """Why the outcomes so far open a closed circuit, or None if they do not."""
    if streak >= settings.consecutive_failures:
        return "consecutive_failures"
    if total >= settings.minimum_throughput and failures >= settings.failure_ratio * total:
        return "failure_ratio"
    return None


def trip(settings: BreakerSettings, data: CircuitData, now: float) -> None:
    """Open the circuit at *now*: the first probe after ``break_duration``."""
    data.state = CircuitState.OPEN
    data.opened_at = now
    data.break_s = settings.break_duration
    data.next_probe_at = now + data.break_s
    data.closed_at = None
    data.opened += 1


def start_probe(settings: BreakerSettings, data: CircuitData, now: float) -> str | None:
    """Make the caller the probe if one is due; return why, or None.

    A probe is due when the break has elapsed, or when the probe in flight
    has not reported within ``probe_timeout`` (its caller never sent it, or
    its process was killed): a lost probe must not hold calls forever.
    """
    if data.state is CircuitState.OPEN and now >= data.next_probe_at:
        reason = "break_elapsed"
    elif data.state is CircuitState.HALF_OPEN and now >= data.probe_until:
        reason = "probe_expired"
    else:
        return None
    data.state = CircuitState.HALF_OPEN
    data.probes += 1
    data.probe_until = now + settings.probe_timeout
    return reason


def probe_admission(data: CircuitData, now: float) -> Admission:
    """The admission of the probe :func:`start_probe` just granted."""
    return Admission(True, probe=True, down_for=now - data.opened_at, probe_number=data.probes)


def held(data: CircuitData, now: float) -> Admission:
    """The answer to a call that must wait: until the probe is due, or briefly while probing."""
    if data.state is CircuitState.OPEN:
        wait = data.next_probe_at - now
        return Admission(False, wait=wait, next_probe_in=wait, down_for=now - data.opened_at)
    # Half-open: the probe's answer decides; look again shortly.
    return Admission(False, wait=POLL, down_for=now - data.opened_at)


def end_probe(
    settings: BreakerSettings, data: CircuitData, now: float, outcome: Outcome
) -> str | None:
    """Apply the answer of the probe in flight; return the transition's reason, if any."""
    if outcome is Outcome.SUCCESS:
        data.state = CircuitState.CLOSED
        data.closed_at = now
        return "probe_succeeded"
    data.state = CircuitState.OPEN
    if outcome is Outcome.IGNORED:
        # The probe was cancelled or never reached Canvas: let another go now.
        data.next_probe_at = now
        return None
    data.break_s = min(2 * data.break_s, settings.max_break_duration)
    data.next_probe_at = now + data.break_s
    return "probe_failed"


def release_limit(settings: BreakerSettings, data: CircuitData, now: float) -> int | None:
    """How many released calls may be in flight now; None once the release is over.

    Slow start: 1 in flight at first, doubling ten times over the release.
    """
    if data.closed_at is None:
        return None
    elapsed = now - data.closed_at
    if elapsed >= settings.release_duration:
        data.closed_at = None
        return None
    return int(2 ** math.floor(10 * elapsed / settings.release_duration))


def ramp_admission(
    settings: BreakerSettings, data: CircuitData, now: float, in_flight: int
) -> Admission:
    """The answer to a call while released calls ramp up after a close.

    ``ADMITTED`` once the release is over; a ramp admission while fewer than
    :func:`release_limit` released calls are in flight (the caller counts
    them); else a short wait.
    """
    limit = release_limit(settings, data, now)
    if limit is None:
        return ADMITTED
    if in_flight >= limit:
        return Admission(False, wait=POLL)
    return Admission(True, ramp=True)


def is_current_probe(data: CircuitData, admission: Admission) -> bool:
    """Whether *admission* is the probe in flight (a late, superseded one decides nothing)."""
    return data.state is CircuitState.HALF_OPEN and admission.probe_number == data.probes


def transition_of(
    data: CircuitData, now: float, reason: str, failures: int, total: int, waits: int
) -> Transition:
    """The report of a change of state to ``data.state``."""
    return Transition(
        state=data.state,
        reason=reason,
        failures=failures,
        total=total,
        down_for_s=round(now - data.opened_at, 3),
        waits=waits,
    )


class Window:
    """Outcome counts over the last *span* seconds, in ten buckets (O(1) memory).

    The bucket arithmetic is shared with the Redis circuit, which keeps the
    same buckets as counters in Redis (:meth:`bucket_of`, :meth:`oldest`).
    """

    BUCKETS = 10

    def __init__(self, span: float) -> None:
        self.width = span / self.BUCKETS
        self._slots: list[list[int]] = [[-1, 0, 0] for _ in range(self.BUCKETS)]

    def bucket_of(self, now: float) -> int:
        """The index of the bucket *now* falls in."""
        return int(now // self.width)

    def oldest(self, now: float) -> int:
        """The index of the oldest bucket still within the window at *now*."""
        return self.bucket_of(now) - self.BUCKETS + 1

    def add(self, now: float, failed: bool) -> None:
        index = int(now // self.width)  # bucket_of(now), without the call: once per answer
        slot = self._slots[index % self.BUCKETS]
        if slot[0] != index:
            slot[0], slot[1], slot[2] = index, 0, 0
        slot[1] += 1
        slot[2] += failed

    def counts(self, now: float) -> tuple[int, int]:
        """Return ``(failures, total)`` within the window."""
        return self.sum(self._slots, now)

    def sum(self, slots: Iterable[Sequence[int]], now: float) -> tuple[int, int]:
        """``(failures, total)`` of ``(index, total, failures)`` *slots* within the window."""
        oldest = self.oldest(now)
        total = failures = 0
        for index, count, failed in slots:
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
        data: The state to start from (a shared circuit that lost Redis hands
            over what it knew); closed by default.
    """

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        clock: Clock = time.monotonic,
        name: str = "",
        data: CircuitData | None = None,
    ) -> None:
        self.settings = settings or BreakerSettings()
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._window = Window(self.settings.window)
        self._data = replace(data) if data else CircuitData(break_s=self.settings.break_duration)
        self._ramp_in_flight = 0
        self._waits = 0
        self._streak = 0
        self._pending: Transition | None = None

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._data.state.value})"

    @property
    def state(self) -> CircuitState:
        """The current state."""
        return self._data.state

    # ------------------------------------------------------------- decisions

    def admit(self) -> Admission:
        """Decide whether a request may be sent now.

        Returns:
            ``go`` to send (maybe as the probe), else when to ask again.
        """
        data = self._data
        # The common case without the lock: closed and done releasing.
        if data.state is _CLOSED and data.closed_at is None:
            return ADMITTED
        with self._lock:
            now = self._clock()
            if data.state is CircuitState.CLOSED:
                return self._admit_ramp(now)
            reason = start_probe(self.settings, data, now)
            if reason is not None:
                self._pending = self._transition(now, reason)
                return probe_admission(data, now)
            self._waits += 1
            return held(data, now)

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
                self._ramp_in_flight = max(0, self._ramp_in_flight - 1)
            if admission.probe:
                return self._end_probe(now, admission, outcome)
            if outcome is _IGNORED or self._data.state is not _CLOSED:
                # Late answers to requests sent before the circuit opened decide nothing.
                return None
            failed = outcome is _FAILURE
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
            return estimate_of(self._data, now, failures, total, self._waits)

    # -------------------------------------------------------------- internals

    def _admit_ramp(self, now: float) -> Admission:
        admission = ramp_admission(self.settings, self._data, now, self._ramp_in_flight)
        if admission.ramp:
            self._ramp_in_flight += 1
        elif not admission.go:
            self._waits += 1
        return admission

    def _maybe_open(self, now: float) -> Transition | None:
        failures, total = self._window.counts(now)
        reason = open_reason(self.settings, self._streak, failures, total)
        if reason is None:
            return None
        self._streak = 0
        trip(self.settings, self._data, now)
        self._waits = 0
        return transition_of(self._data, now, reason, failures, total, self._waits)

    def _end_probe(self, now: float, admission: Admission, outcome: Outcome) -> Transition | None:
        if not is_current_probe(self._data, admission):
            # Superseded after its probe_timeout: another probe decides.
            return None
        reason = end_probe(self.settings, self._data, now, outcome)
        if reason is None:
            return None
        transition = self._transition(now, reason)
        if self._data.state is CircuitState.CLOSED:
            self._window.clear()
            self._streak = 0
            self._ramp_in_flight = 0
        return transition

    def _transition(self, now: float, reason: str) -> Transition:
        failures, total = self._window.counts(now)
        return transition_of(self._data, now, reason, failures, total, self._waits)


def estimate_of(
    data: CircuitData, now: float, failures: int, total: int, waits: int
) -> BreakerEstimate:
    """The snapshot of a circuit in *data* at *now*."""
    closed = data.state is CircuitState.CLOSED
    return BreakerEstimate(
        state=data.state,
        failures=failures,
        total=total,
        down_for_s=0.0 if closed else round(now - data.opened_at, 3),
        next_probe_in_s=(
            round(max(0.0, data.next_probe_at - now), 3)
            if data.state is CircuitState.OPEN
            else None
        ),
        opened=data.opened,
        probes=data.probes,
        waits=waits,
    )


_REGISTRY: dict[str, CircuitBreaker] = {}
#: Circuits shared with other processes, by origin and backend (a Redis URL).
_SHARED: dict[tuple[str, str], Circuit] = {}
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


def shared_breaker_for(origin: str, backend: str, make: Callable[[], Circuit]) -> Circuit:
    """Return the circuit of *origin* shared through *backend*, made once by *make*.

    The registry of the shared circuits lives here, beside the in-process
    one, so that :func:`breakers` and :func:`clear_breakers` cover both
    without this module knowing about Redis.
    """
    with _REGISTRY_LOCK:
        circuit = _SHARED.get((origin, backend))
        if circuit is None:
            circuit = _SHARED[origin, backend] = make()
        return circuit


def shared_breakers() -> list[Circuit]:
    """Every circuit this process shares with others (to close them at shutdown)."""
    with _REGISTRY_LOCK:
        return list(_SHARED.values())


def breakers() -> dict[str, Circuit]:
    """Every circuit of this process, by origin (for metrics).

    A shared circuit is listed under its origin unless an in-process one is.
    """
    with _REGISTRY_LOCK:
        shared = {origin: circuit for (origin, _), circuit in _SHARED.items()}
        return {**shared, **_REGISTRY}


def clear_breakers() -> None:
    """Forget every circuit, in-process and shared (for tests)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
        _SHARED.clear()
