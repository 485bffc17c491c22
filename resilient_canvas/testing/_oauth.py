"""OAuth2 tokens that expire, in the simulator: ``/login/oauth2/token`` and token records.

Canvas issues an access token and a refresh token per authorization (a token
*record*); the access token expires (an hour), the refresh grant gives a new
one for the same record, and the throttle's bucket belongs to the record, so
it survives the refresh. :meth:`OAuthServer.authorize` makes a record,
:meth:`OAuthServer.expire` ends an access token, and every grant is counted
(:attr:`OAuthServer.grants`), so a test can check that concurrent calls
refreshed once.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from aiohttp import web

#: Canvas's answer to an expired token (the ``expired_at`` is illustrative).
EXPIRED_BODY = {
    "errors": [{"message": "Expired access token.", "expired_at": "2026-01-01T00:00:00Z"}]
}
TOKEN_PATH = "/login/oauth2/token"  # noqa: S105 - a path, not a secret


@dataclass(slots=True)
class OAuthServer:
    """Developer keys, token records and the refresh grant.

    Attributes:
        clients: Developer keys: client id -> secret.
        grants: Refresh grants answered with a new token.
        refused_grants: Refresh grants refused (bad client, bad refresh token).
    """

    clients: dict[str, str] = field(default_factory=dict)
    grants: int = 0
    refused_grants: int = 0
    _records: dict[str, str] = field(default_factory=dict)  # refresh token -> record
    _issued: dict[str, str] = field(default_factory=dict)  # access token -> record
    _expired: set[str] = field(default_factory=set)

    def authorize(self, client_id: str = "10000000000001") -> tuple[str, str, str, str]:
        """Create a developer key (if new) and a token record.

        Returns:
            (access token, refresh token, client id, client secret).
        """
        secret = self.clients.setdefault(client_id, secrets.token_urlsafe(24))
        refresh = "refresh-" + secrets.token_urlsafe(24)
        record = "record-" + secrets.token_hex(8)
        self._records[refresh] = record
        return self._issue(record), refresh, client_id, secret

    def expire(self, access_token: str) -> None:
        """Let *access_token* expire: Canvas answers 401 "Expired access token." to it."""
        self._expired.add(access_token)

    def record_of(self, access_token: str) -> str | None:
        """The token record an issued access token belongs to (its throttle bucket)."""
        return self._issued.get(access_token)

    def authenticate(self, access_token: str) -> web.Response | None:
        """None for a live issued token, the expiry answer for an expired one."""
        if access_token in self._expired:
            headers = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'}
            return web.json_response(EXPIRED_BODY, status=401, headers=headers)
        return None

    def _issue(self, record: str) -> str:
        token = "oauth-" + secrets.token_urlsafe(24)
        self._issued[token] = record
        return token

    async def grant(self, request: web.Request) -> web.Response:
        """``POST /login/oauth2/token`` with ``grant_type=refresh_token``."""
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        known = self.clients.get(client_id)
        if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
            self.refused_grants += 1
            return web.json_response(
                {"error": "invalid_client", "error_description": "unknown client"}, status=401
            )
        record = self._records.get(str(form.get("refresh_token", "")))
        if form.get("grant_type") != "refresh_token" or record is None:
            self.refused_grants += 1
            return web.json_response(
                {"error": "invalid_grant", "error_description": "refresh_token not found"},
                status=400,
            )
        self.grants += 1
        return web.json_response(
            {"access_token": self._issue(record), "token_type": "Bearer", "expires_in": 3600}
        )
