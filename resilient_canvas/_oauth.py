"""Access tokens that expire: a token source that refreshes once for every waiting call.

LTI tools and OAuth2 integrations hold user tokens that Canvas expires after
an hour; Canvas then answers ``401 {"errors": [{"message": "Expired access
token."}]}``. A :class:`TokenSource` holds the current token and, given a way
to get a new one (a :class:`RefreshToken` configuration for Canvas's
``/login/oauth2/token``, or any function returning a token), refreshes it
when a call meets that answer: **one refresh for all concurrent calls** (the
others wait for it and use its result), after which each call is repeated
(safe: a 401 was never applied).

The throttle keeps one bucket across refreshes: Canvas keys its bucket by the
token's record, which survives a refresh, so the source names itself by a
stable identity (the refresh token's fingerprint, or one the caller names),
never by the current token. Secrets (refresh token, client secret, every
access token) are held as :class:`~resilient_canvas._secret.AccessToken`, so
they are redacted from every text the library makes.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resilient_canvas._errors import CanvasException, InvalidAccessToken
from resilient_canvas._secret import AccessToken

#: A function returning a fresh access token (sync or async).
TokenProvider = Callable[[], str | Awaitable[str]]
#: Posts the refresh grant and returns the decoded JSON answer.
GrantSender = Callable[[str, Mapping[str, str]], Awaitable[Any]]

_EXPIRED = "expired access token"


@dataclass(frozen=True, slots=True, repr=False)
class RefreshToken:
    """An OAuth2 refresh-token configuration for Canvas's ``/login/oauth2/token``.

    Args:
        refresh_token: The refresh token Canvas issued with the first token.
        client_id: The developer key's id.
        client_secret: The developer key's secret.
        access_token: The current access token, if you have one (else one is
            fetched before the first request).
        token_url: Where to post the grant; by default ``/login/oauth2/token``
            on the client's base URL (never another origin).
        identity: The stable name the throttle knows this user's quota by
            (default: the refresh token's fingerprint).
    """

    refresh_token: str
    client_id: str
    client_secret: str
    access_token: str | None = None
    token_url: str | None = None
    identity: str | None = None

    def __post_init__(self) -> None:
        # Registered as secrets: redacted from every text we make from now on.
        _SECRETS.extend(AccessToken(value) for value in (self.refresh_token, self.client_secret))
        if not self.client_id:
            raise ValueError("client_id must not be empty.")

    def __repr__(self) -> str:
        return f"RefreshToken(client_id={self.client_id!r}, refresh_token=<redacted>)"


#: The secrets of every RefreshToken made: kept alive so that they stay redacted.
_SECRETS: list[AccessToken] = []


def is_expired_token(error: object) -> bool:
    """Whether *error* is Canvas's 401 "Expired access token."."""
    if not isinstance(error, InvalidAccessToken):
        return False
    errors = error.errors if isinstance(error.errors, list) else []
    messages = [item.get("message", "") for item in errors if isinstance(item, Mapping)]
    return any(_EXPIRED in str(message).lower() for message in messages)


class TokenSource:
    """The client's current access token, and the one refresh all calls share.

    Args:
        token: The current token (None: fetch one before the first request).
        refresh: Returns a new token; None for a static token.
        identity: What the throttle and logs know this credential by, stable
            across refreshes (for a static token, the token itself). Held as
            a secret: only its fingerprint is ever shown.
    """

    def __init__(
        self,
        token: AccessToken | None,
        refresh: Callable[[], Awaitable[str]] | None,
        identity: AccessToken,
    ) -> None:
        self._token = token
        self._refresh = refresh
        self._lock = asyncio.Lock()
        #: Counts refreshes: a call that saw generation n refreshes only if
        #: nobody has since.
        self.generation = 0
        self.identity = identity
        self.fingerprint = identity.fingerprint

    @property
    def refreshable(self) -> bool:
        """Whether an expired token can be replaced."""
        return self._refresh is not None

    @property
    def token(self) -> AccessToken:
        """The current token (call :meth:`ready` first when it may be missing)."""
        if self._token is None:
            raise RuntimeError("No access token yet: await ready() first.")
        return self._token

    def authorization(self) -> str:
        """The ``Authorization`` header of the current token, built at send time."""
        return self.token.authorization()

    async def ready(self) -> int:
        """Make sure a token is there (fetching the first one); return its generation."""
        if self._token is None:
            await self.refresh(self.generation)
        return self.generation

    async def refresh(self, seen: int) -> None:
        """Replace the token seen at generation *seen*, unless another call already has.

        Raises:
            InvalidAccessToken: The source cannot refresh, or the refresh failed.
        """
        if self._refresh is None:
            raise InvalidAccessToken("The access token expired and no way to refresh it was given.")
        async with self._lock:
            if self.generation != seen and self._token is not None:
                return  # refreshed while this call waited: use that token
            try:
                value = await self._refresh()
                token = AccessToken(value)
            except CanvasException as error:
                raise _refresh_failed(str(error)) from None
            except (ValueError, TypeError) as error:
                raise _refresh_failed(f"the new token is unusable ({error})") from None
            except Exception as error:  # a caller's token function: any failure is a refusal
                raise _refresh_failed(f"{type(error).__name__}: {error}") from None
            self._token = token
            self.generation += 1


def _refresh_failed(reason: str) -> InvalidAccessToken:
    error = InvalidAccessToken(
        f"Could not refresh the expired access token: {reason}. Check the developer key "
        "(client id and secret) and that the refresh token was not revoked."
    )
    error.request_sent = True
    return error


def provider_refresh(provider: TokenProvider) -> Callable[[], Awaitable[str]]:
    """Adapt a sync or async token function to the source's refresh."""

    async def call() -> str:
        value = provider()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str):
            raise TypeError(f"the token provider returned {type(value).__name__}, not a str")
        return value

    return call


def token_source(
    credential: str | AccessToken | RefreshToken | TokenProvider,
    *,
    token_url: str,
    send: GrantSender,
) -> TokenSource:
    """The source for what a client was given: a token, a RefreshToken or a function."""
    if isinstance(credential, AccessToken):
        return TokenSource(credential, None, credential)
    if isinstance(credential, str):
        token = AccessToken(credential)
        return TokenSource(token, None, token)
    if isinstance(credential, RefreshToken):
        current = AccessToken(credential.access_token) if credential.access_token else None
        identity = AccessToken(credential.identity or f"refresh:{credential.refresh_token}")
        url = credential.token_url or token_url
        return TokenSource(current, grant_refresh(credential, url, send), identity)
    if callable(credential):
        name = getattr(credential, "__qualname__", type(credential).__name__)
        # The same function gives the same identity: its clients share a throttle.
        identity = AccessToken(f"provider:{name}:{id(credential)}")
        return TokenSource(None, provider_refresh(credential), identity)
    raise TypeError(
        "access_token must be a token, a RefreshToken or a function returning a token, "
        f"not {type(credential).__name__}."
    )


def grant_refresh(
    config: RefreshToken, url: str, send: GrantSender
) -> Callable[[], Awaitable[str]]:
    """Refresh with Canvas's OAuth2 refresh-token grant, posted by *send*."""
    form = {
        "grant_type": "refresh_token",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "refresh_token": config.refresh_token,
    }

    async def call() -> str:
        answer = await send(url, form)
        token = answer.get("access_token") if isinstance(answer, Mapping) else None
        if not isinstance(token, str) or not token:
            raise TypeError("Canvas's token endpoint answered without an access_token")
        return token

    return call
