"""Tests for the attempt timeouts: the same behaviour as asyncio.timeout, one loop timer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from resilient_canvas import _timeouts
from resilient_canvas._timeouts import within


@contextlib.asynccontextmanager
async def timed_with_asyncio(seconds: float) -> AsyncIterator[None]:
    async with asyncio.timeout(seconds):
        yield


@contextlib.asynccontextmanager
async def timed_with_within(seconds: float) -> AsyncIterator[None]:
    with within(seconds):
        yield


#: Every behaviour test runs against asyncio.timeout too: the reference.
IMPLEMENTATIONS = pytest.mark.parametrize(
    "timed", [timed_with_asyncio, timed_with_within], ids=["asyncio", "within"]
)
Timed = Callable[[float], contextlib.AbstractAsyncContextManager[None]]


@IMPLEMENTATIONS
async def test_a_block_that_outlasts_its_deadline_raises_timeout_error(timed: Timed) -> None:
    """The block is cancelled at its deadline and leaves as TimeoutError, uncancelled."""
    with pytest.raises(TimeoutError) as raised:
        async with timed(0.01):
            await asyncio.Event().wait()
    task = asyncio.current_task()
    assert task is not None
    assert 0 == task.cancelling()
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)


@IMPLEMENTATIONS
async def test_a_block_that_ends_in_time_returns_normally(timed: Timed) -> None:
    """Nothing is cancelled, later, by a deadline whose block has ended."""
    async with timed(0.02):
        await asyncio.sleep(0)
    await asyncio.sleep(0.04)
    task = asyncio.current_task()
    assert task is not None
    assert 0 == task.cancelling()


@IMPLEMENTATIONS
async def test_other_errors_leave_the_block_unchanged(timed: Timed) -> None:
    """An error raised inside the block is not turned into a timeout."""
    with pytest.raises(KeyError):
        async with timed(10):
            raise KeyError("x")


@IMPLEMENTATIONS
async def test_a_cancellation_from_outside_stays_a_cancellation(timed: Timed) -> None:
    """The task cancelled by someone else leaves the block as CancelledError."""
    entered = asyncio.Event()

    async def body() -> None:
        async with timed(10):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@IMPLEMENTATIONS
async def test_an_outer_cancellation_at_the_deadline_wins(timed: Timed) -> None:
    """Cancelled by its deadline and by someone else: the outer cancellation propagates."""
    entered = asyncio.Event()

    async def body() -> None:
        async with timed(0.01):
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                # Both cancellations requested before the block leaves.
                me = asyncio.current_task()
                assert me is not None
                me.cancel()
                raise

    task = asyncio.create_task(body())
    await entered.wait()
    with pytest.raises(asyncio.CancelledError):
        await task


@IMPLEMENTATIONS
async def test_concurrent_blocks_each_time_out_at_their_own_deadline(timed: Timed) -> None:
    """Deadlines started out of order expire in deadline order; a long one is untouched."""
    expired: list[str] = []
    release = asyncio.Event()

    async def block(name: str, seconds: float) -> str:
        try:
            async with timed(seconds):
                await release.wait()
        except TimeoutError:
            expired.append(name)
            return "timeout"
        return "done"

    tasks = [
        asyncio.create_task(block(name, seconds))
        for name, seconds in (("c", 0.05), ("a", 0.01), ("long", 10), ("b", 0.03))
    ]
    await asyncio.sleep(0.08)
    release.set()
    assert ["timeout", "timeout", "done", "timeout"] == await asyncio.gather(*tasks)
    assert ["a", "b", "c"] == expired


async def test_ended_blocks_leave_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of sequential blocks keep one deadline at most and arm one loop timer."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    for _ in range(2000):
        with within(30):
            await asyncio.sleep(0)
    assert [True] == [entry[2].done for entry in _timeouts._local.watchdog._heap]
    assert 1 == len(armed)


async def test_blocks_ended_behind_a_long_one_are_dropped() -> None:
    """Blocks ending while an older, longer one waits do not pile up in the heap."""
    release = asyncio.Event()

    async def long_block() -> None:
        with within(30):
            await release.wait()

    waiting = asyncio.create_task(long_block())
    await asyncio.sleep(0)
    for _ in range(1000):
        with within(60):
            await asyncio.sleep(0)
    heap_size = len(_timeouts._local.watchdog._heap)
    release.set()
    await waiting
    with within(1):
        after = len(_timeouts._local.watchdog._heap)
    assert heap_size <= 2 * _timeouts._MIN_REBUILD + 1
    assert 1 == after


async def test_each_event_loop_has_its_own_watchdog() -> None:
    """A block in another loop (another thread) times out on that loop's timer."""

    def in_other_loop() -> bool:
        async def body() -> bool:
            try:
                with within(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return True
            return False

        return asyncio.run(body())

    with within(10):
        assert await asyncio.to_thread(in_other_loop)


def test_within_outside_a_task_is_an_error() -> None:
    """Like asyncio.timeout, it needs a running task."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError):
            loop.run_until_complete(_outside_a_task())
    finally:
        loop.close()


async def _outside_a_task() -> None:
    # A coroutine run by run_until_complete is a task; a callback is not.
    loop = asyncio.get_running_loop()
    failure: asyncio.Future[BaseException | None] = loop.create_future()

    def callback() -> None:
        try:
            within(1)
        except RuntimeError as error:
            failure.set_result(error)
        else:
            failure.set_result(None)

    loop.call_soon(callback)
    error = await failure
    if error is not None:
        raise error
