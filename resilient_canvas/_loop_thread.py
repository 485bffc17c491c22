"""One private event loop, on a daemon thread, that serves every blocking client in the process.

The blocking face (:mod:`resilient_canvas.sync`) does not reimplement pacing,
retries or classification: each blocking call hands a coroutine of the async
client to this loop and waits for its result. One loop for the whole process
means one set of throttles, budgets and connection pools for every blocking
client, whatever thread calls it.

Life cycle: the loop starts on first use, is stopped at interpreter exit
(``atexit``: clients still open are closed first, so no connection or thread
is left behind) and is forgotten in a forked child, where the parent's thread
does not exist; the child starts its own on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")

#: How often a waiting thread wakes up where a signal cannot interrupt a wait
#: (Windows): the bound on how late Ctrl-C is noticed there.
_WAKE_EVERY = 0.1
#: Longest wait at exit for clients to close and the thread to end.
_STOP_TIMEOUT = 5.0
#: Longest wait, after Ctrl-C, for the abandoned call to unwind on the loop
#: (give back its throttle place and its connection) before raising.
_UNWIND_TIMEOUT = 1.0
THREAD_NAME = "resilient-canvas-loop"


class _Closable(Protocol):
    async def aclose(self) -> None: ...


class LoopThread:
    """A lazily started event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: Open async clients, to close before the loop stops. Held strongly:
        #: a blocking client collected in a garbage cycle closes its async
        #: client from its destructor, which must not be in that garbage too.
        self._clients: set[_Closable] = set()
        self._atexit_registered = False
        self._detached: set[concurrent.futures.Future[Any]] = set()

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def in_loop_thread(self) -> bool:
        """Whether the calling thread is the loop's own (where blocking would deadlock)."""
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    def track(self, client: _Closable) -> None:
        """Close *client* before the loop stops, if it is still open then."""
        self._clients.add(client)

    def untrack(self, client: _Closable) -> None:
        """Forget *client*: it is closed, or was never opened."""
        self._clients.discard(client)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        thread = threading.Thread(
            target=_serve, args=(loop, started), name=THREAD_NAME, daemon=True
        )
        thread.start()
        started.wait()
        self._loop, self._thread = loop, thread
        if not self._atexit_registered:
            # Registered at first start, so it runs before handlers the
            # application registered earlier (atexit is last in, first out)
            # and after those registered later, which may still use a client.
            atexit.register(self.stop)
            self._atexit_registered = True

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* on the loop and block until it ends; return its result or raise its error.

        A KeyboardInterrupt (or any exception raised in this thread while it
        waits) cancels the coroutine on the loop and propagates as soon as
        the coroutine has unwound (its throttle place and connection given
        back), or after ``_UNWIND_TIMEOUT`` seconds, or at a second Ctrl-C.

        Raises:
            RuntimeError: When called from the loop's own thread (a callback
                or an items iterator calling a blocking client): that would
                wait forever for itself.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "A blocking resilient_canvas client was called from its own event loop "
                "thread (from an on_progress callback or an items iterator?): that would "
                "deadlock. Call it from another thread."
            )
        loop = self.loop()
        call = _Call(coro)
        try:
            loop.call_soon_threadsafe(call.start)
        except RuntimeError:  # the loop was closed meanwhile (interpreter exit)
            coro.close()
            raise
        try:
            # A timed wait: a signal interrupts it on POSIX, and elsewhere the
            # loop comes back to Python often enough to notice Ctrl-C.
            while not call.done.wait(_WAKE_EVERY):
                pass
        except BaseException:
            # Ctrl-C (or SystemExit from a signal handler): the call is
            # abandoned; cancelling it frees its connection and its place in
            # the throttle, and leaves the client usable. Raised once that
            # is done, so the caller's next call finds the client as it was.
            with contextlib.suppress(RuntimeError):  # the loop stopped (exit)
                loop.call_soon_threadsafe(call.cancel)
            if call.done.wait(_UNWIND_TIMEOUT):
                call.abandon()
            raise
        return call.result()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Start *coro* on the loop without waiting (from any thread, the loop's own included)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:  # the loop stopped meanwhile (interpreter exit)
            coro.close()
            return
        # The loop holds tasks weakly: one started from a destructor would be
        # collected with the garbage it is closing, mid-way.
        self._detached.add(future)
        future.add_done_callback(self._detached.discard)

    def stop(self) -> None:
        """Close the tracked clients, stop the loop and join its thread. Safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None or not thread.is_alive():
            return
        clients = list(self._clients)
        self._clients = set()
        try:
            future = asyncio.run_coroutine_threadsafe(_wind_down(clients), loop)
            future.result(timeout=_STOP_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # exiting anyway: what could not close in time is abandoned
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_STOP_TIMEOUT)

    def forget(self) -> None:
        """In a forked child: drop the parent's loop (its thread does not exist here)."""
        # The lock may have been held by a parent thread at fork: replace it.
        self._lock = threading.Lock()
        if self._loop is not None:
            # Never closed: closing would touch the parent's self-pipe state,
            # and its thread id makes it look running. Kept, not collected,
            # so no destructor runs on it.
            _ABANDONED.append(self._loop)
        self._loop = self._thread = None
        _ABANDONED.extend(self._clients)
        self._clients = set()


#: Objects inherited from the parent through fork, deliberately never finalized.
_ABANDONED: list[object] = []


class _Call(Generic[T]):
    """One blocking call's coroutine, run as a task on the loop; its outcome for the caller."""

    __slots__ = ("_coro", "_task", "cancelled", "done")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._task: asyncio.Task[T] | None = None
        self.cancelled = False
        #: Set on the loop when the task has ended, whatever the outcome.
        self.done = threading.Event()

    def start(self) -> None:
        """On the loop: start the task (or drop the coroutine of a call cancelled first)."""
        if self.cancelled:
            self._coro.close()
            self.done.set()
            return
        self._task = task = asyncio.get_running_loop().create_task(self._coro)
        task.add_done_callback(lambda _: self.done.set())

    def cancel(self) -> None:
        """On the loop: cancel the task, or the start still to come."""
        self.cancelled = True
        if self._task is not None:
            self._task.cancel()

    def result(self) -> T:
        """In the caller's thread, once done: the task's result, or raise its error."""
        task = self._task
        if task is None or task.cancelled():
            # Cancelled on the loop (it is stopping): as a concurrent future says it.
            raise concurrent.futures.CancelledError
        return task.result()

    def abandon(self) -> None:
        """In the caller's thread: an outcome nobody will read is not logged as lost."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            task.exception()


def _serve(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(started.set)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def _wind_down(clients: list[_Closable]) -> None:
    """Close open clients, then cancel whatever is still running (abandoned calls)."""
    await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


#: The one loop thread of this process.
LOOP = LoopThread()

if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=LOOP.forget)
