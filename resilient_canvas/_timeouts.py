"""Per-attempt timeouts without a loop timer per attempt: one watchdog per event loop.

``asyncio.timeout`` schedules a timer handle each time it is entered and
cancels it on the way out; the loop keeps its timers in a heap ordered by a
comparison written in Python, so with one timer per request the handles'
creation, cancellation and sifting cost about ten microseconds a request
(a few percent of a loopback request; docs/performance.md). Attempts
instead register their deadline with their loop's :class:`_Watchdog`, which
keeps them in a heap of plain tuples and arms one loop timer for the
earliest deadline, re-arming it only when an earlier one arrives or when it
fires. A sequential run arms about one timer per attempt timeout (30 s).

:func:`within` behaves as ``asyncio.timeout`` does: when the deadline
passes, the task is cancelled, and the cancellation leaves the block as
``TimeoutError`` unless the task was also cancelled by someone else.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
from types import TracebackType

#: Finished deadlines kept in a watchdog's heap before it is rebuilt without
#: them (the loop's own rule for cancelled timers: over 100, and over half).
_MIN_STALE = 100


class Deadline:
    """One timed block: enter it with ``with``; see :func:`within`."""

    __slots__ = ("_cancelling", "_task", "_watchdog", "done", "expired", "when")

    def __init__(self, when: float, task: asyncio.Task[object], watchdog: _Watchdog) -> None:
        self.when = when
        self._task = task
        # Cancellations requested before the block: not ours to turn into a timeout.
        self._cancelling = task.cancelling()
        self._watchdog = watchdog
        self.expired = False
        self.done = False

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.done = True
        self._watchdog.finished()
        # asyncio.Timeout.__aexit__'s rule: our cancellation becomes a
        # TimeoutError unless another one was requested meanwhile.
        if (
            self.expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def expire(self) -> None:
        """The deadline has passed: cancel the task (it leaves the block as TimeoutError)."""
        self.expired = True
        self._task.cancel()


class _Watchdog:
    """The deadlines of one event loop's timed blocks, behind one loop timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        #: (when, sequence, deadline): tuples compare in C; the sequence keeps
        #: two deadlines of the same instant from comparing the objects.
        self._heap: list[tuple[float, int, Deadline]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def start(self, seconds: float) -> Deadline:
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        deadline = Deadline(self.loop.time() + seconds, task, self)
        heapq.heappush(self._heap, (deadline.when, next(self._sequence), deadline))
        self._live += 1
        if deadline.when < self._armed_at:
            self._arm(deadline.when)
        return deadline

    def finished(self) -> None:
        """A block has ended: drop finished deadlines that no longer wait for anything."""
        self._live -= 1
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        # Deadlines that finished behind a longer one still waiting.
        if len(heap) > _MIN_STALE and 2 * self._live < len(heap):
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        # The loop runs a timer when its time is within the clock's resolution:
        # whatever was due by the armed time is due now.
        due = max(self._armed_at, self.loop.time())
        self._timer, self._armed_at = None, math.inf
        heap = self._heap
        while heap and (heap[0][2].done or heap[0][0] <= due):
            deadline = heapq.heappop(heap)[2]
            if not deadline.done:
                deadline.expire()
        if heap:
            self._arm(heap[0][0])


_local = threading.local()


def within(seconds: float) -> Deadline:
    """A block (``with within(s):``) that times out like ``async with asyncio.timeout(s):``.

    Raises:
        TimeoutError: On leaving the block, when its deadline passed inside it.
        RuntimeError: Outside a task.
    """
    loop = asyncio.get_running_loop()
    # One watchdog per loop; a thread runs one loop at a time.
    watchdog: _Watchdog | None = getattr(_local, "watchdog", None)
    if watchdog is None or watchdog.loop is not loop:
        watchdog = _local.watchdog = _Watchdog(loop)
    return watchdog.start(seconds)
