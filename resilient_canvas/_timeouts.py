"""Per-attempt timeouts without a loop timer per attempt: one watchdog per event loop.

``asyncio.timeout`` schedules a timer handle each time it is entered and
cancels it on the way out, and the loop keeps its timers in a heap ordered
by a comparison written in Python: with its two coroutines a timed block
costs about 4 us, against 1.3 us here (docs/performance.md). Attempts
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

#: Heap size past which a watchdog drops the deadlines that finished behind
#: a longer one still waiting (then at twice what is left).
_MIN_REBUILD = 100


class Deadline:
    """One timed block: enter it with ``with``; see :func:`within`."""

    __slots__ = ("_cancelling", "_task", "done", "expired")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self._task = task
        # Cancellations requested before the block: not ours to turn into a timeout.
        self._cancelling = task.cancelling()
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
        # The watchdog drops it from its heap later, when it next looks.
        self.done = True
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
        self._rebuild_at = _MIN_REBUILD
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def start(self, seconds: float) -> Deadline:
        task = asyncio.current_task(self.loop)
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        heap = self._heap
        # Blocks that ended since the last start: a sequential caller's
        # heap never holds more than the block before and this one.
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if len(heap) > self._rebuild_at:
            # Blocks that ended behind a longer one still waiting.
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
            self._rebuild_at = max(_MIN_REBUILD, 2 * len(heap))
        when = self.loop.time() + seconds
        deadline = Deadline(task)
        heapq.heappush(heap, (when, next(self._sequence), deadline))
        if when < self._armed_at:
            self._arm(when)
        return deadline

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
