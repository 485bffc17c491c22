"""The seam telemetry plugs into: a protocol and one global, None unless OpenTelemetry is there.

The retry engine calls these hooks only when ``hooks`` is set, so without
the ``otel`` extra the cost is one global lookup and an ``is None`` test per
call. The OpenTelemetry implementation is :mod:`resilient_canvas._otel`,
installed by the package's ``__init__`` when ``opentelemetry`` imports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Hooks(Protocol):
    """What the retry engine and the circuit shell report.

    *method*, *route* (``"GET /api/v1/courses/:id"``) and *url* (credentials
    removed) describe the request; implementations must not record the query.
    """

    def active(self) -> bool:
        """Whether recording is worth its cost now (a backend is configured)."""
        ...

    async def run_call(
        self, call: Callable[[], Awaitable[T]], method: str | None, route: str | None
    ) -> T:
        """Run one logical call (all its attempts) inside its span."""
        ...

    async def run_attempt(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        method: str | None,
        route: str | None,
        url: str | None,
        resend_count: int,
        throttle_wait_s: float,
    ) -> T:
        """Run one HTTP attempt inside its client span, recording its outcome."""
        ...

    def retry_scheduled(self, reason: str, method: str | None, route: str | None) -> None:
        """Count a retry by the reason of the failure before it."""
        ...

    def circuit_changed(self, origin: str, state: str) -> None:
        """Record a circuit breaker's new state."""
        ...


#: The installed hooks; None (the default) costs nothing.
hooks: Hooks | None = None


def install(new: Hooks | None) -> Hooks | None:
    """Install *new* hooks (None removes them); return the previous ones."""
    global hooks
    previous, hooks = hooks, new
    return previous
