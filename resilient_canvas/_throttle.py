"""Client-side pacing to Canvas's leaky bucket, before the first throttle happens.

The decisions (what the bucket holds, who may start, what an answer teaches)
are the sans-IO :class:`~resilient_canvas._bucket_model.BucketModel`; this
module is its asyncio face: FIFO queues of waiters, one per route, woken when a
request ends or when the model says the leak has made room, and
cancellation-safe.

One queue per route because routes reserve different amounts (Canvas sets
``up_front_cost`` per path): a heavy request at the head of a single queue,
waiting for room it needs and a light one does not, would hold every light
one behind it. A route's head may pass the heads of other routes only while
they have waited less than a typical request's round trip
(``BucketModel.may_pass``); past that the oldest waits for nobody.

One throttle serves every client of a token in the process, and the blocking
client's loop thread and a caller's own event loop may drive it at once: the
model and the queue change only under a lock, and a waiter is always woken
through its own loop (``call_soon_threadsafe`` from another thread).

In testing mode (:func:`resilient_canvas.testing.set_testing`) the throttle
makes the same decisions on a virtual clock: a wait for the leak advances the
clock instead of sleeping, so users' tests run the production algorithm
without waiting for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from resilient_canvas import _logging
from resilient_canvas._bucket_model import (
    BucketModel,
    Observation,
    Permit,
    ThrottleConfig,
    ThrottleEstimate,
)
from resilient_canvas._config import is_testing

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

__all__ = ["Observation", "Permit", "Throttle", "ThrottleConfig", "ThrottleEstimate"]


class Throttle:
    """Paces requests of one access token on one Canvas to its leaky bucket.

    One instance is shared by every client using the same token on the same
    origin (see :func:`~resilient_canvas.throttle_for`). Waiting is FIFO and
    cancellation-safe, and event loops in different threads may share it.

    Args:
        config: Priors and limits.
        clock: Time source (inject a fake one in tests).
        sleep: How waits pass (inject with *clock*).
        name: A label for logs (never the token).
    """

    def __init__(
        self,
        config: ThrottleConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        name: str = "canvas",
    ) -> None:
        self.name = name
        self._clock = clock
        self._sleep = sleep
        # Time skipped by testing mode: decisions see it, nobody waits for it.
        self._skipped = 0.0
        self.model = BucketModel(config, now=self._now(), name=name, emit=_logging.throttle_event)
        # Guards the model and the queue: loops in two threads may share this
        # throttle (a blocking client's and the caller's). Reentrant, so that
        # a subclass's hooks may take it again.
        self._lock = threading.RLock()
        #: The waiters of each route with any waiting, FIFO.
        self._lanes: dict[str | None, _Lane] = {}

    @property
    def config(self) -> ThrottleConfig:
        """The priors and limits this throttle was made with."""
        return self.model.config

    @property
    def hwm(self) -> float:
        """The estimated high-water mark."""
        return self.model.hwm

    @property
    def up_front_cost(self) -> float:
        """The estimated reservation of a route without one of its own."""
        return self.model.up_front_cost

    @property
    def outflow(self) -> float:
        """The estimated leak rate, in units per second."""
        return self.model.outflow

    def __repr__(self) -> str:
        estimate = self.estimate()
        return (
            f"Throttle(name={self.name!r}, remaining={estimate.remaining:.1f}, "
            f"in_flight={estimate.in_flight}/{estimate.in_flight_limit})"
        )

    # ---------------------------------------------------------------- admission

    @property
    def waiting(self) -> int:
        """How many callers wait for a place."""
        with self._lock:
            return sum(len(lane.queue) for lane in self._lanes.values())

    async def acquire(self, route: str | None = None) -> Permit:
        """Wait, in FIFO order per route, until the model admits one more request.

        Args:
            route: The route template (``GET /api/v1/courses/:id/enrollments``),
                used to predict the request's reservation and cost.

        Returns:
            A permit to pass to :meth:`release` when the response has arrived.
        """
        permit = self.try_acquire(route)
        if permit is not None:
            return permit
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            lane = self._lanes.get(route)
            if lane is None:
                lane = self._lanes[route] = _Lane(route)
            lane.queue.append(turn)
            if lane.queue[0] is turn:
                lane.since = self._now()
                turn.set_result(None)
        try:
            await turn
            lease = await self._wait_for_place(route)
        except BaseException:
            self._leave_queue(lane, turn)
            raise
        with self._lock:
            # At once: the next in line, perhaps in another thread, checks
            # for room only once this place is taken.
            self._leave_queue(lane, turn)
            return self._admit(route, lease)

    def try_acquire(self, route: str | None = None) -> Permit | None:
        """Take a place at once if one is free and nobody of the route is waiting; else None."""
        with self._lock:
            # Nobody waiting at all (the common case): no queue to look at.
            waits = bool(self._lanes) and (
                route in self._lanes or self._held_back(route, self._now())
            )
            if not waits and self._admissible_now(route):
                return self._admit(route)
        return None

    def release(self, permit: Permit, observation: Observation | None = None) -> None:
        """Give a place back and learn from the response, if there was one.

        Safe to call twice; the second call does nothing.
        """
        if permit.released:
            return
        with self._lock:
            self.model.settle(permit, observation, self._now())
            if self._lanes:  # else nobody waits to be woken
                self._wake_heads()

    async def aclose(self) -> None:
        """Release what the throttle holds; nothing for an in-process one."""

    def pause_remaining(self) -> float:
        """Seconds until one request fits if none in flight ended (0.0 when one fits now)."""
        with self._lock:
            return self.model.pause_remaining(self._now())

    def estimate(self) -> ThrottleEstimate:
        """Return what the throttle currently believes about the bucket."""
        with self._lock:
            return self.model.estimate(self._now())

    def route_cost(self, route: str | None) -> float | None:
        """The moving average of ``X-Request-Cost`` for *route*, if any was seen."""
        with self._lock:
            return self.model.route_cost(route)

    def eta(self, calls: int, route: str | None = None) -> float:
        """Estimate the seconds the bucket needs to absorb *calls* more calls of *route*.

        The bound comes from cost alone: what does not fit in the headroom must
        leak out at ``outflow``. It ignores latency, so it is a lower bound.
        """
        with self._lock:
            return self.model.eta(calls, self._now(), route)

    # ----------------------------------------------------------------- internals

    def _now(self) -> float:
        return self._clock() + self._skipped

    def _skips_time(self) -> bool:
        """Whether waits are skipped on a virtual clock (testing mode)."""
        return is_testing()

    def _admissible_now(self, route: str | None) -> bool:
        """Whether a request may start at once, skipping the queue (it is empty)."""
        return self.model.delay(self._now(), route) <= 0

    async def _wait_for_place(self, route: str | None) -> str | None:
        """Wait, at the head of the queue, until one more request fits.

        Returns the shared lease backing the place, if the state is shared.
        """
        while (delay := self._delay(route)) > 0:
            await self._wait_for_change(delay, route)
        return None

    def _delay(self, route: str | None) -> float:
        with self._lock:
            # A change before this check is seen by it.
            self._lanes[route].missed = False
            now = self._now()
            if self._held_back(route, now):
                return math.inf  # until the older head leaves its queue
            return self.model.delay(now, route)

    def _held_back(self, route: str | None, now: float) -> bool:
        """Whether a head of another route, waiting longer, has waited too long to be passed."""
        lane = self._lanes.get(route)
        since = lane.since if lane is not None else now
        return any(
            other.since < since and not self.model.may_pass(now - other.since)
            for other in self._lanes.values()
            if other is not lane
        )

    async def _wait_for_change(self, seconds: float | None, route: str | None) -> None:
        """Wait until a place is released here, or *seconds* pass (None or inf: no timer).

        Only the head of *route*'s queue waits here. In testing mode the timer
        is not waited for: the virtual clock jumps.
        """
        timed = seconds is not None and math.isfinite(seconds)
        if timed and self._skips_time():
            assert seconds is not None
            self._skipped += seconds
            await asyncio.sleep(0)
            return
        changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            lane = self._lanes[route]
            if lane.missed:
                # Released in another thread since this waiter last looked.
                lane.missed = False
                return
            lane.changed = changed
        waiters: set[asyncio.Future[Any]] = {changed}
        sleeper = None
        if timed:
            assert seconds is not None
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            waiters.add(sleeper)
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if sleeper is not None:
                sleeper.cancel()
            with self._lock:
                if lane.changed is changed:
                    lane.changed = None

    def _admit(self, route: str | None, lease: str | None = None) -> Permit:
        return self.model.admit(self._now(), route, lease)

    def _leave_queue(self, lane: _Lane, turn: asyncio.Future[None]) -> None:
        with self._lock:
            was_head = bool(lane.queue) and lane.queue[0] is turn
            try:
                lane.queue.remove(turn)
            except ValueError:
                return
            if not lane.queue:
                if self._lanes.get(lane.route) is lane:
                    del self._lanes[lane.route]
            elif was_head:
                lane.since = self._now()
                if not lane.queue[0].done():
                    _wake(lane.queue[0])
            if was_head:
                # Heads of other routes held back for this one may go now.
                self._wake_heads()

    def _notify(self) -> None:
        """Wake the waiters at the heads, whichever thread their loops run in."""
        with self._lock:
            self._wake_heads()

    def _wake_heads(self) -> None:
        """:meth:`_notify` with the lock held."""
        for lane in self._lanes.values():
            changed, lane.changed = lane.changed, None
            if changed is None:
                lane.missed = True
            else:
                _wake(changed)


@dataclass(eq=False)
class _Lane:
    """The callers waiting to send requests of one route, first come first served."""

    route: str | None
    queue: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    #: When the head started waiting for a place (the throttle's clock).
    since: float = math.inf
    #: What the head waits on, on its own loop.
    changed: asyncio.Future[None] | None = None
    #: A change while the head was not waiting: a head that checked just
    #: before it, in another thread, must not then sleep through it.
    missed: bool = False


def _wake(future: asyncio.Future[None]) -> None:
    """Resolve *future* now if its loop runs this thread, else through that loop."""
    loop = future.get_loop()
    if asyncio.events._get_running_loop() is loop:
        _resolve(future)
        return
    # A closed loop has nobody waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
