"""Bulk work: run a coroutine over many items, keep every outcome, report progress.

Outcomes are the point of a bulk run, so nothing but cancellation discards
them: an exception from the ``on_progress`` callback or from the items
iterator is recorded on the result (and logged), not raised through the run.

Failures are kept lean: a classified ``CanvasException`` is stored without
its traceback (and its causes' tracebacks). Those frames are the library's
own plumbing, the error's attributes say what failed, and each traceback
holds ~11 KB: 10,000 failed calls would otherwise keep 160 MB. Any other
exception (a bug in the caller's function) keeps its traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from resilient_canvas._logging import logger
from resilient_canvas._reconcile import WriteNotes, current_notes
from resilient_canvas._secret import format_traceback
from resilient_canvas.exceptions import CanvasException

T = TypeVar("T")
R = TypeVar("R")

#: Logged once when the progress callback raises; it is not called again.
PROGRESS_CALLBACK_FAILED = "canvas.bulk_progress_callback_failed"
#: Logged when the items iterator raises; no more items are started.
ITEMS_FAILED = "canvas.bulk_items_failed"


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T, R]):
    """One item's result or error; exactly one of them is set.

    Attributes:
        index: The item's position in the input.
        item: The input item.
        result: What the call returned, when it succeeded.
        error: Why it failed (a classified ``CanvasException`` for Canvas failures).
        reconciled: How many of the item's writes had an unknown outcome and
            were found by their check (their result is what the check found).
        repeated: How many of the item's writes were not found by their
            check and were sent again, once.
    """

    index: int
    item: T
    result: R | None = None
    error: Exception | None = None
    reconciled: int = 0
    repeated: int = 0

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """Progress of a bulk run, passed to the ``on_progress`` callback."""

    done: int
    failed: int
    in_flight: int
    total: int | None


@dataclass(slots=True)
class BulkResult(Generic[T, R]):
    """Every outcome of a bulk run, in input order.

    Attributes:
        outcomes: One per item started, in input order.
        items_error: What the items iterator raised, if it did: the items
            after it were never started, so the run is incomplete.
        progress_error: What the ``on_progress`` callback raised, if it did
            (it was not called again; the run went on).
    """

    outcomes: list[Outcome[T, R]] = field(default_factory=list)
    items_error: Exception | None = None
    progress_error: Exception | None = None

    @property
    def complete(self) -> bool:
        """Whether every item was started (the items iterator did not fail)."""
        return self.items_error is None

    def __iter__(self) -> Iterator[Outcome[T, R]]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    @property
    def results(self) -> list[R | None]:
        """Results in input order (None where the call failed)."""
        return [outcome.result for outcome in self.outcomes]

    @property
    def failures(self) -> list[Outcome[T, R]]:
        """The outcomes that failed."""
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def failed(self) -> int:
        """How many items failed."""
        return sum(1 for outcome in self.outcomes if not outcome.ok)

    @property
    def reconciled(self) -> int:
        """How many writes had an unknown outcome and were found by their check."""
        return sum(outcome.reconciled for outcome in self.outcomes)

    @property
    def repeated(self) -> int:
        """How many writes were not found by their check and were sent again, once."""
        return sum(outcome.repeated for outcome in self.outcomes)


async def run_bulk(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    concurrency: int,
    on_progress: Callable[[BulkProgress], None] | None = None,
) -> BulkResult[T, R]:
    """Run *func* on every item with at most *concurrency* calls at once.

    Items are pulled lazily, so a generator of a million items is never held
    in memory at once beyond the outcomes. An ``Exception`` from one call is
    kept as that item's outcome. If the items iterator raises, no further
    item is started, the calls in flight finish, and the error is kept as
    ``items_error``; if *on_progress* raises, it is not called again and the
    error is kept as ``progress_error``. Cancellation stops every worker.

    Raises:
        ValueError: If *concurrency* is smaller than 1.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}.")
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    run = _Run(func, enumerate(items), total, on_progress)
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(run.worker())
    return BulkResult(
        [run.outcomes[index] for index in sorted(run.outcomes)],
        items_error=run.items_error,
        progress_error=run.progress_error,
    )


class _Run(Generic[T, R]):
    """The state the workers of one bulk run share."""

    def __init__(
        self,
        func: Callable[[T], Awaitable[R]],
        source: Iterator[tuple[int, T]],
        total: int | None,
        on_progress: Callable[[BulkProgress], None] | None,
    ) -> None:
        self.func = func
        self.source = source
        self.total = total
        self.on_progress = on_progress
        self.outcomes: dict[int, Outcome[T, R]] = {}
        self.done = self.failed = self.in_flight = 0
        self.items_error: Exception | None = None
        self.progress_error: Exception | None = None

    async def worker(self) -> None:
        while (pulled := self.next_item()) is not None:
            index, item = pulled
            self.in_flight += 1
            self.report()
            # What reconciliation does during this item is noted here (see _reconcile).
            notes = WriteNotes()
            token = current_notes.set(notes)
            try:
                result = await self.func(item)
            except Exception as exc:
                self.outcomes[index] = Outcome(
                    index, item, None, _lean(exc), notes.reconciled, notes.repeated
                )
                self.failed += 1
            else:
                self.outcomes[index] = Outcome(
                    index, item, result, None, notes.reconciled, notes.repeated
                )
            finally:
                current_notes.reset(token)
                self.in_flight -= 1
            self.done += 1
            self.report()

    def next_item(self) -> tuple[int, T] | None:
        if self.items_error is not None:
            return None
        try:
            return next(self.source, None)
        except Exception as exc:
            # The caller's generator failed (a database cursor, a file): the
            # finished outcomes stay; nothing after this point is started.
            self.items_error = exc
            logger.error(
                ITEMS_FAILED,
                error=type(exc).__name__,
                started=len(self.outcomes) + self.in_flight,
                exception=format_traceback(exc),
            )
            return None

    def report(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(BulkProgress(self.done, self.failed, self.in_flight, self.total))
        except Exception as exc:
            # A broken progress bar must not throw away the work it reports on.
            self.progress_error, self.on_progress = exc, None
            logger.error(
                PROGRESS_CALLBACK_FAILED,
                error=type(exc).__name__,
                exception=format_traceback(exc),
            )


def _lean(error: Exception) -> Exception:
    """Drop the tracebacks of a classified error and of its causes (see the module doc)."""
    if isinstance(error, CanvasException):
        link: BaseException | None = error
        seen: set[int] = set()
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            link = link.__cause__ or link.__context__
    return error
