"""Bulk runs keep every finished outcome, whatever the caller's callbacks do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest.mock import ANY

from structlog.testing import capture_logs

from resilient_canvas import exceptions as exc
from resilient_canvas._bulk import BulkProgress, run_bulk


async def _double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def test_progress_callback_error_keeps_every_outcome() -> None:
    """A progress callback that raises is reported, not allowed to discard the run (r7)."""
    calls: list[int] = []

    def on_progress(progress: BulkProgress) -> None:
        calls.append(progress.done)
        if progress.done == 50:
            raise ValueError("bug in my progress bar")

    with capture_logs() as logs:
        result = await run_bulk(_double, range(100), concurrency=8, on_progress=on_progress)

    assert [value * 2 for value in range(100)] == result.results
    assert isinstance(result.progress_error, ValueError)
    assert result.complete
    # Not called again after it failed.
    assert 50 == calls[-1]
    assert [
        {
            "event": "canvas.bulk_progress_callback_failed",
            "log_level": "error",
            "error": "ValueError",
            "exception": ANY,
        }
    ] == logs
    assert "bug in my progress bar" in logs[0]["exception"]


async def test_items_iterator_error_keeps_finished_outcomes() -> None:
    """An items iterator that raises stops new work; finished outcomes are kept."""

    def items() -> Iterator[int]:
        yield from range(10)
        raise OSError("the database cursor died")

    with capture_logs() as logs:
        result = await run_bulk(_double, items(), concurrency=3)

    assert [value * 2 for value in range(10)] == result.results
    assert isinstance(result.items_error, OSError)
    assert not result.complete
    assert None is result.progress_error
    assert [
        {
            "event": "canvas.bulk_items_failed",
            "log_level": "error",
            "error": "OSError",
            "started": 10,
            "exception": ANY,
        }
    ] == logs


async def test_call_failures_stay_outcomes() -> None:
    """A failing call is its item's outcome and does not stop the others."""

    async def odd_fails(value: int) -> int:
        if value % 2:
            raise LookupError(value)
        return value

    result = await run_bulk(odd_fails, range(6), concurrency=2)

    assert [0, None, 2, None, 4, None] == result.results
    assert [1, 3, 5] == [outcome.index for outcome in result.failures]
    assert result.complete


async def test_classified_failures_are_kept_without_tracebacks() -> None:
    """A CanvasException outcome drops its (and its cause's) traceback; a bug keeps its own."""

    async def fail(value: int) -> int:
        try:
            raise OSError("connection reset")
        except OSError as cause:
            if value:
                raise exc.ConnectionDropped("the connection was lost") from cause
            raise KeyError("a bug in the caller's function") from cause

    result = await run_bulk(fail, [1, 0], concurrency=1)
    classified, bug = (outcome.error for outcome in result)

    assert isinstance(classified, exc.ConnectionDropped)
    assert isinstance(classified.__cause__, OSError)
    assert (None, None) == (classified.__traceback__, classified.__cause__.__traceback__)
    assert isinstance(bug, KeyError)
    assert bug.__traceback__ is not None
