"""Reading response bodies with bounded memory, whatever the server sends.

Limits apply to the *decoded* bytes: aiohttp inflates gzip, deflate and
brotli bodies as they stream in (in bounded steps since 3.13.3), so a 300 KB
gzip body that inflates to 300 MB is refused once the decoded bytes pass the
limit, not trusted because its ``Content-Length`` is small.

The readers return None past the limit instead of raising: the caller builds
the error where no frame holds the bytes read so far, because a kept
exception (bulk runs keep thousands) keeps its traceback's frames alive.
"""

from __future__ import annotations

from collections.abc import Awaitable

import aiohttp

from resilient_canvas.exceptions import InvalidResponse

#: Most of an error response's body kept for its exception: Canvas error
#: bodies are a few hundred bytes, and 10,000 failed calls in a bulk run must
#: not hold 10,000 full bodies. The rest is read and counted, not kept.
ERROR_BODY_PREFIX = 64 * 1024
_CHUNK = 256 * 1024


def is_encoded(response: aiohttp.ClientResponse) -> bool:
    """Whether the body is compressed on the wire (its Content-Length is not its size)."""
    encoding = response.headers.get(aiohttp.hdrs.CONTENT_ENCODING)
    if encoding is None:  # the common case, without the string work
        return False
    return encoding.strip().lower() not in ("", "identity")


def read_body(response: aiohttp.ClientResponse, limit: int) -> Awaitable[bytes | None]:
    """Read the whole decoded body; None, unkept, when it is larger than *limit* bytes.

    Await the result. Not a coroutine function itself: the common case hands
    back aiohttp's own read, one coroutine layer fewer per response.
    """
    declared = response.content_length
    if declared is not None and not is_encoded(response):
        # The common case: one read of a known size, or a refusal unread.
        return response.read() if declared <= limit else _refused()
    return _read_streamed(response, limit)


async def _refused() -> None:
    return None


async def _read_streamed(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    body = bytearray()
    while chunk := await response.content.read(_CHUNK):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def read_error_body(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, int] | None:
    """Read an error body: keep its first :data:`ERROR_BODY_PREFIX` bytes, count the rest.

    The rest is drained, so the connection can be reused, but never kept; the
    whole is still bounded by *limit*.

    Returns:
        The kept prefix and the full decoded length; None when the body is
        larger than *limit*.
    """
    declared = response.content_length
    if declared is not None and declared > limit and not is_encoded(response):
        return None
    prefix = bytearray()
    length = 0
    while chunk := await response.content.read(_CHUNK):
        length += len(chunk)
        if len(prefix) < ERROR_BODY_PREFIX:
            prefix += chunk[: ERROR_BODY_PREFIX - len(prefix)]
        if length > limit:
            return None
    return bytes(prefix), length


def too_large(method: str, url: str, limit: int) -> InvalidResponse:
    """The error for a body over the limit (the request reached the server)."""
    error = InvalidResponse(
        f"{method} {url} answered with a body larger than {limit:,} bytes once decoded; "
        "it was not kept. Raise max_body_size if this is expected."
    )
    error.method, error.url, error.request_sent = method, url, True
    return error
