"""resilient_canvas: Canvas LMS API calls that survive throttling, outages and bad networks."""

from __future__ import annotations

from resilient_canvas.exceptions import (
    BadGateway,
    BadRequest,
    CanvasException,
    Conflict,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    Forbidden,
    GatewayTimeout,
    HTTPException,
    InvalidAccessToken,
    InvalidResponse,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeout,
    RequiredFieldMissing,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    classify_response,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BadGateway",
    "BadRequest",
    "CanvasException",
    "Conflict",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDropped",
    "Forbidden",
    "GatewayTimeout",
    "HTTPException",
    "InvalidAccessToken",
    "InvalidResponse",
    "RateLimitExceeded",
    "ReadTimeout",
    "RequestTimeout",
    "RequiredFieldMissing",
    "ResourceDoesNotExist",
    "ServerError",
    "ServiceUnavailable",
    "TransportError",
    "Unauthorized",
    "UnprocessableEntity",
    "__version__",
    "classify_response",
]
