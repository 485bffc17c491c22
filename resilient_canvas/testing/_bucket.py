"""Canvas's request throttle: a leaky bucket per access token, as the server runs it.

Transcribed from Canvas's ``request_throttle.rb`` and ``increment_bucket.lua``
(see ``shared/spec/canvas-server.md`` section 1): a reservation is added before
the application runs, a throttled request never reaches it, and the real cost
is settled afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """How the simulated Canvas throttles each access token.

    Attributes:
        hwm: The bucket is "full" when its count reaches this.
        maximum: The count is clamped to ``[0, maximum]``.
        outflow: Units leaked per second while the count is positive.
        up_front_cost: Reserved per in-flight request, refunded when it ends.
        up_front_cost_by_path: Canvas's ``up_front_cost_by_path_regex``: regexes
            searched (unanchored, like Ruby's ``match?``) in the request's full
            path with its query string, in order; the first match's cost is
            reserved instead of *up_front_cost*.
        throttled_status: 403 (legacy, open-source Canvas) or 429 (hosted
            Canvas since 2025-10-06).
        enabled: False serves every request unthrottled (headers still sent).
    """

    hwm: float = 600.0
    maximum: float = 800.0
    outflow: float = 10.0
    up_front_cost: float = 50.0
    up_front_cost_by_path: Mapping[str, float] = field(default_factory=dict)
    throttled_status: Literal[403, 429] = 403
    enabled: bool = True

    def __post_init__(self) -> None:
        # A bucket that cannot hold one reservation, or never leaks, would
        # throttle forever and make every test hang instead of fail.
        if self.outflow <= 0:
            raise ValueError(f"outflow must be positive, not {self.outflow}.")
        if not 0 < self.hwm <= self.maximum:
            raise ValueError(f"Need 0 < hwm <= maximum, not hwm={self.hwm} max={self.maximum}.")
        if self.up_front_cost < 0 or any(c < 0 for c in self.up_front_cost_by_path.values()):
            raise ValueError("up_front_cost must not be negative, globally or per path.")
        for pattern in self.up_front_cost_by_path:
            re.compile(pattern)  # a typo fails here, not on the first request
        if self.throttled_status not in (403, 429):
            raise ValueError(f"throttled_status must be 403 or 429, not {self.throttled_status}.")

    def up_front_cost_for(self, path: str) -> float:
        """Return what Canvas reserves for *path* (its full path, query string included)."""
        for pattern, cost in self.up_front_cost_by_path.items():
            if re.search(pattern, path):
                return cost
        return self.up_front_cost

    @classmethod
    def hosted(cls) -> ThrottleSettings:
        """Settings reported for Instructure-hosted Canvas: hwm 700, throttled with 429."""
        return cls(hwm=700.0, throttled_status=429)


class LeakyBucket:
    """One access token's bucket.

    Args:
        settings: The throttle's parameters.
        clock: Returns the current time in seconds.
    """

    __slots__ = ("_clock", "_last", "count", "settings")

    def __init__(self, settings: ThrottleSettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self._clock = clock
        self.count = 0.0
        self._last = clock()

    def reserve(self, up_front_cost: float | None = None) -> bool:
        """Add a reservation (the global one by default); return True when throttled."""
        amount = self.settings.up_front_cost if up_front_cost is None else up_front_cost
        self._increment(amount)
        return self.count >= self.settings.hwm

    def settle(self, cost: float, up_front_cost: float | None = None) -> None:
        """Replace the reservation with the request's real cost (0 for a throttled one).

        Pass the same *up_front_cost* that :meth:`reserve` added: Canvas refunds
        exactly what it reserved for the request.
        """
        amount = self.settings.up_front_cost if up_front_cost is None else up_front_cost
        self._increment(cost - amount)

    @property
    def remaining(self) -> float:
        """What Canvas reports as ``X-Rate-Limit-Remaining``: hwm minus the count."""
        return self.settings.hwm - self.count

    def level(self) -> float:
        """Return the count after leaking up to now (for introspection)."""
        self._increment(0.0)
        return self.count

    def _increment(self, amount: float) -> None:
        now = self._clock()
        # Canvas leaks only while the bucket holds something.
        if self.count > 0:
            self.count = max(0.0, self.count - self.settings.outflow * (now - self._last))
        self._last = now
        self.count = min(self.settings.maximum, max(0.0, self.count + amount))
