"""One Canvas bucket shared by many processes and machines, through Redis.

Each process keeps its own :class:`~resilient_canvas._bucket_model.BucketModel`
and makes the admission decision with it, as the in-process throttle does.
Redis holds only what the processes must share:

- **leases**: one per request in flight in any process (a sorted set scored by
  expiry, with when each was admitted and what it reserves), so a process adds
  the others' reservations that the latest answer did not count yet;
- **the anchor**: the latest ``X-Rate-Limit-Remaining`` any process saw, when
  Canvas computed it and who saw it; every process extrapolates from it;
- **the learned parameters** with their variances, folded into each model with
  ``merge_parameters`` (a worker configured ``learn=False`` keeps its settings);
- **the pause and the concurrency cut** of throttles without quota headers;
- **the network delay of each network path**, in a hash of its own: a
  process reads and writes only its own path's field, so the state every
  script returns stays the same size however many machines share the bucket.

Lua scripts are there for atomicity only: taking a lease checks that the lease
count and the anchor are still those the decision was computed for; no bucket
arithmetic runs in Redis. Time is Redis's ``TIME`` (one clock for every
machine) unless a clock is injected for tests.

Failure handling: a lease is removed (and its id tombstoned, so a late
``ZADD`` cannot revive it) when the waiter is cancelled or Redis answers too
late; a worker's leases disappear a few seconds after it stops heartbeating
(killed); each event loop gets its own Redis client; and Redis slower than
``admission_timeout`` turns pacing local at once (``canvas.throttle_degraded``)
while a background task probes Redis until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from resilient_canvas import _logging
from resilient_canvas._bucket_model import (
    MAX_ABS_REMAINING,
    ROUTE_UP_FRONT,
    ROUTE_UP_FRONT_VAR,
    Observation,
    Permit,
    ThrottleConfig,
)
from resilient_canvas._redis_support import (
    ERRORS,
    LUA_NOW,
    redis_asyncio,
    require_redis,
    start_task,
    text,
)
from resilient_canvas._throttle import Throttle

#: The longest a request waits for Redis before the throttle paces locally.
_ADMISSION_TIMEOUT_S = 0.25
#: How often a degraded throttle asks Redis, in the background, whether it is back.
_PROBE_EVERY_S = 1.0
#: How long background calls (settlement, cleanup, heartbeat) may take.
_BACKGROUND_TIMEOUT_S = 2.0
#: How often idle pooled Redis connections are closed (aiohttp's keep-alive is 15 s).
_IDLE_CLOSE_S = 15.0
#: How often a waiter that only another process can unblock asks Redis again.
_POLL_S = 0.01
_MAX_POLL_S = 0.2
#: A process's listener for the others' releases ends after nobody waited this long.
_LISTEN_IDLE_S = 5.0
#: A waiter of another process older than ours by more than this goes first;
#: its claim counts while it asked Redis this recently (waiters poll at most
#: every _MAX_POLL_S while they wait for others).
_FAIR_SLACK_S = 0.25
_FAIR_FRESH_S = 1.0
#: Refusals in a row (races with other processes) before a waiter polls.
_RACES_BEFORE_POLL = 3
#: Keys of a bucket nobody used for this long expire (learned values included).
_KEY_TTL_MS = 3_600_000
#: Least time between two publications of this process's learned parameters.
_PUBLISH_EVERY_S = 1.0
#: A bucket nobody has learnt is first learnt by one process alone (see
#: ``RedisThrottle``), for at most this long: longer than a sighting of
#: another's request keeps a model from learning (``_OTHERS_FOR_S``, 1 s),
#: plus the answers learning takes: the reservation well under a second,
#: the network only once the count holds settled costs (about 2 s from an
#: empty bucket on workload B), since a draining count hides arrivals.
_CALIBRATE_FOR_S = 4.0
#: A reservation counts as learnt once its standard deviation is below this.
_CALIBRATED_SD = 2.0

_ERRORS = ERRORS
#: Processes on one host share a network path to Canvas (see ``network_id``).
_HOST = socket.gethostname()
_PARAMETERS = ("hwm", "hwm_var", "up_front_cost", "up_front_cost_var", "outflow", "outflow_var")
_ROUTE_PARAMETERS = (ROUTE_UP_FRONT, ROUTE_UP_FRONT_VAR)

# KEYS: state, leases, lease info, workers, cancelled lease ids, waiting,
# network delays. ARGV[1]: now or ''.
_PRELUDE = (
    LUA_NOW
    + """
local function drop(member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('HDEL', KEYS[3], member)
end
-- A lease gone is room for the others' waiters: wake them (see RedisThrottle._listen).
local function released()
  redis.call('PUBLISH', KEYS[1] .. ':released', '')
end
-- Leases of workers that stopped heartbeating (killed) and expired leases go.
local function sweep()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  if #dead > 0 then
    local gone = {}
    for _, w in ipairs(dead) do gone[w] = true end
    for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      if gone[string.match(m, '^[^|]*')] then drop(m) end
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do drop(m) end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
end
local function touch(ttl)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
end
-- network: this process's network delay field ('' or nil: none). Only its
-- own: every other path's delay would be read on every call and never taken.
local function view(admitted, network)
  local leases = {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    leases[#leases + 1] = m .. '|' .. (redis.call('HGET', KEYS[3], m) or '')
  end
  local delay = {}
  if network and network ~= '' then
    delay = redis.call('HMGET', KEYS[7], network, network .. '#by')
  end
  return {admitted, tostring(now), leases, redis.call('HGETALL', KEYS[1]), delay}
end
"""
)

# ARGV: now, key_ttl_ms, worker, worker_ttl, member ('' = only read), lease_ttl,
#       reservation, most leases to admit at, anchor sequence computed for,
#       since when this worker's head waiter waits ('' = none), '1' if this
#       worker has not learnt the bucket and would learn it alone, its
#       network delay field ('' = none)
ACQUIRE_SCRIPT = (
    _PRELUDE
    + """
-- Another live worker whose head waiter waits longer by more than the slack
-- goes first: without it, a process that keeps losing the race for a lease
-- waits past its calls' deadlines. Entries not refreshed lately are waiters
-- that stopped asking (admitted, cancelled, or waiting on their own model).
local function behind(since)
  local all = redis.call('HGETALL', KEYS[6])
  for i = 1, #all, 2 do
    if all[i] ~= ARGV[3] then
      local theirs, seen, tried = string.match(all[i + 1], '^([^|]*)|([^|]*)|(.*)$')
      theirs, seen, tried = tonumber(theirs), tonumber(seen), tonumber(tried)
      if not seen or seen < now - FAIR_FRESH_S then
        redis.call('HDEL', KEYS[6], all[i])
      elseif theirs < since - FAIR_SLACK_S and tried and tried >= now - FAIR_FRESH_S then
        -- Only a waiter that tried for a lease lately: one whose own model
        -- holds it back must not hold the others back too.
        return true
      end
    end
  end
  return false
end
-- Calibration: while nobody has learnt the bucket, the first worker that
-- would learn it takes it alone; the others wait until it has, or its time is up.
local function calibrator()
  local c = redis.call('HMGET', KEYS[1], 'calibrator', 'calibrate_until', 'calibrated')
  if c[1] and now >= tonumber(c[2]) then
    redis.call('HDEL', KEYS[1], 'calibrator', 'calibrate_until')
    redis.call('HSET', KEYS[1], 'calibrated', '1')
    return nil
  end
  if not c[1] and not c[3] and ARGV[11] == '1' then
    redis.call('HSET', KEYS[1], 'calibrator', ARGV[3], 'calibrate_until',
               tostring(now + CALIBRATE_FOR_S))
    return ARGV[3]
  end
  return c[1]
end
sweep()
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[3])
local admitted = 0
local member = ARGV[5]
local learner = calibrator()
local since = tonumber(ARGV[10])
if since then
  -- Published on every call of a waiting worker, with when it last tried.
  local tried = now
  if member == '' then
    local mine = redis.call('HGET', KEYS[6], ARGV[3])
    tried = mine and tonumber(string.match(mine, '|([^|]*)$')) or -1
  end
  local claim = tostring(since) .. '|' .. tostring(now) .. '|' .. tostring(tried)
  redis.call('HSET', KEYS[6], ARGV[3], claim)
end
if member ~= '' then
  if redis.call('ZSCORE', KEYS[2], member) then
    admitted = 1
  elseif redis.call('ZSCORE', KEYS[5], member) then
    admitted = -1
  else
    local s = redis.call('HMGET', KEYS[1], 'pause_until', 'cap', 'anchor_seq')
    local n = redis.call('ZCARD', KEYS[2])
    local cap = tonumber(s[2])
    if now >= (tonumber(s[1]) or 0) and (not cap or n < cap)
        and n <= tonumber(ARGV[8]) and (s[3] or '0') == ARGV[9]
        and (learner == ARGV[3] or not (learner or (since and behind(since)))) then
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[6]), member)
      redis.call('HSET', KEYS[3], member, tostring(now) .. '|' .. ARGV[7])
      redis.call('HDEL', KEYS[6], ARGV[3])
      admitted = 1
    end
  end
end
touch(ARGV[2])
return view(admitted, ARGV[12])
""".replace("FAIR_FRESH_S", repr(_FAIR_FRESH_S))
    .replace("FAIR_SLACK_S", repr(_FAIR_SLACK_S))
    .replace("CALIBRATE_FOR_S", repr(_CALIBRATE_FOR_S))
)

# ARGV: now, key_ttl_ms, worker, worker_ttl, member, remaining ('' = none),
#       when Canvas computed it (shared clock: orders the answers, and the
#       leak runs from it), headerless throttle ('1'), pause seconds,
#       max_in_flight, the earliest Canvas may have computed it (requests
#       admitted since may not be counted in it), its network delay field
#       ('' = none), the delay to publish there ('' = none),
#       then learned parameters as name, value pairs
SETTLE_SCRIPT = (
    _PRELUDE
    + """
local info = redis.call('HGET', KEYS[3], ARGV[5])
local n = redis.call('ZCARD', KEYS[2])
drop(ARGV[5])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'anchor_at', 'cap', 'cut_at', 'pause_until')
if ARGV[6] ~= '' then
  -- The newest answer is the anchor.
  if tonumber(ARGV[7]) >= (tonumber(s[1]) or -1) then
    redis.call('HSET', KEYS[1], 'anchor', ARGV[6], 'anchor_at', ARGV[7],
               'anchor_from', ARGV[11], 'anchor_by', ARGV[3])
    redis.call('HINCRBY', KEYS[1], 'anchor_seq', 1)
  end
  redis.call('HDEL', KEYS[1], 'cap')
elseif ARGV[8] == '1' then
  -- One cut per congestion event: requests sent before the last cut are part of it.
  local sent = info and tonumber(string.match(info, '^[^|]*')) or now
  if sent >= (tonumber(s[3]) or -1) then
    redis.call('HSET', KEYS[1], 'cap', math.max(1, math.floor(n / 2)), 'cut_at', tostring(now))
  end
elseif s[2] then
  local cap = tonumber(s[2]) + 1
  if cap >= tonumber(ARGV[10]) then
    redis.call('HDEL', KEYS[1], 'cap')
  else
    redis.call('HSET', KEYS[1], 'cap', cap)
  end
end
local pause = tonumber(ARGV[9])
if pause > 0 and now + pause > (tonumber(s[4]) or 0) then
  redis.call('HSET', KEYS[1], 'pause_until', tostring(now + pause))
end
if ARGV[13] ~= '' then
  -- Only its own path's field: the state does not grow with the machines.
  redis.call('HSET', KEYS[7], ARGV[12], ARGV[13], ARGV[12] .. '#by', ARGV[3])
end
if #ARGV > 13 then
  for i = 14, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'params_by', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'params_seq', 1)
  if redis.call('HGET', KEYS[1], 'calibrated') then
    -- The calibrator is done: everyone goes on.
    redis.call('HDEL', KEYS[1], 'calibrator', 'calibrate_until')
  end
end
touch(ARGV[2])
released()
return view(0, ARGV[12])
"""
)

# ARGV: now, key_ttl_ms, member, tombstone ttl. Idempotent: a lease removed here
# cannot be created afterwards by an admission still on its way to Redis.
CANCEL_SCRIPT = (
    _PRELUDE
    + """
drop(ARGV[3])
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), ARGV[3])
touch(ARGV[2])
released()
return tostring(now)
"""
)

# ARGV: now, key_ttl_ms, worker, worker_ttl. The worker is alive: keep its leases.
HEARTBEAT_SCRIPT = (
    _PRELUDE
    + """
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), ARGV[3])
touch(ARGV[2])
return tostring(now)
"""
)

# ARGV: now
ESTIMATE_SCRIPT = (
    _PRELUDE
    + """
sweep()
return view(0)
"""
)

_SCRIPTS = {
    "acquire": ACQUIRE_SCRIPT,
    "settle": SETTLE_SCRIPT,
    "heartbeat": HEARTBEAT_SCRIPT,
    "estimate": ESTIMATE_SCRIPT,
}


@dataclass(slots=True)
class _Lease:
    worker: str
    admitted_at: float
    reservation: float
    #: How unsure its process was of the reservation (None: a lease without it).
    reservation_sd: float | None = None


@dataclass(slots=True)
class _View:
    """What a script reply says about the shared bucket, on the shared clock."""

    now: float
    leases: list[_Lease]
    state: dict[str, str]
    #: The network delay shared for this process's network path, and who shared it.
    one_way: float | None = None
    one_way_by: str | None = None

    def number(self, name: str) -> float | None:
        value = self.state.get(name)
        try:
            return None if value is None else float(value)
        except ValueError:
            return None


@dataclass(slots=True)
class _Connection:
    """A Redis client and its scripts, bound to one event loop."""

    client: Any
    spare: Any
    scripts: dict[str, Any]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Whether the client can subscribe (an injected one may not).
    listens: bool = True


def _parse(reply: Any) -> tuple[int, _View]:
    admitted, now, raw_leases, raw_state, raw_delay = reply
    leases = []
    for raw in raw_leases:
        worker, _, admitted_at, reservation, sd = [*text(raw).split("|"), "", "", "", "", ""][:5]
        try:
            doubt = float(sd) if sd else None
            leases.append(_Lease(worker, float(admitted_at), float(reservation), doubt))
        except ValueError:
            continue
    flat = [text(item) for item in raw_state]
    state = dict(zip(flat[::2], flat[1::2], strict=True))
    view = _View(float(text(now)), leases, state)
    if raw_delay and raw_delay[0] is not None:
        with contextlib.suppress(ValueError):
            view.one_way = float(text(raw_delay[0]))
            view.one_way_by = None if raw_delay[1] is None else text(raw_delay[1])
    return int(admitted), view


class RedisThrottle(Throttle):
    """A :class:`Throttle` whose bucket is shared with other processes through Redis.

    Args:
        url: The Redis URL (``redis://localhost:6379/0``).
        key: What identifies the shared bucket, e.g. ``origin#token-fingerprint``
            (never the token itself); every process pacing the same token on
            the same Canvas must use the same key.
        config: Priors and limits, as for :class:`Throttle`.
        lease_ttl: Seconds after which a lease expires whatever happens; set
            it to the attempt timeout (no request runs longer).
        heartbeat_ttl: Seconds after which the leases of a worker that stopped
            heartbeating (killed) stop counting.
        admission_timeout: The longest a request waits for Redis before the
            throttle paces locally.
        network_id: What identifies this process's network path to Canvas:
            processes with the same one share their learnt network delay
            (default: the host name). Give machines that share a host name
            but not a network (images left as ``localhost``) their own, or
            None to share nothing.
        clock: None uses Redis's clock (right across machines); inject one
            only in tests, together with *sleep*.
        sleep: How waits pass.

    Raises:
        RuntimeError: If the ``redis`` package is not installed
            (``pip install resilient-canvas[redis]``).
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        config: ThrottleConfig | None = None,
        lease_ttl: float = 60.0,
        heartbeat_ttl: float = 3.0,
        admission_timeout: float = _ADMISSION_TIMEOUT_S,
        network_id: str | None = _HOST,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        redis_client: Any = None,
    ) -> None:
        require_redis("RedisThrottle", redis_client)
        if lease_ttl <= 0 or heartbeat_ttl <= 0 or admission_timeout <= 0:
            raise ValueError("lease_ttl, heartbeat_ttl and admission_timeout must be positive.")
        super().__init__(config, clock=clock or time.monotonic, sleep=sleep, name=key)
        self._url = url
        self._injected_clock = clock
        self._injected_client = redis_client
        self._keys = [
            f"resilient_canvas:{key}:{part}"
            for part in (
                "state",
                "leases",
                "lease_info",
                "workers",
                "cancelled",
                "waiting",
                "network",
            )
        ]
        self._lease_ttl = lease_ttl
        self._heartbeat_ttl = heartbeat_ttl
        self._admission_timeout = admission_timeout
        self._worker = uuid.uuid4().hex[:16]
        # The network delay is the path's: shared with the processes on it only.
        self._network_key = None if network_id is None else f"one_way@{network_id}"
        # One client per event loop: a client is bound to the loop it was made in.
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._degraded = False
        self._settling: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()
        self._view: _View | None = None
        # Shared clock minus ours: the most and the least it can be (Redis
        # read its clock between our sending and its reply reaching us).
        self._offset = 0.0
        self._offset_low = 0.0
        self._merged_seq: str | None = None
        self._merged_from: set[str] = set()
        self._published_at = -math.inf
        self._others_seen = False

    def __repr__(self) -> str:
        return f"RedisThrottle(key={self.name!r}, degraded={self.degraded})"

    @property
    def redis_url(self) -> str:
        """The Redis this throttle shares its bucket through (the client's breaker follows)."""
        return self._url

    @property
    def degraded(self) -> bool:
        """Whether Redis failed to answer in time and pacing is local until it does."""
        return self._degraded

    def _skips_time(self) -> bool:
        # Leases expire and anchors age on Redis's clock, which no test can skip:
        # a virtual jump here would age the shared anchor while the leases stay.
        return False

    def _admissible_now(self, route: str | None) -> bool:
        # Only Redis knows the others' leases; while it is unreachable the model decides.
        return self._degraded and super()._admissible_now(route)

    # ---------------------------------------------------------------- admission

    async def _wait_for_place(self, route: str | None) -> str | None:
        member = f"{self._worker}|{uuid.uuid4().hex}"
        races = 0
        waiting_since = self._now()
        while not self._degraded:
            with self._lock:
                now = self._now()
                # Held back for an older head of another route: until it leaves.
                # The leases name every request on the token, and the shared
                # room below charges the others': the model may count ours alone.
                held = self._held_back(route, now)
                delay = math.inf if held else self.model.delay(now, route, sees_all=True)
            if delay > 0 and not self._others_seen:
                # Our own requests, the pause or the cut: only the model decides.
                await self._wait_for_change(delay, route)
                continue
            most, wait = -1, delay
            if delay <= 0:
                with self._lock:
                    most, wait = self._shared_room(route)
            if wait > 0 or races >= _RACES_BEFORE_POLL:
                races = 0
                if wait > 0:
                    # The others' requests hold the room, or their answers show
                    # it (the anchor we wait on moves only with a view read
                    # from Redis): hear them give it back, and look again.
                    # Waiting on the model's anchor alone, a process with
                    # nothing in flight slept 5 s on a throttled answer's 4.9
                    # while the others' answers showed room.
                    self._loop_task("listen", self._listen())
                await self._wait_for_change(min(max(wait, _POLL_S), _MAX_POLL_S), route)
                most = -1  # only refresh the view: it is stale after a wait
            try:
                admitted = await self._take(member if most >= 0 else "", route, most, waiting_since)
            except BaseException as error:
                if most >= 0:
                    # The script may have run: never leave its lease behind.
                    self._background(self._cancel(member))
                if not isinstance(error, _ERRORS):
                    raise
                self._degrade(error)
                break
            if admitted == 1:
                self._held.add(member)
                self._ensure_heartbeat()
                return member
            races += most >= 0
        # Redis is not answering: pace locally, keeping our place in the queue.
        return await super()._wait_for_place(route)

    def _shared_room(self, route: str | None) -> tuple[int, float]:
        """From the latest view: the most leases at which one more may start, or a wait.

        The model's room (ours counted) less the reservations of the others'
        requests that the anchor did not count yet.
        """
        view = self._view
        if view is None:
            return -1, 0.0
        shared_now = self._now() + self._offset
        pause_until = view.number("pause_until") or 0.0
        if shared_now < pause_until:
            return -1, pause_until - shared_now
        calibrator = view.state.get("calibrator")
        if calibrator is not None and calibrator != self._worker:
            # Another process learns the bucket alone: until it has.
            until = view.number("calibrate_until") or shared_now
            return -1, min(max(until - shared_now, _POLL_S), _MAX_POLL_S)
        n = len(view.leases)
        cap = view.number("cap")
        if cap is not None and n >= cap:
            return -1, _POLL_S
        if not self.model.headers_seen:
            # No quota header seen anywhere yet: the in-flight limit is shared.
            limit = self.model.headerless_limit
            return (n, 0.0) if n < limit else (-1, _POLL_S)
        counted_before = self._counted_before(view)
        mine = self.model.up_front_sd_for(route)
        # Each holds what its own process reserved for it, as sure as that process was.
        others = [
            (lease.reservation, mine if lease.reservation_sd is None else lease.reservation_sd)
            for lease in view.leases
            if lease.worker != self._worker
            and (counted_before is None or lease.admitted_at >= counted_before)
        ]
        if not others:
            # The model alone decided (a probe, or an empty bucket).
            return n, 0.0
        left = self.model.room(self._now(), route, others)
        if left <= 0:
            return -1, min(max(-left / self.model.outflow, _POLL_S), _MAX_POLL_S)
        return n + int(left // self.model.up_front_for(route)), 0.0

    def _counted_before(self, view: _View) -> float | None:
        """On the shared clock: a request admitted before this, ours or another's,
        was counted by the view's anchor if it still runs (None: no anchor).

        It reached Canvas before the earliest the anchor may have been
        computed: admitted a one-way delay earlier, allowing for a loop that
        sends late (a lease is taken before its request is sent).
        """
        earliest = view.number("anchor_from")
        if earliest is None:
            earliest = view.number("anchor_at")
        if earliest is None:
            return None
        return earliest - self.model.one_way_delay_s - self.model.lag_allowance_s

    def _would_calibrate(self, route: str | None) -> bool:
        """Whether this worker would learn the bucket alone: it explores, and has not learnt it."""
        view = self._view
        if not (self.config.learn and self.config.explore):
            return False
        if view is not None and "calibrated" in view.state:
            return False
        with self._lock:
            return self.model.up_front_sd_for(route) >= _CALIBRATED_SD

    async def _take(
        self, member: str, route: str | None, most: int, waiting_since: float | None = None
    ) -> int:
        """Take a lease if the view is still the one *most* was computed for; refresh it."""
        seq = self._view.state.get("anchor_seq", "0") if self._view else "0"
        args = [
            self._shared_now_arg(),
            _KEY_TTL_MS,
            self._worker,
            self._heartbeat_ttl,
            member,
            self._lease_ttl,
            f"{self.model.up_front_for(route)!r}|{self.model.up_front_sd_for(route)!r}",
            most,
            seq,
            "" if waiting_since is None else repr(waiting_since + self._offset),
            "1" if self._would_calibrate(route) else "",
            self._network_key or "",
        ]
        task = asyncio.current_task()
        cancels_before = task.cancelling() if task is not None else 0
        sent_at = self._now()
        async with asyncio.timeout(self._admission_timeout):
            reply = await self._connection().scripts["acquire"](keys=self._keys, args=args)
        if task is not None and task.cancelling() > cancels_before:
            # redis-py can swallow a cancellation that lands mid-command and
            # return the reply: the waiter would outlive its caller's timeout
            # (asyncio.wait_for) holding a lease. Honour the cancellation.
            raise asyncio.CancelledError
        admitted, view = _parse(reply)
        with self._lock:
            self._absorb(view, sent_at, self._now())
        return admitted

    def _absorb(self, view: _View, sent_at: float, replied_at: float) -> None:
        """Adopt the newest anchor and the others' better-learned parameters.

        Redis's clock is read between sending (*sent_at*, ours) and the
        reply: the offset taken is the largest it can be, so another
        process's anchor is placed as early as it may have been. Placed
        later (by a slow reply), our requests sent just after it would pass
        for counted in it, and go uncharged. The least offset (read just as
        the reply arrived) places our own anchors as early as they may be.
        """
        self._offset = view.now - sent_at
        self._offset_low = view.now - replied_at
        self._view = view
        if any(lease.worker != self._worker for lease in view.leases):
            # Their requests move Canvas's figure unseen: learn only bounds meanwhile.
            self._others_seen = True
            self.model.note_others(self._now())
        # Fields an older version wrote into the state (one_way@...) are not
        # read: only the network hash's field of our own path is.
        if (
            self._network_key is not None
            and view.one_way is not None
            and view.one_way_by != self._worker  # not our own back
        ):
            self.model.adopt_network(view.one_way)
        anchor, anchor_at = view.number("anchor"), view.number("anchor_at")
        counted_before = self._counted_before(view)
        if (
            anchor is not None
            and anchor_at is not None
            and counted_before is not None
            and view.state.get("anchor_by") != self._worker
        ):
            # Not our own answer back: the model has it already, and knows
            # exactly which of our requests it counted (what association needs).
            self.model.adopt_anchor(anchor, anchor_at - self._offset, counted_before - self._offset)
        seq = view.state.get("params_seq")
        if seq is not None and seq != self._merged_seq:
            self._merged_seq = seq
            by = view.state.get("params_by")
            # Once per publisher: merging each other's estimates back and forth
            # would count the same evidence again and again (variance collapse).
            if by is not None and "calibrated" in view.state:
                # The calibrator's final values are new evidence, even if its
                # first ones (before it had learnt) were merged.
                by += "#calibrated"
            if by is not None and not by.startswith(self._worker) and by not in self._merged_from:
                if len(self._merged_from) < 1024:
                    self._merged_from.add(by)
                shared = {
                    name: value
                    for name in view.state
                    if (name in _PARAMETERS or name.startswith(_ROUTE_PARAMETERS))
                    and (value := view.number(name)) is not None
                }
                # A no-op for a worker configured learn=False.
                self.model.merge_parameters(shared)

    # --------------------------------------------------------------- settlement

    def release(self, permit: Permit, observation: Observation | None = None) -> None:
        """Settle the response locally, then give the lease back and share what was learned."""
        if permit.released:
            return
        lease, permit.lease = permit.lease, None
        if self._degraded and self._others_seen:
            # Redis is down, the others are not: they still share the bucket.
            with self._lock:
                self.model.note_others(self._now())
        super().release(permit, observation)
        if lease is None:
            return
        self._held.discard(lease)
        self._background(self._settle(self._settle_args(lease, observation, permit.route)))

    def _settle_args(
        self, lease: str, observation: Observation | None, route: str | None = None
    ) -> list[Any]:
        now = self._now()
        view = self._view
        with self._lock:
            estimate = self.model.estimate(now)
            computed = now - self.model.one_way_delay_s
            lag = self.model.lag_allowance_s
            # The calibrator ends its turn once it has learnt the reservation
            # and the network (the others on this machine take its delay),
            # or has nothing left to send (it could learn no more).
            calibrated = (
                view is not None
                and view.state.get("calibrator") == self._worker
                and (
                    (
                        self.model.up_front_sd_for(route) < _CALIBRATED_SD
                        and self.model.network_learnt
                    )
                    or not (self.model.in_flight or self.waiting)
                )
            )
        remaining = observation.remaining if observation is not None else None
        if remaining is not None and not (
            math.isfinite(remaining)
            and abs(remaining) <= MAX_ABS_REMAINING
            and remaining <= estimate.hwm + 4 * estimate.hwm_sd
        ):
            remaining = None  # garbage never becomes everyone's anchor
        headerless_throttle = (
            remaining is None and observation is not None and observation.throttled
        )
        args: list[Any] = [
            self._shared_now_arg(),
            _KEY_TTL_MS,
            self._worker,
            self._heartbeat_ttl,
            lease,
            "" if remaining is None else repr(remaining),
            # When Canvas computed it, on the shared clock: not the script's
            # own clock, which runs later (a busy loop, Redis's round trip).
            repr(computed + self._offset),
            "1" if headerless_throttle else "0",
            repr(estimate.paused_for_s if headerless_throttle else 0.0),
            self.config.max_in_flight,
            # And as early as it may have been (we may have read the answer
            # late): the requests admitted since may not be counted in it.
            repr(computed - lag + self._offset_low),
            self._network_key or "",
            "",  # our network delay, when published (below)
        ]
        # A worker configured learn=False holds its settings, not evidence: never shared.
        if calibrated or (
            self.config.learn
            and remaining is not None
            and now - self._published_at >= _PUBLISH_EVERY_S
        ):
            self._published_at = now
            with self._lock:
                parameters = self.model.parameters()
                if self._network_key is not None and self.model.network_learnt:
                    # Our own bound: the shared one shared back could only fall.
                    args[-1] = repr(self.model.own_one_way_delay_s)
            for name, value in parameters.items():
                args += [name, repr(value)]
            if calibrated:
                args += ["calibrated", "1"]
        return args

    async def _settle(self, args: list[Any]) -> None:
        try:
            sent_at = self._now()
            async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                reply = await self._connection().scripts["settle"](keys=self._keys, args=args)
            with self._lock:
                self._absorb(_parse(reply)[1], sent_at, self._now())
        except _ERRORS as error:
            # The lease goes with our heartbeat or its TTL; pace locally meanwhile.
            self._degrade(error)

    async def _cancel(self, member: str) -> None:
        self._held.discard(member)
        args = [self._shared_now_arg(), _KEY_TTL_MS, member, self._lease_ttl]
        with contextlib.suppress(*_ERRORS):
            async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                # EVAL, not EVALSHA: one round trip even if the script is not cached yet.
                spare = self._connection().spare
                await spare.eval(CANCEL_SCRIPT, len(self._keys), *self._keys, *args)

    # ----------------------------------------------------------------- reports

    async def shared_estimate(self) -> dict[str, float]:
        """What Redis holds now: leases in flight, the anchor, shared parameters, pause."""
        reply = await self._connection().scripts["estimate"](
            keys=self._keys, args=[self._shared_now_arg()]
        )
        _, view = _parse(reply)
        estimate = {
            "in_flight": float(len(view.leases)),
            "paused_for_s": round(max(0.0, (view.number("pause_until") or 0.0) - view.now), 3),
        }
        for name in ("anchor", "cap", "hwm", "up_front_cost", "outflow"):
            value = view.number(name)
            if value is not None:
                estimate[name] = round(value, 3)
        return estimate

    async def aclose(self) -> None:
        """Finish pending settlements and close this event loop's Redis connection."""
        loop = asyncio.get_running_loop()
        pending = [task for task in self._settling if task.get_loop() is loop]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        connection = self._connections.pop(loop, None)
        if connection is None:
            return
        for task in connection.tasks:
            task.cancel()
        # The keeper closes the clients as it ends.
        await asyncio.gather(*connection.tasks, return_exceptions=True)

    # --------------------------------------------------------------- internals

    def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = self._connections.get(loop)
        if connection is None:
            client = self._injected_client or self._new_client(single=False)
            # Cleanup goes through a connection opened in advance: opening one
            # costs several round trips, and a lease must go at once.
            spare = self._injected_client or self._new_client(single=True)
            scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
            connection = self._connections[loop] = _Connection(client, spare, scripts)
            if spare is not client:
                start_task(connection.tasks, "warm", self._warm(spare))
            start_task(connection.tasks, "keeper", self._keep(connection))
        return connection

    async def _keep(self, connection: _Connection) -> None:
        """Close idle pooled connections now and then; close all when the loop shuts down.

        The pool opens a connection per Redis command running at once and
        never closes one: after a burst (the calls held through an outage,
        released together) a process kept every socket of its peak for good.
        Closing the idle ones every ``_IDLE_CLOSE_S`` (as aiohttp closes idle
        HTTP connections) makes the sockets follow the load; the next
        command reconnects.
        """
        try:
            while True:
                await asyncio.sleep(_IDLE_CLOSE_S)
                if connection.client is not self._injected_client:
                    with contextlib.suppress(*_ERRORS):
                        async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                            await connection.client.connection_pool.disconnect(
                                inuse_connections=False
                            )
        finally:
            with contextlib.suppress(*_ERRORS):
                async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                    await connection.client.aclose()
                    if connection.spare is not connection.client:
                        await connection.spare.aclose()

    def _new_client(self, *, single: bool) -> Any:
        return redis_asyncio.Redis.from_url(
            self._url,
            socket_timeout=_BACKGROUND_TIMEOUT_S,
            socket_connect_timeout=_BACKGROUND_TIMEOUT_S,
            single_connection_client=single,
        )

    async def _warm(self, spare: Any) -> None:
        with contextlib.suppress(*_ERRORS):
            async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                await spare.ping()

    def _shared_now_arg(self) -> str:
        return "" if self._injected_clock is None else repr(self._now())

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _loop_task(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run *coroutine* once per event loop (heartbeat, probe) unless already running."""
        start_task(self._connection().tasks, name, coroutine)

    def _ensure_heartbeat(self) -> None:
        self._loop_task("heartbeat", self._heartbeat())

    async def _heartbeat(self) -> None:
        """Tell the others this worker is alive while it holds leases (wall-clock cadence)."""
        while self._held and not self._degraded:
            await asyncio.sleep(self._heartbeat_ttl / 3)
            args = [self._shared_now_arg(), _KEY_TTL_MS, self._worker, self._heartbeat_ttl]
            with contextlib.suppress(*_ERRORS):
                async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                    await self._connection().scripts["heartbeat"](keys=self._keys, args=args)

    async def _listen(self) -> None:
        """Wake our waiters each time any process gives a lease back (Redis pub/sub).

        A waiter that only the others' releases can unblock has nothing of its
        own in flight to wake it: it polled, and reacted a poll late while the
        processes with requests in flight took the room first (four processes
        sharing one bucket ran 1.51-1.54x its lower bound, one process's work
        finishing seconds after the others'). The poll stays as the fallback:
        a message can be lost with the connection, and the next wait listens
        again. It holds a connection, so it ends once nobody here has waited
        for ``_LISTEN_IDLE_S`` (a process pacing many tokens keeps none for
        the idle ones).

        A burst of releases wakes our heads once: every message read in one
        pass of the event loop (those that arrived together) schedules one
        wake-up, which runs as soon as the listener has read them all, and
        wakes nobody if nobody here waits. Woken per message, a burst of N
        releases woke every waiting process's heads N times (50 messages
        published together: 50 wake-ups, now 1); a release read in a later
        pass wakes them again.
        """
        connection = self._connection()
        if not connection.listens:
            return
        try:
            pubsub = connection.client.pubsub(ignore_subscribe_messages=True)
        except AttributeError:
            # An injected client without pub/sub: waiters poll.
            connection.listens = False
            return
        loop = asyncio.get_running_loop()
        wake_pending = False

        def wake() -> None:
            nonlocal wake_pending
            wake_pending = False
            if self.waiting:
                self._notify()

        try:
            await pubsub.subscribe(self._keys[0] + ":released")
            idle_since = loop.time()
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_LISTEN_IDLE_S
                )
                if message is not None and not wake_pending:
                    # Runs once this loop pass is over: after the messages
                    # already received, read without waiting, are all read.
                    wake_pending = True
                    loop.call_soon(wake)
                if self.waiting:
                    idle_since = loop.time()
                elif loop.time() - idle_since >= _LISTEN_IDLE_S:
                    return
        except _ERRORS:
            return
        finally:
            with contextlib.suppress(*_ERRORS):
                async with asyncio.timeout(_BACKGROUND_TIMEOUT_S):
                    await pubsub.aclose()

    def _degrade(self, error: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            _logging.throttle_degraded(
                throttle=self.name,
                error=f"{type(error).__name__}: {error}"[:200],
                retry_redis_every_s=_PROBE_EVERY_S,
            )
        self._loop_task("probe", self._probe())

    async def _probe(self) -> None:
        """Ask Redis in the background, never on a request's path, until it answers."""
        while self._degraded:
            await asyncio.sleep(_PROBE_EVERY_S)
            args = [self._shared_now_arg(), _KEY_TTL_MS, self._worker, self._heartbeat_ttl]
            try:
                async with asyncio.timeout(self._admission_timeout):
                    await self._connection().scripts["heartbeat"](keys=self._keys, args=args)
            except _ERRORS:
                continue
            self._degraded = False
            _logging.throttle_event("canvas.throttle_redis_back", throttle=self.name)
            self._notify()
