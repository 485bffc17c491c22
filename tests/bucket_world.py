"""A discrete-event world for sans-IO tests: Canvas's bucket, a network and the model.

No sockets and no event loop: requests are events on a virtual timeline, the
server is the simulator's own ``LeakyBucket``, and the client is the
``BucketModel`` under test. Runs thousands of requests in milliseconds.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from resilient_canvas._bucket_model import BucketModel, Observation, Permit, ThrottleConfig
from resilient_canvas.testing import LeakyBucket, ThrottleSettings


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """One token's bucket at a server *one_way* seconds away, and a model pacing to it."""

    settings: ThrottleSettings = field(default_factory=ThrottleSettings)
    config: ThrottleConfig = field(default_factory=ThrottleConfig)
    one_way: float = 0.001
    #: Each transit, either way, takes up to this much longer (uniformly).
    jitter: float = 0.0
    #: A busy client's event loop: each request leaves, and each answer is
    #: read, up to this much later than the model is told (uniformly).
    loop_lag: float = 0.0
    service: Callable[[random.Random], float] = lambda rng: rng.uniform(0.04, 0.06)
    #: Each transit's duration, drawn (replaces *one_way* and *jitter* when set).
    transit: Callable[[random.Random], float] | None = None
    cost: Callable[[random.Random], float] = lambda rng: 0.04
    route_up_front: dict[str, float] = field(default_factory=dict)
    seed: int = 1

    def __post_init__(self) -> None:
        self.clock = Clock()
        self.rng = random.Random(self.seed)
        # Its own stream: jitter leaves the service and cost draws unchanged.
        self._net_rng = random.Random(self.seed + 1)
        self.model = BucketModel(self.config, now=0.0, emit=self._record)
        self.events: list[tuple[str, dict[str, object]]] = []
        self.bucket = LeakyBucket(self.settings, self.clock)
        self._route_buckets: dict[float, LeakyBucket] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.sent = self.throttled = self.done = 0
        self.peak_in_flight = 0
        self._last_read = 0.0
        self.history: list[tuple[float, float, float, float]] = []

    def _record(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), action))

    def _transit(self) -> float:
        if self.transit is not None:
            return self.transit(self._net_rng)
        if not self.jitter:
            return self.one_way
        return self.one_way + self._net_rng.uniform(0.0, self.jitter)

    def _read_at(self) -> float:
        """When an answer leaving the server now is read: after its transit and,
        for a lagging loop, its lag (never before one read earlier)."""
        arrives = self.clock.now + self._transit()
        if not self.loop_lag:
            return arrives
        self._last_read = max(self._last_read, arrives + self._lag())
        return self._last_read

    def _lag(self) -> float:
        return self._net_rng.uniform(0.0, self.loop_lag) if self.loop_lag else 0.0

    def _up_front(self, route: str | None) -> float:
        return self.route_up_front.get(route or "", self.settings.up_front_cost)

    def _send(self, route: str | None, retry: Callable[[], None]) -> None:
        permit = self.model.admit(self.clock.now, route)
        self.sent += 1
        self.peak_in_flight = max(self.peak_in_flight, self.model.in_flight)
        leaves = self.clock.now + self._lag()
        self._at(leaves + self._transit(), lambda: self._arrive(permit, retry))

    def _arrive(self, permit: Permit, retry: Callable[[], None]) -> None:
        up = self._up_front(permit.route)
        bucket = self.bucket
        bucket._increment(up)
        if bucket.count >= self.settings.hwm:
            bucket._increment(-up)
            observation = Observation(remaining=bucket.remaining, throttled=True)
            self.throttled += 1
            self._at(self._read_at(), lambda: self._answer(permit, observation, retry))
            return
        seconds, cost = self.service(self.rng), self.cost(self.rng)

        def settle() -> None:
            bucket._increment(cost - up)
            observation = Observation(remaining=bucket.remaining, cost=cost)
            back = self._read_at()
            self._at(back, lambda: self._answer(permit, observation, None))

        self._at(self.clock.now + seconds, settle)

    def _answer(
        self, permit: Permit, observation: Observation, retry: Callable[[], None] | None
    ) -> None:
        self.model.settle(permit, observation, self.clock.now)
        e = self.model
        self.history.append((self.clock.now, e.hwm, e.up_front_cost, e.outflow))
        if retry is not None:
            retry()
        else:
            self.done += 1

    def run(
        self, calls: int, routes: list[str | None] | None = None, limit_s: float = 1e5
    ) -> float:
        """Hand *calls* calls over at once; return the virtual seconds they took."""
        waiting: list[str | None] = [
            (routes[i % len(routes)] if routes else "GET /api/v1/courses/:id") for i in range(calls)
        ]
        waiting.reverse()
        start = self.clock.now

        timer = [math.inf]

        def wake() -> None:
            timer[0] = math.inf

        def pump() -> None:
            while waiting:
                wait = self.model.delay(self.clock.now, waiting[-1])
                if wait > 0:
                    when = self.clock.now + wait
                    if math.isfinite(wait) and when < timer[0]:
                        # One timer at a time: a release wakes the pump anyway.
                        timer[0] = when
                        self._at(when, wake)
                    return
                route = waiting.pop()
                self._send(route, lambda route=route: requeue(route))

        def requeue(route: str | None) -> None:
            waiting.append(route)

        target = self.done + calls
        pump()
        while self.done < target and self._queue:
            when, _, action = heapq.heappop(self._queue)
            if when - start > limit_s:
                raise AssertionError("the world ran out of time")
            self.clock.now = max(self.clock.now, when)
            action()
            pump()
        return self.clock.now - start

    def idle(self, seconds: float) -> None:
        self.clock.now += seconds
