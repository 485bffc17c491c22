"""Structured events. The library never configures structlog; it only emits.

Event names are constants so users can filter on them; fields are flat and
floats are rounded so logs stay readable (tenacity prints 15 decimals). Every
text field is redacted before it is emitted: URLs and messages may come from
a server that echoes the token.
"""

from __future__ import annotations

from typing import Any

import structlog

from resilient_canvas._errors import CanvasException
from resilient_canvas._secret import format_traceback, redact

RETRY_SCHEDULED = "canvas.retry_scheduled"
REQUEST_FAILED = "canvas.request_failed"
THROTTLE_PAUSED = "canvas.throttle_paused"
THROTTLE_DEGRADED = "canvas.throttle_degraded"

logger = structlog.get_logger("resilient_canvas")


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
