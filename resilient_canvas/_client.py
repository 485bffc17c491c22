"""``CanvasClient``: the async context-manager client most users touch."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import ipaddress
import json
import os
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from resilient_canvas import _files, _graphql, _sis
from resilient_canvas._agent import build_user_agent
from resilient_canvas._api import ContentFactory
from resilient_canvas._body import read_body, read_error_body, too_large
from resilient_canvas._breaker import Circuit
from resilient_canvas._bulk import BulkProgress, BulkResult, run_bulk
from resilient_canvas._checks import BUILTIN_RECONCILERS, IDEMPOTENCY_ROUTES, known_idempotency
from resilient_canvas._encoding import Params, encode_params
from resilient_canvas._http import (
    origin_of,
    quota_of,
    redact_url,
    strip_json_guard,
)
from resilient_canvas._jobs import JobKind, JobWait, wait_for_job
from resilient_canvas._links import parse_links
from resilient_canvas._oauth import RefreshToken, TokenProvider, is_expired_token, token_source
from resilient_canvas._policy import RetryPolicy, Seconds
from resilient_canvas._policy import seconds as in_seconds
from resilient_canvas._reconcile import Described, Reconciler, Settle, Write, raise_again
from resilient_canvas._reconcile import reconcile as reconcile_write
from resilient_canvas._registry import budget_for, circuit_for, throttle_for
from resilient_canvas._retry import CallInfo, Clock, Sleep, call_with_retries
from resilient_canvas._secret import AccessToken
from resilient_canvas._sis import SisImportResult
from resilient_canvas._source import ProgressCallback, Uploadable
from resilient_canvas._store import StoreContext, post_form
from resilient_canvas._throttle import Observation, Throttle
from resilient_canvas.exceptions import (
    CanvasException,
    InvalidResponse,
    ProgressFailed,
    TransportError,
    classify_response,
)

T = TypeVar("T")
R = TypeVar("R")

#: A timeout as aiohttp takes it, or seconds (a number or a ``timedelta``) for
#: both connecting and each read, as httpx reads ``timeout=5.0``.
Timeout = aiohttp.ClientTimeout | float | dt.timedelta | None

API_PREFIX = "/api/v1/"
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0)
#: Largest body read by default, once decoded; a Canvas page of 100 items is a
#: few megabytes at most. It is also what a hostile body (a gzip bomb) can
#: cost before it is refused; raise it to download larger files or reports.
DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
#: JSON first (Canvas guards JSON with ``while(1);`` for clients that do not
#: ask for it), anything else after: request() also reads CSV reports.
_ACCEPT = "application/json, */*;q=0.5"
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


#: Every request reads these: looked up once, since reading a member through
#: its enum class costs ~0.1 us on Python 3.11 (the metaclass's __getattr__).
_OPENED, _CLOSED = ClientState.OPENED, ClientState.CLOSED


@dataclass(frozen=True, slots=True)
class CanvasResponse:
    """A Canvas response.

    Attributes:
        status: The HTTP status.
        headers: The response headers.
        data: The decoded JSON body; None for an empty body, or for a body
            that is not JSON when it came from :meth:`CanvasClient.request`.
        url: The request URL without credentials.
        links: Link header URLs by relation (``next``, ``last``...), absolute.
        rate_limit_remaining: ``X-Rate-Limit-Remaining``, if sent.
        request_cost: ``X-Request-Cost``, if sent.
        content: The body as bytes (decoded from gzip, deflate or br): a CSV
            report or a file downloaded with :meth:`CanvasClient.request`.
        link_errors: Why a relation of the ``Link`` header could not be used
            (malformed, not http(s), two targets), by relation.
        reconciled: True when this is not the write's own answer but what a
            check found after the write's outcome was unknown (then only
            ``data``, ``status`` and ``url`` are meaningful).
    """

    status: int
    headers: CIMultiDictProxy[str]
    data: Any
    url: str
    links: dict[str, URL]
    rate_limit_remaining: float | None
    request_cost: float | None
    content: bytes = b""
    link_errors: dict[str, str] = dataclasses.field(default_factory=dict)
    reconciled: bool = False

    @property
    def next_url(self) -> URL | None:
        """The ``rel="next"`` link, if any."""
        return self.links.get("next")

    def text(self, encoding: str | None = None) -> str:
        """The body as text, in *encoding*, else the charset sent, else UTF-8.

        Bytes that do not decode are replaced, never raised on.
        """
        charset = encoding or _charset(self.headers.get("Content-Type", "")) or "utf-8"
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")


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
        access_token: The API access token; or, for tokens Canvas expires
            (OAuth2, LTI), a :class:`RefreshToken` configuration or a function
            (sync or async) returning a fresh token: on 401 "Expired access
            token." the client refreshes once for all concurrent calls and
            repeats them.
        policy: Retry policy; the default retries transient failures for up to
            ten attempts within two minutes.
        throttle: ``"shared"`` (default) paces with the process-wide throttle
            for this token and origin; a :class:`Throttle` uses that one; None
            disables pacing.
        timeout: Seconds (a number or a ``timedelta``) allowed for connecting
            and for each read, or an ``aiohttp.ClientTimeout``; None for none.
            The per-attempt total comes from the policy. Applied to every
            request, also with a session of your own.
        per_page: ``per_page`` sent by :meth:`paginate` (Canvas caps it at
            100) unless the call's params name one.
        session: An aiohttp session to use; it is left open on close.
        user_agent: Your product and a contact (``"gradesync/2.1
            (it@school.edu)"``), as Instructure asks; sent in front of
            resilient-canvas's own User-Agent with every request (also with a
            session of your own). Canvas refuses requests without one.
        clock: Time source for deadlines (inject a fake one in tests).
        sleep: How waits pass.
        redis_url: With the shared throttle, keep its state in Redis so that
            every process using this token paces together; the shared
            circuit breaker then lives there too, for every process on the
            origin.
        breaker: ``"shared"`` (default) holds calls while this Canvas origin
            is down, with the circuit breaker every client on the origin
            shares (through Redis when the throttle is a
            :class:`RedisThrottle`); a :class:`CircuitBreaker` uses that one;
            None disables it.
        max_body_size: Largest response body read, in bytes once decoded
            (32 MiB); a larger one raises ``InvalidResponse`` instead of
            filling memory. Error bodies keep only their first 64 KiB.
        reconcilers: Checks for writes whose outcome is unknown, by route
            template (``"POST /api/v1/courses/:id/enrollments"``), over the
            built-in ones; None for a route turns its built-in check off
            (docs/write-safety.md).

    Raises:
        ValueError: If *base_url* is not an absolute http(s) URL or the token is empty.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str | AccessToken | RefreshToken | TokenProvider,
        *,
        policy: RetryPolicy | None = None,
        throttle: Throttle | Literal["shared"] | None = "shared",
        timeout: Timeout = DEFAULT_TIMEOUT,
        per_page: int = 100,
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        redis_url: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        breaker: Circuit | Literal["shared"] | None = "shared",
        reconcilers: Mapping[str, Reconciler | None] | None = None,
    ) -> None:
        # Wrapped first and the bare string dropped: a traceback that shows
        # frame locals (structlog, rich) would otherwise print it.
        credential = AccessToken(access_token) if isinstance(access_token, str) else access_token
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
        #: Canvas served under a path (``https://host/canvas/``): every API path
        #: lives below it. The base keeps a trailing slash so that a relative
        #: reference resolves below the prefix too.
        self._prefix = base.path.rstrip("/")
        self._base = base.with_path(self._prefix + "/").with_query(None).with_fragment(None)
        self._origin = origin_of(base)
        # The current token, refreshed on "Expired access token." when it can be
        # (docs/client.md); its identity (the token itself when static) keys the
        # throttle, so a refresh keeps the bucket.
        self._token = token_source(
            credential,
            token_url=str(self._base.join(URL("login/oauth2/token"))),
            send=lambda url, form: post_form(self._store_context(), URL(url), form),
        )
        self.fingerprint = self._token.fingerprint
        self.policy = policy or RetryPolicy()
        self.throttle = (
            throttle_for(base, self._token.identity.reveal(), redis_url=redis_url)
            if throttle == "shared"
            else throttle
        )
        #: Shared by every client of this token on this Canvas, so an outage
        #: cannot turn into a retry storm.
        self.budget = budget_for(base, self._token.identity.reveal(), self.policy.budget)
        #: The origin's circuit breaker: holds calls while Canvas is down;
        #: shared through Redis when the throttle is.
        self.breaker = (
            circuit_for(self._origin, self.throttle, clock) if breaker == "shared" else breaker
        )
        self.per_page = per_page
        self.max_body_size = max_body_size
        self._timeout = client_timeout(timeout)
        self._user_agent = build_user_agent(user_agent)
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._sleep = sleep
        self._state = ClientState.UNOPENED
        self._resolved: dict[str, URL] = {}
        #: Each URL's text without credentials, and its path's route template.
        self._described: dict[URL, tuple[str, str]] = {}
        self.reconcilers = _reconcilers(reconcilers)

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
            # Timeout and User-Agent go with each request: a caller's session
            # gets them too.
            self._session = aiohttp.ClientSession()
            # aiohttp silently resends a GET, PUT or DELETE once when the
            # connection drops, even one declared idempotent=False: the retry
            # layer alone decides what is repeated (a caller's session keeps
            # aiohttp's behaviour).
            self._session._retry_connection = False
        self._state = ClientState.OPENED
        return self._session

    async def aclose(self) -> None:
        """Close the client and the session it created. Safe to call twice.

        Calls still in flight are not waited for: their connections close and
        each fails with a :class:`TransportError` saying the client was closed
        (not retried). Await every call before closing.
        """
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
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
        content: ContentFactory | None = None,
        follow_redirects: bool = True,
        reconcile: Reconciler | None = None,
    ) -> CanvasResponse:
        """Send one request with pacing, retries and classification.

        Unlike the verbs, which promise JSON, this returns any successful
        answer: a body that is not JSON (a CSV report, a file) leaves ``data``
        None and is read from ``content`` or ``text()``. A body declared
        ``application/json`` that does not decode still raises.

        Args:
            method: The HTTP method.
            path: Relative to ``/api/v1/`` (``"courses/1"``), an absolute path
                (``"/api/v1/courses/1"``), or a full URL on the base origin.
            params: Query parameters, nested as Canvas expects.
            data: Form body parameters, nested as Canvas expects.
            json: A JSON body (instead of *data*).
            idempotent: Declare whether the request may be repeated after a
                failure that may have been applied; by default, by method.
            timeout: This call's connect and read timeouts (see the client's
                ``timeout``); None uses the client's.
            deadline: Seconds allowed for the whole call, retries and waits
                included; None uses the policy's.
            content: A body sent as is (instead of *data* or *json*): a
                function returning an aiohttp payload, called once per
                attempt so that a retry sends the whole body again.
            follow_redirects: False returns a 3xx answer (its ``Location`` in
                ``headers``) instead of following it.
            reconcile: The check to run if this write's outcome is unknown;
                None uses the client's check for the route, if any.

        Returns:
            The response.

        Raises:
            CanvasException: The classified failure once retrying stopped.
            ValueError: If *path* names another origin than the base URL.
            RuntimeError: If the client is closed.
        """
        url = self._resolve(path)
        call = _call_options(idempotent, timeout, deadline, expect_json=False, reconcile=reconcile)
        if content is not None or not follow_redirects:
            call = dataclasses.replace(call, content=content, follow_redirects=follow_redirects)
        return await self._send(method.upper(), url, params, data, json, call)

    async def get(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
    ) -> Any:
        """GET *path* and return its decoded JSON (see :meth:`request` for the options)."""
        call = _call_options(idempotent, timeout, deadline)
        return (await self._send("GET", self._resolve(path), params, None, None, call)).data

    async def post(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
        reconcile: Reconciler | None = None,
    ) -> Any:
        """POST and return the decoded JSON.

        Never repeated blindly after a failure that may have been applied: with
        a check (*reconcile*, or the client's for the route) the write is
        looked up, then returned if found or repeated once if not; without
        one the failure is raised (docs/write-safety.md).
        """
        call = _call_options(idempotent, timeout, deadline, reconcile=reconcile)
        return (await self._send("POST", self._resolve(path), params, data, json, call)).data

    async def put(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
    ) -> Any:
        """PUT and return the decoded JSON."""
        call = _call_options(idempotent, timeout, deadline)
        return (await self._send("PUT", self._resolve(path), params, data, json, call)).data

    async def patch(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
    ) -> Any:
        """PATCH and return the decoded JSON."""
        call = _call_options(idempotent, timeout, deadline)
        return (await self._send("PATCH", self._resolve(path), params, data, json, call)).data

    async def delete(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
    ) -> Any:
        """DELETE and return the decoded JSON."""
        call = _call_options(idempotent, timeout, deadline)
        return (await self._send("DELETE", self._resolve(path), params, None, None, call)).data

    async def paginate(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        per_page: int | None = None,
        max_pages: int | None = None,
        timeout: Timeout = None,  # noqa: ASYNC109 - httpx's per-call timeout=
        deadline: Seconds | None = None,
    ) -> AsyncIterator[Any]:
        """Yield every item of a paginated listing, following ``rel="next"`` links.

        Each page is fetched (and retried) on its own, so a failure late in a
        long listing does not restart it. Items are streamed: memory stays flat
        however many pages there are.

        Args:
            path: The listing, as for :meth:`request`.
            params: Query parameters of the first page; a ``per_page`` here wins.
            per_page: Items per page when *params* has none (default: the client's).
            max_pages: Most pages read; a listing still offering a next page
                after that raises instead of going on (a server that pages
                forever). None: no limit.
            timeout: Each page request's connect and read timeouts.
            deadline: Seconds allowed for each page, its retries included.

        Raises:
            InvalidResponse: If a next link is malformed, not http(s), leaves
                the base origin, or repeats a page; if Canvas serves the same
                page twice; or if the listing outlasts *max_pages*.
            CanvasException: A page failed and retrying stopped.
        """
        if max_pages is not None and max_pages < 1:
            raise ValueError(f"max_pages must be at least 1, not {max_pages}.")
        first = self._resolve(path)
        query = encode_params(params)
        # One per_page, and the caller's: Canvas (Rails) reads the last of two.
        if "per_page" not in first.query and all(key != "per_page" for key, _ in query):
            query.append(("per_page", str(per_page or self.per_page)))
        url: URL | None = first
        call = _call_options(None, timeout, deadline)
        pages = 0
        # Hashes, not URLs: a listing of 100,000 pages keeps a few MB at most.
        visited: set[int] = set()
        previous: list[Any] = []
        while url is not None:
            if max_pages is not None and pages == max_pages:
                raise _listing_error(
                    f"The listing at {redact_url(url)} still had a next page after "
                    f"max_pages={max_pages} pages; stopping. Raise max_pages if it is "
                    "really this long.",
                    url,
                )
            response = await self._send("GET", url, query if pages == 0 else None, None, None, call)
            pages += 1
            visited.add(hash(str(url)))
            items = _page_items(response.data)
            # Comparing with the previous page usually decides on its first item.
            if items and items == previous:
                raise _listing_error(
                    f"Canvas served the same page twice at {redact_url(url)}; stopping "
                    "instead of looping forever.",
                    url,
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
        poll_every: Seconds = 1.0,
        within: Seconds = 600.0,
        max_poll_every: Seconds | None = 30.0,
        backoff: float = 1.5,
        stuck_after: Seconds | None = 300.0,
    ) -> dict[str, Any]:
        """Poll a Canvas ``Progress`` (from ``update_grades`` and friends) until it ends.

        Polls grow apart (*poll_every*, times *backoff*, up to *max_poll_every*)
        within a deadline, and a job that stops changing is reported stuck.

        Args:
            progress: The Progress object a call returned, or its id.
            poll_every: Seconds before the second poll (each poll is retried as usual).
            within: Seconds to wait for the job in all, on the client's clock.
            max_poll_every: Longest wait between polls.
            backoff: Factor between successive waits (1 for a steady pace).
            stuck_after: Seconds without a change of state or completion after
                which the job counts as stuck; None to wait for the deadline.

        Returns:
            The final Progress, ``workflow_state == "completed"``.

        Raises:
            ProgressFailed: The job ended in ``failed``; its message is kept.
            JobStuck: Nothing changed for *stuck_after* seconds.
            RequestTimeout: The job had not ended within *within* seconds; it
                may still complete.
        """
        wait = JobWait.of(
            poll_every=poll_every,
            max_poll_every=max_poll_every,
            backoff=backoff,
            within=within,
            stuck_after=stuck_after,
        )
        progress_id = progress.get("id") if isinstance(progress, Mapping) else progress
        if progress_id is None:
            raise ValueError("A Progress object needs an 'id'.")

        async def fetch() -> Any:
            return await self.get(f"progress/{progress_id}")

        return await wait_for_job(
            fetch,
            kind=_PROGRESS_JOB,
            job_id=progress_id,
            wait=wait,
            clock=self._clock,
            sleep=self._sleep,
        )

    # ---------------------------------------------------------------- workflows
    # Thin delegations: each workflow lives in its own module (docs/files.md,
    # docs/graphql.md, docs/sis.md) and sends through request().

    async def upload(
        self,
        file: Uploadable,
        *,
        to: str,
        name: str | None = None,
        content_type: str | None = None,
        on_progress: ProgressCallback | None = None,
        deadline: Seconds | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Upload a file with Canvas's three-step upload; return the File.

        Args:
            file: A path, bytes or a binary file object (read from its
                position), streamed: memory stays flat for any size.
            to: The Canvas endpoint of step 1: ``"courses/1/files"``,
                ``"users/self/files"``, ``"courses/1/assignments/2/submissions/self/files"``...
            name: The file's name in Canvas (default: the path's name).
            content_type: Its type (default: guessed from the name).
            on_progress: Called with (bytes sent, total) as the file is sent.
            deadline: Seconds for the whole upload, retries included (1 hour).
            **params: More step-1 parameters: ``parent_folder_path``, ``on_duplicate``...

        Raises:
            InvalidResponse: Canvas or the store answered something unusable
                (an upload_url that is not http(s), HTML from the store).
            CanvasException: The classified failure once retrying stopped.
        """
        return await _files.upload(
            self,
            file,
            to=to,
            name=name,
            content_type=content_type,
            on_progress=on_progress,
            deadline=deadline,
            params=params,
        )

    async def download(
        self,
        file_or_url: Mapping[str, Any] | str | URL,
        dest: str | os.PathLike[str],
        *,
        on_progress: ProgressCallback | None = None,
        deadline: Seconds | None = None,
    ) -> Path:
        """Download a File (or its ``url``) to *dest*, a path or a directory; return the path.

        The file store gets no token; the bytes go to a temporary file renamed
        over *dest* only when complete, and a dropped connection resumes with
        ``Range`` when the store supports it.

        Raises:
            LocalFileError: Not enough disk space (nothing is left behind).
            CanvasException: The classified failure once retrying stopped.
        """
        return await _files.download(
            self, file_or_url, dest, on_progress=on_progress, deadline=deadline
        )

    async def graphql(
        self, query: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run a GraphQL query (``POST /api/graphql``, same throttle as REST); return ``data``.

        Raises:
            GraphQLError: Canvas answered with ``errors`` (kept on the exception).
            InvalidResponse: The answer is not a GraphQL response.
        """
        return await _graphql.graphql(self, query, variables)

    def graphql_nodes(
        self,
        query: str,
        *,
        connection: str | Sequence[str],
        variables: Mapping[str, Any] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Any]:
        """Yield every node of a GraphQL connection, following ``pageInfo.endCursor``.

        The query takes ``$first: Int`` and ``$after: String`` and passes them
        to the connection found at *connection* (``"course.enrollmentsConnection"``).
        See docs/graphql.md.
        """
        return _graphql.graphql_nodes(
            self, query, connection=connection, variables=variables, page_size=page_size
        )

    async def start_sis_import(
        self,
        account: int | str,
        file: Uploadable,
        *,
        import_type: str = "instructure_csv",
        extension: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Start an SIS import of a CSV or zip *file* (streamed); return the SIS import object.

        Args:
            account: The account id (``1``, ``"self"``, ``"sis_account_id:x"``).
            file: A path, bytes or a binary file.
            import_type: Canvas's ``import_type``.
            extension: ``"csv"`` or ``"zip"``; by default from the file's name.
            **params: More parameters (``batch_mode``, ``override_sis_stickiness``...).

        Not repeated after a failure that may have been applied (it could
        start a second import). See docs/sis.md.
        """
        return await _sis.start_sis_import(
            self, account, file, import_type=import_type, extension=extension, params=params
        )

    async def wait_for_sis_import(
        self,
        account: int | str,
        sis_import: Mapping[str, Any] | int | str,
        *,
        poll_every: Seconds = 2.0,
        within: Seconds = 3600.0,
        max_poll_every: Seconds | None = 60.0,
        backoff: float = 1.5,
        stuck_after: Seconds | None = 900.0,
        on_poll: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> SisImportResult:
        """Wait for an SIS import to end; return its result (warnings on ``warnings``).

        Options as for :meth:`wait_for_progress`; an import's progress is its
        ``progress`` percentage. *on_poll* sees each polled import (for a
        progress display).

        Raises:
            SisImportFailed: It ended ``failed``, ``failed_with_messages`` or
                ``aborted``; Canvas's ``processing_errors`` are on ``errors``.
            JobStuck: Nothing changed for *stuck_after* seconds.
            RequestTimeout: It had not ended within *within* seconds.
        """
        wait = JobWait.of(
            poll_every=poll_every,
            max_poll_every=max_poll_every,
            backoff=backoff,
            within=within,
            stuck_after=stuck_after,
        )
        return await _sis.wait_for_sis_import(
            self,
            account,
            sis_import,
            wait=wait,
            clock=self._clock,
            sleep=self._sleep,
            on_poll=on_poll,
        )

    def _store_context(self) -> StoreContext:
        """What requests to the file store need: the session, never the token."""
        session = self._session if self._state is ClientState.OPENED else self._open()
        assert session is not None
        return StoreContext(
            session=session,
            user_agent=self._user_agent,
            policy=self.policy,
            budget=self.budget,
            clock=self._clock,
            sleep=self._sleep,
            canvas_origin=self._origin,
        )

    # ---------------------------------------------------------------- internals

    def _closed(self) -> bool:
        return self._state is _CLOSED

    def _resolve(self, path: str | URL) -> URL:
        key = str(path)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolve_uncached(key)
            if len(self._resolved) < _RESOLVE_CACHE_SIZE:
                self._resolved[key] = resolved
        return resolved

    def _describe(self, url: URL) -> tuple[str, str]:
        """*url* as text without credentials, and its route template (both per request)."""
        described = self._described.get(url)
        if described is None:
            described = (redact_url(url) or "", route_template(url.path))
            if len(self._described) < _RESOLVE_CACHE_SIZE:
                self._described[url] = described
        return described

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
        # Under a path prefix, "/api/v1/..." is below it, not at the host's root.
        if self._prefix and not text.startswith(self._prefix + "/"):
            text = self._prefix + text
        return self._base.join(URL(text))

    def _next_page(self, response: CanvasResponse, visited: set[int]) -> URL | None:
        problem = response.link_errors.get("next")
        if problem is not None:
            raise _listing_error(
                f"The Link header of {response.url} has a next entry that cannot be "
                f"followed: {problem}. Stopping rather than returning part of the listing.",
                response.url,
            )
        next_url = response.next_url
        if next_url is None:
            return None
        if origin_of(next_url) != self._origin:
            raise _listing_error(
                f"The Link header of {response.url} points to {next_url.origin()}, another "
                "origin; the access token is never sent there.",
                response.url,
            )
        if hash(str(next_url)) in visited:
            raise _listing_error(
                f"Canvas's next link repeats a page already read ({redact_url(next_url)}); "
                "stopping instead of looping forever.",
                response.url,
            )
        return next_url

    def _send(
        self,
        method: str,
        url: URL,
        params: Params | None,
        data: Params | None,
        json_body: Any,
        call: _Call,
    ) -> Awaitable[CanvasResponse]:
        """Start one call (await the result): a plain function, one coroutine layer fewer."""
        session = self._session if self._state is _OPENED else self._open()
        assert session is not None
        query = encode_params(params)
        form = encode_params(data) if data is not None else None
        safe_url, template = self._describe(url)
        if query:
            safe_url = redact_url(url.update_query(query)) or ""
        route = f"{method} {template}"
        idempotent = call.idempotent
        if idempotent is None and route in IDEMPOTENCY_ROUTES:
            body = form if form is not None else encode_params(_mapping_or_none(json_body))
            idempotent = known_idempotency(route, body)
        info = CallInfo(
            method=method,
            url=safe_url,
            route=route,
            idempotent=idempotent,
            token=self.fingerprint,
        )
        timeout = self._timeout if call.timeout is None else client_timeout(call.timeout)
        policy = self.policy
        if call.deadline is not None:
            policy = dataclasses.replace(policy, deadline=call.deadline)

        async def attempt() -> CanvasResponse:
            if self._closed():
                raise _closed_error(method, safe_url, None)
            tokens = self._token
            seen = await tokens.ready() if tokens.refreshable else 0
            try:
                outcome = await self._exchange(
                    session, method, url, query, form, json_body, timeout, safe_url, call
                )
                if tokens.refreshable and is_expired_token(outcome):
                    # One refresh for every call that met the expiry, then the
                    # call again: a 401 was never applied.
                    await tokens.refresh(seen)
                    outcome = await self._exchange(
                        session, method, url, query, form, json_body, timeout, safe_url, call
                    )
            except (aiohttp.ClientError, RuntimeError):
                # aclose() while this attempt ran: aiohttp's "Session is closed"
                # RuntimeError or a dropped connection is not the server's doing.
                if self._closed():
                    raise _closed_error(method, safe_url, True) from None
                raise
            if isinstance(outcome, CanvasResponse):
                return outcome
            # Raised here, where no frame holds the response or its body: a
            # kept exception (bulk runs keep thousands) keeps its frames alive.
            try:
                raise outcome
            finally:
                del outcome

        # A write whose outcome is unknown is looked up by its check, if it has one.
        check = None if method == "GET" else call.reconcile or self.reconcilers.get(route)
        on_unknown = None
        if check is not None:
            write = _Pending(method, url.path, route, query, form, json_body)
            on_unknown = self._reconciler_hook(check, write, attempt, policy, info)
        return call_with_retries(
            attempt,
            policy=policy,
            throttle=self.throttle,
            budget=self.budget,
            info=info,
            observe=_observation,
            clock=self._clock,
            sleep=self._sleep,
            breaker=self.breaker,
            on_outcome_unknown=on_unknown,
        )

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: URL,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]] | None,
        json_body: Any,
        timeouts: aiohttp.ClientTimeout,
        safe_url: str,
        call: _Call,
    ) -> CanvasResponse | CanvasException:
        """Make one request; return the response, or the error it stands for."""
        # The headers are built in the call, never held in a local of this
        # frame: a traceback through it must not keep the token.
        if query or form is not None or json_body is not None or call.content is not None:
            request = session.request(
                method,
                url,
                params=query or None,
                data=form if call.content is None else call.content(),
                json=json_body,
                allow_redirects=call.follow_redirects,
                headers=self._headers(),
                timeout=timeouts,
            )
        else:
            # Most calls send no query and no body: aiohttp's defaults are left
            # unspelled, fewer keywords to pass down its layers per request.
            request = session.request(
                method,
                url,
                allow_redirects=call.follow_redirects,
                headers=self._headers(),
                timeout=timeouts,
            )
        async with request as response:
            if response.status >= 400:
                read = await read_error_body(response, self.max_body_size)
                if read is None:
                    return too_large(method, safe_url, self.max_body_size)
                prefix, length = read
                error = classify_response(
                    response.status, response.headers, prefix, method=method, url=safe_url
                )
                error.extra["body_length"] = length
                return error
            # A HEAD answer declares the size of a body it does not send.
            body = b"" if method == "HEAD" else await read_body(response, self.max_body_size)
            if body is None:
                return too_large(method, safe_url, self.max_body_size)
            return _decode(response, body, method, safe_url, call.expect_json)

    def _headers(self) -> dict[str, str]:
        # aiohttp's names (istr): case-folded once, not per request.
        return {
            hdrs.AUTHORIZATION: self._token.authorization(),
            hdrs.USER_AGENT: self._user_agent,
            hdrs.ACCEPT: _ACCEPT,
        }

    # ------------------------------------------ reconciling unknown outcomes

    def _reconciler_hook(
        self,
        check: Reconciler,
        pending: _Pending,
        attempt: Callable[[], Awaitable[CanvasResponse]],
        policy: RetryPolicy,
        info: CallInfo,
    ) -> Callable[[CanvasException, float], Awaitable[CanvasResponse]]:
        """What runs when retrying gives up on a write that may have been applied."""
        sent_at = dt.datetime.now(dt.UTC)

        async def on_unknown(failure: CanvasException, left: float) -> CanvasResponse:
            # Checks and the repeat share the call's throttle and what is left of its deadline.
            until = self._clock() + left
            reader = _DeadlineReader(self, until)
            write = pending.write(sent_at)
            settle = Settle(
                in_seconds(policy.attempt_timeout), self._sleep, lambda: until - self._clock()
            )
            return await reconcile_write(
                failure,
                check=lambda: check(write, reader),
                repeat=lambda: call_with_retries(
                    attempt,
                    policy=dataclasses.replace(policy, deadline=reader.left()),
                    throttle=self.throttle,
                    budget=self.budget,
                    info=info,
                    observe=_observation,
                    clock=self._clock,
                    sleep=self._sleep,
                    on_outcome_unknown=raise_again,
                ),
                found=lambda data: _found_response(data, info.url or ""),
                described=Described(info.method, info.url, _name_of(check), token=self.fingerprint),
                settle=settle,
            )

        return on_unknown


@dataclass(frozen=True, slots=True)
class _Pending:
    """A write as sent, turned into a :class:`Write` only if a check needs it."""

    method: str
    path: str
    route: str
    query: list[tuple[str, str]]
    form: list[tuple[str, str]] | None
    json_body: Any

    def write(self, sent_at: dt.datetime) -> Write:
        body = self.form
        if body is None:
            body = encode_params(_mapping_or_none(self.json_body))
        return Write(self.method, self.path, self.route, (*self.query, *body), sent_at)


def _mapping_or_none(json_body: Any) -> Mapping[str, Any] | None:
    """A JSON object body, read as Canvas reads parameters; None for any other body."""
    return json_body if isinstance(json_body, Mapping) else None


class _DeadlineReader:
    """The client's reads for a check, bounded by what is left of the write's deadline."""

    def __init__(self, client: CanvasClient, until: float) -> None:
        self._client = client
        self._until = until

    def left(self) -> float:
        # A passed deadline still gets a sliver: the read then times out at
        # once, and the check's failure says so.
        return max(0.001, self._until - self._client._clock())

    async def get(self, path: str, *, params: Any = None) -> Any:
        return await self._client.get(path, params=params, deadline=self.left())

    def paginate(self, path: str, *, params: Any = None) -> AsyncIterator[Any]:
        return self._client.paginate(path, params=params, deadline=self.left())


def _reconcilers(given: Mapping[str, Reconciler | None] | None) -> dict[str, Reconciler]:
    """The built-in checks with the caller's over them; None turns a route's check off."""
    merged: dict[str, Reconciler | None] = {**BUILTIN_RECONCILERS, **(given or {})}
    for route in given or {}:
        method, _, path = route.partition(" ")
        if not method.isupper() or not path.startswith("/"):
            raise ValueError(
                f"A reconcilers key is a route template like "
                f"'POST /api/v1/courses/:id/enrollments', not {route!r}."
            )
    return {route: check for route, check in merged.items() if check is not None}


def _found_response(data: Any, url: str) -> CanvasResponse:
    return CanvasResponse(
        status=200,
        headers=CIMultiDictProxy(CIMultiDict()),
        data=data,
        url=url,
        links={},
        rate_limit_remaining=None,
        request_cost=None,
        reconciled=True,
    )


def _name_of(check: object) -> str:
    return str(getattr(check, "__qualname__", None) or type(check).__name__)


def _progress_failed(state: Mapping[str, Any]) -> ProgressFailed:
    progress_id = state.get("id")
    error = ProgressFailed(
        f"Canvas job {progress_id} failed: {state.get('message') or 'no message'}.",
        context={"progress_id": progress_id},
    )
    error.extra["progress"] = dict(state)
    return error


_PROGRESS_JOB = JobKind(
    "Canvas job",
    done={"completed"},
    failed={"failed"},
    progress_key="completion",
    fail=_progress_failed,
    id_key="progress_id",
)


@dataclass(frozen=True, slots=True)
class _Call:
    """Per-call options of one public method."""

    idempotent: bool | None
    timeout: Timeout
    deadline: Seconds | None
    expect_json: bool = True
    content: ContentFactory | None = None
    follow_redirects: bool = True
    reconcile: Reconciler | None = None


#: The options of a call that sets none, built once: most calls set none, and
#: a dataclass per call shows on the per-request overhead.
_DEFAULT_JSON_CALL = _Call(None, None, None)
_DEFAULT_RAW_CALL = _Call(None, None, None, expect_json=False)


def _call_options(
    idempotent: bool | None,
    timeout: Timeout,
    deadline: Seconds | None,
    *,
    expect_json: bool = True,
    reconcile: Reconciler | None = None,
) -> _Call:
    if idempotent is None and timeout is None and deadline is None and reconcile is None:
        return _DEFAULT_JSON_CALL if expect_json else _DEFAULT_RAW_CALL
    return _Call(idempotent, timeout, deadline, expect_json, reconcile=reconcile)


def client_timeout(value: Timeout) -> aiohttp.ClientTimeout:
    """Turn a ``timeout=`` argument into aiohttp's form.

    Seconds bound connecting (a pooled connection included) and each read,
    like httpx's ``timeout=5.0``; the whole attempt is bounded by the retry
    policy's ``attempt_timeout``.

    Raises:
        ValueError: For zero, negative or non-finite seconds.
        TypeError: For something that is not a timeout.
    """
    if value is None:
        return aiohttp.ClientTimeout(total=None)
    if isinstance(value, aiohttp.ClientTimeout):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | dt.timedelta):
        raise TypeError(f"timeout must be seconds or an aiohttp.ClientTimeout, not {value!r}.")
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"timeout must be a positive number of seconds, not {value!r}.")
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)


def _closed_error(method: str, url: str, sent: bool | None) -> TransportError:
    error = TransportError(
        f"{method} {url} was interrupted: the CanvasClient was closed while the call "
        "was in flight. Await every call before closing the client."
    )
    error.method, error.url, error.request_sent = method, url, sent
    return error


def _listing_error(message: str, url: str | URL) -> InvalidResponse:
    error = InvalidResponse(message)
    error.method, error.url, error.request_sent = "GET", redact_url(url), True
    return error


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _observation(response: CanvasResponse) -> Observation:
    return Observation(response.rate_limit_remaining, response.request_cost)


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _decode(
    response: aiohttp.ClientResponse, body: bytes, method: str, url: str, expect_json: bool
) -> CanvasResponse | InvalidResponse:
    """The response, or the error a body that should be JSON but is not stands for."""
    data: Any = None
    if body.strip():
        try:
            data = json.loads(strip_json_guard(body))
        except (ValueError, RecursionError) as exc:
            # request() returns a CSV or a file as bytes; the verbs promise
            # JSON, and a body declared JSON must be JSON.
            if expect_json or _is_json_type(response.headers.get("Content-Type", "")):
                # Not "from exc": a JSONDecodeError holds the whole document.
                return _not_json(response.status, body, method, url, exc)
    headers = response.headers
    link_values = headers.getall(hdrs.LINK, ())
    urls: dict[str, URL] = {}
    link_errors: dict[str, str] = {}
    if link_values:
        links = parse_links(link_values, response.url)
        urls, link_errors = links.urls, links.errors
    # The quota headers alone, not the whole ResponseHeaders view (which also
    # parses Retry-After and the rest for the classifier): this runs per answer.
    remaining, cost = quota_of(headers)
    return _answer(response.status, headers, data, url, urls, remaining, cost, body, link_errors)


def _slot_setter(name: str) -> Callable[[CanvasResponse, Any], None]:
    setter: Callable[[CanvasResponse, Any], None] = getattr(CanvasResponse, name).__set__
    return setter


# The frozen dataclass's __init__ stores each field through object.__setattr__
# (1.5 us a response, by timeit); the slots' own setters store the same values
# in 0.5 us. Some 12,000 instructions a request: a tenth of what the client added.
_NEW_RESPONSE = object.__new__
_SET_STATUS, _SET_HEADERS, _SET_DATA, _SET_URL, _SET_LINKS = map(
    _slot_setter, ("status", "headers", "data", "url", "links")
)
_SET_REMAINING, _SET_COST, _SET_CONTENT, _SET_LINK_ERRORS, _SET_RECONCILED = map(
    _slot_setter,
    ("rate_limit_remaining", "request_cost", "content", "link_errors", "reconciled"),
)


def _answer(
    status: int,
    headers: CIMultiDictProxy[str],
    data: Any,
    url: str,
    links: dict[str, URL],
    remaining: float | None,
    cost: float | None,
    content: bytes,
    link_errors: dict[str, str],
) -> CanvasResponse:
    """``CanvasResponse(...)`` of an answer, every field given, built through its slots."""
    response: CanvasResponse = _NEW_RESPONSE(CanvasResponse)
    _SET_STATUS(response, status)
    _SET_HEADERS(response, headers)
    _SET_DATA(response, data)
    _SET_URL(response, url)
    _SET_LINKS(response, links)
    _SET_REMAINING(response, remaining)
    _SET_COST(response, cost)
    _SET_CONTENT(response, content)
    _SET_LINK_ERRORS(response, link_errors)
    _SET_RECONCILED(response, False)
    return response


def _not_json(status: int, body: bytes, method: str, url: str, exc: Exception) -> InvalidResponse:
    error = InvalidResponse(
        f"{method} {url} answered {status} with a body that is not valid JSON ({exc}). "
        "The request may have been applied. To read a body that is not JSON (a CSV "
        "report, a file), use request() and its response's content."
    )
    error.method, error.url, error.request_sent = method, url, True
    error.extra.update({"body_excerpt": body[:500].decode("utf-8", errors="replace")})
    return error


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
