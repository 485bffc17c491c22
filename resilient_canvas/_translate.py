"""The one boundary where aiohttp's exceptions become ours, and errors leave an attempt.

Every other module raises and catches only the tree; a test fails when
aiohttp grows an exception class that :data:`AIOHTTP_EXCEPTION_MAP` lacks.

An error leaving an attempt is *sealed* (:func:`seal`): its texts are
redacted, and every foreign exception on its ``__cause__``/``__context__``
chain is replaced by an :class:`UnderlyingError` that keeps only the type's
name and the (redacted) message. aiohttp's exceptions hold the request, the
``Authorization`` header among its headers (``request_info``, a redirect's
``history``), and their tracebacks hold frames whose locals do too; none of
that may travel with our errors into logs, pages or pickles.
"""

from __future__ import annotations

from types import TracebackType

import aiohttp

from resilient_canvas._classify import MAX_DETAIL_CHARS, classify_response
from resilient_canvas._errors import (
    BadGateway,
    BadRequest,
    CanvasException,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    HTTPException,
    InvalidResponse,
    ReadTimeout,
    TLSError,
    TransportError,
    redact_error,
)
from resilient_canvas._http import redact_url
from resilient_canvas._secret import redact

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


class UnderlyingError(Exception):
    """What one of our errors was caused by: a type's name and a message, nothing else.

    Stands in for aiohttp's (and any other foreign) exception on the
    ``__cause__``/``__context__`` chain of our errors, so that the request's
    headers and the frames that held them are not reachable from an error.

    Attributes:
        type_name: The qualified name of the original exception's type
            (``aiohttp.client_exceptions.ServerDisconnectedError``).
        message: The original's message, credentials redacted.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    @classmethod
    def of(cls, error: BaseException) -> UnderlyingError:
        """Summarise *error*: its type's name and its redacted message."""
        kind = type(error)
        return cls(f"{kind.__module__}.{kind.__qualname__}", _error_text(error))


#: Packages whose frames are dropped from a sealed error's traceback: their
#: locals hold the request's headers, the response and its body.
_PRIVATE_PACKAGES = frozenset({"resilient_canvas", "aiohttp"})


def seal(error: CanvasException) -> CanvasException:
    """Make *error* safe to leave an attempt; returns it.

    Redacts its texts, replaces every foreign exception on its cause and
    context chain (a tree, in general) by an :class:`UnderlyingError`, and
    drops this library's and aiohttp's frames from the tracebacks on the
    chain (the caller's own frames, in ``@resilient`` code, are kept).
    """
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, CanvasException):
            redact_error(current)
            current.__traceback__ = _without_private_frames(current.__traceback__)
        for link in ("__cause__", "__context__"):
            linked = getattr(current, link)
            if linked is None or isinstance(linked, UnderlyingError):
                continue
            if not isinstance(linked, CanvasException):
                # The summary is never raised: it has no traceback, hence no frames.
                linked = UnderlyingError.of(linked)
                setattr(current, link, linked)
            pending.append(linked)
    return error


def _without_private_frames(tb: TracebackType | None) -> TracebackType | None:
    kept: list[TracebackType] = []
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] not in _PRIVATE_PACKAGES:
            kept.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for entry in reversed(kept):
        rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return rebuilt


def from_aiohttp_error(
    error: BaseException, *, method: str | None = None, url: object = None
) -> CanvasException | None:
    """Translate an aiohttp (or timeout) exception into ours; None if it is neither.

    This is the one boundary where aiohttp's exceptions become ours. The
    result's ``__cause__`` is an :class:`UnderlyingError` summarising *error*;
    callers raise it outside their ``except`` block (or ``from None``) so that
    *error* itself, which holds the request's headers, is not chained.
    """
    if isinstance(error, CanvasException):
        return error
    target_cls = _lookup(type(error))
    if target_cls is None:
        return None
    safe_url = redact_url(str(url)) if url is not None else None
    unparsable = isinstance(error, aiohttp.ClientResponseError) and isinstance(
        error.__cause__, aiohttp.http_exceptions.HttpProcessingError
    )
    if unparsable:
        # aiohttp reports an answer it could not parse (garbage, a bad status
        # line, oversized headers) as a 400 of its own: no server said 400.
        target_cls = InvalidResponse
    elif isinstance(error, aiohttp.ClientResponseError) and target_cls is HTTPException:
        classified = classify_response(
            error.status, error.headers, error.message, method=method, url=safe_url
        )
        classified.__cause__ = UnderlyingError.of(error)
        return classified
    detail = _error_detail(error)
    target = f"{method.upper()} {safe_url}" if method and safe_url else (safe_url or "Canvas")
    if target_cls is InvalidResponse:
        exc: CanvasException = _invalid_response(error, target, detail, unparsable=unparsable)
    else:
        template = next(
            _TRANSPORT_MESSAGES[base] for base in target_cls.__mro__ if base in _TRANSPORT_MESSAGES
        )
        exc = target_cls(template.format(target=target, detail=detail))
    exc.method, exc.url = (method.upper() if method else None), safe_url
    exc.request_sent = not exc.certainly_not_applied
    exc.extra.update({"method": exc.method, "url": safe_url, "cause": type(error).__name__})
    exc.__cause__ = UnderlyingError.of(error)
    return seal(exc)


def _invalid_response(
    error: BaseException, target: str, detail: str, *, unparsable: bool
) -> InvalidResponse:
    """An answer we cannot use; retryable only when it was cut short.

    Everything else here is deterministic: a redirect loop loops again, a
    redirect to an unusable URL or garbage instead of HTTP comes back the
    same, so repeating the request only repeats the failure.
    """
    if isinstance(error, aiohttp.TooManyRedirects):
        hops = len(error.history)
        return InvalidResponse(
            f"{target} was redirected {hops} times without reaching an answer, most likely "
            "in a redirect loop (check the base URL and any proxy in front of Canvas). "
            "Not retried: it would loop again."
        )
    if isinstance(error, aiohttp.RedirectClientError):
        return InvalidResponse(
            f"{target} was redirected to a URL that cannot be followed: {detail}. "
            "Not retried: the redirect would be the same."
        )
    if unparsable:
        return InvalidResponse(
            f"The answer from {target} is not valid HTTP: {detail}. Is something other than "
            "Canvas listening there? Not retried."
        )
    if isinstance(error, aiohttp.ClientPayloadError) and not _is_encoding_error(error):
        return InvalidResponse(
            f"The answer from {target} was cut short: {detail}. The request may have been applied.",
            retryable=True,
        )
    return InvalidResponse(f"The answer from {target} could not be read: {detail}.")


def _is_encoding_error(error: BaseException) -> bool:
    """Whether a payload error is a body that cannot be decompressed (not a cut-off one)."""
    chain: BaseException | None = error
    for _ in range(8):
        if chain is None:
            return False
        if isinstance(chain, aiohttp.http_exceptions.ContentEncodingError):
            return True
        chain = chain.__cause__ or chain.__context__
    return "content-encoding" in str(error).lower()


def _lookup(error_type: type[BaseException]) -> type[CanvasException] | None:
    for base in error_type.__mro__:
        if base in AIOHTTP_EXCEPTION_MAP:
            return AIOHTTP_EXCEPTION_MAP[base]
    return None


def _error_text(error: BaseException) -> str:
    """An exception's message, credentials redacted, never raising."""
    try:
        text = str(error)
    except Exception:
        text = ""
    return redact(text.strip())[:1000]


def _error_detail(error: BaseException) -> str:
    text = _error_text(error)
    if isinstance(error, aiohttp.ClientConnectorError):
        text = str(error.os_error) or text
    elif isinstance(error, aiohttp.ClientResponseError):
        text = error.message or text
    if text.startswith(("http://", "https://")):
        text = redact_url(text) or text
    return redact(text or type(error).__name__)[:MAX_DETAIL_CHARS]
