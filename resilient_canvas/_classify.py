"""Any HTTP error response into the most specific exception of the tree.

:func:`classify_response` is total: it reads whatever a hostile or broken
server sends (HTML, invalid UTF-8, huge bodies, garbage headers) and always
returns an exception, never raises one. Header values are read once into a
:class:`~resilient_canvas._http.ResponseHeaders` view, the same one the success
path reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from resilient_canvas._errors import (
    BadGateway,
    BadRequest,
    CanvasException,
    Conflict,
    ExpectationFailed,
    Forbidden,
    GatewayTimeout,
    HTTPException,
    InvalidAccessToken,
    MethodNotAllowed,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RateLimitExceeded,
    RequestTimeout,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
    URITooLong,
    UserAgentRejected,
    describe_canvas_body,
    redact_error,
)
from resilient_canvas._http import (
    JSON_GUARD,
    ResponseHeaders,
    redact_url,
    status_phrase,
    to_headers,
)

#: How much of a response body we keep on an exception (``extra["body_excerpt"]``).
_BODY_EXCERPT_CHARS = 500
#: Bodies larger than this are not parsed as JSON: a huge body is not a Canvas error.
_MAX_JSON_BODY_BYTES = 1_048_576
#: Longest Canvas error detail we put in a message; longer ones are cut with an ellipsis.
MAX_DETAIL_CHARS = 300
#: Longest header text repeated in a message (a hostile server may send kilobytes).
_MAX_QUOTED_HEADER_CHARS = 64

_RATE_LIMIT_MARKER = "rate limit exceeded"
#: How Canvas words a refused User-Agent ("...not provided a valid user agent.");
#: the exact wording may change, the words do not.
_USER_AGENT_MARKERS = ("user agent", "user-agent", "useragent")


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
    if stripped.startswith(JSON_GUARD):
        stripped = stripped[len(JSON_GUARD) :].lstrip()
    if oversized or not stripped.startswith(("{", "[", '"')):
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
    UserAgentRejected: (
        "Canvas refuses requests without a valid User-Agent; resilient-canvas sends its "
        "own, so a proxy or a session of yours replaced it, or Canvas blocks it: pass "
        'user_agent="YourProduct/1.0 (you@example.edu)" to CanvasClient (or '
        "--user-agent to the command line) to name your product and a contact"
    ),
    Forbidden: "the user behind the access token is not allowed to do this",
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


def _class_for(status: int, view: ResponseHeaders, text: str) -> type[HTTPException]:
    if status == 401:
        return InvalidAccessToken if view.www_authenticate else Unauthorized
    if status == 403:
        return _forbidden_kind(text.lower())
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return BadRequest
    if 500 <= status < 600:
        return ServerError
    return HTTPException


def _forbidden_kind(text: str) -> type[Forbidden] | type[RateLimitExceeded]:
    """Tell Canvas's three 403s apart: the legacy throttle, the User-Agent, the rest."""
    if _RATE_LIMIT_MARKER in text:
        return RateLimitExceeded
    if any(marker in text for marker in _USER_AGENT_MARKERS):
        return UserAgentRejected
    # A permission error, or a body we do not know: never retried.
    return Forbidden


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
    view = ResponseHeaders.parse(header_map)
    text, parsed = _decode_body(body)
    cls = _class_for(status, view, text)
    safe_url = redact_url(str(url)) if url is not None else None
    method_text = method.upper() if isinstance(method, str) else None

    if issubclass(cls, RateLimitExceeded):
        message = rate_limit_message(header_map.get("X-Rate-Limit-Remaining"))
    else:
        detail = _detail(text, parsed, view)
        message = _compose_message(cls, status, method_text, safe_url, detail)

    exc = cls(message)
    exc.status_code, exc.method, exc.url = status, method_text, safe_url
    if isinstance(parsed, Mapping):
        exc.errors = parsed.get("errors")
        exc.error_report_id = _report_id(parsed.get("error_report_id"))
    exc.retry_after = view.retry_after
    exc.rate_limit_remaining = view.rate_limit_remaining
    exc.request_cost = view.request_cost
    exc.request_id = view.request_id
    exc.request_sent = True
    exc.response_status = status
    _copy_response_headers(exc, header_map)
    exc.extra.update(_response_extra(exc, text))
    if exc.error_report_id is not None:
        exc.context["error_report_id"] = exc.error_report_id
    if exc.retry_after is not None:
        exc.context["retry_after"] = round(exc.retry_after, 3)
    redact_error(exc)
    return exc


def rate_limit_message(remaining: str | None) -> str:
    """The CanvasAPI client's message for a throttle, with the header's text as sent."""
    value = " ".join((remaining or "").split())[:_MAX_QUOTED_HEADER_CHARS] or "Unknown"
    return f"Rate Limit Exceeded. X-Rate-Limit-Remaining: {value}"


def _detail(text: str, parsed: Any, view: ResponseHeaders) -> str:
    """Canvas's own words from an error body, as one line; "" when it has none."""
    if isinstance(parsed, Mapping):
        return describe_canvas_body(parsed)
    if isinstance(parsed, str):
        # A JSON string body ("Forbidden" in quotes) is its text, not its source.
        return " ".join(parsed.split())
    if _looks_like_html(text, view):
        return "the server answered with an HTML page instead of JSON"
    if parsed is None:
        return " ".join(text.split())
    return ""


def _looks_like_html(text: str, view: ResponseHeaders) -> bool:
    head = text.lstrip()[:15].lower()
    return "html" in view.content_type or head.startswith(("<!doctype html", "<html"))


def _compose_message(
    cls: type[HTTPException], status: int, method: str | None, url: str | None, detail: str
) -> str:
    phrase = status_phrase(status) or "Unknown Status"
    request = f"{method} {url}" if method and url else (url or method or "The request")
    cause = next(_CAUSES[base] for base in cls.__mro__ if base in _CAUSES)
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    # Canvas's words follow as they are: quoting them would double the quotes
    # of a JSON string body or of a message that quotes something itself.
    said = f" Canvas said: {detail}" if detail else ""
    return f"{request} failed with {status} {phrase}: {cause}.{said}"


def _report_id(value: Any) -> int | str | None:
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


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
