"""The circuit breaker of one Canvas origin, shared by many processes through Redis.

Every process decides with :class:`~resilient_canvas._breaker.CircuitBreaker`'s
own functions (``open_reason``, ``trip``, ``start_probe``, ``end_probe``...);
Redis holds only what the processes must share, in one hash per origin
(``resilient_canvas:circuit:<origin>``):

- the circuit's :class:`~resilient_canvas._breaker.CircuitData` (state,
  opened_at, next probe time, break, release start, counts) and a version
  that every change bumps;
- ``probe_by``: who holds the half-open probe, a lease that ends at
  ``probe_until`` (``probe_timeout`` after it was granted), so a killed
  prober cannot wedge the circuit;
- the sliding window, as the same ten buckets as counters (``t:<bucket>``,
  ``f:<bucket>``), and the streak of failures in a row.

A change of state is computed here from the state read, and written by a Lua
script only if the version is still the one read (compare-and-set): two
processes never both open the circuit nor both probe, and only the process
whose write won reports ``canvas.circuit_*``. Lua is there for atomicity
only. Time is Redis's ``TIME`` unless a clock is injected (tests).

Nothing here waits for Redis on a call's path: :meth:`RedisCircuit.admit` and
:meth:`RedisCircuit.finish` decide from the state last read and talk to Redis
in background tasks (a failure is sent at once, successes at most every
``refresh_every``; the state is read again every ``refresh_every`` while
closed and more often while not). A held call that may probe waits for the
claim of the probe lease, at most ``admission_timeout``.

Degraded mode: Redis failing or answering later than ``admission_timeout``
hands the decisions to an in-process :class:`CircuitBreaker` started from
the state last read (``canvas.circuit_degraded``); a background task asks
Redis every ``reconnect_every`` seconds until it answers
(``canvas.circuit_redis_back``), then the shared state decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from resilient_canvas import _circuit, _logging
from resilient_canvas._breaker import (
    ADMITTED,
    POLL,
    Admission,
    BreakerEstimate,
    BreakerSettings,
    CircuitBreaker,
    CircuitData,
    CircuitState,
    Outcome,
    Transition,
    Window,
    end_probe,
    estimate_of,
    held,
    open_reason,
    probe_admission,
    ramp_admission,
    shared_breaker_for,
    shared_breakers,
    start_probe,
    transition_of,
    trip,
)
from resilient_canvas._redis_support import (
    ERRORS,
    LUA_NOW,
    redis_asyncio,
    require_redis,
    start_task,
    text,
)

#: The longest a held call waits for Redis before the circuit turns local.
_ADMISSION_TIMEOUT_S = 0.25
#: How often a degraded circuit asks Redis, in the background, whether it is back.
_RECONNECT_EVERY_S = 1.0
#: How stale the shared state may get while the circuit is closed.
_REFRESH_EVERY_S = 0.5
#: ... and while it is not (held calls wait for the probe's answer).
_HELD_REFRESH_S = 0.1
#: Keys of an origin nobody used for this long expire.
_KEY_TTL_MS = 3_600_000

_ERRORS = ERRORS

# KEYS: the circuit hash, cancelled claims (sorted set). ARGV[1]: now or ''.
_PRELUDE = (
    LUA_NOW
    + """
local h = KEYS[1]
local function touch()
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
"""
)

# ARGV: now, key ttl, oldest bucket kept, '1' if the batch had a success,
#       failures after its last success, then bucket, total, failures triples.
SYNC_SCRIPT = (
    _PRELUDE
    + """
-- Outcomes count only while closed: late answers decide nothing.
if (redis.call('HGET', h, 'state') or 'closed') == 'closed' then
  for i = 6, #ARGV, 3 do
    redis.call('HINCRBY', h, 't:' .. ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', h, 'f:' .. ARGV[i], ARGV[i + 2])
  end
  if ARGV[4] == '1' then
    redis.call('HSET', h, 'streak', ARGV[5])
  elseif tonumber(ARGV[5]) > 0 then
    redis.call('HINCRBY', h, 'streak', ARGV[5])
  end
end
for _, f in ipairs(redis.call('HKEYS', h)) do
  local bucket = string.match(f, '^[tf]:(-?%d+)$')
  if bucket and tonumber(bucket) < tonumber(ARGV[3]) then redis.call('HDEL', h, f) end
end
touch()
return {1, tostring(now), redis.call('HGETALL', h)}
"""
)

# ARGV: now, key ttl, version read ('' = any), probe holder required ('' = any),
#       claim ('' = none; refused if cancelled), '1' to clear the window,
#       then field, value pairs of the new state.
COMMIT_SCRIPT = (
    _PRELUDE
    + """
local ok = 1
if ARGV[5] ~= '' and redis.call('ZSCORE', KEYS[2], ARGV[5]) then ok = 0 end
if ARGV[3] ~= '' and (redis.call('HGET', h, 'version') or '0') ~= ARGV[3] then ok = 0 end
if ARGV[4] ~= '' and redis.call('HGET', h, 'probe_by') ~= ARGV[4] then ok = 0 end
if ok == 1 then
  if ARGV[6] == '1' then
    for _, f in ipairs(redis.call('HKEYS', h)) do
      if string.match(f, '^[tf]:') then redis.call('HDEL', h, f) end
    end
  end
  for i = 7, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', h, 'streak', 0)
  redis.call('HINCRBY', h, 'version', 1)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
touch()
return {ok, tostring(now), redis.call('HGETALL', h)}
"""
)

# ARGV: now, key ttl, tombstone ttl, claim, then the state without the probe.
# A claim whose answer came too late: it is tombstoned (a claim still on its
# way cannot take the lease afterwards) and, if it took it, the lease goes.
CANCEL_SCRIPT = (
    _PRELUDE
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
if redis.call('HGET', h, 'probe_by') == ARGV[4] then
  for i = 5, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
  redis.call('HINCRBY', h, 'version', 1)
end
touch()
return tostring(now)
"""
)

_SCRIPTS = {"sync": SYNC_SCRIPT, "commit": COMMIT_SCRIPT}


def _number(state: dict[str, str], name: str, default: float = 0.0) -> float:
    try:
        return float(state[name])
    except (KeyError, ValueError):
        return default


def _encode(data: CircuitData, probe_by: str) -> list[str]:
    return [
        "state",
        data.state.value,
        "opened_at",
        repr(data.opened_at),
        "next_probe_at",
        repr(data.next_probe_at),
        "probe_until",
        repr(data.probe_until),
        "break_s",
        repr(data.break_s),
        "closed_at",
        "" if data.closed_at is None else repr(data.closed_at),
        "opened",
        str(data.opened),
        "probes",
        str(data.probes),
        "probe_by",
        probe_by,
    ]


@dataclass(slots=True)
class _View:
    """What a script reply says about the shared circuit, on the shared clock."""

    ok: bool
    now: float
    data: CircuitData
    version: int
    probe_by: str
    streak: int
    slots: list[tuple[int, int, int]]
    #: The order in which this process sent the request (replies may overtake each other).
    sent: int = 0


def _parse(reply: Any, settings: BreakerSettings) -> _View:
    ok, now, raw = reply
    flat = [text(item) for item in raw]
    state = dict(zip(flat[::2], flat[1::2], strict=True))
    try:
        circuit_state = CircuitState(state.get("state", "closed"))
    except ValueError:
        circuit_state = CircuitState.CLOSED
    closed_at = state.get("closed_at") or None
    data = CircuitData(
        state=circuit_state,
        opened_at=_number(state, "opened_at"),
        next_probe_at=_number(state, "next_probe_at"),
        probe_until=_number(state, "probe_until"),
        break_s=_number(state, "break_s", settings.break_duration),
        closed_at=None if closed_at is None else float(closed_at),
        opened=int(_number(state, "opened")),
        probes=int(_number(state, "probes")),
    )
    buckets: dict[int, list[int]] = {}
    for name, value in state.items():
        kind, _, bucket = name.partition(":")
        if kind in ("t", "f") and bucket.lstrip("-").isdigit():
            counts = buckets.setdefault(int(bucket), [0, 0])
            counts[kind == "f"] = int(value)
    return _View(
        ok=int(ok) == 1,
        now=float(text(now)),
        data=data,
        version=int(_number(state, "version")),
        probe_by=state.get("probe_by", ""),
        streak=int(_number(state, "streak")),
        slots=[(bucket, total, failed) for bucket, (total, failed) in buckets.items()],
    )


@dataclass(slots=True)
class _Batch:
    """Outcomes recorded since the last sync, by bucket of the local clock."""

    buckets: dict[int, list[int]] = field(default_factory=dict)
    succeeded: bool = False
    trailing: int = 0
    failed: bool = False


@dataclass(slots=True)
class _Claim:
    """The probe lease this process holds: who, the admission to hand out, the state it set."""

    id: str
    admission: Admission
    data: CircuitData


@dataclass(slots=True)
class _Connection:
    """A Redis client and its scripts, bound to one event loop."""

    client: Any
    scripts: dict[str, Any]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class RedisCircuit:
    """A :class:`~resilient_canvas._breaker.Circuit` shared with other processes through Redis.

    Args:
        url: The Redis URL (``redis://localhost:6379/0``).
        origin: The Canvas origin (``https://school.instructure.com``): every
            process and token on it shares the circuit.
        settings: Thresholds and timings; every process should use the same.
        admission_timeout: The longest Redis may take to answer before the
            circuit decides locally.
        refresh_every: How stale the shared state may get while closed.
        reconnect_every: How often a degraded circuit asks Redis again.
        clock: None uses Redis's clock (right across machines); inject one
            only in tests.

    Raises:
        RuntimeError: If the ``redis`` package is not installed
            (``pip install resilient-canvas[redis]``).
    """

    def __init__(
        self,
        url: str,
        origin: str,
        *,
        settings: BreakerSettings | None = None,
        admission_timeout: float = _ADMISSION_TIMEOUT_S,
        refresh_every: float = _REFRESH_EVERY_S,
        reconnect_every: float = _RECONNECT_EVERY_S,
        clock: Callable[[], float] | None = None,
        redis_client: Any = None,
    ) -> None:
        require_redis("RedisCircuit", redis_client)
        if admission_timeout <= 0 or refresh_every <= 0 or reconnect_every <= 0:
            raise ValueError(
                "admission_timeout, refresh_every and reconnect_every must be positive."
            )
        self.settings = settings or BreakerSettings()
        self.name = origin
        self.refresh_every = refresh_every
        self._url = url
        self._injected_client = redis_client
        self._keys = [
            f"resilient_canvas:circuit:{origin}",
            f"resilient_canvas:circuit:{origin}:cancelled",
        ]
        self._admission_timeout = admission_timeout
        self._reconnect_every = reconnect_every
        self._injected_clock = clock
        self._local = clock or time.monotonic
        self._offset = 0.0  # shared clock minus ours
        self._worker = uuid.uuid4().hex[:16]
        self._lock = threading.Lock()
        self._window = Window(self.settings.window)
        # The shared state as last read, and what this process adds to it.
        self._data = CircuitData(break_s=self.settings.break_duration)
        self._version = 0
        self._sent = self._absorbed = 0
        self._probe_by = ""
        self._slots: list[tuple[int, int, int]] = []
        self._synced_at = -float("inf")
        self._batch = _Batch()
        self._claim: _Claim | None = None  # granted, not handed out yet
        self._probing: _Claim | None = None  # handed out, not finished yet
        self._ramp_in_flight = 0
        self._waits = 0
        self._fallback: CircuitBreaker | None = None
        # One client per event loop: a client is bound to the loop it was made in.
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisCircuit({self.name!r}, state={self.state.value}, degraded={self.degraded})"

    @property
    def degraded(self) -> bool:
        """Whether Redis failed to answer in time and the circuit is local until it does."""
        return self._fallback is not None

    @property
    def state(self) -> CircuitState:
        """The current state (as last read from Redis, or the local one while degraded)."""
        fallback = self._fallback
        return fallback.state if fallback is not None else self._data.state

    # ------------------------------------------------------------- decisions

    def admit(self) -> Admission:
        """Decide whether a request may be sent now, from the state last read.

        Returns:
            ``go`` to send (maybe as the probe), else when to ask again.
        """
        fallback = self._fallback
        if fallback is not None:
            return fallback.admit()
        data = self._data
        if data.state is CircuitState.CLOSED and data.closed_at is None:
            if self._local() - self._synced_at >= self.refresh_every:
                self._kick_sync()
            return ADMITTED
        with self._lock:
            data, version, now = self._data, self._version, self._now()
            if self._local() - self._synced_at >= min(self.refresh_every, _HELD_REFRESH_S):
                self._kick_sync()
            if data.state is CircuitState.CLOSED:
                return self._admit_ramp(now)
            claim, self._claim = self._claim, None
            if claim is not None and self._probe_by == claim.id and now < claim.data.probe_until:
                self._probing = claim
                return claim.admission
            trial = replace(data)
            reason = start_probe(self.settings, trial, now)
            self._waits += 1
            if reason is None:
                return held(data, now)
        # The probe is due: claim its lease in Redis; meanwhile, wait briefly.
        self._start("claim", self._claim_probe(trial, reason, version, now))
        return Admission(False, wait=POLL, down_for=now - data.opened_at)

    def finish(self, admission: Admission, outcome: Outcome) -> Transition | None:
        """Record how an admitted request ended (sent to Redis in the background).

        Returns:
            The state change it caused while degraded; a shared change is
            reported by the background task that wrote it.
        """
        if not admission.go:
            return None
        probing = self._probing
        if admission.probe and probing is not None and admission is probing.admission:
            self._probing = None
            self._start("", self._end_probe(probing, outcome))
            return None
        fallback = self._fallback
        if fallback is not None:
            return fallback.finish(admission, outcome)
        with self._lock:
            if admission.ramp:
                self._ramp_in_flight = max(0, self._ramp_in_flight - 1)
            if outcome is Outcome.IGNORED or self._data.state is not CircuitState.CLOSED:
                return None
            failed = outcome is Outcome.FAILURE
            batch = self._batch
            counts = batch.buckets.setdefault(self._window.bucket_of(self._local()), [0, 0])
            counts[0] += 1
            counts[1] += failed
            if failed:
                batch.trailing += 1
                batch.failed = True
            else:
                batch.succeeded, batch.trailing = True, 0
        if failed:
            # A failure may open the circuit: tell the others now.
            self._kick_sync()
        return None

    def take_transition(self) -> Transition | None:
        """Return (once) a state change the local circuit made while degraded."""
        fallback = self._fallback
        return fallback.take_transition() if fallback is not None else None

    def estimate(self) -> BreakerEstimate:
        """A snapshot of the circuit, as last read from Redis (local while degraded)."""
        fallback = self._fallback
        if fallback is not None:
            return fallback.estimate()
        with self._lock:
            now = self._now()
            failures, total = self._window.sum(self._slots, now)
            return estimate_of(self._data, now, failures, total, self._waits)

    async def sync(self) -> BreakerEstimate:
        """Send the outcomes recorded so far, read the shared state now, and return it.

        Background work of this event loop (claims, probe answers) ends first.
        """
        await self._settle()
        await self._sync()
        await self._settle()
        return self.estimate()

    async def aclose(self) -> None:
        """Finish this event loop's background work and close its Redis connection."""
        await self._settle()
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        if connection is None:
            return
        for task in connection.tasks:
            task.cancel()
        # The keeper closes the client as it ends.
        await asyncio.gather(*connection.tasks, return_exceptions=True)

    # -------------------------------------------------------------- internals

    def _now(self) -> float:
        """Now on the shared clock (Redis's, as of the last answer)."""
        return self._local() + self._offset

    def _now_arg(self) -> str:
        return "" if self._injected_clock is None else repr(self._injected_clock())

    def _admit_ramp(self, now: float) -> Admission:
        # The release is timed by the shared closed_at; each process ramps its own
        # calls. Once it is over the local copy forgets it: admits take the fast path.
        admission = ramp_admission(self.settings, self._data, now, self._ramp_in_flight)
        if admission.ramp:
            self._ramp_in_flight += 1
        elif not admission.go:
            self._waits += 1
        return admission

    def _absorb(self, view: _View) -> None:
        """Adopt the shared state of a reply, unless a later request's was adopted already.

        Ordered by sending, not by version: a Redis that restarted empty
        starts the versions again, and its state is the truth.
        """
        with self._lock:
            if self._injected_clock is None:
                self._offset = view.now - self._local()
            if view.sent < self._absorbed:
                return
            self._absorbed = view.sent
            if view.data.opened > self._data.opened:
                self._waits = 0
            closing = self._data.state is not CircuitState.CLOSED
            if closing and view.data.state is CircuitState.CLOSED:
                self._ramp_in_flight = 0  # a new release begins
            self._data, self._version = view.data, view.version
            self._probe_by, self._slots = view.probe_by, view.slots

    def _counts(self, view: _View) -> tuple[int, int]:
        return self._window.sum(view.slots, view.now)

    # ------------------------------------------------------ background work

    def _kick_sync(self) -> None:
        self._synced_at = self._local()
        self._start("sync", self._sync())

    async def _sync(self) -> None:
        """Send the recorded outcomes; read the state; open the circuit if they say so."""
        while True:
            with self._lock:
                batch, self._batch = self._batch, _Batch()
                self._synced_at = self._local()
            try:
                view = await self._call("sync", self._sync_args(batch))
                self._absorb(view)
                await self._maybe_trip(view)
            except _ERRORS as error:
                self._degrade(error)
                return
            if not self._batch.failed:
                return

    def _sync_args(self, batch: _Batch) -> list[Any]:
        width = self._window.width
        now = self._now()
        args: list[Any] = [
            self._now_arg(),
            _KEY_TTL_MS,
            self._window.oldest(now),
            "1" if batch.succeeded else "0",
            batch.trailing,
        ]
        for bucket, (total, failed) in batch.buckets.items():
            # Local buckets move to the shared clock by their middle.
            shared = self._window.bucket_of((bucket + 0.5) * width + self._offset)
            args += [shared, total, failed]
        return args

    async def _maybe_trip(self, view: _View) -> None:
        if view.data.state is not CircuitState.CLOSED:
            return
        failures, total = self._counts(view)
        reason = open_reason(self.settings, view.streak, failures, total)
        if reason is None:
            return
        trial = replace(view.data)
        trip(self.settings, trial, view.now)
        reply = await self._commit(trial, version=view.version)
        if reply.ok:
            _circuit.report(self, transition_of(trial, view.now, reason, failures, total, 0))

    async def _claim_probe(self, trial: CircuitData, reason: str, version: int, now: float) -> None:
        """Take the probe lease if the state is still the one read; hand it out on success."""
        claim = f"{self._worker}|{uuid.uuid4().hex[:12]}"
        try:
            reply = await self._commit(trial, version=version, claim=claim)
        except BaseException as error:
            # The script may have run: never leave a lease nobody will use.
            self._start("", self._cancel(claim, trial, now))
            if not isinstance(error, _ERRORS):
                raise
            self._degrade(error)
            return
        if not reply.ok:
            return  # another process probes, or the state moved on
        failures, total = self._counts(reply)
        with self._lock:
            self._claim = _Claim(claim, probe_admission(trial, now), trial)
            waits = self._waits
        _circuit.report(self, transition_of(trial, now, reason, failures, total, waits))

    async def _end_probe(self, claim: _Claim, outcome: Outcome) -> None:
        """Write the probe's answer, if this process still holds the lease."""
        now = self._now()
        trial = replace(claim.data)
        reason = end_probe(self.settings, trial, now, outcome)
        closed = trial.state is CircuitState.CLOSED
        try:
            reply = await self._commit(trial, owner=claim.id, clear=closed)
        except _ERRORS as error:
            # The lease ends at probe_until; meanwhile the circuit is local.
            self._degrade(error)
            return
        if reply.ok and reason is not None:
            failures, total = self._counts(reply)
            _circuit.report(self, transition_of(trial, now, reason, failures, total, self._waits))

    async def _cancel(self, claim: str, trial: CircuitData, now: float) -> None:
        released = replace(trial)
        end_probe(self.settings, released, now, Outcome.IGNORED)
        args = [
            self._now_arg(),
            _KEY_TTL_MS,
            self.settings.probe_timeout,
            claim,
            *_encode(released, ""),
        ]
        with contextlib.suppress(*_ERRORS):
            async with asyncio.timeout(2 * self._admission_timeout):
                client = self._connection().client
                await client.eval(CANCEL_SCRIPT, len(self._keys), *self._keys, *args)

    async def _commit(
        self,
        data: CircuitData,
        *,
        version: int | None = None,
        owner: str = "",
        claim: str = "",
        clear: bool = False,
    ) -> _View:
        args = [
            self._now_arg(),
            _KEY_TTL_MS,
            "" if version is None else str(version),
            owner,
            claim,
            "1" if clear else "0",
            *_encode(data, claim),
        ]
        view = await self._call("commit", args)
        self._absorb(view)
        return view

    async def _call(self, script: str, args: list[Any]) -> _View:
        with self._lock:
            self._sent += 1
            sent = self._sent
        async with asyncio.timeout(self._admission_timeout):
            reply = await self._connection().scripts[script](keys=self._keys, args=args)
        view = _parse(reply, self.settings)
        view.sent = sent
        return view

    def _degrade(self, error: BaseException) -> None:
        """Decide locally from what was last read; ask Redis again in the background."""
        with self._lock:
            first = self._fallback is None
            if first:
                seed = replace(self._data)
                for name in ("opened_at", "next_probe_at", "probe_until"):
                    setattr(seed, name, getattr(seed, name) - self._offset)
                if seed.closed_at is not None:
                    seed.closed_at -= self._offset
                if seed.state is CircuitState.HALF_OPEN:
                    # The probe lease was Redis's: probe again, locally.
                    end_probe(self.settings, seed, self._local(), Outcome.IGNORED)
                self._fallback = CircuitBreaker(
                    self.settings, clock=self._local, name=self.name, data=seed
                )
                self._claim = None
        if first:
            _logging.circuit_event(
                _logging.CIRCUIT_DEGRADED,
                level="warning",
                origin=self.name,
                error=f"{type(error).__name__}: {error}"[:200],
                retry_redis_every_s=self._reconnect_every,
            )
        self._start("reconnect", self._reconnect())

    async def _reconnect(self) -> None:
        """Ask Redis, never on a call's path, until it answers; then share again."""
        while self._fallback is not None:
            await asyncio.sleep(self._reconnect_every)
            try:
                view = await self._call("sync", self._sync_args(_Batch()))
            except _ERRORS:
                continue
            with self._lock:
                self._fallback = None
                self._batch = _Batch()
            self._absorb(view)
            _logging.circuit_event(
                _logging.CIRCUIT_REDIS_BACK, origin=self.name, state=view.data.state.value
            )

    def _start(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run *coroutine* in the background; a named one once per event loop at a time."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            coroutine.close()  # no loop (a call outside asyncio): nothing to share
            return
        start_task(self._connection().tasks, name or "circuit", coroutine, unique=bool(name))

    async def _settle(self) -> None:
        """Wait for this loop's background work (not the keeper, nor the reconnect loop)."""
        connection = self._connections.get(asyncio.get_running_loop())
        while connection is not None:
            pending = [
                t
                for t in connection.tasks
                if t.get_name() not in ("keeper", "reconnect") and not t.done()
            ]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None:
            # One connection: the circuit sends little (a sync, a claim) and a
            # pool would add sockets to every process for nothing.
            client = self._injected_client or redis_asyncio.Redis.from_url(
                self._url,
                socket_timeout=2 * self._admission_timeout,
                socket_connect_timeout=2 * self._admission_timeout,
                single_connection_client=True,
            )
            scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
            connection = self._connections[loop] = _Connection(client, scripts)
            start_task(connection.tasks, "keeper", self._keep(connection))
        return connection

    async def _keep(self, connection: _Connection) -> None:
        """Close this loop's client when the loop shuts down (it cancels every task)."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            if connection.client is not self._injected_client:
                with contextlib.suppress(*_ERRORS):
                    async with asyncio.timeout(2 * self._admission_timeout):
                        await connection.client.aclose()


def redis_breaker_for(
    origin: str,
    url: str,
    *,
    settings: BreakerSettings | None = None,
    clock: Callable[[], float] | None = None,
) -> RedisCircuit:
    """Return this process's shared circuit of *origin* through the Redis at *url*.

    *settings* and *clock* apply only when it is created.
    """

    def make() -> RedisCircuit:
        return RedisCircuit(url, origin, settings=settings, clock=clock)

    circuit = shared_breaker_for(origin, url, make)
    assert isinstance(circuit, RedisCircuit)
    return circuit


async def close_redis_breakers() -> None:
    """Close this event loop's connections of every shared circuit (at shutdown)."""
    for circuit in shared_breakers():
        if isinstance(circuit, RedisCircuit):
            await circuit.aclose()
