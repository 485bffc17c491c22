"""One line that makes an existing canvasapi script pace, retry, time out and log like us.

::

    from canvasapi import Canvas
    from resilient_canvas.canvasapi import install

    canvas = install(Canvas(API_URL, API_KEY))

canvasapi sends every request through its ``Requester``'s ``requests.Session``.
:func:`install` replaces that session with one that sends each Canvas API
request through a blocking :class:`resilient_canvas.sync.CanvasClient` (the
shared throttle of the token, our retry rules, timeouts, structured logs)
and hands canvasapi back a real ``requests.Response``. So canvasapi's own
code still decides what a status means, builds its objects and follows
``PaginatedList`` links, and its users' ``except`` clauses keep working.

When our retries stop:

- An error status reaches canvasapi as the response it was, so canvasapi
  raises what it always raised (400 ``BadRequest``, 401 ``InvalidAccessToken``
  or ``Unauthorized``, 403 ``Forbidden``, 404 ``ResourceDoesNotExist``, 409
  ``Conflict``, 422 ``UnprocessableEntity``, 429 ``RateLimitExceeded``, other
  statuses ``CanvasException``). Its ``__cause__`` is our classified error.
- No response at all (could not connect, a timeout, a connection lost after
  sending) raises one of the classes below, each both a canvasapi
  ``CanvasException`` and the ``requests`` exception plain canvasapi would
  have let through, with our classified error as ``__cause__``.

Requests that are not Canvas API calls with the token (canvasapi's
``use_auth=False`` upload of a file body to its ``upload_url``, any other
origin, multipart bodies) go out through ``requests`` unchanged, with a
timeout added: they are not in the token's bucket.
"""

from __future__ import annotations

import importlib.metadata
import json
import json as json_module
import threading
from collections.abc import Mapping
from typing import Any, Literal

try:
    import canvasapi
    import canvasapi.exceptions as canvasapi_errors
    import requests
    import requests.structures
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "resilient_canvas.canvasapi needs canvasapi: pip install 'resilient-canvas[canvasapi]'."
    ) from exc
from yarl import URL

from resilient_canvas import exceptions as ours
from resilient_canvas._client import DEFAULT_MAX_BODY_SIZE, DEFAULT_TIMEOUT, Timeout
from resilient_canvas._http import origin_of, status_phrase
from resilient_canvas._policy import RetryPolicy
from resilient_canvas._throttle import Throttle
from resilient_canvas.sync import CanvasClient

__all__ = [
    "CanvasapiConnectTimeout",
    "CanvasapiConnectionError",
    "CanvasapiReadTimeout",
    "CanvasapiSSLError",
    "CanvasapiTimeout",
    "CanvasapiTransportError",
    "install",
]

#: Timeouts (connect, read) of requests that bypass the client, in seconds:
#: canvasapi sets none, and a file upload may legitimately take minutes.
PASSTHROUGH_TIMEOUT = (10.0, 300.0)
#: Headers canvasapi sets that the client sets itself.
_CLIENT_HEADERS = frozenset({"authorization", "user-agent", "content-type"})


class CanvasapiTransportError(canvasapi_errors.CanvasException, requests.RequestException):  # type: ignore[misc]
    """No usable response once retries stopped: a canvasapi error and a ``requests`` one.

    ``__cause__`` is the classified :class:`resilient_canvas.CanvasException`.
    """

    def __init__(self, message: str) -> None:
        requests.RequestException.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CanvasapiConnectionError(CanvasapiTransportError, requests.ConnectionError):
    """Could not connect, or the connection was lost (the request may have been applied)."""


class CanvasapiSSLError(CanvasapiConnectionError, requests.exceptions.SSLError):
    """No trusted TLS connection."""


class CanvasapiTimeout(CanvasapiTransportError, requests.Timeout):
    """A deadline passed (ours, or waiting for the throttle): the call was given up."""


class CanvasapiConnectTimeout(CanvasapiConnectionError, CanvasapiTimeout, requests.ConnectTimeout):
    """Timed out connecting: the request was not sent."""


class CanvasapiReadTimeout(CanvasapiTimeout, requests.ReadTimeout):
    """Sent, but no answer in time: the request may have been applied."""


#: Our errors without a response, to the class canvasapi users receive; the
#: most specific entry along the error's MRO wins.
TRANSPORT_ERROR_MAP: dict[type[ours.CanvasException], type[CanvasapiTransportError]] = {
    ours.CanvasException: CanvasapiTransportError,
    ours.TransportError: CanvasapiConnectionError,
    ours.ConnectError: CanvasapiConnectionError,
    ours.ConnectionDropped: CanvasapiConnectionError,
    ours.TLSError: CanvasapiSSLError,
    ours.InvalidResponse: CanvasapiTransportError,
    ours.RequestTimeout: CanvasapiTimeout,
    ours.ThrottleTimeout: CanvasapiTimeout,
    ours.ConnectTimeout: CanvasapiConnectTimeout,
    ours.ReadTimeout: CanvasapiReadTimeout,
}


def install(
    canvas: canvasapi.Canvas,
    *,
    policy: RetryPolicy | None = None,
    throttle: Throttle | Literal["shared"] | None = "shared",
    timeout: Timeout = DEFAULT_TIMEOUT,
    redis_url: str | None = None,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> canvasapi.Canvas:
    """Send every request of *canvas* through a resilient blocking client; return *canvas*.

    Installing twice is harmless (the second call changes nothing). Every
    object *canvas* creates shares its requester, so they are all covered.

    Args:
        canvas: A ``canvasapi.Canvas``.
        policy: Retry policy (default: ours).
        throttle: ``"shared"`` (default): the process-wide throttle of the
            token, shared with every other client of it; a :class:`Throttle`;
            or None for no pacing.
        timeout: Seconds allowed for connecting and for each read.
        redis_url: Keep the shared throttle's state in Redis.
        max_body_size: Largest response body read, in bytes.

    Returns:
        *canvas*, so that ``canvas = install(Canvas(url, token))`` reads as one line.
    """
    requester = canvas._Canvas__requester
    if isinstance(requester._session, _BridgeSession):
        return canvas
    version = importlib.metadata.version("canvasapi")
    client = CanvasClient(
        requester.original_url,
        requester.access_token,
        policy=policy,
        throttle=throttle,
        timeout=timeout,
        redis_url=redis_url,
        max_body_size=max_body_size,
        user_agent=f"python-canvasapi/{version} resilient-canvas",
    )
    # A Canvas has no close(): its client closes when it is collected, or at exit.
    client._close_when_collected = True
    bridge = _BridgeSession(client, requester.access_token)
    replaced, requester._session = requester._session, bridge
    replaced.close()
    # A subclass, not a wrapper stored on the instance: that would be a
    # reference cycle, and a Canvas collected as garbage must close its
    # client from the client's destructor, outside the cycle.
    requester.__class__ = _resilient_class(type(requester))
    return canvas


class _BridgeSession(requests.Session):
    """A ``requests.Session`` whose Canvas API requests go through a blocking CanvasClient."""

    def __init__(self, client: CanvasClient, access_token: str) -> None:
        super().__init__()
        self.client = client
        self._origin = origin_of(URL(client.base_url))
        self._authorization = f"Bearer {access_token}"
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<canvasapi bridge to {self.client!r}>"

    def take_error(self) -> ours.CanvasException | None:
        """The classified error behind the error response this thread was last handed; forget it."""
        error: ours.CanvasException | None = getattr(self._local, "error", None)
        self._local.error = None
        return error

    def request(  # type: ignore[override]
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        files: Any = None,
        json: Any = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a Canvas API request through the client; anything else through ``requests``."""
        method_text = method.decode() if isinstance(method, bytes) else str(method)
        url_text = url.decode() if isinstance(url, bytes) else str(url)
        if not self._ours(url_text, headers, files, data, params, kwargs):
            kwargs.setdefault("timeout", PASSTHROUGH_TIMEOUT)
            return super().request(
                method_text,
                url_text,
                params=params,
                data=data,
                headers=headers,
                files=files,
                json=json,
                **kwargs,
            )
        try:
            response = self.client.request(
                method_text, url_text, params=params or None, data=data, json=json
            )
        except ours.CanvasException as error:
            if error.response_status is None:
                raise _transport_error(error) from error
            self._local.error = error
            return _error_response(error, url_text)
        content = response.content
        if not content and response.data is not None:
            # A write found by its check after its answer was lost: the found
            # object is the answer canvasapi expects.
            content = json_module.dumps(response.data).encode()
        return _response(response.status, response.headers.items(), content, url_text)

    def _ours(
        self,
        url: str,
        headers: Mapping[str, str] | None,
        files: Any,
        data: Any,
        params: Any,
        options: Mapping[str, Any],
    ) -> bool:
        """Whether this is a Canvas API call with the token that the client can send as is."""
        if files or options.get("stream") or isinstance(data, str | bytes):
            return False
        if isinstance(params, str | bytes) or hasattr(data, "read"):
            return False
        headers = headers or {}
        if headers.get("Authorization") != self._authorization:
            return False  # canvasapi's use_auth=False: not a call in the token's bucket
        if any(name.lower() not in _CLIENT_HEADERS for name in headers):
            return False
        try:
            return origin_of(URL(url)) == self._origin
        except ValueError:
            return False

    def close(self) -> None:
        """Close the pass-through connections; the client is closed at exit."""
        super().close()


class _KeepsCause:
    """Mixed into canvasapi's Requester: its exceptions carry our classified error."""

    _session: _BridgeSession

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        """canvasapi's ``Requester.request``; a canvasapi error gets our error as ``__cause__``."""
        bridge = self._session
        bridge.take_error()
        try:
            response: requests.Response = super().request(*args, **kwargs)  # type: ignore[misc]
        except canvasapi_errors.CanvasException as exc:
            cause = bridge.take_error()
            if cause is not None and exc.__cause__ is None:
                exc.__cause__ = cause
            raise
        finally:
            bridge.take_error()
        return response


#: One subclass per Requester class seen (canvasapi's own, or a user's subclass).
_RESILIENT_CLASSES: dict[type[Any], type[Any]] = {}


def _resilient_class(requester_class: type[Any]) -> type[Any]:
    if issubclass(requester_class, _KeepsCause):
        return requester_class
    made = _RESILIENT_CLASSES.get(requester_class)
    if made is None:
        name = f"Resilient{requester_class.__name__}"
        made = _RESILIENT_CLASSES[requester_class] = type(name, (_KeepsCause, requester_class), {})
    return made


def _transport_error(error: ours.CanvasException) -> CanvasapiTransportError:
    for kind in type(error).__mro__:
        mapped = TRANSPORT_ERROR_MAP.get(kind)
        if mapped is not None:
            return mapped(str(error))
    return CanvasapiTransportError(str(error))  # pragma: no cover - CanvasException is mapped


def _error_response(error: ours.CanvasException, url: str) -> requests.Response:
    """The error response *error* was read from, as far as it was kept."""
    status = error.response_status or error.status_code
    excerpt = str(error.extra.get("body_excerpt", ""))
    body = excerpt
    if excerpt.endswith("…") and error.errors is not None:
        # A long Canvas error body was cut: its errors are what canvasapi reads.
        body = json.dumps({"errors": error.errors, "error_report_id": error.error_report_id})
    headers = dict(error.headers)
    if error.rate_limit_remaining is not None:
        headers["X-Rate-Limit-Remaining"] = repr(error.rate_limit_remaining)
    if error.request_cost is not None:
        headers["X-Request-Cost"] = repr(error.request_cost)
    return _response(status, headers.items(), body.encode(), url)


def _response(status: int, headers: Any, content: bytes, url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    merged: dict[str, str] = {}
    for name, value in headers:
        # Repeated headers are joined, as urllib3 presents them to requests.
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    response.headers = requests.structures.CaseInsensitiveDict(merged)
    response._content = content
    response.url = url
    response.reason = status_phrase(status)
    response.encoding = requests.utils.get_encoding_from_headers(response.headers) or "utf-8"
    return response
