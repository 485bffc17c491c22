"""Every error resilient_canvas raises, in one tree.

The names merge the CanvasAPI client's exceptions with Sanic's exception model
(``status_code``, ``quiet``, ``context``, ``extra``, ``headers``, aliases)::

    CanvasException                       any failure talking to Canvas
    ├── HTTPException                     Canvas (or a gateway) answered with an error status
    │   ├── BadRequest                    400 (aliases InvalidUsage, BadURL); other 4xx
    │   │   ├── HeaderNotFound
    │   │   └── InvalidHeader
    │   ├── Unauthorized                  401 without WWW-Authenticate: scope or permission
    │   │   └── InvalidAccessToken        401 with WWW-Authenticate: bad, expired or revoked token
    │   ├── Forbidden                     403: permission denied
    │   ├── RateLimitExceeded             429, or legacy 403 "Rate Limit Exceeded" (not a Forbidden)
    │   ├── UserAgentRejected             403 for a missing or blocked User-Agent: not retried
    │   ├── ResourceDoesNotExist          404 (alias NotFound)
    │   │   └── FileNotFound
    │   ├── MethodNotAllowed              405 (alias MethodNotSupported)
    │   ├── RequestTimeout                408, and every timeout of ours
    │   │   ├── ConnectTimeout            could not connect in time: never sent
    │   │   ├── ReadTimeout               sent, no answer in time: may have been applied
    │   │   ├── ThrottleTimeout           the deadline passed waiting for our throttle: never sent
    │   │   ├── JobStuck                  a Canvas job (Progress, SIS import) stopped changing
    │   │   └── GatewayTimeout            504
    │   ├── Conflict                      409
    │   ├── PayloadTooLarge               413
    │   ├── URITooLong                    414
    │   ├── RangeNotSatisfiable           416 (alias ContentRangeError)
    │   │   └── InvalidRangeType
    │   ├── ExpectationFailed             417 (alias HeaderExpectationFailed)
    │   ├── UnprocessableEntity           422
    │   ├── ServerError                   500 (alias InternalServerError); other 5xx
    │   │   └── URLBuildError
    │   └── ServiceUnavailable            503: maintenance; never reached Canvas
    │       └── BadGateway                502: may have reached Canvas
    ├── TransportError                    no usable HTTP response at all
    │   ├── ConnectError                  could not connect: never sent
    │   ├── TLSError                      no trusted TLS connection: never sent, not transient
    │   ├── ConnectionDropped             connection lost after sending: may have been applied
    │   └── InvalidResponse               an answer we cannot use (truncated, not JSON, loops)
    ├── CircuitOpen                       Canvas is down and the deadline ends before the next probe
    ├── ProgressFailed                    a Canvas background job (Progress) failed
    │   └── SisImportFailed               an SIS import failed or was aborted (messages on .errors)
    ├── GraphQLError                      Canvas's GraphQL answered with errors (kept on .errors)
    ├── LocalFileError                    a local file could not be read or written (disk full)
    ├── RequiredFieldMissing              a required argument is missing (raised before sending)
    └── OutcomeUnknown                    a write may have been applied and its check could not tell

Each instance carries what a caller needs without reparsing: ``status_code``,
``method``, ``url`` (credentials removed), ``retry_after``,
``rate_limit_remaining``, ``request_cost``, ``errors``, ``error_report_id``,
``request_sent``, ``may_have_been_applied`` and ``retryable``. Request details
and a bounded excerpt of the response go in ``extra``, which production error
pages never show; ``context`` holds only what is safe to show an end user.

:func:`classify_response` turns any HTTP response into one of these and
:func:`from_aiohttp_error` is the single place aiohttp's exceptions are
translated. A translated error's ``__cause__`` is an :class:`UnderlyingError`
(the original's type name and message), never aiohttp's exception, which
holds the request's headers; every text on an error is redacted of the
access token (docs/security.md).

This is the public module; the code lives in private modules by job: the tree
(``_errors``), the response classifier (``_classify``) and the aiohttp
boundary (``_translate``). Every name below reports this module as its home,
so reprs, pickles and documentation show the stable public path.
"""

from __future__ import annotations

from resilient_canvas._classify import classify_response
from resilient_canvas._errors import (
    BadGateway,
    BadRequest,
    BadURL,
    CanvasException,
    CircuitOpen,
    Conflict,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    ContentRangeError,
    ExpectationFailed,
    FileNotFound,
    Forbidden,
    GatewayTimeout,
    GraphQLError,
    HeaderExpectationFailed,
    HeaderNotFound,
    HTTPException,
    InternalServerError,
    InvalidAccessToken,
    InvalidHeader,
    InvalidRangeType,
    InvalidResponse,
    InvalidUsage,
    JobStuck,
    LocalFileError,
    MethodNotAllowed,
    MethodNotSupported,
    NotFound,
    OutcomeUnknown,
    PayloadTooLarge,
    ProgressFailed,
    RangeNotSatisfiable,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeout,
    RequiredFieldMissing,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    SisImportFailed,
    ThrottleTimeout,
    TLSError,
    TransportError,
    Unauthorized,
    UnprocessableEntity,
    URITooLong,
    URLBuildError,
    UserAgentRejected,
    describe_canvas_body,
)
from resilient_canvas._translate import AIOHTTP_EXCEPTION_MAP, UnderlyingError, from_aiohttp_error

__all__ = [
    "AIOHTTP_EXCEPTION_MAP",
    "BadGateway",
    "BadRequest",
    "BadURL",
    "CanvasException",
    "CircuitOpen",
    "Conflict",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDropped",
    "ContentRangeError",
    "ExpectationFailed",
    "FileNotFound",
    "Forbidden",
    "GatewayTimeout",
    "GraphQLError",
    "HTTPException",
    "HeaderExpectationFailed",
    "HeaderNotFound",
    "InternalServerError",
    "InvalidAccessToken",
    "InvalidHeader",
    "InvalidRangeType",
    "InvalidResponse",
    "InvalidUsage",
    "JobStuck",
    "LocalFileError",
    "MethodNotAllowed",
    "MethodNotSupported",
    "NotFound",
    "OutcomeUnknown",
    "PayloadTooLarge",
    "ProgressFailed",
    "RangeNotSatisfiable",
    "RateLimitExceeded",
    "ReadTimeout",
    "RequestTimeout",
    "RequiredFieldMissing",
    "ResourceDoesNotExist",
    "ServerError",
    "ServiceUnavailable",
    "SisImportFailed",
    "TLSError",
    "ThrottleTimeout",
    "TransportError",
    "URITooLong",
    "URLBuildError",
    "Unauthorized",
    "UnderlyingError",
    "UnprocessableEntity",
    "UserAgentRejected",
    "classify_response",
    "describe_canvas_body",
    "from_aiohttp_error",
]

# Users import these from here: make this their home for reprs, pickles and docs.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("resilient_canvas._"):
        _value.__module__ = __name__
del _name, _value
