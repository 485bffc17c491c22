"""Requests to the file store: the other origin uploads go to and downloads come from.

Canvas hands out signed URLs on another host (an object store, Instructure's
file service). The access token is never sent there: requests to the store
carry our User-Agent and nothing of the client's credentials, and are not
paced by the Canvas throttle (the store does not count against the token's
bucket). They are retried by the client's policy and budget, and logged like
every other call.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from resilient_canvas._classify import classify_response
from resilient_canvas._errors import InvalidResponse
from resilient_canvas._http import origin_of, redact_url, strip_json_guard
from resilient_canvas._policy import RetryBudget, RetryPolicy, Seconds
from resilient_canvas._retry import CallInfo, Clock, Sleep, call_with_retries

T = TypeVar("T")

#: A transfer is bounded by its deadline, not by the 30 s a Canvas call gets.
DEFAULT_TRANSFER_DEADLINE = 3600.0
#: A store that sends nothing for this long has stalled: fail, and resume.
STALL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class StoreContext:
    """What a request to the store needs from the client, and nothing of its token."""

    session: aiohttp.ClientSession
    user_agent: str
    policy: RetryPolicy
    budget: RetryBudget
    clock: Clock
    sleep: Sleep
    canvas_origin: str
    connect_timeout: float = 10.0

    @property
    def headers(self) -> dict[str, str]:
        """The headers every store request carries: no Authorization, ever."""
        return {"User-Agent": self.user_agent}

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        """No total: a large file takes long; a stalled read or connect fails."""
        return aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout, sock_read=STALL_SECONDS
        )

    def is_canvas(self, url: URL) -> bool:
        """Whether *url* is on the Canvas origin (where the token may go)."""
        return origin_of(url) == self.canvas_origin

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        method: str,
        url: URL | str,
        idempotent: bool | None,
        label: str,
        deadline: Seconds | None,
    ) -> T:
        """Run *attempt* under the client's retry rules, unthrottled, for up to *deadline*."""
        total = DEFAULT_TRANSFER_DEADLINE if deadline is None else deadline
        policy = dataclasses.replace(self.policy, deadline=total, attempt_timeout=total)
        info = CallInfo(
            method=method,
            url=redact_url(url),
            route=f"{method} file store",
            idempotent=idempotent,
            label=label,
        )
        return await call_with_retries(
            attempt,
            policy=policy,
            throttle=None,
            budget=self.budget,
            info=info,
            clock=self.clock,
            sleep=self.sleep,
        )


async def post_form(store: StoreContext, url: URL, form: Mapping[str, str]) -> Any:
    """POST *form* without the access token (an OAuth2 grant) and return its JSON.

    Retried under the client's rules like a store request; error statuses are
    classified as for any call.

    Raises:
        CanvasException: The classified failure, or an answer that is not JSON.
    """
    safe = redact_url(url) or ""

    async def attempt() -> Any:
        async with store.session.post(
            url, data=dict(form), headers=store.headers, timeout=store.timeout
        ) as response:
            body = await response.read()
            if response.status >= 400:
                raise classify_response(
                    response.status, response.headers, body[:65536], method="POST", url=safe
                )
        try:
            return json.loads(strip_json_guard(body))
        except ValueError:
            error = InvalidResponse(f"POST {safe} answered with a body that is not JSON.")
            error.method, error.url, error.request_sent = "POST", safe, True
            raise error from None

    return await store.call(
        attempt, method="POST", url=url, idempotent=True, label="oauth2_token", deadline=60.0
    )


def checked_url(raw: object, *, what: str, method: str, url: str) -> URL:
    """Return *raw* as an absolute http(s) URL, or raise before anything is sent to it.

    Raises:
        InvalidResponse: For a missing, relative, ``javascript:`` or any other
            non-http(s) URL (not retried: Canvas answered, wrongly).
    """
    target = URL(raw) if isinstance(raw, str) else None
    if target is None or not target.is_absolute() or target.scheme not in ("http", "https"):
        shown = raw if isinstance(raw, str) else type(raw).__name__
        error = InvalidResponse(
            f"{method} {url} answered with {what} {redact_url(str(shown))!r}, which is not an "
            "absolute http(s) URL; nothing was sent to it."
        )
        error.method, error.url, error.request_sent = method, url, True
        raise error
    return target
