"""Client-side pacing to Canvas's leaky bucket, before the first throttle happens.

Canvas reserves ``up_front_cost`` for every request in flight and refuses a
request when ``count + up_front_cost >= hwm``. It tells us ``hwm - count`` on
every response (``X-Rate-Limit-Remaining``) and each request's cost
(``X-Request-Cost``). From those and our own in-flight count we estimate the
bucket's *base level* (the count without reservations) and admit a request
only while ``base + (in_flight + 1) * up_front_cost + pending costs + margin``
stays under ``hwm``. The base leaks at ``outflow`` between observations.

``hwm``, ``up_front_cost`` and ``outflow`` start from Canvas's open-source
defaults and are learned online, because installs differ. Without any headers
(a proxy strips them, or the server is not Canvas) the throttle falls back to a
fixed concurrency and throttled responses are handled by backoff alone.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from resilient_canvas import _logging
from resilient_canvas._config import is_testing
from resilient_canvas._http import origin_of, token_fingerprint
from resilient_canvas._policy import RetryBudget

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Weight of a new observation in the moving averages (cost per route, outflow).
_EMA_WEIGHT = 0.2
#: Bounds of the time a request is assumed to take to reach the server, in seconds.
_MIN_TRANSIT = 0.002
_MAX_TRANSIT = 1.0
#: Per unthrottled response, the transit estimate shrinks by this factor.
_TRANSIT_DECAY = 0.995
#: Smallest amount the model waits to leak when the bucket is exactly at hwm.
_LEAK_EPSILON = 0.01
#: Shortest span over which the leak rate is measured; shorter spans are noise.
_MIN_OUTFLOW_SPAN = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleConfig:
    """Priors and limits of the client-side throttle.

    Attributes:
        hwm: Prior for Canvas's high-water mark (open-source default 600).
        up_front_cost: Prior for the per-request reservation (default 50).
        outflow: Prior for the leak rate in units per second (default 10).
        margin: Headroom kept unused to absorb estimation error, in cost units.
        max_in_flight: Hard cap on concurrent requests, whatever the model says.
        headerless_in_flight: Concurrency used until (or unless) quota headers appear.
        learn: Whether to learn hwm, up_front_cost and outflow from responses.
    """

    hwm: float = 600.0
    up_front_cost: float = 50.0
    outflow: float = 10.0
    margin: float = 20.0
    max_in_flight: int = 64
    headerless_in_flight: int = 8
    learn: bool = True

    def __post_init__(self) -> None:
        # These feed divisions and comparisons; a zero or negative one would
        # either stall every request forever or disable pacing silently.
        if min(self.hwm, self.up_front_cost, self.outflow) <= 0:
            raise ValueError("hwm, up_front_cost and outflow must be positive.")
        if self.margin < 0:
            raise ValueError("margin must not be negative.")
        if self.max_in_flight < 1 or self.headerless_in_flight < 1:
            raise ValueError("max_in_flight and headerless_in_flight must be at least 1.")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one response says about the bucket.

    Attributes:
        remaining: ``X-Rate-Limit-Remaining``, if present.
        cost: ``X-Request-Cost``, if present.
        throttled: Whether Canvas refused the request as throttled.
    """

    remaining: float | None = None
    cost: float | None = None
    throttled: bool = False


@dataclass(frozen=True, slots=True)
class ThrottleEstimate:
    """A snapshot of what the throttle believes, for logs, progress and tests."""

    remaining: float
    in_flight: int
    in_flight_limit: int
    hwm: float
    up_front_cost: float
    outflow: float
    paused_for_s: float
    headers_seen: bool
    throttled_responses: int


@dataclass(slots=True, eq=False)
class Permit:
    """A granted place in flight; give it back with :meth:`Throttle.release`."""

    route: str | None
    predicted_cost: float
    admitted_at: float
    released: bool = False
    #: The Redis lease behind this permit, for a shared throttle.
    lease: str | None = None


class _Average:
    """Exponential moving average that starts at its first sample."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float | None = None

    def add(self, sample: float) -> None:
        self.value = (
            sample if self.value is None else self.value + _EMA_WEIGHT * (sample - self.value)
        )


class Throttle:
    """Paces requests of one access token on one Canvas to its leaky bucket.

    One instance is shared by every client using the same token on the same
    origin (see :func:`throttle_for`). Waiting is FIFO and cancellation-safe.

    Args:
        config: Priors and limits.
        clock: Time source (inject a fake one in tests).
        sleep: How waits pass (inject with *clock*).
        budget: The retry budget shared by calls paced by this throttle.
        name: A label for logs (never the token).
    """

    def __init__(
        self,
        config: ThrottleConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        budget: RetryBudget | None = None,
        name: str = "canvas",
    ) -> None:
        self.config = config or ThrottleConfig()
        self.budget = budget or RetryBudget()
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self.hwm = self.config.hwm
        self.up_front_cost = self.config.up_front_cost
        self.outflow = self.config.outflow
        self._base = 0.0
        self._base_at = clock()
        self._pending_cost = 0.0
        self._pause_until = 0.0
        self._recovery_cap: float | None = None
        self._headers_seen = False
        self._throttled = 0
        self._consecutive_throttles = 0
        self._route_costs: dict[str, _Average] = collections.defaultdict(_Average)
        self._default_cost = _Average()
        self._settled_cost = 0.0
        self._outflow_anchor: tuple[float, float, float] | None = None
        self._active: set[Permit] = set()
        # How long a request may take to reach Canvas; grows when a throttle
        # shows our estimate was too low, shrinks slowly while all is well.
        self._transit = _MIN_TRANSIT
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._changed: asyncio.Future[None] | None = None

    @property
    def _in_flight(self) -> int:
        return len(self._active)

    def __repr__(self) -> str:
        estimate = self.estimate()
        return (
            f"Throttle(name={self.name!r}, remaining={estimate.remaining:.1f}, "
            f"in_flight={estimate.in_flight}/{estimate.in_flight_limit})"
        )

    # ---------------------------------------------------------------- admission

    async def acquire(self, route: str | None = None) -> Permit:
        """Wait, in FIFO order, until the model admits one more request.

        Args:
            route: The route template (``/api/v1/courses/:id/enrollments``),
                used to predict the request's cost.

        Returns:
            A permit to pass to :meth:`release` when the response has arrived.
        """
        permit = self.try_acquire(route)
        if permit is not None:
            return permit
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        if self._queue[0] is turn:
            turn.set_result(None)
        try:
            await turn
            lease = await self._wait_for_place(route)
        except BaseException:
            self._leave_queue(turn)
            raise
        self._leave_queue(turn)
        return self._admit(route, lease)

    def try_acquire(self, route: str | None = None) -> Permit | None:
        """Take a place at once if one is free and nobody is waiting; else None."""
        if not self._queue and self._admissible_now(route):
            return self._admit(route)
        return None

    def release(self, permit: Permit, observation: Observation | None = None) -> None:
        """Give a place back and learn from the response, if there was one.

        Safe to call twice; the second call does nothing.
        """
        if permit.released:
            return
        permit.released = True
        self._active.discard(permit)
        self._pending_cost = max(0.0, self._pending_cost - permit.predicted_cost)
        if observation is None or (observation.remaining is None and not observation.throttled):
            # No quota header: charge the reported cost, else the predicted one.
            cost = observation.cost if observation else None
            self._add_to_base(permit.predicted_cost if cost is None else cost)
            if cost is not None:
                self._learn_cost(permit.route, cost)
        else:
            self._observe(permit, observation)
        self._notify()

    async def aclose(self) -> None:
        """Release what the throttle holds; nothing for an in-process one."""

    def pause_remaining(self) -> float:
        """Seconds left in the shared pause after a throttle (0.0 when none)."""
        return max(0.0, self._pause_until - self._clock())

    def estimate(self) -> ThrottleEstimate:
        """Return what the throttle currently believes about the bucket."""
        now = self._clock()
        return ThrottleEstimate(
            remaining=round(
                self.hwm - self._base_now(now) - self._in_flight * self.up_front_cost, 3
            ),
            in_flight=self._in_flight,
            in_flight_limit=self._in_flight_limit(now),
            hwm=round(self.hwm, 3),
            up_front_cost=round(self.up_front_cost, 3),
            outflow=round(self.outflow, 3),
            paused_for_s=round(self.pause_remaining(), 3),
            headers_seen=self._headers_seen,
            throttled_responses=self._throttled,
        )

    def route_cost(self, route: str | None) -> float | None:
        """The moving average of ``X-Request-Cost`` for *route*, if any was seen."""
        return self._route_costs[route].value if route in self._route_costs else None

    def eta(self, calls: int, route: str | None = None) -> float:
        """Estimate the seconds the bucket needs to absorb *calls* more calls of *route*.

        The bound comes from cost alone: what does not fit in the headroom must
        leak out at ``outflow``. It ignores latency, so it is a lower bound.
        """
        cost = calls * self._predicted_cost(route)
        headroom = max(0.0, self.hwm - self._base_now(self._clock()) - self.config.margin)
        return max(0.0, (cost - headroom) / self.outflow)

    # ----------------------------------------------------------------- internals

    def _predicted_cost(self, route: str | None) -> float:
        average = self._route_costs.get(route) if route else None
        value = average.value if average is not None else self._default_cost.value
        return value if value is not None else 0.0

    def _base_now(self, now: float) -> float:
        return max(0.0, self._base - self.outflow * max(0.0, now - self._base_at))

    def _add_to_base(self, amount: float) -> None:
        now = self._clock()
        self._base = min(self.hwm * 2, self._base_now(now) + amount)
        self._base_at = now

    def _in_flight_limit(self, now: float) -> int:
        if not self._headers_seen:
            limit = self.config.headerless_in_flight
        else:
            free = self.hwm - self._base_now(now) - self._pending_cost - self.config.margin
            limit = max(0, math.ceil(free / self.up_front_cost) - 1)
        if self._recovery_cap is not None:
            limit = min(limit, int(self._recovery_cap))
        return max(0, min(limit, self.config.max_in_flight))

    def _delay(self, route: str | None) -> float:
        """Seconds until one more request may start; inf means "until one ends"."""
        now = self._clock()
        testing = is_testing()
        if self._pause_until > now and not testing:
            return self._pause_until - now
        if self._in_flight >= self.config.max_in_flight:
            return math.inf
        if self._recovery_cap is not None and self._in_flight >= self._recovery_cap:
            return math.inf
        if not self._headers_seen:
            return 0.0 if self._in_flight < self.config.headerless_in_flight else math.inf
        needed = (
            self._base_now(now)
            + self._pending_cost
            + self._predicted_cost(route)
            + (self._in_flight + 1) * self.up_front_cost
            + self.config.margin
        )
        excess = needed - self.hwm
        if excess < 0 or (testing and self._in_flight == 0):
            return 0.0
        # Either the leak makes room, or a request in flight ends first. Canvas
        # refuses at count >= hwm, so reaching hwm exactly still has to wait.
        return max(excess, _LEAK_EPSILON) / self.outflow

    def _admissible_now(self, route: str | None) -> bool:
        """Whether a request may start at once, skipping the queue (it is empty)."""
        return self._delay(route) <= 0

    async def _wait_for_place(self, route: str | None) -> str | None:
        """Wait, at the head of the queue, until one more request fits.

        Returns the shared lease backing the place, if the state is shared.
        """
        await self._wait_until_admissible(route)
        return None

    async def _wait_until_admissible(self, route: str | None) -> None:
        while (delay := self._delay(route)) > 0:
            await self._wait_for_change(None if is_testing() else delay)

    async def _wait_for_change(self, seconds: float | None) -> None:
        """Wait until a place is released here, or *seconds* pass (None or inf: no timer)."""
        self._changed = changed = asyncio.get_running_loop().create_future()
        waiters: set[asyncio.Future[Any]] = {changed}
        sleeper = None
        if seconds is not None and math.isfinite(seconds):
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            waiters.add(sleeper)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if sleeper is not None:
                sleeper.cancel()

    def _admit(self, route: str | None, lease: str | None = None) -> Permit:
        predicted = self._predicted_cost(route)
        self._pending_cost += predicted
        permit = Permit(route, predicted, admitted_at=self._clock(), lease=lease)
        self._active.add(permit)
        return permit

    def _leave_queue(self, turn: asyncio.Future[None]) -> None:
        was_head = bool(self._queue) and self._queue[0] is turn
        try:
            self._queue.remove(turn)
        except ValueError:
            return
        if was_head:
            self._promote_next()

    def _promote_next(self) -> None:
        if self._queue and not self._queue[0].done():
            self._queue[0].set_result(None)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _observe(self, permit: Permit, observation: Observation) -> None:
        now = self._clock()
        others = self._others_at_server(now)
        if observation.cost is not None:
            self._learn_cost(permit.route, observation.cost)
            self._settled_cost += observation.cost
        remaining = observation.remaining
        if remaining is not None:
            self._headers_seen = True
            reserved = others * self.up_front_cost
            if self.config.learn and others == 0 and remaining > self.hwm:
                # The count is never negative, so hwm >= remaining. Only learnt
                # alone in flight: with others in transit to the server, their
                # reservations are not in its count yet and would inflate hwm.
                self.hwm = remaining
            # In-transit requests make this low by their reservations, but the
            # admission check counts them in flight, so the two cancel out.
            self._base = max(0.0, self.hwm - remaining - reserved)
            self._base_at = now
            if self.config.learn and self._in_flight == 0:
                # Alone in flight, the base is exact: only then is it a sample.
                self._learn_outflow(now)
        if observation.throttled:
            self._on_throttled(remaining, now)
        else:
            self._consecutive_throttles = 0
            self._transit = max(_MIN_TRANSIT, self._transit * _TRANSIT_DECAY)
            self._recover()

    def _others_at_server(self, now: float) -> int:
        """Requests in flight that had surely reached Canvas when it answered this one.

        One sent less than a one-way delay ago may still be in transit, so its
        reservation is not in the answer's count. Counting it would make the
        base look a reservation lower than it is; leaving it out errs safe.
        """
        cutoff = now - self._transit
        return sum(1 for permit in self._active if permit.admitted_at <= cutoff)

    def _on_throttled(self, remaining: float | None, now: float) -> None:
        self._throttled += 1
        self._transit = min(_MAX_TRANSIT, self._transit * 2)
        self._consecutive_throttles += 1
        if remaining is not None:
            if self.config.learn and remaining > self.up_front_cost:
                # Throttled means count + up_front_cost >= hwm, i.e. up_front_cost >= remaining.
                self.up_front_cost = remaining
            # Reservations of requests in flight free themselves when they end;
            # only the base level must leak until one more request fits.
            excess = self._base + self.up_front_cost + self.config.margin - self.hwm
            wait = max(0.0, excess) / self.outflow
            source = "model"
        else:
            wait = min(30.0, 0.5 * 2 ** (self._consecutive_throttles - 1))
            source = "backoff"
        # Halve concurrency; it grows back by one per success.
        self._recovery_cap = max(1.0, self._in_flight / 2)
        if now + wait > self._pause_until:
            self._pause_until = now + wait
            _logging.throttle_paused(
                throttle=self.name,
                wait_s=round(wait, 3),
                wait_source=source,
                rate_limit_remaining=_logging.rounded(remaining),
                in_flight=self._in_flight,
                in_flight_limit=int(self._recovery_cap),
            )

    def _recover(self) -> None:
        if self._recovery_cap is None:
            return
        self._recovery_cap += 1
        if self._recovery_cap >= self.config.max_in_flight:
            self._recovery_cap = None

    def _learn_cost(self, route: str | None, cost: float) -> None:
        self._default_cost.add(cost)
        if route:
            self._route_costs[route].add(cost)

    def _learn_outflow(self, now: float) -> None:
        # Between two observations the base fell by the leak and rose by the
        # costs settled in between: outflow = (base0 + costs - base1) / span.
        anchor = self._outflow_anchor
        if anchor is None or self._base <= self.up_front_cost:
            self._outflow_anchor = (now, self._base, self._settled_cost)
            return
        started, base0, settled0 = anchor
        span = now - started
        if span < _MIN_OUTFLOW_SPAN:
            return
        if base0 > self.up_front_cost:
            sample = (base0 + (self._settled_cost - settled0) - self._base) / span
            if 0 < sample < 10 * self.outflow:
                self.outflow += _EMA_WEIGHT * (sample - self.outflow)
        self._outflow_anchor = (now, self._base, self._settled_cost)


_REGISTRY: dict[tuple[str, str, str | None], Throttle] = {}


def throttle_for(
    base_url: Any,
    access_token: str,
    *,
    config: ThrottleConfig | None = None,
    redis_url: str | None = None,
    budget: RetryBudget | None = None,
) -> Throttle:
    """Return the process-wide throttle for one token on one Canvas, creating it once.

    The key is the origin and a hash of the token, never the token itself.
    With *redis_url*, the throttle's state is shared through Redis with every
    process using the same token on the same Canvas. *budget* is used only
    when the throttle is created here.
    """
    from yarl import URL

    origin, fingerprint = origin_of(URL(str(base_url))), token_fingerprint(access_token)
    key = (origin, fingerprint, redis_url)
    throttle = _REGISTRY.get(key)
    if throttle is None:
        name = f"{origin}#{fingerprint}"
        if redis_url is None:
            throttle = Throttle(config, name=name, budget=budget)
        else:
            from resilient_canvas._redis_throttle import RedisThrottle

            throttle = RedisThrottle(redis_url, name, config=config, budget=budget)
        _REGISTRY[key] = throttle
    return throttle


def clear_throttles() -> None:
    """Forget every shared throttle (for tests)."""
    _REGISTRY.clear()


async def close_throttles() -> None:
    """Close every shared throttle's connections (Redis) and forget them; call at shutdown."""
    throttles = list(_REGISTRY.values())
    _REGISTRY.clear()
    for throttle in throttles:
        await throttle.aclose()
