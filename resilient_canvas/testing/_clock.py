"""A virtual clock so time-based code is tested without waiting."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock that only moves when something sleeps on it.

    Pass the instance as ``clock=`` and its :meth:`sleep` as ``sleep=`` to the
    simulator, the throttle and the retry policy: a sleep of 30 seconds then
    returns at once with the clock 30 seconds later. Concurrent sleepers wake
    at ``max(now, start + delay)`` so time never runs backwards.

    Attributes:
        now: The current virtual time in seconds.
        sleeps: Every delay requested, in order, for assertions.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward without sleeping."""
        if seconds < 0:
            raise ValueError("A clock cannot go backwards.")
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record *seconds*, move the clock past it and yield to the event loop."""
        self.sleeps.append(seconds)
        self.now = max(self.now, self.now + max(0.0, seconds))
        await asyncio.sleep(0)
