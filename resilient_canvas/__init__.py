"""resilient_canvas: Canvas LMS API calls that survive throttling, outages and bad networks."""

from __future__ import annotations

from resilient_canvas._breaker import (
    BreakerEstimate,
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
    breaker_for,
    clear_breakers,
)
from resilient_canvas._bucket_model import Observation, Permit, ThrottleConfig, ThrottleEstimate
from resilient_canvas._bulk import BulkProgress, BulkResult, Outcome
from resilient_canvas._client import (
    CanvasClient,
    CanvasResponse,
    ClientState,
    InsecureURLWarning,
    route_template,
)
from resilient_canvas._encoding import encode_params, require
from resilient_canvas._history import Attempt, AttemptHistory
from resilient_canvas._otel import install_if_available as _install_otel
from resilient_canvas._policy import BudgetSettings, RetryBudget, RetryPolicy
from resilient_canvas._redis_throttle import RedisThrottle
from resilient_canvas._registry import clear_throttles, close_throttles, throttle_for
from resilient_canvas._retry import raise_for_canvas_status, resilient
from resilient_canvas._throttle import Throttle
from resilient_canvas.exceptions import (
    BadGateway,
    BadRequest,
    CanvasException,
    CircuitOpen,
    Conflict,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    Forbidden,
    GatewayTimeout,
    HTTPException,
    InvalidAccessToken,
    InvalidResponse,
    ProgressFailed,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeout,
    RequiredFieldMissing,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    ThrottleTimeout,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    classify_response,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "Attempt",
    "AttemptHistory",
    "BadGateway",
    "BadRequest",
    "BreakerEstimate",
    "BreakerSettings",
    "BudgetSettings",
    "BulkProgress",
    "BulkResult",
    "CanvasClient",
    "CanvasException",
    "CanvasResponse",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "ClientState",
    "Conflict",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDropped",
    "Forbidden",
    "GatewayTimeout",
    "HTTPException",
    "InsecureURLWarning",
    "InvalidAccessToken",
    "InvalidResponse",
    "Observation",
    "Outcome",
    "Permit",
    "ProgressFailed",
    "RateLimitExceeded",
    "ReadTimeout",
    "RedisThrottle",
    "RequestTimeout",
    "RequiredFieldMissing",
    "ResourceDoesNotExist",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Throttle",
    "ThrottleConfig",
    "ThrottleEstimate",
    "ThrottleTimeout",
    "TransportError",
    "Unauthorized",
    "UnprocessableEntity",
    "__version__",
    "breaker_for",
    "classify_response",
    "clear_breakers",
    "clear_throttles",
    "close_throttles",
    "encode_params",
    "raise_for_canvas_status",
    "require",
    "resilient",
    "route_template",
    "throttle_for",
]

# Traces and metrics when the `otel` extra is installed; without it, nothing at all.
_install_otel()
