"""One Canvas bucket model shared by many processes and machines, through Redis.

The state of :class:`~resilient_canvas.Throttle` that must be global lives in
a Redis hash (base level, learned hwm, up-front cost, outflow, pause) and the
requests in flight are leases in a sorted set scored by their expiry, so a
worker that crashes cannot hold capacity past its lease. Admission and
settlement are single Lua scripts, hence atomic. Time is Redis's ``TIME``
(one clock for every machine) unless a clock is injected for tests.

FIFO order holds within each process; across processes, waiters poll. If
Redis becomes unreachable, the throttle logs ``canvas.throttle_degraded``
and paces locally until Redis answers again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from resilient_canvas import _logging
from resilient_canvas._bucket_model import Observation, Permit, ThrottleConfig
from resilient_canvas._throttle import Throttle

try:
    from redis import asyncio as redis_asyncio
    from redis.exceptions import RedisError

    HAVE_REDIS = True
except ImportError:  # pragma: no cover - exercised only without the redis extra
    HAVE_REDIS = False
    RedisError = OSError  # type: ignore[misc,assignment]

#: How often a waiter that another process is blocking asks Redis again.
_POLL_S = 0.01
#: How long to pace locally before trying an unreachable Redis again.
_RETRY_REDIS_AFTER_S = 5.0

_NOW = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_STATE = """
local s = redis.call('HMGET', KEYS[1], 'base', 'base_at', 'hwm', 'up', 'outflow', 'pause_until')
local hwm = tonumber(s[3]) or tonumber(ARGV[2])
local up = tonumber(s[4]) or tonumber(ARGV[3])
local outflow = tonumber(s[5]) or tonumber(ARGV[4])
local base = tonumber(s[1]) or 0
local base_at = tonumber(s[2]) or now
local pause_until = tonumber(s[6]) or 0
local base_now = math.max(0, base - outflow * math.max(0, now - base_at))
"""

# ARGV: now, hwm, up, outflow, margin, lease_id, lease_ttl, max_in_flight, predicted_cost
ACQUIRE_SCRIPT = (
    _NOW
    + _STATE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if now < pause_until then
  return {0, tostring(pause_until - now)}
end
local n = redis.call('ZCARD', KEYS[2])
if n >= tonumber(ARGV[8]) then
  return {0, '-1'}
end
local needed = base_now + tonumber(ARGV[9]) + (n + 1) * up + tonumber(ARGV[5])
if needed >= hwm then
  return {0, tostring(math.max(needed - hwm, 0.01) / outflow)}
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6])
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, tostring(n + 1)}
"""
)

# ARGV: now, hwm, up, outflow, margin, lease_id, lease_ttl, learn, remaining, cost,
#       throttled, transit
SETTLE_SCRIPT = (
    _NOW
    + _STATE
    + """
redis.call('ZREM', KEYS[2], ARGV[6])
local learn = ARGV[8] == '1'
local remaining = tonumber(ARGV[9])
local cost = tonumber(ARGV[10]) or 0
local throttled = ARGV[11] == '1'
local wait = 0
if remaining then
  -- Leases are scored by expiry = admitted + ttl; only those admitted before
  -- now - transit had surely reached Canvas when it answered.
  local cutoff = now - tonumber(ARGV[12]) + tonumber(ARGV[7])
  local others = redis.call('ZCOUNT', KEYS[2], '-inf', cutoff)
  if learn and others == 0 and remaining > hwm then hwm = remaining end
  base = math.max(0, hwm - remaining - others * up)
  if throttled then
    if learn and remaining > up then up = remaining end
    wait = math.max(0, base + up + tonumber(ARGV[5]) - hwm) / outflow
    if now + wait > pause_until then pause_until = now + wait end
  end
else
  base = base_now + cost
end
redis.call('HSET', KEYS[1], 'base', base, 'base_at', now, 'hwm', hwm, 'up', up,
           'outflow', outflow, 'pause_until', pause_until)
return tostring(wait)
"""
)

# ARGV: now, hwm, up, outflow
ESTIMATE_SCRIPT = (
    _NOW
    + _STATE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local n = redis.call('ZCARD', KEYS[2])
return {tostring(base_now), tostring(n), tostring(hwm), tostring(up), tostring(outflow),
        tostring(math.max(0, pause_until - now))}
"""
)


class RedisThrottle(Throttle):
    """A :class:`Throttle` whose bucket model and leases live in Redis.

    Args:
        url: The Redis URL (``redis://localhost:6379/0``).
        key: What identifies the shared bucket, e.g. ``origin#token-fingerprint``
            (never the token itself); every process pacing the same token on
            the same Canvas must use the same key.
        config: Priors and limits, as for :class:`Throttle`.
        lease_ttl: Seconds after which a lease of a crashed worker expires;
            keep it above the longest request.
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
        lease_ttl: float = 120.0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        redis_client: Any = None,
    ) -> None:
        if not HAVE_REDIS and redis_client is None:
            raise RuntimeError(
                "RedisThrottle needs the redis package: pip install 'resilient-canvas[redis]'."
            )
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive.")
        super().__init__(config, clock=clock or time.monotonic, sleep=sleep, name=key)
        self._injected_clock = clock
        self._redis = redis_client or redis_asyncio.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._keys = [f"resilient_canvas:{key}:state", f"resilient_canvas:{key}:leases"]
        self._lease_ttl = lease_ttl
        self._acquire_script = self._redis.register_script(ACQUIRE_SCRIPT)
        self._settle_script = self._redis.register_script(SETTLE_SCRIPT)
        self._estimate_script = self._redis.register_script(ESTIMATE_SCRIPT)
        self._degraded_until = 0.0
        self._settling: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RedisThrottle(key={self.name!r}, degraded={self.degraded})"

    @property
    def degraded(self) -> bool:
        """Whether Redis was unreachable recently and pacing is local."""
        return time.monotonic() < self._degraded_until

    def _admissible_now(self, route: str | None) -> bool:
        # Only Redis knows; while it is unreachable, the local model decides.
        return self.degraded and super()._admissible_now(route)

    async def _wait_for_place(self, route: str | None) -> str | None:
        if not self.degraded:
            lease = await self._lease(route)
            if lease is not None:
                return lease
        # Redis is unreachable: pace locally, keeping our place in the queue.
        return await super()._wait_for_place(route)

    def release(self, permit: Permit, observation: Observation | None = None) -> None:
        """Give the lease back and settle the response in Redis (in the background)."""
        if permit.lease is None or permit.released:
            super().release(permit, observation)
            return
        lease, permit.lease = permit.lease, None
        # Local bookkeeping (in flight, route costs, recovery) as for a local permit.
        super().release(permit, observation)
        task = asyncio.ensure_future(self._settle(lease, observation))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def shared_estimate(self) -> dict[str, float]:
        """What Redis holds now: base level, leases in flight, learned parameters, pause."""
        values = await self._estimate_script(keys=self._keys, args=self._args()[:4])
        names = ("base", "in_flight", "hwm", "up_front_cost", "outflow", "paused_for_s")
        return {name: round(float(value), 3) for name, value in zip(names, values, strict=True)}

    async def aclose(self) -> None:
        """Finish pending settlements and close the Redis connection."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self._redis.aclose()

    # ------------------------------------------------------------------ internals

    def _args(self) -> list[Any]:
        now = "" if self._injected_clock is None else repr(self._injected_clock())
        return [now, self.hwm, self.up_front_cost, self.outflow, self.config.margin]

    async def _lease(self, route: str | None) -> str | None:
        lease = uuid.uuid4().hex
        while True:
            args = [
                *self._args(),
                lease,
                self._lease_ttl,
                self.config.max_in_flight,
                self.model.up_front_for(route) - self.up_front_cost,
            ]
            try:
                admitted, value = await self._acquire_script(keys=self._keys, args=args)
            except (RedisError, OSError) as error:
                self._degrade(error)
                return None
            if int(admitted) == 1:
                return lease
            wait = float(value)
            # A local release wakes us early; another process's release needs a poll.
            await self._wait_for_change(_POLL_S if wait < 0 else max(_POLL_S, min(wait, 1.0)))

    async def _settle(self, lease: str, observation: Observation | None) -> None:
        remaining = observation.remaining if observation else None
        cost = observation.cost if observation else None
        args = [
            *self._args(),
            lease,
            self._lease_ttl,
            "1" if self.config.learn else "0",
            "" if remaining is None else repr(remaining),
            "" if cost is None else repr(cost),
            "1" if observation is not None and observation.throttled else "0",
            2 * self.model.estimate(self._now()).one_way_delay_s,
        ]
        try:
            await self._settle_script(keys=self._keys, args=args)
        except (RedisError, OSError) as error:
            # The lease expires by itself; pace locally meanwhile.
            self._degrade(error)

    def _degrade(self, error: BaseException) -> None:
        if not self.degraded:
            _logging.throttle_degraded(
                throttle=self.name,
                error=f"{type(error).__name__}: {error}"[:200],
                retry_redis_after_s=_RETRY_REDIS_AFTER_S,
            )
        self._degraded_until = time.monotonic() + _RETRY_REDIS_AFTER_S
