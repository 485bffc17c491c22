"""The one boundary where aiohttp's exceptions become ours.

Every other module raises and catches only the tree; a test fails when
aiohttp grows an exception class that :data:`AIOHTTP_EXCEPTION_MAP` lacks.
"""

from __future__ import annotations

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
)
from resilient_canvas._http import redact_url

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
    return (text or type(error).__name__)[:MAX_DETAIL_CHARS]
