"""Parsing of the few HTTP and Canvas header values we act on, and URL redaction.

Every parser here is total: hostile or malformed input yields ``None``, never an
exception, because these run while we are already handling a failure.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from multidict import CIMultiDict, istr
from yarl import URL

from resilient_canvas._phrases import SANIC_STATUS_PHRASES

#: Longest header value we bother to parse; a longer one is garbage or an attack.
MAX_HEADER_VALUE_LENGTH = 256

#: Read from every answer. As ``istr`` the names are case-folded once here,
#: not at each lookup in a case-insensitive multidict (plain dicts see plain strings).
RATE_LIMIT_REMAINING = istr("X-Rate-Limit-Remaining")
REQUEST_COST = istr("X-Request-Cost")

_DELAY_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")

#: Longest ``Link`` header we read; beyond it the header is ignored as garbage.
_MAX_LINK_LENGTH = 16 * 1024

#: Query parameters that carry credentials and must never be logged or shown.
#: A file store's signed URLs (and a Canvas file's ``verifier``) grant access too.
SECRET_QUERY_KEYS = frozenset(
    {
        "access_token",
        "token",
        "client_secret",
        "code",
        "verifier",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
    }
)


#: Canvas's JSON-hijacking guard, put in front of JSON for clients that did not
#: ask for JSON (``Accept`` without it); not part of the document.
JSON_GUARD = "while(1);"
_JSON_GUARD_BYTES = JSON_GUARD.encode()


def strip_json_guard(body: bytes) -> bytes:
    """Return *body* without a leading ``while(1);``: every JSON parse goes through here."""
    stripped = body.lstrip()
    if stripped.startswith(_JSON_GUARD_BYTES):
        return stripped[len(_JSON_GUARD_BYTES) :]
    return body


def status_phrase(status: int | None) -> str:
    """Return the reason phrase for *status*, or "" when it has none.

    Sanic's wording first (our exceptions follow Sanic's model), then the
    standard library's for the few statuses Sanic does not name.
    """
    if status is None:
        return ""
    if status in SANIC_STATUS_PHRASES:
        return SANIC_STATUS_PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def to_headers(headers: object) -> CIMultiDict[str]:
    """Copy any header container into a case-insensitive multidict, dropping junk.

    Accepts mappings and iterables of pairs; non-string keys or values are
    converted with ``str`` and anything unusable is skipped rather than raised.
    """
    result: CIMultiDict[str] = CIMultiDict()
    if headers is None:
        return result
    try:
        items = headers.items() if isinstance(headers, Mapping) else iter(headers)  # type: ignore[call-overload]
        for item in items:
            try:
                key, value = item
            except (TypeError, ValueError):
                continue
            key_text = key.decode("latin-1") if isinstance(key, bytes) else str(key)
            value_text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            result.add(key_text, value_text)
    except Exception:
        return result
    return result


def parse_float_header(value: str | None) -> float | None:
    """Parse a Canvas float header (``600.0``, ``1.0e-05``, ``-12``) or return None.

    Canvas prints Ruby floats; Python's ``float`` reads all of their forms. NaN
    and infinities are refused because no arithmetic downstream can use them.
    """
    if value is None or len(value) > MAX_HEADER_VALUE_LENGTH:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Return the wait a ``Retry-After`` value asks for, in seconds, or None.

    Both forms of RFC 9110 are read: delay-seconds and an HTTP-date. A date in
    the past means "now" (0.0). Garbage, negatives and non-finite numbers give
    None. The value is not capped here: the retry policy decides what to do
    with an absurd hint (fail fast rather than sleep for hours).
    """
    if value is None or len(value) > MAX_HEADER_VALUE_LENGTH:
        return None
    text = value.strip()
    if not text:
        return None
    if text[0].isdigit() or text[0] in "+-.":
        # delay-seconds is digits (a fraction tolerated); not Python's float
        # syntax, which also reads "1_0", "1e308" and "inf".
        return float(text) if _DELAY_SECONDS.fullmatch(text) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True, slots=True)
class ResponseHeaders:
    """The response header values we act on, parsed once.

    Both the success path (quota numbers for the throttle, the ``Link`` for
    pagination) and the classifier (``Retry-After``, the ``WWW-Authenticate``
    test) read this one view, so a header is parsed and range-checked in one
    place only.

    Attributes:
        rate_limit_remaining: ``X-Rate-Limit-Remaining``, finite, else None.
        request_cost: ``X-Request-Cost``, finite, else None.
        retry_after: ``Retry-After`` in seconds (both RFC 9110 forms), else None.
        content_type: ``Content-Type`` lower-cased, "" when absent.
        request_id: ``X-Request-Context-Id``, at most 128 characters.
        link: The raw ``Link`` header, None when absent or absurdly long.
        www_authenticate: Whether a ``WWW-Authenticate`` challenge was sent.
    """

    rate_limit_remaining: float | None = None
    request_cost: float | None = None
    retry_after: float | None = None
    content_type: str = ""
    request_id: str | None = None
    link: str | None = None
    www_authenticate: bool = False

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> ResponseHeaders:
        """Read the view from a case-insensitive mapping; never raises on bad values."""
        get = headers.get
        request_id = get("X-Request-Context-Id")
        link = get("Link")
        remaining, cost = quota_of(headers)
        return cls(
            rate_limit_remaining=remaining,
            request_cost=cost,
            retry_after=parse_retry_after(get("Retry-After")),
            content_type=(get("Content-Type") or "")[:MAX_HEADER_VALUE_LENGTH].lower(),
            request_id=request_id[:128] if request_id else None,
            # Canvas's longest Link (five relations, bookmarks) is a few KB.
            link=link if link is not None and len(link) <= _MAX_LINK_LENGTH else None,
            www_authenticate="WWW-Authenticate" in headers,
        )


def quota_of(headers: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``X-Rate-Limit-Remaining`` and ``X-Request-Cost``, finite, else None.

    All a success needs of its headers (per answer, so not the whole view).
    """
    get = headers.get
    return (
        parse_float_header(get(RATE_LIMIT_REMAINING)),
        parse_float_header(get(REQUEST_COST)),
    )


def redact_url(url: str | URL | None) -> str | None:
    """Return *url* as text with credentials removed (query secrets, userinfo)."""
    if url is None:
        return None
    try:
        parsed = url if isinstance(url, URL) else URL(str(url))
        query_text = parsed.raw_query_string.lower()
        if not parsed.raw_user and not any(key in query_text for key in SECRET_QUERY_KEYS):
            return str(parsed)  # the common case: nothing to remove
        if parsed.user or parsed.password:
            parsed = parsed.with_user(None)
        secret_keys = [key for key in parsed.query if key.lower() in SECRET_QUERY_KEYS]
        if secret_keys:
            parsed = parsed.with_query(
                [(k, v) for k, v in parsed.query.items() if k.lower() not in SECRET_QUERY_KEYS]
            )
        return str(parsed)
    except (TypeError, ValueError):
        return "<unparseable URL>"


def token_fingerprint(token: str) -> str:
    """Return a short, stable, non-reversible name for an access token.

    Twelve hex digits of SHA-256 identify a token in logs and throttle keys
    without letting anyone who reads them use it.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:12]


def origin_of(url: URL) -> str:
    """Return ``scheme://host:port`` of an absolute URL, lower-cased."""
    return str(url.origin()).lower()
