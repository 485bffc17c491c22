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
from resilient_canvas._oauth import RefreshToken
from resilient_canvas._otel import install_if_available as _install_otel
from resilient_canvas._policy import BudgetSettings, RetryBudget, RetryPolicy
from resilient_canvas._reconcile import CheckReader, Reconciler, Write
from resilient_canvas._redis_circuit import RedisCircuit
from resilient_canvas._redis_throttle import RedisThrottle
from resilient_canvas._registry import clear_throttles, close_throttles, throttle_for
from resilient_canvas._retry import raise_for_canvas_status, resilient
from resilient_canvas._sis import SisImportResult
from resilient_canvas._throttle import Throttle
from resilient_canvas._version import __version__
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
    GraphQLError,
    HTTPException,
    InvalidAccessToken,
    InvalidResponse,
    JobStuck,
    LocalFileError,
    OutcomeUnknown,
    ProgressFailed,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeout,
    RequiredFieldMissing,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    SisImportFailed,
    ThrottleTimeout,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    UserAgentRejected,
    classify_response,
)

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
    "CheckReader",
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
    "GraphQLError",
    "HTTPException",
    "InsecureURLWarning",
    "InvalidAccessToken",
    "InvalidResponse",
    "JobStuck",
    "LocalFileError",
    "Observation",
    "Outcome",
    "OutcomeUnknown",
    "Permit",
    "ProgressFailed",
    "RateLimitExceeded",
    "ReadTimeout",
    "Reconciler",
    "RedisCircuit",
    "RedisThrottle",
    "RefreshToken",
    "RequestTimeout",
    "RequiredFieldMissing",
    "ResourceDoesNotExist",
    "RetryBudget",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "SisImportFailed",
    "SisImportResult",
    "Throttle",
    "ThrottleConfig",
    "ThrottleEstimate",
    "ThrottleTimeout",
    "TransportError",
    "Unauthorized",
    "UnprocessableEntity",
    "UserAgentRejected",
    "Write",
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
