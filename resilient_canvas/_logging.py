"""Structured events. The library never configures logging; it only emits.

Event names are constants so users can filter on them; fields are flat and
floats are rounded so logs stay readable (tenacity prints 15 decimals). Every
text field is redacted before it is emitted: URLs and messages may come from
a server that echoes the token.

Where events go: through structlog once the application has configured it
(``structlog.configure``, which ``structlog.testing.capture_logs`` also
does); until then to the stdlib logger ``resilient_canvas``, which has a
``NullHandler``, so a script that configures no logging gets no output from
us, and ``logging.basicConfig()`` shows our warnings like any library's.
structlog's unconfigured default prints every event to stdout: right for an
application, wrong for a library.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from resilient_canvas._errors import CanvasException
from resilient_canvas._secret import format_traceback, redact

RETRY_SCHEDULED = "canvas.retry_scheduled"
REQUEST_FAILED = "canvas.request_failed"
THROTTLE_PAUSED = "canvas.throttle_paused"
THROTTLE_DEGRADED = "canvas.throttle_degraded"
CIRCUIT_OPENED = "canvas.circuit_opened"
CIRCUIT_HALF_OPEN = "canvas.circuit_half_open"
CIRCUIT_CLOSED = "canvas.circuit_closed"
CIRCUIT_DEGRADED = "canvas.circuit_degraded"
CIRCUIT_REDIS_BACK = "canvas.circuit_redis_back"

#: The stdlib logger events go to while structlog is unconfigured.
stdlib_logger = logging.getLogger("resilient_canvas")
stdlib_logger.addHandler(logging.NullHandler())

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_render = structlog.processors.KeyValueRenderer(key_order=["event"])


class _EventLogger:
    """Emits one event to structlog if the application configured it, else to stdlib logging."""

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            getattr(structlog.get_logger("resilient_canvas"), method)(event, **fields)
            return
        level = _LEVELS[method]
        if not stdlib_logger.isEnabledFor(level):
            return
        # The traceback text reads better on its own lines than quoted in key=value.
        flat = {k: v for k, v in fields.items() if k != "exception"}
        message = _render(None, method, {"event": event, **flat})
        if "exception" in fields:
            message = f"{message}\n{fields['exception']}"
        # Handlers that format records themselves (JSON) find the flat event here.
        stdlib_logger.log(level, message, extra={"event_dict": {"event": event, **fields}})


logger = _EventLogger()


def rounded(value: float | None, digits: int = 3) -> float | None:
    """Round for logs; None stays None."""
    return None if value is None else round(value, digits)


def error_fields(error: CanvasException) -> dict[str, Any]:
    """The flat fields every failure event carries (never the token)."""
    return {
        "reason": error.reason,
        "method": error.method,
        "url": error.url,
        "status": error.response_status,
        "rate_limit_remaining": rounded(error.rate_limit_remaining),
        "request_cost": rounded(error.request_cost, 4),
    }


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: redact(val) if isinstance(val, str) else val for key, val in fields.items()}


def retry_scheduled(**fields: Any) -> None:
    """Log that a retry will follow a wait."""
    logger.warning(RETRY_SCHEDULED, **_redacted(fields))


def request_failed(error: CanvasException, **fields: Any) -> None:
    """Log a call's final failure: quiet errors without a traceback, others with it at error.

    The traceback goes as redacted text (``exception``), never as the exception
    object, whose frames hold the request headers.
    """
    if error.quiet:
        logger.warning(REQUEST_FAILED, **_redacted(fields))
    else:
        logger.error(REQUEST_FAILED, exception=format_traceback(error), **_redacted(fields))


def throttle_paused(**fields: Any) -> None:
    """Log a shared pause of every request on one token."""
    logger.info(THROTTLE_PAUSED, **_redacted(fields))


def throttle_degraded(**fields: Any) -> None:
    """Log that shared (Redis) throttle state is unreachable and local pacing took over."""
    logger.warning(THROTTLE_DEGRADED, **_redacted(fields))


def throttle_event(event: str, *, level: str = "info", **fields: Any) -> None:
    """Log an event of the bucket model (``canvas.throttle_*``) at *level*."""
    getattr(logger, level)(event, **_redacted(fields))


def circuit_event(event: str, *, level: str = "info", **fields: Any) -> None:
    """Log an event of a shared circuit's link to Redis (``canvas.circuit_*``) at *level*."""
    getattr(logger, level)(event, **_redacted(fields))


def circuit_changed(event: str, **fields: Any) -> None:
    """Log a circuit breaker's change of state: opened and half-open warn, closed informs."""
    if event == CIRCUIT_CLOSED:
        logger.info(event, **_redacted(fields))
    else:
        logger.warning(event, **_redacted(fields))
