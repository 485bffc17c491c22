"""The access token as a secret value, and redaction of every text we make.

Two rules keep the token inside the process:

- It lives in an :class:`AccessToken`, whose ``str``/``repr`` are redacted and
  which refuses to be pickled; the ``Authorization`` header is built from it
  only at send time, so no long-lived object holds the header text.
- Every text the library makes from server data (exception messages, stored
  bodies, pages, log fields) goes through :func:`redact`, which replaces the
  exact value of every live token, then anything that looks like a credential.
  A server or proxy that echoes the request's ``Authorization`` header cannot
  put the token into an error, a page or a log line.

Live tokens are found through a weak set, as Airflow's secrets masker finds its
secrets: a token is forgotten when the last client holding it is collected, so
rotating OAuth tokens do not accumulate.
"""

from __future__ import annotations

import hmac
import re
import traceback
import weakref
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import quote

from resilient_canvas._http import token_fingerprint

#: What replaces a secret in every text we make.
REDACTED = "[redacted]"

#: Tokens shorter than this are not searched for in texts: redacting every "a"
#: in a message would destroy it while protecting nothing worth protecting.
_MIN_REDACTED_LENGTH = 8

_LIVE: weakref.WeakSet[AccessToken] = weakref.WeakSet()

_SECRETS = [
    # A bearer credential, but not a challenge's parameters (``Bearer realm="canvas"``).
    re.compile(r"(?i)(bearer\s+)(?![\w-]+=[\"\w])[^\s\"'<>,;]+"),
    re.compile(r"(?i)((?:access_token|client_secret)=)[^&\s\"'<>]+"),
    re.compile(r"(?i)(\"?(?:access_token|authorization)\"?\s*[:=]\s*\"?)(?!bearer\s)[^\s\"'<>,&]+"),
]


class AccessToken:
    """A Canvas access token that does not show itself.

    ``str()`` and ``repr()`` give a fingerprint, never the value; pickling
    (and so sending it to another process by accident, inside an exception or
    a client) raises ``TypeError``: a silently redacted copy would fail later
    and far away, a refusal fails here. Copies are the same object. Equality
    compares values in constant time.

    Args:
        value: The token as Canvas issued it.

    Raises:
        ValueError: If *value* is empty or holds whitespace or control
            characters (which would let it inject headers).
    """

    __slots__ = ("__weakref__", "_value", "fingerprint")

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("access_token must not be empty.")
        if any(char.isspace() or not char.isprintable() for char in value):
            raise ValueError(
                "access_token holds whitespace or control characters; copy it again "
                "from Canvas without the surrounding text."
            )
        self._value = value
        #: Twelve hex digits of SHA-256: names the token in logs and throttle keys.
        self.fingerprint = token_fingerprint(value)
        _LIVE.add(self)

    def reveal(self) -> str:
        """The token's value, for the one place that sends it."""
        return self._value

    def authorization(self) -> str:
        """The ``Authorization`` header value, built when a request is sent."""
        return f"Bearer {self._value}"

    def __repr__(self) -> str:
        return f"AccessToken(<sha256:{self.fingerprint}>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccessToken):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __copy__(self) -> AccessToken:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> AccessToken:
        return self

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError(
            "An AccessToken cannot be pickled: the token would leave the process. Give the "
            "other process the token through its own configuration or secret store."
        )


def _live_forms() -> set[str]:
    """Each live token's value as sent and percent-encoded (clients may share a token)."""
    forms: set[str] = set()
    for token in list(_LIVE):
        value = token.reveal()
        if len(value) >= _MIN_REDACTED_LENGTH:
            forms |= {value, quote(value, safe="")}
    return forms


def redact(text: str) -> str:
    """Replace every live token's value, then anything that looks like a credential."""
    for form in _live_forms():
        if form in text:
            text = text.replace(form, REDACTED)
    for pattern in _SECRETS:
        text = pattern.sub(rf"\1{REDACTED}", text)
    return text


def redact_data(value: Any, *, depth: int = 0) -> Any:
    """Redact every string inside JSON-like data (dicts, lists, tuples), keys included.

    Other values are returned unchanged; very deep structures are cut off
    rather than recursed into without end.
    """
    if isinstance(value, str):
        return redact(value)
    if depth > 32:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            redact_data(key, depth=depth + 1): redact_data(item, depth=depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(item, depth=depth + 1) for item in value]
    return value


def format_traceback(error: BaseException) -> str:
    """The traceback of *error* and its causes as text, credentials redacted.

    Logged instead of the exception object: renderers that show each frame's
    local variables would otherwise print whatever those frames hold.
    """
    return redact("".join(traceback.format_exception(error)))
