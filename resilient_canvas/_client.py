"""``CanvasClient``: the async context-manager client most users touch."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import json
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from resilient_canvas._bulk import BulkProgress, BulkResult, run_bulk
from resilient_canvas._encoding import Params, encode_params
from resilient_canvas._http import (
    ResponseHeaders,
    origin_of,
    redact_url,
)
from resilient_canvas._policy import RetryBudget, RetryPolicy
from resilient_canvas._retry import CallInfo, Clock, Sleep, call_with_retries
from resilient_canvas._secret import AccessToken
from resilient_canvas._throttle import Observation, Throttle, throttle_for
from resilient_canvas.exceptions import (
    InvalidResponse,
    ProgressFailed,
    RequestTimeout,
    classify_response,
)

T = TypeVar("T")
R = TypeVar("R")

API_PREFIX = "/api/v1/"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
#: Largest body read by default; a Canvas page of 100 items is a few megabytes at most.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
_CHUNK = 256 * 1024
#: Paths whose resolution is remembered per client: enough for the few paths a
#: script repeats (a listing, a progress poll), small enough to stay flat when a
#: bulk job touches a new path per student.
_RESOLVE_CACHE_SIZE = 256
#: A segment that identifies one resource: a number, ``self``, or ``sis_*:``-style id.
_ID_SEGMENT = re.compile(r"(?<=/)(?:\d+|self|[a-z_]+:[^/]+)(?=/|$)")


class InsecureURLWarning(UserWarning):
    """The base URL is plain http on a non-loopback host: the token would travel in clear."""


class ClientState(enum.Enum):
    """Lifecycle of a :class:`CanvasClient`."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class CanvasResponse:
    """A decoded Canvas response.

    Attributes:
        status: The HTTP status.
        headers: The response headers.
        data: The decoded JSON body (None for an empty body).
        url: The request URL without credentials.
        links: Link header URLs by relation (``next``, ``last``...).
        rate_limit_remaining: ``X-Rate-Limit-Remaining``, if sent.
        request_cost: ``X-Request-Cost``, if sent.
    """

    status: int
    headers: CIMultiDictProxy[str]
    data: Any
    url: str
    links: dict[str, URL]
    rate_limit_remaining: float | None
    request_cost: float | None

    @property
    def next_url(self) -> URL | None:
        """The ``rel="next"`` link, if any."""
        return self.links.get("next")


def route_template(path: str) -> str:
    """Return the route of *path* with ids replaced: ``/api/v1/courses/:id/enrollments``."""
    return _ID_SEGMENT.sub(":id", path)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CanvasClient:
    """An async Canvas API client that paces, retries and classifies.

    Use it as an async context manager::

        async with CanvasClient("https://canvas.example.edu", token) as canvas:
            course = await canvas.get("courses/101")
            async for enrollment in canvas.paginate("courses/101/enrollments"):
                ...

    Args:
        base_url: The Canvas root (``https://canvas.example.edu``). The token is
            only ever sent to this origin.
        access_token: The API access token.
        policy: Retry policy; the default retries transient failures for up to
            ten attempts within two minutes.
        throttle: ``"shared"`` (default) paces with the process-wide throttle
            for this token and origin; a :class:`Throttle` uses that one; None
            disables pacing.
        timeout: aiohttp timeouts for connecting and reading; the per-attempt
            total comes from the policy.
        per_page: ``per_page`` sent by :meth:`paginate` (Canvas caps it at 100).
        session: An aiohttp session to use; it is left open on close.
        user_agent: The User-Agent header.
        clock: Time source for deadlines (inject a fake one in tests).
        sleep: How waits pass.
        redis_url: With the shared throttle, keep its state in Redis so that
            every process using this token paces together.
        max_body_size: Largest response body read, in bytes; a larger one
            raises ``InvalidResponse`` instead of filling memory.

    Raises:
        ValueError: If *base_url* is not an absolute http(s) URL or the token is empty.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | AccessToken,
        *,
        policy: RetryPolicy | None = None,
        throttle: Throttle | Literal["shared"] | None = "shared",
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        per_page: int = 100,
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        redis_url: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        # Wrapped first and the bare string dropped: a traceback that shows
        # frame locals (structlog, rich) would otherwise print it.
        token = access_token if isinstance(access_token, AccessToken) else AccessToken(access_token)
        del access_token
        base = URL(base_url)
        if not base.is_absolute() or base.scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an absolute http(s) URL, not {base_url!r}.")
        if max_body_size < 1:
            raise ValueError(f"max_body_size must be positive, not {max_body_size}.")
        if not 1 <= per_page <= 100:
            raise ValueError(f"per_page must be between 1 and 100, not {per_page}.")
        if base.scheme == "http" and not _is_loopback(base.host):
            warnings.warn(
                f"{base.origin()} is plain http: the access token would cross the network "
                "unencrypted. Use https.",
                InsecureURLWarning,
                stacklevel=2,
            )
        self._base = (
            base.with_path(base.path.rstrip("/") or "/").with_query(None).with_fragment(None)
        )
        self._origin = origin_of(base)
        self._token = token
        self.fingerprint = token.fingerprint
        self.policy = policy or RetryPolicy()
        budget = RetryBudget(self.policy.budget)
        self.throttle = (
            throttle_for(base, token.reveal(), redis_url=redis_url, budget=budget)
            if throttle == "shared"
            else throttle
        )
        #: Shared by every call of this client (the throttle's, when there is one),
        #: so an outage cannot turn into a retry storm.
        self.budget = self.throttle.budget if self.throttle else budget
        self.per_page = per_page
        self.max_body_size = max_body_size
        self._timeout = timeout
        self._user_agent = user_agent or "resilient-canvas"
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._sleep = sleep
        self._state = ClientState.UNOPENED
        self._resolved: dict[str, URL] = {}

    def __repr__(self) -> str:
        return (
            f"CanvasClient(base_url={str(self._base)!r}, token=<sha256:{self.fingerprint}>, "
            f"state={self._state.name.lower()})"
        )

    @property
    def base_url(self) -> str:
        """The Canvas root URL."""
        return str(self._base)

    @property
    def state(self) -> ClientState:
        """Where the client is in its lifecycle."""
        return self._state

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> CanvasClient:
        if self._state is not ClientState.UNOPENED:
            raise RuntimeError(
                "A CanvasClient cannot be opened twice; create a new client instead."
            )
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("This CanvasClient is closed; create a new one.")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": self._user_agent}
            )
        self._state = ClientState.OPENED
        return self._session

    async def aclose(self) -> None:
        """Close the client and the session it created. Safe to call twice."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        if self._owns_session and self._session is not None:
            await self._session.close()

    def __del__(self) -> None:
        if getattr(self, "_state", None) is ClientState.OPENED and self._owns_session:
            warnings.warn(
                f"{self!r} was never closed; use 'async with' or await aclose().",
                ResourceWarning,
                stacklevel=1,
            )

    # --------------------------------------------------------------- requests

    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> CanvasResponse:
        """Send one request with pacing, retries and classification.

        Args:
            method: The HTTP method.
            path: Relative to ``/api/v1/`` (``"courses/1"``), an absolute path
                (``"/api/v1/courses/1"``), or a full URL on the base origin.
            params: Query parameters, nested as Canvas expects.
            data: Form body parameters, nested as Canvas expects.
            json: A JSON body (instead of *data*).
            idempotent: Declare whether the request may be repeated after a
                failure that may have been applied; by default, by method.

        Returns:
            The decoded response.

        Raises:
            CanvasException: The classified failure once retrying stopped.
            ValueError: If *path* names another origin than the base URL.
            RuntimeError: If the client is closed.
        """
        url = self._resolve(path)
        return await self._send(method.upper(), url, params, data, json, idempotent)

    async def get(self, path: str | URL, *, params: Params | None = None) -> Any:
        """GET *path* and return its decoded JSON."""
        return (await self._send("GET", self._resolve(path), params, None, None, None)).data

    async def post(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """POST and return the decoded JSON. Not repeated after a possibly applied failure."""
        url = self._resolve(path)
        return (await self._send("POST", url, params, data, json, idempotent)).data

    async def put(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
    ) -> Any:
        """PUT and return the decoded JSON."""
        return (await self._send("PUT", self._resolve(path), params, data, json, None)).data

    async def patch(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """PATCH and return the decoded JSON."""
        url = self._resolve(path)
        return (await self._send("PATCH", url, params, data, json, idempotent)).data

    async def delete(self, path: str | URL, *, params: Params | None = None) -> Any:
        """DELETE and return the decoded JSON."""
        return (await self._send("DELETE", self._resolve(path), params, None, None, None)).data

    async def paginate(
        self, path: str | URL, *, params: Params | None = None, per_page: int | None = None
    ) -> AsyncIterator[Any]:
        """Yield every item of a paginated listing, following ``rel="next"`` links.

        Each page is fetched (and retried) on its own, so a failure late in a
        long listing does not restart it. Items are streamed: memory stays flat
        however many pages there are.

        Raises:
            InvalidResponse: If a next link leaves the base origin, or Canvas
                serves a page twice (which would loop forever).
            CanvasException: A page failed and retrying stopped.
        """
        query = [*encode_params(params), ("per_page", str(per_page or self.per_page))]
        url: URL | None = self._resolve(path)
        first = True
        # Hashes, not URLs: a listing of 100,000 pages keeps a few MB at most.
        visited: set[int] = set()
        previous: list[Any] = []
        while url is not None:
            response = await self._send("GET", url, query if first else None, None, None, None)
            first = False
            visited.add(hash(str(url)))
            items = _page_items(response.data)
            # Comparing with the previous page usually decides on its first item.
            if items and items == previous:
                raise InvalidResponse(
                    f"Canvas served the same page twice at {redact_url(url)}; stopping "
                    "instead of looping forever."
                )
            previous = items
            for item in items:
                yield item
            url = self._next_page(response, visited)

    async def map(
        self,
        func: Callable[[T], Awaitable[R]],
        items: Iterable[T],
        *,
        concurrency: int | None = None,
        on_progress: Callable[[BulkProgress], None] | None = None,
    ) -> BulkResult[T, R]:
        """Run *func* over *items* with bounded concurrency; keep every outcome.

        Pacing is left to the throttle; *concurrency* only bounds how many
        calls are started at once (default: the throttle's hard cap, or 16).

        Returns:
            Every item's result or classified error, in the items' order.
        """
        limit = concurrency or (self.throttle.config.max_in_flight if self.throttle else 16)
        return await run_bulk(func, items, concurrency=limit, on_progress=on_progress)

    async def wait_for_progress(
        self,
        progress: Mapping[str, Any] | int | str,
        *,
        poll_every: float = 1.0,
        within: float = 600.0,
    ) -> dict[str, Any]:
        """Poll a Canvas ``Progress`` (from ``update_grades`` and friends) until it ends.

        Args:
            progress: The Progress object a call returned, or its id.
            poll_every: Seconds between polls (each poll is retried as usual).
            within: Seconds to wait for the job in all, on the client's clock.

        Returns:
            The final Progress, ``workflow_state == "completed"``.

        Raises:
            ProgressFailed: The job ended in ``failed``; its message is kept.
            RequestTimeout: The job had not ended within *within* seconds; it
                may still complete.
        """
        if poll_every <= 0 or within <= 0:
            raise ValueError("poll_every and within must be positive.")
        progress_id = progress.get("id") if isinstance(progress, Mapping) else progress
        if progress_id is None:
            raise ValueError("A Progress object needs an 'id'.")
        started = self._clock()
        while True:
            state = await self.get(f"progress/{progress_id}")
            workflow = state.get("workflow_state") if isinstance(state, Mapping) else None
            if workflow == "completed":
                return dict(state)
            if workflow == "failed":
                error = ProgressFailed(
                    f"Canvas job {progress_id} failed: {state.get('message') or 'no message'}.",
                    context={"progress_id": progress_id},
                )
                error.extra["progress"] = dict(state)
                raise error
            if self._clock() - started + poll_every > within:
                raise RequestTimeout(
                    f"Canvas job {progress_id} had not finished within {within:g} s "
                    f"(last state: {workflow}); it may still complete.",
                    context={"progress_id": progress_id},
                )
            await self._sleep(poll_every)

    # ---------------------------------------------------------------- internals

    def _resolve(self, path: str | URL) -> URL:
        key = str(path)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolve_uncached(key)
            if len(self._resolved) < _RESOLVE_CACHE_SIZE:
                self._resolved[key] = resolved
        return resolved

    def _resolve_uncached(self, path: str) -> URL:
        target = URL(path)
        if target.is_absolute():
            if origin_of(target) != self._origin:
                raise ValueError(
                    f"Refusing to send the access token to {target.origin()}: this client "
                    f"only talks to {self._base.origin()}."
                )
            return target
        text = str(path)
        if not text.startswith("/"):
            text = API_PREFIX + text
        return self._base.join(URL(text))

    def _next_page(self, response: CanvasResponse, visited: set[int]) -> URL | None:
        next_url = response.next_url
        if next_url is None:
            return None
        if not next_url.is_absolute():
            next_url = self._base.join(next_url)
        if origin_of(next_url) != self._origin:
            raise InvalidResponse(
                f"The Link header of {response.url} points to {next_url.origin()}, another "
                "origin; the access token is never sent there."
            )
        if hash(str(next_url)) in visited:
            raise InvalidResponse(
                f"Canvas's next link repeats a page already read ({redact_url(next_url)}); "
                "stopping instead of looping forever."
            )
        return next_url

    async def _send(
        self,
        method: str,
        url: URL,
        params: Params | None,
        data: Params | None,
        json_body: Any,
        idempotent: bool | None,
    ) -> CanvasResponse:
        session = self._session if self._state is ClientState.OPENED else self._open()
        assert session is not None
        query = encode_params(params)
        form = encode_params(data) if data is not None else None
        safe_url = redact_url(url.update_query(query) if query else url) or ""
        info = CallInfo(
            method=method,
            url=safe_url,
            route=f"{method} {route_template(url.path)}",
            idempotent=idempotent,
            token=self.fingerprint,
        )

        async def attempt() -> CanvasResponse:
            async with session.request(
                method,
                url,
                params=query or None,
                data=form,
                json=json_body,
                headers={"Authorization": self._token.authorization()},
            ) as response:
                body = await _read_body(response, self.max_body_size, method, safe_url)
                if response.status >= 400:
                    raise classify_response(
                        response.status, response.headers, body, method=method, url=safe_url
                    )
                return _decode(response, body, method, safe_url)

        return await call_with_retries(
            attempt,
            policy=self.policy,
            throttle=self.throttle,
            budget=self.budget,
            info=info,
            observe=_observation,
            clock=self._clock,
            sleep=self._sleep,
        )


def _observation(response: CanvasResponse) -> Observation:
    return Observation(remaining=response.rate_limit_remaining, cost=response.request_cost)


async def _read_body(response: aiohttp.ClientResponse, limit: int, method: str, url: str) -> bytes:
    """Read the body, refusing one larger than *limit* instead of filling memory."""
    declared = response.content_length
    if declared is not None and declared <= limit:
        return await response.read()
    body = bytearray()
    if declared is None:
        while chunk := await response.content.read(_CHUNK):
            body += chunk
            if len(body) > limit:
                break
    if declared is None and len(body) <= limit:
        return bytes(body)
    error = InvalidResponse(
        f"{method} {url} answered with a body larger than {limit:,} bytes; it was not read. "
        "Raise max_body_size if this is expected."
    )
    error.method, error.url, error.request_sent = method, url, True
    raise error


def _decode(response: aiohttp.ClientResponse, body: bytes, method: str, url: str) -> CanvasResponse:
    data: Any = None
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            error = InvalidResponse(
                f"{method} {url} answered {response.status} with a body that is not valid JSON "
                f"({exc}). The request may have been applied."
            )
            error.method, error.url, error.request_sent = method, url, True
            error.extra.update({"body_excerpt": body[:500].decode("utf-8", errors="replace")})
            raise error from exc
    links: dict[Any, Any] = {}
    if "Link" in response.headers:
        try:
            links = {rel: link["url"] for rel, link in response.links.items() if "url" in link}
        except (ValueError, TypeError, KeyError):
            links = {}
    view = ResponseHeaders.parse(response.headers)
    return CanvasResponse(
        status=response.status,
        headers=response.headers,
        data=data,
        url=url,
        links={str(rel).lower(): URL(str(link)) for rel, link in links.items()},
        rate_limit_remaining=view.rate_limit_remaining,
        request_cost=view.request_cost,
    )


def _page_items(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    # A few Canvas listings wrap their page: {"enrollment_terms": [...]}.
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    if data is None:
        return []
    raise InvalidResponse("A paginated Canvas listing answered with something other than a list.")
