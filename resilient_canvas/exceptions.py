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
    │   │   └── RateLimitExceeded         429, or legacy 403 "Rate Limit Exceeded"
    │   ├── ResourceDoesNotExist          404 (alias NotFound)
    │   │   └── FileNotFound
    │   ├── MethodNotAllowed              405 (alias MethodNotSupported)
    │   ├── RequestTimeout                408, and every timeout of ours
    │   │   ├── ConnectTimeout            could not connect in time: never sent
    │   │   ├── ReadTimeout               sent, no answer in time: may have been applied
    │   │   ├── ThrottleTimeout           the deadline passed waiting for our throttle: never sent
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
    │   └── InvalidResponse               an answer we cannot read (truncated, not JSON, loops)
    ├── ProgressFailed                    a Canvas background job (Progress) failed
    └── RequiredFieldMissing              a required argument is missing (raised before sending)

Each instance carries what a caller needs without reparsing: ``status_code``,
``method``, ``url`` (credentials removed), ``retry_after``,
``rate_limit_remaining``, ``request_cost``, ``errors``, ``error_report_id``,
``request_sent``, ``may_have_been_applied`` and ``retryable``. Request details
and a bounded excerpt of the response go in ``extra``, which production error
pages never show; ``context`` holds only what is safe to show an end user.

:func:`classify_response` turns any HTTP response into one of these and
:func:`from_aiohttp_error` is the single place aiohttp's exceptions are
translated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp

from resilient_canvas._http import (
    parse_float_header,
    parse_retry_after,
    redact_url,
    status_phrase,
    to_headers,
)

if TYPE_CHECKING:
    from resilient_canvas._history import AttemptHistory

__all__ = [
    "AIOHTTP_EXCEPTION_MAP",
    "BadGateway",
    "BadRequest",
    "BadURL",
    "CanvasException",
    "Conflict",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionDropped",
    "ContentRangeError",
    "ExpectationFailed",
    "FileNotFound",
    "Forbidden",
    "GatewayTimeout",
    "HTTPException",
    "HeaderExpectationFailed",
    "HeaderNotFound",
    "InternalServerError",
    "InvalidAccessToken",
    "InvalidHeader",
    "InvalidRangeType",
    "InvalidResponse",
    "InvalidUsage",
    "MethodNotAllowed",
    "MethodNotSupported",
    "NotFound",
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
    "TLSError",
    "ThrottleTimeout",
    "TransportError",
    "URITooLong",
    "URLBuildError",
    "Unauthorized",
    "UnprocessableEntity",
    "classify_response",
    "describe_canvas_body",
    "from_aiohttp_error",
]

#: How much of a response body we keep on an exception (``extra["body_excerpt"]``).
_BODY_EXCERPT_CHARS = 500
#: Bodies larger than this are not parsed as JSON: a huge body is not a Canvas error.
_MAX_JSON_BODY_BYTES = 1_048_576
#: Longest Canvas error detail we put in a message; longer ones are cut with an ellipsis.
_MAX_DETAIL_CHARS = 300

_RATE_LIMIT_MARKER = "rate limit exceeded"


class CanvasException(Exception):
    """Base of every resilient_canvas error.

    Args:
        message: Text, bytes (decoded as UTF-8) or a Canvas JSON error body
            (a dict with ``errors``, ``message`` or ``error``). None uses the
            class message, else the status's reason phrase.
        status_code: The HTTP status this error stands for.
        quiet: Whether the error is expected in normal operation (logged
            without a traceback, always rendered minimally). None uses the
            class default.
        context: Data safe to show the end user.
        extra: Data for developers only; never shown in production pages.
        headers: Headers to send with a rendered error response.
        method: The HTTP method of the failed request.
        url: The request URL; credentials are removed before it is stored.
    """

    message: str = ""
    status_code: int = 500
    quiet: bool = False
    #: The kind of failure that may succeed when repeated.
    transient: ClassVar[bool] = False
    #: True when the request certainly did not take effect on the server.
    certainly_not_applied: ClassVar[bool] = False
    #: Short machine-readable reason for logs and attempt histories.
    reason_name: ClassVar[str] = "error"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        status_code: int | None = None,
        *,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        if status_code is not None:
            self.status_code = status_code
        self.errors: Any = None
        self.error_report_id: int | str | None = None
        if isinstance(message, Mapping):
            self.errors = message.get("errors")
            self.error_report_id = message.get("error_report_id")
            message = describe_canvas_body(message) or None
        if message is None:
            message = type(self).message or status_phrase(self.status_code)
        elif isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        super().__init__(message)
        self.message: str = message
        if quiet is not None:
            self.quiet = quiet
        self.context: dict[str, Any] = dict(context or {})
        self.extra: dict[str, Any] = dict(extra or {})
        # A fresh dict per instance: Sanic's shared class-level dict leaks
        # headers from one error into the next.
        self.headers: dict[str, str] = dict(headers or {})
        self.method = method.upper() if method else None
        self.url = redact_url(url)
        self.retry_after: float | None = None
        self.rate_limit_remaining: float | None = None
        self.request_cost: float | None = None
        self.request_id: str | None = None
        self.request_sent: bool | None = None
        #: The status of the response this error was read from; None without one.
        self.response_status: int | None = None
        #: The wait that would have been needed when retries gave up early.
        self.wait_hint: float | None = None
        #: Filled in by ``@resilient`` when it gives up on this error.
        self.attempts: AttemptHistory | None = None

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.status_code is not None:
            parts.append(f"status_code={self.status_code}")
        if self.method and self.url:
            parts.append(f"request={self.method} {self.url}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def retryable(self) -> bool:
        """Whether this kind of failure may succeed when the request is repeated."""
        return self.transient

    @property
    def may_have_been_applied(self) -> bool:
        """Whether the server may have acted on the request despite the failure."""
        return not self.certainly_not_applied

    @property
    def reason(self) -> str:
        """A short, stable name for the kind of failure (``throttled``, ``timeout``...)."""
        return self.reason_name


class HTTPException(CanvasException):
    """An error status from Canvas or a gateway in front of it.

    Subclasses fix ``status_code``; it may still be given by keyword to keep a
    rarer status (``410``) on the nearest generic class.
    """

    reason_name = "http_error"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        *,
        status_code: int | None = None,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(
            message,
            status_code,
            quiet=quiet,
            context=context,
            extra=extra,
            headers=headers,
            method=method,
            url=url,
        )


class BadRequest(HTTPException):
    """400: Canvas rejected the request as invalid (also other 4xx statuses)."""

    status_code = 400
    quiet = True
    reason_name = "bad_request"


InvalidUsage = BadRequest
BadURL = BadRequest


class HeaderNotFound(BadRequest):
    """A required header is missing."""


class InvalidHeader(BadRequest):
    """A header has an unusable value."""


class Unauthorized(HTTPException):
    """401: the credentials do not allow this request.

    Args:
        scheme: With it, a ``WWW-Authenticate`` header is built from the
            scheme and the remaining keyword arguments, as Sanic does:
            ``Unauthorized("x", scheme="Bearer", realm="canvas")`` gives
            ``Bearer realm="canvas"``.
    """

    status_code = 401
    quiet = True
    reason_name = "unauthorized"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        scheme: str | None = None,
        *,
        status_code: int | None = None,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        method: str | None = None,
        url: str | None = None,
        **challenges: str,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            quiet=quiet,
            context=context,
            extra=extra,
            headers=headers,
            method=method,
            url=url,
        )
        if scheme is not None:
            values = ", ".join(f'{key}="{value}"' for key, value in challenges.items())
            self.headers["WWW-Authenticate"] = f"{scheme} {values}".rstrip()


class InvalidAccessToken(Unauthorized):
    """401 with ``WWW-Authenticate``: the token is invalid, expired or revoked."""

    reason_name = "invalid_token"


class Forbidden(HTTPException):
    """403: the token's user may not do this."""

    status_code = 403
    quiet = True
    reason_name = "forbidden"


class RateLimitExceeded(Forbidden):
    """Canvas throttled the token (429, or a legacy 403 "Rate Limit Exceeded").

    Canvas refuses a throttled request before it reaches the application, so it
    is safe to repeat whatever the method.
    """

    transient = True
    certainly_not_applied = True
    reason_name = "throttled"


class ResourceDoesNotExist(HTTPException):
    """404: the resource does not exist, or the token's user cannot see it."""

    status_code = 404
    quiet = True
    reason_name = "not_found"


NotFound = ResourceDoesNotExist


class FileNotFound(ResourceDoesNotExist):
    """A file does not exist."""

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        path: str | None = None,
        relative_url: str | None = None,
        *,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, quiet=quiet, context=context, extra=extra, headers=headers)
        self.path = path
        self.relative_url = relative_url


class MethodNotAllowed(HTTPException):
    """405: the method is not allowed here; ``Allow`` lists those that are."""

    status_code = 405
    quiet = True
    reason_name = "method_not_allowed"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        method: str = "",
        allowed_methods: list[str] | tuple[str, ...] | None = None,
        *,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, quiet=quiet, context=context, extra=extra, headers=headers)
        self.method = method or None
        self.allowed_methods = list(allowed_methods or [])
        if self.allowed_methods:
            self.headers["Allow"] = ", ".join(self.allowed_methods)


MethodNotSupported = MethodNotAllowed


class RequestTimeout(HTTPException):
    """408, and every timeout: no complete answer arrived in time."""

    status_code = 408
    quiet = True
    transient = True
    reason_name = "timeout"


class ConnectTimeout(RequestTimeout):
    """The connection could not be opened in time; the request was never sent."""

    certainly_not_applied = True
    reason_name = "connect_timeout"


class ReadTimeout(RequestTimeout):
    """The request was sent but no answer came in time; it may have been applied."""

    reason_name = "read_timeout"


class ThrottleTimeout(RequestTimeout):
    """The call's deadline passed while it waited for the client-side throttle; never sent."""

    certainly_not_applied = True
    reason_name = "throttle_timeout"


class GatewayTimeout(RequestTimeout):
    """504: a gateway gave up waiting for Canvas; the request may have been applied."""

    status_code = 504
    reason_name = "gateway_timeout"


class Conflict(HTTPException):
    """409: the request conflicts with the resource's current state."""

    status_code = 409
    quiet = True
    reason_name = "conflict"


class PayloadTooLarge(HTTPException):
    """413: the request body is larger than the server accepts."""

    status_code = 413
    quiet = True
    reason_name = "payload_too_large"


class URITooLong(HTTPException):
    """414: the URL is longer than the server accepts."""

    status_code = 414
    quiet = True
    reason_name = "uri_too_long"


class RangeNotSatisfiable(HTTPException):
    """416: the requested range is outside the resource.

    Args:
        content_range: An object with a ``total`` attribute (or an int): sets
            ``Content-Range: bytes */<total>``.
    """

    status_code = 416
    quiet = True
    reason_name = "range_not_satisfiable"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        content_range: Any = None,
        *,
        quiet: bool | None = None,
        context: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, quiet=quiet, context=context, extra=extra, headers=headers)
        total = content_range if isinstance(content_range, int) else None
        total = getattr(content_range, "total", total)
        if total is not None:
            self.headers["Content-Range"] = f"bytes */{total}"


ContentRangeError = RangeNotSatisfiable


class InvalidRangeType(RangeNotSatisfiable):
    """The range unit or syntax is not supported."""


class ExpectationFailed(HTTPException):
    """417: the server cannot meet the ``Expect`` header."""

    status_code = 417
    quiet = True
    reason_name = "expectation_failed"


HeaderExpectationFailed = ExpectationFailed


class UnprocessableEntity(HTTPException):
    """422: Canvas understood the request but its content failed validation."""

    status_code = 422
    quiet = True
    reason_name = "unprocessable"


class ServerError(HTTPException):
    """500: Canvas failed while handling the request (also other 5xx statuses)."""

    status_code = 500
    reason_name = "server_error"


InternalServerError = ServerError


class URLBuildError(ServerError):
    """A URL could not be built."""


class ServiceUnavailable(HTTPException):
    """503: Canvas is unavailable (maintenance); the request never reached it."""

    status_code = 503
    quiet = True
    transient = True
    certainly_not_applied = True
    reason_name = "unavailable"


class BadGateway(ServiceUnavailable):
    """502: a gateway could not get a valid answer; the request may have reached Canvas."""

    status_code = 502
    certainly_not_applied = False
    reason_name = "bad_gateway"


class TransportError(CanvasException):
    """No usable HTTP response: the network or the answer itself failed."""

    status_code = 502
    reason_name = "transport"


class ConnectError(TransportError):
    """Could not connect to Canvas; the request was never sent."""

    quiet = True
    transient = True
    certainly_not_applied = True
    reason_name = "connect_error"


class TLSError(TransportError):
    """No trusted TLS connection could be made; the request was never sent.

    Not transient: a certificate problem does not fix itself between retries.
    """

    certainly_not_applied = True
    reason_name = "tls_error"


class ConnectionDropped(TransportError):
    """The connection was lost after the request was sent; it may have been applied."""

    quiet = True
    transient = True
    reason_name = "connection_dropped"


class InvalidResponse(TransportError):
    """Canvas's answer could not be read (truncated, not JSON, redirect loop)."""

    transient = True
    reason_name = "invalid_response"


class ProgressFailed(CanvasException):
    """A Canvas background job (a ``Progress``) ended in ``failed``."""

    reason_name = "progress_failed"


class RequiredFieldMissing(CanvasException):
    """A required argument was missing; raised before any request is sent."""

    status_code = 400
    quiet = True
    certainly_not_applied = True
    reason_name = "required_field_missing"


# --------------------------------------------------------------------------- bodies


def describe_canvas_body(body: Mapping[str, Any]) -> str:
    """Return a readable sentence from a Canvas JSON error body, or "".

    Canvas has several shapes: ``{"errors": [{"message": ...}]}``, field
    errors ``{"errors": {"name": [{"message": ...}]}}``, ``{"message": ...}``
    and ``{"error": ...}``.
    """
    errors = body.get("errors")
    parts: list[str] = []
    if isinstance(errors, list):
        parts = [_error_text(item) for item in errors]
    elif isinstance(errors, Mapping):
        for field, problems in errors.items():
            items = problems if isinstance(problems, list) else [problems]
            parts.extend(f"{field}: {_error_text(item)}" for item in items)
    elif isinstance(errors, str):
        parts = [errors]
    for key in ("message", "error"):
        if not parts and isinstance(body.get(key), str):
            parts = [body[key]]
    return "; ".join(part for part in parts if part)


def _error_text(item: Any) -> str:
    if isinstance(item, Mapping):
        text = item.get("message")
        return text if isinstance(text, str) else ""
    return item if isinstance(item, str) else ""


def _decode_body(body: object) -> tuple[str, Any]:
    """Return (text, parsed JSON or None) for any body, never raising."""
    if isinstance(body, Mapping | list):
        try:
            return json.dumps(body)[:_MAX_JSON_BODY_BYTES], body
        except (TypeError, ValueError):
            return repr(body)[:_BODY_EXCERPT_CHARS], body
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        text = raw[:_MAX_JSON_BODY_BYTES].decode("utf-8", errors="replace")
        oversized = len(raw) > _MAX_JSON_BODY_BYTES
    elif isinstance(body, str):
        text, oversized = body[:_MAX_JSON_BODY_BYTES], len(body) > _MAX_JSON_BODY_BYTES
    else:
        return ("" if body is None else repr(body)[:_BODY_EXCERPT_CHARS]), None
    stripped = text.lstrip()
    if oversized or not stripped.startswith(("{", "[")):
        return text, None
    try:
        return text, json.loads(stripped)
    except (ValueError, RecursionError):
        return text, None


# ------------------------------------------------------------------ classification

_CAUSES: dict[type[CanvasException], str] = {
    BadRequest: "Canvas rejected the request as invalid",
    InvalidAccessToken: "the access token is invalid, expired or revoked",
    Unauthorized: "the access token lacks the scope or the permission for this action",
    Forbidden: "the user behind the access token is not allowed to do this",
    RateLimitExceeded: "Canvas is throttling this access token until its quota refills",
    ResourceDoesNotExist: "the resource does not exist, or the token's user cannot see it",
    MethodNotAllowed: "this endpoint does not accept this HTTP method",
    RequestTimeout: "the server gave up waiting for the request",
    Conflict: "the request conflicts with the resource's current state",
    PayloadTooLarge: "the request body is too large",
    URITooLong: "the URL is too long; send large parameters in the body",
    RangeNotSatisfiable: "the requested range is outside the resource",
    ExpectationFailed: "the server cannot meet the Expect header",
    UnprocessableEntity: "Canvas could not validate the request's content",
    ServerError: "Canvas failed while handling the request",
    ServiceUnavailable: "Canvas is unavailable, possibly for maintenance",
    BadGateway: "a gateway in front of Canvas could not get an answer from it",
    GatewayTimeout: "a gateway in front of Canvas timed out waiting for it",
    HTTPException: "the server answered with an unexpected status",
}

_BY_STATUS: dict[int, type[HTTPException]] = {
    400: BadRequest,
    404: ResourceDoesNotExist,
    405: MethodNotAllowed,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    414: URITooLong,
    416: RangeNotSatisfiable,
    417: ExpectationFailed,
    422: UnprocessableEntity,
    429: RateLimitExceeded,
    500: ServerError,
    502: BadGateway,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def _class_for(status: int, headers: Mapping[str, str], text: str) -> type[HTTPException]:
    if status == 401:
        return InvalidAccessToken if "WWW-Authenticate" in headers else Unauthorized
    if status == 403:
        return RateLimitExceeded if _RATE_LIMIT_MARKER in text.lower() else Forbidden
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return BadRequest
    if 500 <= status < 600:
        return ServerError
    return HTTPException


def classify_response(
    status: int,
    headers: object = None,
    body: object = None,
    *,
    method: str | None = None,
    url: object = None,
) -> HTTPException:
    """Return the exception that describes an HTTP error response. Never raises.

    Args:
        status: The response status. Any value is accepted; a status that is
            not an error still gives an :class:`HTTPException`.
        headers: Any mapping or iterable of pairs; malformed values are ignored.
        body: The body as bytes, text, or already decoded JSON; HTML, invalid
            UTF-8 and huge bodies are handled.
        method: The request's method, kept on the exception.
        url: The request's URL; credentials are removed before it is kept.

    Returns:
        An instance of the most specific class for the response, with the
        Canvas error text in its message and the raw details in its
        attributes and ``extra``.
    """
    try:
        return _classify(status, headers, body, method=method, url=url)
    except Exception as exc:
        fallback = HTTPException(
            f"The server answered with status {status!r}, which could not be read ({exc}).",
            method=method if isinstance(method, str) else None,
        )
        fallback.status_code = status if isinstance(status, int) else 500
        return fallback


def _classify(
    status: int, headers: object, body: object, *, method: str | None, url: object
) -> HTTPException:
    status = int(status)
    header_map = to_headers(headers)
    text, parsed = _decode_body(body)
    cls = _class_for(status, header_map, text)
    safe_url = redact_url(str(url)) if url is not None else None
    method_text = method.upper() if isinstance(method, str) else None

    detail = describe_canvas_body(parsed) if isinstance(parsed, Mapping) else ""
    if not detail and _looks_like_html(text, header_map):
        detail = "the server answered with an HTML page instead of JSON"
    elif not detail and text.strip() and parsed is None:
        detail = " ".join(text.split())
    message = _compose_message(cls, status, method_text, safe_url, detail)

    exc = cls(message)
    exc.status_code, exc.method, exc.url = status, method_text, safe_url
    if isinstance(parsed, Mapping):
        exc.errors = parsed.get("errors")
        exc.error_report_id = _report_id(parsed.get("error_report_id"))
    exc.retry_after = parse_retry_after(header_map.get("Retry-After"))
    exc.rate_limit_remaining = parse_float_header(header_map.get("X-Rate-Limit-Remaining"))
    exc.request_cost = parse_float_header(header_map.get("X-Request-Cost"))
    exc.request_id = _short(header_map.get("X-Request-Context-Id"))
    exc.request_sent = True
    exc.response_status = status
    _copy_response_headers(exc, header_map)
    exc.extra.update(_response_extra(exc, text))
    if exc.error_report_id is not None:
        exc.context["error_report_id"] = exc.error_report_id
    if exc.retry_after is not None:
        exc.context["retry_after"] = round(exc.retry_after, 3)
    return exc


def _looks_like_html(text: str, headers: Mapping[str, str]) -> bool:
    content_type = headers.get("Content-Type", "").lower()
    head = text.lstrip()[:15].lower()
    return "html" in content_type or head.startswith(("<!doctype html", "<html"))


def _compose_message(
    cls: type[HTTPException], status: int, method: str | None, url: str | None, detail: str
) -> str:
    phrase = status_phrase(status) or "Unknown Status"
    request = f"{method} {url}" if method and url else (url or method or "The request")
    cause = next(_CAUSES[base] for base in cls.__mro__ if base in _CAUSES)
    if len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[: _MAX_DETAIL_CHARS - 1] + "…"
    said = f' Canvas said: "{detail}"' if detail else ""
    return f"{request} failed with {status} {phrase}: {cause}.{said}"


def _report_id(value: Any) -> int | str | None:
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _short(value: str | None) -> str | None:
    return value[:128] if value else None


def _copy_response_headers(exc: HTTPException, headers: Mapping[str, str]) -> None:
    # Only headers that mean something to whoever receives a rendered error.
    for name in ("WWW-Authenticate", "Allow", "Content-Range", "Retry-After"):
        value = headers.get(name)
        if value is not None and name not in exc.headers:
            exc.headers[name] = value[:256]


def _response_extra(exc: CanvasException, text: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"status": exc.status_code}
    if exc.method:
        extra["method"] = exc.method
    if exc.url:
        extra["url"] = exc.url
    if exc.request_id:
        extra["request_id"] = exc.request_id
    if exc.rate_limit_remaining is not None:
        extra["rate_limit_remaining"] = exc.rate_limit_remaining
    if exc.request_cost is not None:
        extra["request_cost"] = exc.request_cost
    if text:
        excerpt = text[:_BODY_EXCERPT_CHARS]
        extra["body_excerpt"] = excerpt + ("…" if len(text) > _BODY_EXCERPT_CHARS else "")
    return extra


# ------------------------------------------------------------------ aiohttp boundary

#: Every aiohttp client exception and what it means for us. The most specific
#: entry along an exception's MRO wins; a test fails when aiohttp grows a
#: class missing from this table.
AIOHTTP_EXCEPTION_MAP: dict[type[BaseException], type[CanvasException]] = {
    aiohttp.ClientError: TransportError,
    aiohttp.ClientConnectionError: ConnectionDropped,
    aiohttp.ClientConnectionResetError: ConnectionDropped,
    aiohttp.ClientOSError: ConnectionDropped,
    aiohttp.ClientConnectorError: ConnectError,
    aiohttp.ClientProxyConnectionError: ConnectError,
    aiohttp.ClientConnectorDNSError: ConnectError,
    aiohttp.client_exceptions.UnixClientConnectorError: ConnectError,
    aiohttp.ClientSSLError: TLSError,
    aiohttp.ClientConnectorSSLError: TLSError,
    aiohttp.ClientConnectorCertificateError: TLSError,
    aiohttp.ServerConnectionError: ConnectionDropped,
    aiohttp.ServerDisconnectedError: ConnectionDropped,
    aiohttp.ServerFingerprintMismatch: TLSError,
    aiohttp.ServerTimeoutError: ReadTimeout,
    aiohttp.ConnectionTimeoutError: ConnectTimeout,
    aiohttp.SocketTimeoutError: ReadTimeout,
    aiohttp.ClientResponseError: HTTPException,
    aiohttp.ClientHttpProxyError: BadGateway,
    aiohttp.WSServerHandshakeError: InvalidResponse,
    aiohttp.ContentTypeError: InvalidResponse,
    aiohttp.TooManyRedirects: InvalidResponse,
    aiohttp.ClientPayloadError: InvalidResponse,
    aiohttp.InvalidURL: BadRequest,
    aiohttp.InvalidUrlClientError: BadRequest,
    aiohttp.InvalidUrlRedirectClientError: InvalidResponse,
    aiohttp.RedirectClientError: InvalidResponse,
    aiohttp.NonHttpUrlClientError: BadRequest,
    aiohttp.NonHttpUrlRedirectClientError: InvalidResponse,
    aiohttp.UploadAbortedError: ConnectionDropped,
    aiohttp.WSMessageTypeError: InvalidResponse,
    # aiohttp's total timeout raises the builtin; the request may have been sent.
    TimeoutError: ReadTimeout,
}

_TRANSPORT_MESSAGES: dict[type[CanvasException], str] = {
    ConnectError: "Could not connect to {target}: {detail}. The request was not sent.",
    TLSError: "Could not make a trusted TLS connection to {target}: {detail}.",
    ConnectionDropped: (
        "The connection to {target} was lost: {detail}. The request may have been applied."
    ),
    ConnectTimeout: "Timed out connecting to {target}. The request was not sent.",
    ReadTimeout: ("Timed out waiting for {target} to answer. The request may have been applied."),
    InvalidResponse: "The answer from {target} could not be read: {detail}.",
    BadRequest: "The URL for {target} is not valid: {detail}.",
    TransportError: "The request to {target} failed: {detail}.",
}


def from_aiohttp_error(
    error: BaseException, *, method: str | None = None, url: object = None
) -> CanvasException | None:
    """Translate an aiohttp (or timeout) exception into ours; None if it is neither.

    This is the one boundary where aiohttp's exceptions become ours; callers
    ``raise translated from error`` so the original stays on ``__cause__``.
    """
    if isinstance(error, CanvasException):
        return error
    target_cls = _lookup(type(error))
    if target_cls is None:
        return None
    safe_url = redact_url(str(url)) if url is not None else None
    if isinstance(error, aiohttp.ClientResponseError) and isinstance(
        error.__cause__, aiohttp.http_exceptions.HttpProcessingError
    ):
        # aiohttp reports an answer it could not parse (garbage, a bad status
        # line, oversized headers) as a 400 of its own: no server said 400.
        target_cls = InvalidResponse
    elif isinstance(error, aiohttp.ClientResponseError) and target_cls is HTTPException:
        return classify_response(
            error.status, error.headers, error.message, method=method, url=safe_url
        )
    detail = _error_detail(error)
    target = f"{method.upper()} {safe_url}" if method and safe_url else (safe_url or "Canvas")
    template = next(
        _TRANSPORT_MESSAGES[base] for base in target_cls.__mro__ if base in _TRANSPORT_MESSAGES
    )
    exc = target_cls(template.format(target=target, detail=detail))
    exc.method, exc.url = (method.upper() if method else None), safe_url
    exc.request_sent = not exc.certainly_not_applied
    exc.extra.update({"method": exc.method, "url": safe_url, "cause": type(error).__name__})
    return exc


def _lookup(error_type: type[BaseException]) -> type[CanvasException] | None:
    for base in error_type.__mro__:
        if base in AIOHTTP_EXCEPTION_MAP:
            return AIOHTTP_EXCEPTION_MAP[base]
    return None


def _error_detail(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, aiohttp.ClientConnectorError):
        text = str(error.os_error) or text
    elif isinstance(error, aiohttp.ClientResponseError):
        text = error.message or text
    if text.startswith(("http://", "https://")):
        text = redact_url(text) or text
    return (text or type(error).__name__)[:_MAX_DETAIL_CHARS]
