"""Bulk work: run a coroutine over many items, keep every outcome, report progress."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T, R]):
    """One item's result or error; exactly one of them is set.

    Attributes:
        index: The item's position in the input.
        item: The input item.
        result: What the call returned, when it succeeded.
        error: Why it failed (a classified ``CanvasException`` for Canvas failures).
    """

    index: int
    item: T
    result: R | None = None
    error: Exception | None = None

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
    """Every outcome of a bulk run, in input order."""

    outcomes: list[Outcome[T, R]] = field(default_factory=list)

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
    kept as that item's outcome; cancellation stops every worker.

    Raises:
        ValueError: If *concurrency* is smaller than 1.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}.")
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    source = enumerate(items)
    outcomes: dict[int, Outcome[T, R]] = {}
    counts = {"done": 0, "failed": 0, "in_flight": 0}

    def report() -> None:
        if on_progress is not None:
            on_progress(BulkProgress(counts["done"], counts["failed"], counts["in_flight"], total))

    async def worker() -> None:
        for index, item in source:
            counts["in_flight"] += 1
            report()
            try:
                outcomes[index] = Outcome(index, item, result=await func(item))
            except Exception as exc:
                outcomes[index] = Outcome(index, item, error=exc)
                counts["failed"] += 1
            finally:
                counts["in_flight"] -= 1
            counts["done"] += 1
            report()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return BulkResult([outcomes[index] for index in sorted(outcomes)])
