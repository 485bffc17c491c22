"""Ctrl-C for tests: SIGINT to the main thread once a condition holds, from a helper thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Whether this platform can deliver a signal to one thread (POSIX).
CAN_INTERRUPT = hasattr(signal, "pthread_kill")


@contextmanager
def ctrl_c_when(ready: Callable[[], bool]) -> Iterator[None]:
    """Send SIGINT to the main thread (the test's) as soon as *ready()* is true.

    The condition says the main thread is blocked where the test wants it
    (a request inside the simulator, a waiter in the throttle's queue), so
    the signal lands during the blocking call.
    """
    main = threading.main_thread().ident
    assert main == threading.get_ident(), "signals are delivered to the main thread"
    stop = threading.Event()

    def interrupt_when_ready() -> None:
        while not ready():
            if stop.wait(0.005):
                return
        assert main is not None
        signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_ready, daemon=True)
    interrupter.start()
    try:
        yield
    finally:
        stop.set()
        interrupter.join()
