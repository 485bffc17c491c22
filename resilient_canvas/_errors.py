"""The exception tree: every class resilient_canvas raises, and nothing else.

The tree is drawn in :mod:`resilient_canvas.exceptions`, the public module that
re-exports these classes; this module holds them so that the classifier, the
aiohttp boundary and the sans-IO retry decision can depend on the tree alone.
It imports nothing that does I/O.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from resilient_canvas._http import redact_url, status_phrase
from resilient_canvas._secret import redact, redact_data

if TYPE_CHECKING:
    from resilient_canvas._history import AttemptHistory


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
        # Set before the message: a subclass may compute ``message`` in a
        # property from ``context`` or ``extra``, as Sanic allows.
        self.context: dict[str, Any] = dict(context or {})
        self.extra: dict[str, Any] = dict(extra or {})
        # A fresh dict per instance: Sanic's shared class-level dict leaks
        # headers from one error into the next.
        self.headers: dict[str, str] = dict(headers or {})
        self.errors: Any = None
        self.error_report_id: int | str | None = None
        if isinstance(message, Mapping):
            self.errors = redact_data(message.get("errors"))
            self.error_report_id = message.get("error_report_id")
            message = describe_canvas_body(message) or None
        if message is None:
            # The instance's value: a class attribute or a subclass's property.
            message = self.message or status_phrase(self.status_code)
        elif isinstance(message, bytes):
            message = message.decode("utf-8", errors="replace")
        # Messages are often made from server data, which may echo the token.
        message = redact(str(message))
        super().__init__(message)
        if not _message_is_computed(self):
            self.message = message
        if quiet is not None:
            self.quiet = quiet
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
        # Redacted again: ``message`` is a plain attribute that anyone may set.
        # A computed message gives way to one passed explicitly, as in Sanic,
        # where ``str()`` is the constructor's argument.
        return redact(str(self.args[0] if _message_is_computed(self) else self.message))

    def __repr__(self) -> str:
        parts = [repr(self.message)]
        if self.status_code is not None:
            parts.append(f"status_code={self.status_code}")
        if self.method and self.url:
            parts.append(f"request={self.method} {self.url}")
        return redact(f"{type(self).__name__}({', '.join(parts)})")

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


def _message_is_computed(error: CanvasException) -> bool:
    """Whether a subclass computes ``message`` in a read-only property."""
    attribute = inspect.getattr_static(type(error), "message", None)
    return isinstance(attribute, property) and attribute.fset is None


def redact_error(error: CanvasException) -> None:
    """Redact, in place, every text of *error* that may hold server data.

    The classifier and the aiohttp boundary call this on each error they
    make; the message was redacted when the error was built, but ``extra``,
    ``context``, ``errors`` and ``headers`` are filled in afterwards, often
    from the response body and headers.
    """
    if not _message_is_computed(error):
        error.message = redact(error.message)
    error.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in error.args)
    error.extra = redact_data(error.extra)
    error.context = redact_data(error.context)
    error.errors = redact_data(error.errors)
    error.headers = {name: redact(value) for name, value in error.headers.items()}
    if error.url is not None:
        error.url = redact(error.url)
    if isinstance(error.error_report_id, str):
        error.error_report_id = redact(error.error_report_id)
    if error.request_id is not None:
        error.request_id = redact(error.request_id)


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


class RateLimitExceeded(HTTPException):
    """Canvas throttled the token (429, or a legacy 403 "Rate Limit Exceeded").

    Canvas refuses a throttled request before it reaches the application, so it
    is safe to repeat whatever the method. The message is the CanvasAPI
    client's: ``Rate Limit Exceeded. X-Rate-Limit-Remaining: <value or Unknown>``.

    Not a :class:`Forbidden`, although Canvas once sent throttles as 403s (and
    the CanvasAPI client derives it from ``Forbidden``): ``except Forbidden:``
    written to skip what the user may not see must not swallow a throttle
    that outlasted the retries.
    """

    status_code = 429
    quiet = True
    transient = True
    certainly_not_applied = True
    reason_name = "throttled"


class UserAgentRejected(Forbidden):
    """403: Canvas refused the request for its missing or blocked User-Agent.

    Hosted Canvas does so since January 2026. Repeating the request cannot
    help: the client has to send a User-Agent naming its product and a
    contact (``CanvasClient(..., user_agent="gradesync/2.1 (it@school.edu)")``).
    """

    reason_name = "user_agent_rejected"


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
    """Canvas's answer could not be used (truncated, not JSON, too large, a redirect loop).

    Whether repeating the request can help depends on the instance, not the
    class: a complete answer that cannot be used (a 200 HTML page, a body over
    ``max_body_size``, a bad ``Link``, a redirect loop, garbage instead of
    HTTP) will be the same next time, so it is not retried; an answer cut
    short (the connection failed in the middle of the body) may be whole next
    time, so it is retried like a dropped connection.

    Args:
        retryable: Whether repeating the request can help. False unless the
            raiser knows the answer was cut short; the aiohttp boundary sets it
            for truncated bodies.
    """

    reason_name = "invalid_response"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        status_code: int | None = None,
        *,
        retryable: bool = False,
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
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        """Whether repeating the request can help: only when the answer was cut short."""
        return self._retryable


class ProgressFailed(CanvasException):
    """A Canvas background job (a ``Progress``) ended in ``failed``."""

    reason_name = "progress_failed"


class LocalFileError(CanvasException):
    """A local file could not be read or written: a full disk, a missing permission.

    Raised by downloads (the partial file is removed first) and uploads;
    repeating the request cannot help.
    """

    certainly_not_applied = True
    reason_name = "local_file_error"


class JobStuck(RequestTimeout):
    """A Canvas job (a Progress, an SIS import) stopped changing: no new state or progress.

    Raised by the job waiters after their ``stuck_after`` seconds; the job may
    still finish, or may need an administrator.
    """

    # Polling again at once would see the same stall: not worth a retry.
    transient = False
    reason_name = "job_stuck"


class SisImportFailed(ProgressFailed):
    """An SIS import ended ``failed``, ``failed_with_messages`` or ``aborted``.

    ``errors`` holds Canvas's ``processing_errors`` (``[file, message]`` pairs);
    ``extra["sis_import"]`` the whole final import.
    """

    reason_name = "sis_import_failed"


class GraphQLError(CanvasException):
    """Canvas's GraphQL answered (200) with ``errors``: a bad query, a limit, a failed field.

    Args:
        message: The text; by default the errors' messages, joined.
        errors: The ``errors`` list as Canvas sent it (``message``,
            ``locations``, ``path``), kept on ``errors``.
        data: The partial ``data`` Canvas sent along, if any, kept on ``data``.

    The request was read and answered: repeating it gives the same errors.
    """

    status_code = 400
    quiet = True
    reason_name = "graphql_error"

    def __init__(
        self,
        message: str | None = None,
        errors: list[Any] | None = None,
        data: Any = None,
        *,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        listed = errors or []
        if message is None and listed:
            message = "GraphQL query failed: " + "; ".join(_graphql_text(e) for e in listed[:5])
        super().__init__(message, method=method, url=url)
        self.errors = redact_data(listed)
        self.data = data


def _graphql_text(error: Any) -> str:
    if not isinstance(error, Mapping):
        return str(error)
    text = str(error.get("message") or "unknown error")
    path = error.get("path")
    if isinstance(path, list) and path:
        text += f" (at {'.'.join(str(p) for p in path)})"
    return text


class RequiredFieldMissing(CanvasException):
    """A required argument was missing; raised before any request is sent."""

    status_code = 400
    quiet = True
    certainly_not_applied = True
    reason_name = "required_field_missing"


class OutcomeUnknown(CanvasException):
    """A write may or may not have been applied, and its check could not tell which.

    Raised instead of repeating a write blindly: the write failed in a way
    that may have been applied (``write_error``), then the check that looks
    for it failed (``check_error``) or found more than one candidate
    (``candidates``). ``look_at`` says what to inspect by hand.

    Args:
        write_error: Why the write's outcome is unknown.
        check_error: Why the check could not answer; None when it was ambiguous.
        candidates: What the check found (two or more when ambiguous).
        look_at: Where to look to decide by hand.
    """

    status_code = 502
    reason_name = "outcome_unknown"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        *,
        write_error: CanvasException | None = None,
        check_error: BaseException | None = None,
        candidates: list[Any] | tuple[Any, ...] = (),
        look_at: str = "",
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.write_error = write_error
        self.check_error = check_error
        self.candidates = redact_data(list(candidates))
        self.look_at = redact(look_at)
        self.request_sent = True


class CircuitOpen(CanvasException):
    """Canvas has been failing and this call's deadline ends before the next probe; never sent.

    The circuit breaker of the Canvas origin is open: calls are held until a
    probe shows Canvas is back, and this one would have waited past its
    deadline. Retrying later (a longer deadline, a later run) may succeed.

    Attributes:
        down_for: Seconds since the circuit opened (Canvas has been failing).
        next_probe_in: Seconds until the next probe, when one is scheduled.
    """

    status_code = 503
    quiet = True
    transient = True
    certainly_not_applied = True
    reason_name = "circuit_open"

    def __init__(
        self,
        message: str | bytes | Mapping[str, Any] | None = None,
        *,
        down_for: float = 0.0,
        next_probe_in: float | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url)
        self.down_for = down_for
        self.next_probe_in = next_probe_in
        self.request_sent = False


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
