"""A blocking Canvas client for scripts, notebooks and threads: the async client, driven for you.

Use it like the async client, without ``await``::

    from resilient_canvas.sync import CanvasClient

    with CanvasClient("https://canvas.example.edu", token) as canvas:
        course = canvas.get("courses/101")
        for enrollment in canvas.paginate("courses/101/enrollments"):
            ...

Every call runs the async :class:`resilient_canvas.CanvasClient` on one
private event loop, on a daemon thread shared by every blocking client in the
process. So pacing, retries, classification and logs are the async client's
own, and every blocking client of a token, in any thread, paces through the
same throttle. The calling thread only waits: this works in a thread pool, in
a Jupyter cell or inside an ``async def`` handler (where it blocks that
handler's loop like any blocking call). Ctrl-C during a call cancels it and
raises ``KeyboardInterrupt``; the client stays usable. See ``docs/sync.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import warnings
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from yarl import URL

from resilient_canvas import _client
from resilient_canvas._bulk import BulkProgress, BulkResult
from resilient_canvas._client import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_TIMEOUT,
    CanvasResponse,
    ClientState,
    Timeout,
)
from resilient_canvas._encoding import Params
from resilient_canvas._loop_thread import LOOP
from resilient_canvas._policy import RetryBudget, RetryPolicy, Seconds
from resilient_canvas._retry import Clock, Sleep
from resilient_canvas._sis import SisImportResult
from resilient_canvas._source import Uploadable
from resilient_canvas._throttle import Throttle

__all__ = ["CanvasClient"]

T = TypeVar("T")
R = TypeVar("R")

#: Threads :meth:`CanvasClient.map` runs the function in when not told: the
#: throttle, not the thread count, sets the pace; more threads only wait.
DEFAULT_MAP_THREADS = 16


class _Factory:
    """Builds the async client again in a forked child; keeps the token out of reprs."""

    __slots__ = ("_args", "_kwargs")

    def __init__(self, base_url: str, access_token: str, kwargs: dict[str, Any]) -> None:
        self._args = (base_url, access_token)
        self._kwargs = kwargs

    def __call__(self) -> _client.CanvasClient:
        return _client.CanvasClient(*self._args, **self._kwargs)

    def __repr__(self) -> str:
        return "<async client factory>"


class CanvasClient:
    """A blocking, thread-safe Canvas API client that paces, retries and classifies.

    Takes the async :class:`resilient_canvas.CanvasClient`'s arguments, except
    ``session``: an aiohttp session belongs to one event loop, and this
    client's calls run on a private one.

    Use it as a context manager, or call :meth:`close` (clients still open
    at interpreter exit are closed then). Any number of threads may share one
    client.

    Args:
        base_url: The Canvas root (``https://canvas.example.edu``).
        access_token: The API access token.
        policy: Retry policy (see the async client).
        throttle: ``"shared"`` (default) paces with the process-wide throttle
            for this token and origin, shared with every other client of it;
            a :class:`Throttle` uses that one; None disables pacing.
        timeout: Seconds allowed for connecting and for each read.
        per_page: ``per_page`` sent by :meth:`paginate`.
        user_agent: The User-Agent header.
        clock: Time source for deadlines.
        sleep: How waits pass: an async callable, run on the client's loop.
        redis_url: Keep the shared throttle's state in Redis.
        max_body_size: Largest response body read, in bytes once decoded.

    Raises:
        ValueError: If *base_url* is not an absolute http(s) URL or the token is empty.
    """

    #: Close silently when collected: for owners with no close() of their own
    #: (a canvasapi ``Canvas``), for whom an unclosed client is not a mistake.
    _close_when_collected = False

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        policy: RetryPolicy | None = None,
        throttle: Throttle | Literal["shared"] | None = "shared",
        timeout: Timeout = DEFAULT_TIMEOUT,
        per_page: int = 100,
        user_agent: str | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        redis_url: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self._factory = _Factory(
            base_url,
            access_token,
            {
                "policy": policy,
                "throttle": throttle,
                "timeout": timeout,
                "per_page": per_page,
                "user_agent": user_agent,
                "clock": clock,
                "sleep": sleep,
                "redis_url": redis_url,
                "max_body_size": max_body_size,
            },
        )
        # Built here, in the caller's thread: bad arguments raise at once,
        # and building needs no event loop.
        self._async = self._factory()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return repr(self._async).replace("CanvasClient(", "sync.CanvasClient(", 1)

    @property
    def base_url(self) -> str:
        """The Canvas root URL."""
        return self._async.base_url

    @property
    def state(self) -> ClientState:
        """Where the client is in its lifecycle."""
        return ClientState.CLOSED if self._closed else self._async.state

    @property
    def throttle(self) -> Throttle | None:
        """The throttle pacing this client's calls (shared with other clients of the token)."""
        return self._async.throttle

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy."""
        return self._async.policy

    @property
    def budget(self) -> RetryBudget:
        """The retry budget shared by this client's calls."""
        return self._async.budget

    @property
    def per_page(self) -> int:
        """``per_page`` sent by :meth:`paginate` unless the call names one."""
        return self._async.per_page

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> CanvasClient:
        if self.state is not ClientState.UNOPENED:
            raise RuntimeError(
                "A CanvasClient cannot be opened twice; create a new client instead."
            )
        self._call(lambda client: client.__aenter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and its connections. Safe to call twice, from any thread.

        Calls other threads still have in flight fail with a ``TransportError``
        saying the client was closed, as with the async client's ``aclose()``.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        inner = self._async
        if inner.state is not ClientState.OPENED or os.getpid() != self._pid:
            LOOP.untrack(inner)
            return  # nothing was opened (in this process): nothing to close
        if LOOP.in_loop_thread():
            LOOP.submit(_close_inner(inner))
        else:
            LOOP.run(_close_inner(inner))

    def __del__(self) -> None:
        inner = getattr(self, "_async", None)
        if inner is None or getattr(self, "_closed", True):
            return
        if inner.state is not ClientState.OPENED or getattr(self, "_pid", None) != os.getpid():
            LOOP.untrack(inner)
            return
        # Closed on the loop, not here: a destructor may run on any thread,
        # the loop's own included, and must not block. First, so that a
        # warning turned into an error cannot prevent it.
        LOOP.submit(_close_inner(inner))
        if not self._close_when_collected:
            warnings.warn(
                f"{self!r} was never closed; use 'with' or call close().",
                ResourceWarning,
                stacklevel=1,
            )

    # --------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> CanvasResponse:
        """Send one request with pacing, retries and classification; return any successful answer.

        See :meth:`resilient_canvas.CanvasClient.request` for the arguments.

        Raises:
            CanvasException: The classified failure once retrying stopped.
            ValueError: If *path* names another origin than the base URL.
            RuntimeError: If the client is closed.
        """
        return self._call(
            lambda client: client.request(
                method,
                path,
                params=params,
                data=data,
                json=json,
                idempotent=idempotent,
                timeout=timeout,
                deadline=deadline,
            )
        )

    def get(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Any:
        """GET *path* and return its decoded JSON (see :meth:`request` for the options)."""
        return self._call(
            lambda client: client.get(
                path, params=params, idempotent=idempotent, timeout=timeout, deadline=deadline
            )
        )

    def post(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Any:
        """POST and return the decoded JSON. Not repeated after a possibly applied failure."""
        return self._call(
            lambda client: client.post(
                path,
                params=params,
                data=data,
                json=json,
                idempotent=idempotent,
                timeout=timeout,
                deadline=deadline,
            )
        )

    def put(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Any:
        """PUT and return the decoded JSON."""
        return self._call(
            lambda client: client.put(
                path,
                params=params,
                data=data,
                json=json,
                idempotent=idempotent,
                timeout=timeout,
                deadline=deadline,
            )
        )

    def patch(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        data: Params | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Any:
        """PATCH and return the decoded JSON."""
        return self._call(
            lambda client: client.patch(
                path,
                params=params,
                data=data,
                json=json,
                idempotent=idempotent,
                timeout=timeout,
                deadline=deadline,
            )
        )

    def delete(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        idempotent: bool | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Any:
        """DELETE and return the decoded JSON."""
        return self._call(
            lambda client: client.delete(
                path, params=params, idempotent=idempotent, timeout=timeout, deadline=deadline
            )
        )

    def paginate(
        self,
        path: str | URL,
        *,
        params: Params | None = None,
        per_page: int | None = None,
        max_pages: int | None = None,
        timeout: Timeout = None,
        deadline: Seconds | None = None,
    ) -> Iterator[Any]:
        """Yield every item of a paginated listing, page by page, as it is read.

        Pages are fetched on demand: each step hands the consumer at most a
        page's worth of items (``per_page``), so memory stays flat however
        long the listing. Leaving the loop early stops the listing. See
        :meth:`resilient_canvas.CanvasClient.paginate` for the arguments.

        Raises:
            InvalidResponse: A next link that cannot be followed, or a repeated page.
            CanvasException: A page failed and retrying stopped.
        """
        batch = _page_size(path, params, per_page, self.per_page)
        listing = self._call_setup(
            lambda client: client.paginate(
                path,
                params=params,
                per_page=per_page,
                max_pages=max_pages,
                timeout=timeout,
                deadline=deadline,
            )
        )
        return _pages(listing, batch)

    def map(
        self,
        func: Callable[[T], R],
        items: Iterable[T],
        *,
        concurrency: int | None = None,
        on_progress: Callable[[BulkProgress], None] | None = None,
    ) -> BulkResult[T, R]:
        """Run the blocking *func* over *items* in a pool of threads; keep every outcome.

        *func* typically calls this client (``lambda sid: canvas.post(...)``);
        pacing is left to the throttle. *items* is read lazily, and
        *on_progress* is called, on the client's loop thread: neither may
        call a blocking client (that raises ``RuntimeError``).

        Args:
            func: Called once per item, in one of *concurrency* threads.
            items: The inputs.
            concurrency: Threads (and calls) at once; default 16.
            on_progress: Called with a :class:`BulkProgress` as calls end.

        Returns:
            Every item's result or classified error, in the items' order.
        """
        limit = concurrency or DEFAULT_MAP_THREADS
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, not {limit}.")
        pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="resilient-canvas-map")

        async def call(item: T) -> R:
            return await asyncio.get_running_loop().run_in_executor(pool, func, item)

        try:
            result = self._call(
                lambda client: client.map(call, items, concurrency=limit, on_progress=on_progress)
            )
        except BaseException:
            # Ctrl-C: calls not started are dropped; those running end on their own.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return result

    def wait_for_progress(
        self,
        progress: Mapping[str, Any] | int | str,
        *,
        poll_every: float = 1.0,
        within: float = 600.0,
    ) -> dict[str, Any]:
        """Poll a Canvas ``Progress`` until it ends (see the async client's method).

        Raises:
            ProgressFailed: The job ended in ``failed``.
            RequestTimeout: The job had not ended within *within* seconds.
        """
        return self._call(
            lambda client: client.wait_for_progress(progress, poll_every=poll_every, within=within)
        )

    # --------------------------------------------------------------- workflows

    def upload(self, file: Uploadable, *, to: str, **options: Any) -> dict[str, Any]:
        """Upload a file in Canvas's three steps; return the File object.

        The arguments are :meth:`resilient_canvas.CanvasClient.upload`'s; the
        token never goes to the file store.
        """
        return self._call(lambda client: client.upload(file, to=to, **options))

    def download(self, file_or_url: Any, dest: Any, **options: Any) -> Path:
        """Download a Canvas file to *dest* (written whole or not at all); return its path."""
        return self._call(lambda client: client.download(file_or_url, dest, **options))

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a GraphQL query under the same throttle as REST; return ``data``.

        Raises:
            GraphQLError: Canvas answered with ``errors``.
        """
        return self._call(lambda client: client.graphql(query, variables))

    def graphql_nodes(
        self,
        query: str,
        *,
        connection: str | Sequence[str],
        variables: Mapping[str, Any] | None = None,
        page_size: int = 100,
    ) -> Iterator[Any]:
        """Yield every node of a GraphQL connection, a page at a time (see the async client)."""
        nodes = self._call_setup(
            lambda client: client.graphql_nodes(
                query, connection=connection, variables=variables, page_size=page_size
            )
        )
        return _pages(nodes, page_size)

    def start_sis_import(
        self, account: int | str, file: Uploadable, **options: Any
    ) -> dict[str, Any]:
        """Start an SIS import from a CSV or zip file (streamed); return the import."""
        return self._call(lambda client: client.start_sis_import(account, file, **options))

    def wait_for_sis_import(
        self, account: int | str, sis_import: Mapping[str, Any] | int | str, **options: Any
    ) -> SisImportResult:
        """Poll an SIS import until it ends (see the async client's method for the options)."""
        return self._call(lambda client: client.wait_for_sis_import(account, sis_import, **options))

    # ---------------------------------------------------------------- internals

    def _inner(self) -> _client.CanvasClient:
        if self._closed:
            raise RuntimeError("This CanvasClient is closed; create a new one.")
        if os.getpid() != self._pid:
            self._after_fork()
        return self._async

    def _after_fork(self) -> None:
        """In a forked child, replace the async client: its connections are the parent's."""
        with self._lock:
            if os.getpid() == self._pid:
                return
            # The parent's client is left alone (never closed here: its
            # sockets are shared with the parent) and kept from finalizing.
            _INHERITED.append(self._async)
            self._async = self._factory()
            self._pid = os.getpid()

    def _call(self, make: Callable[[_client.CanvasClient], Coroutine[Any, Any, T]]) -> T:
        inner = self._inner()
        # Tracked from its first call (which opens it) until it is closed.
        LOOP.track(inner)
        return LOOP.run(make(inner))

    def _call_setup(self, make: Callable[[_client.CanvasClient], T]) -> T:
        return make(self._inner())


async def _close_inner(inner: _client.CanvasClient) -> None:
    try:
        await inner.aclose()
    finally:
        LOOP.untrack(inner)


#: Async clients inherited through fork, deliberately never finalized.
_INHERITED: list[_client.CanvasClient] = []


def _page_size(path: str | URL, params: Params | None, per_page: int | None, default: int) -> int:
    """Items handed over per step: one page's worth, as the listing was asked for."""
    pairs = list(params.items() if isinstance(params, Mapping) else (params or ()))
    # The per_page the listing is asked with: in the path, in params, else the argument.
    pairs = [*URL(str(path)).query.items(), *pairs, ("per_page", per_page or default)]
    for key, value in pairs:
        if key == "per_page":
            try:
                return max(1, int(value))
            except (TypeError, ValueError):
                continue
    return default


def _pages(listing: AsyncIterator[Any], batch: int) -> Iterator[Any]:
    """Iterate *listing*, pulling up to *batch* items from the loop at a time."""
    finished = False
    try:
        while True:
            items, error, finished = LOOP.run(_pull(listing, batch))
            yield from items
            if error is not None:
                finished = True
                raise error
            if finished:
                return
    finally:
        if not finished:
            # Left early (break, an error in the loop body, Ctrl-C): end the
            # listing on the loop, without waiting, so its connection is freed.
            LOOP.submit(_close(listing))


async def _close(listing: AsyncIterator[Any]) -> None:
    close = getattr(listing, "aclose", None)
    if close is not None:
        # After Ctrl-C the cancelled step may still be unwinding: then the
        # generator is already closing itself.
        with contextlib.suppress(RuntimeError):
            await close()


async def _pull(
    listing: AsyncIterator[Any], batch: int
) -> tuple[list[Any], BaseException | None, bool]:
    """Up to *batch* items; a failure after some items is returned, to raise after them."""
    items: list[Any] = []
    try:
        while len(items) < batch:
            items.append(await anext(listing))
    except StopAsyncIteration:
        return items, None, True
    except Exception as error:
        if not items:
            raise
        return items, error, True
    return items, None, False
