"""Parsing of the few HTTP and Canvas header values we act on, and redaction.

Every parser here is total: hostile or malformed input yields ``None``, never an
exception, because these run while we are already handling a failure.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import math
import re
import traceback
from collections.abc import Mapping
from http import HTTPStatus

from multidict import CIMultiDict
from yarl import URL

from resilient_canvas._phrases import SANIC_STATUS_PHRASES

#: Longest header value we bother to parse; a longer one is garbage or an attack.
MAX_HEADER_VALUE_LENGTH = 256

#: Query parameters that carry credentials and must never be logged or shown.
SECRET_QUERY_KEYS = frozenset({"access_token", "token", "client_secret", "code"})


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
    seconds = parse_float_header(text) if _looks_numeric(text) else None
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())


def _looks_numeric(text: str) -> bool:
    return text[0].isdigit() or text[0] in "+-."


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


_SECRETS = [
    re.compile(r"(?i)(bearer\s+)[^\s\"'<>,;]+"),
    re.compile(r"(?i)((?:access_token|client_secret)=)[^&\s\"'<>]+"),
    re.compile(r"(?i)(\"?(?:access_token|authorization)\"?\s*[:=]\s*\"?)[^\s\"'<>,&]+"),
]


def scrub(text: str) -> str:
    """Replace anything that looks like a credential with ``[redacted]``."""
    for pattern in _SECRETS:
        text = pattern.sub(r"\1[redacted]", text)
    return text


def format_traceback(error: BaseException) -> str:
    """The traceback of *error* and its causes as text, credentials redacted.

    Logged instead of the exception object: renderers that show each frame's
    local variables would otherwise print the request headers, token included,
    held by aiohttp's frames.
    """
    return scrub("".join(traceback.format_exception(error)))
