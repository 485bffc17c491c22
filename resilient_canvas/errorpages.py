"""Render any error as JSON, text or HTML: full for debugging, minimal for production.

Modelled on Sanic's error pages, framework-neutral. :func:`exception_response`
picks a format from the request's ``Accept`` and ``Content-Type`` exactly as
Sanic 25.12 does (:func:`guess_format`), and HTML pages keep Sanic's structure
and ids;
:func:`error_middleware` plugs it into aiohttp.web. What we add to Sanic's
model: ``extra`` and tracebacks never appear in minimal output, and no access
token appears in any output or header, debug included (every live token's exact
value and anything that looks like a credential are redacted).

A Sanic app can use the same renderers in its error handler::

    from sanic.handlers import ErrorHandler
    from sanic.response import raw
    from resilient_canvas import errorpages
    from resilient_canvas.exceptions import CanvasException

    class CanvasErrorHandler(ErrorHandler):
        def default(self, request, exception):
            if not isinstance(exception, CanvasException):
                return super().default(request, exception)
            page = errorpages.exception_response(
                request, exception, debug=request.app.debug, fallback="auto"
            )
            return raw(page.body, status=page.status, headers=page.headers,
                       content_type=page.content_type)

    app.error_handler = CanvasErrorHandler()
"""

from __future__ import annotations

import html
import json
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from resilient_canvas._errors import CanvasException
from resilient_canvas._http import status_phrase
from resilient_canvas._secret import redact

__all__ = [
    "FALLBACK_TEXT",
    "RENDERERS",
    "BaseRenderer",
    "HTMLRenderer",
    "JSONRenderer",
    "RenderedError",
    "TextRenderer",
    "error_middleware",
    "escape",
    "exception_response",
    "guess_format",
]

#: What production shows for an error that is not ours: never the exception text.
FALLBACK_TEXT = "The application encountered an unexpected error and could not continue."


def escape(text: str) -> str:
    """Minimal HTML escaping of ``&`` and ``<`` (not for attribute values), as Sanic does."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


@dataclass(frozen=True, slots=True)
class RenderedError:
    """A rendered error, ready for any web framework.

    Attributes:
        status: The HTTP status to answer with.
        headers: Headers to send (the exception's, e.g. ``WWW-Authenticate``).
        content_type: The body's media type with charset.
        body: The rendered text.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain; charset=utf-8"
    body: str = ""

    @property
    def body_bytes(self) -> bytes:
        """The body encoded as UTF-8."""
        return self.body.encode("utf-8")


class BaseRenderer:
    """Renders one exception for one request.

    Args:
        request: Anything with ``path``, query args (``args`` or ``query``) and
            ``headers``; may be None.
        exception: Any exception; non-``CanvasException`` ones answer 500 and,
            outside debug, a fixed apology instead of their text.
        debug: Whether details for developers may be shown.
    """

    content_type: ClassVar[str] = "text/plain; charset=utf-8"

    def __init__(self, request: Any, exception: BaseException, debug: bool) -> None:
        self.request = request
        self.exception = exception
        self.debug = debug

    @property
    def status(self) -> int:
        """The status of the response."""
        return self.exception.status_code if isinstance(self.exception, CanvasException) else 500

    @property
    def phrase(self) -> str:
        """The status's reason phrase."""
        return status_phrase(self.status) or "Error Occurred"

    @property
    def title(self) -> str:
        """``<status> — <phrase>``."""
        return f"{self.status} — {self.phrase}"

    @property
    def text(self) -> str:
        """The message shown: ours always, another exception's only in debug."""
        if self.debug or isinstance(self.exception, CanvasException):
            return str(self.exception)
        return FALLBACK_TEXT

    @property
    def headers(self) -> dict[str, str]:
        """The exception's headers, sent with the response."""
        headers = dict(getattr(self.exception, "headers", None) or {})
        retry_after = getattr(self.exception, "retry_after", None)
        if retry_after is not None and "Retry-After" not in headers:
            headers["Retry-After"] = str(max(0, round(retry_after)))
        return headers

    @property
    def context(self) -> Mapping[str, Any]:
        return getattr(self.exception, "context", None) or {}

    @property
    def extra(self) -> Mapping[str, Any]:
        return getattr(self.exception, "extra", None) or {}

    @property
    def path(self) -> str:
        return str(getattr(self.request, "path", "") or "")

    @property
    def args(self) -> dict[str, Any]:
        query = getattr(self.request, "args", None) or getattr(self.request, "query", None) or {}
        try:
            return {
                str(key): query.getall(key) if hasattr(query, "getall") else query[key]
                for key in query
            }
        except (TypeError, KeyError):
            return {}

    @property
    def quiet(self) -> bool:
        return bool(getattr(self.exception, "quiet", False))

    def render(self) -> RenderedError:
        """Full output only in debug for a non-quiet exception; minimal otherwise."""
        body = self.full() if self.debug and not self.quiet else self.minimal()
        # The last line of defence: whatever a page shows, no credential leaves.
        headers = {name: redact(value) for name, value in self.headers.items()}
        return RenderedError(self.status, headers, self.content_type, redact(body))

    def full(self) -> str:
        """Everything a developer needs: message, context, extra, traceback."""
        raise NotImplementedError

    def minimal(self) -> str:
        """What is safe in production: title, message, context."""
        raise NotImplementedError

    def exception_chain(self) -> list[BaseException]:
        """The exception and its ``__cause__`` chain, oldest first."""
        chain: list[BaseException] = []
        current: BaseException | None = self.exception
        while current is not None and current not in chain:
            chain.append(current)
            current = current.__cause__
        return chain[::-1]

    @staticmethod
    def dumps(value: Any) -> str:
        """JSON for a value, falling back to its text for what JSON cannot hold."""
        return json.dumps(value, default=str, ensure_ascii=False)


class TextRenderer(BaseRenderer):
    """``text/plain`` pages."""

    content_type = "text/plain; charset=utf-8"
    SPACER = "  "

    @property
    def title(self) -> str:
        return f"⚠️ {super().title}"

    def minimal(self) -> str:
        return self._output(full=False)

    def full(self) -> str:
        return self._output(full=True)

    def _output(self, *, full: bool) -> str:
        lines: list[str] = []
        if full:
            name = type(self.exception).__name__
            lines.append(f"{name}: {self.exception} while handling path {self.path}")
            lines.append("Traceback (most recent call last):\n")
            lines += [
                "".join(traceback.format_exception(error, chain=False))
                for error in self.exception_chain()
            ]
        blocks = [("context", self.context, True), ("extra", self.extra, full)]
        for name, values, shown in blocks:
            if values and shown:
                lines.append(f"\n{name.title()}")
                lines += [
                    f"{self.SPACER * 2}{key}: {self.dumps(value)}" for key, value in values.items()
                ]
        body = "\n".join(lines)
        return f"{self.title}\n{'=' * len(self.title)}\n{self.text}\n\n{body}"


class JSONRenderer(BaseRenderer):
    """``application/json`` documents."""

    content_type = "application/json"

    def minimal(self) -> str:
        return json.dumps(self._output(full=False), default=str, ensure_ascii=False)

    def full(self) -> str:
        return json.dumps(self._output(full=True), default=str, ensure_ascii=False)

    def _output(self, *, full: bool) -> dict[str, Any]:
        output: dict[str, Any] = {
            "description": self.phrase,
            "status": self.status,
            "message": self.text,
        }
        if self.context:
            output["context"] = dict(self.context)
        if full:
            if self.extra:
                output["extra"] = dict(self.extra)
            output["path"] = self.path
            output["args"] = self.args
            output["exceptions"] = [
                {
                    "type": type(error).__name__,
                    "exception": str(error),
                    "frames": [
                        {
                            "file": frame.filename,
                            "line": frame.lineno,
                            "name": frame.name,
                            "src": frame.line,
                        }
                        for frame in traceback.extract_tb(error.__traceback__)
                    ],
                }
                for error in self.exception_chain()
            ]
        return output


class HTMLRenderer(BaseRenderer):
    """``text/html`` pages; every interpolated value is escaped."""

    content_type = "text/html; charset=utf-8"

    @property
    def title(self) -> str:
        return f"⚠️ {super().title}"

    def minimal(self) -> str:
        return self._page(full=False)

    def full(self) -> str:
        return self._page(full=True)

    def _page(self, *, full: bool) -> str:
        # Sanic's page structure and ids, so that what reads Sanic's pages
        # (and Sanic's own tests) reads ours: the message in the first <p>,
        # context in <dl id="exception-context">, extra in "exception-extra".
        parts = [f"<h1>{self._e(self.title)}</h1>", f"<p>{self._e(self.text)}</p>"]
        if self.context:
            parts.append(self._definitions("Issue context", "exception-context", self.context))
        if full:
            details = ["<summary>Details for developers (debug mode only)</summary>"]
            if self.extra:
                details.append(self._definitions("Issue extra data", "exception-extra", self.extra))
            details.append(f"<h2>{self._e(self.request_line)}</h2>")
            details += [self._exception_block(error) for error in self.exception_chain()]
            parts.append(f"<details open>{''.join(details)}</details>")
        return (
            "<!DOCTYPE html><html lang=en><meta charset=utf-8>"
            f"<title>{self._e(self.title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "pre{background:#f4f4f4;padding:1em;overflow:auto}dt{font-weight:bold}</style>"
            f"<body>{''.join(parts)}</body></html>"
        )

    @property
    def request_line(self) -> str:
        """``<METHOD> <path>`` of the request (Sanic's heading), or what is known of it."""
        method = str(getattr(self.request, "method", "") or "")
        return " ".join(part for part in (method, self.path) if part) or "No request"

    def _exception_block(self, error: BaseException) -> str:
        # One <h3> per exception of the chain, oldest first, as tracerite
        # heads each in Sanic's debug page.
        name = self._e(f"{type(error).__name__}:")
        frames = "".join(traceback.format_tb(error.__traceback__))
        trace = f"<pre>{self._e(frames)}</pre>" if frames else ""
        return (
            f'<div class="exception"><h3><span class="exctype">{name}</span> '
            f"{self._e(str(error))}</h3>{trace}</div>"
        )

    def _definitions(self, heading: str, table_id: str, values: Mapping[str, Any]) -> str:
        # Values as text, as Sanic shows them (str(), not JSON: "bar", not '"bar"').
        rows = "".join(
            f'<dt><span class="key">{self._e(str(key))}</span><span>: </span></dt>'
            f"<dd>{self._e(self._display(value))}</dd>"
            for key, value in values.items()
        )
        return f'<h2>{heading}</h2><dl id="{table_id}">{rows}</dl>'

    @staticmethod
    def _display(value: Any) -> str:
        try:
            return str(value)
        except Exception:
            # A value whose __str__ fails must not turn the page into a 500.
            return "Unable to display value"

    @staticmethod
    def _e(text: str) -> str:
        # Full escaping (quotes too): values may land anywhere in the page.
        return html.escape(text, quote=True)


RENDERERS: dict[str, type[BaseRenderer]] = {
    "text": TextRenderer,
    "json": JSONRenderer,
    "html": HTMLRenderer,
}
#: Sanic's ``MIME_BY_CONFIG``: its order is the preference among equal matches.
_MIME_BY_FORMAT = {"text": "text/plain", "json": "application/json", "html": "text/html"}
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _MediaRange:
    """One entry of an Accept header, as Sanic's ``MediaType`` reads it."""

    type: str
    subtype: str
    q: float
    params: int

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}"

    def matches(self, mime: str) -> bool:
        kind, _, sub = mime.partition("/")
        return self.type in (kind, "*") and self.subtype in (sub, "*")


def _media_range(item: str) -> _MediaRange | None:
    """Parse one Accept entry; None for one without a slash, as Sanic skips those.

    Raises:
        ValueError: For an entry Sanic refuses (empty type, bad parameter, bad q).
    """
    if "/" not in item:
        return None
    mime, *raw_params = item.strip().split(";")
    kind, subtype = mime.split("/", 1)
    if not kind or not subtype:
        raise ValueError(item)
    params = {key.strip(): value.strip() for key, value in (p.split("=", 1) for p in raw_params)}
    return _MediaRange(kind.lstrip(), subtype.rstrip(), float(params.get("q", "1.0")), len(params))


def _accept_list(accept: str | None) -> list[_MediaRange]:
    """Sanic's ``parse_accept``: RFC 9110 order, most preferred first.

    No header accepts everything; an empty one accepts nothing. A header
    Sanic would refuse with ``InvalidHeader`` accepts nothing here: an error
    page must render whatever the request says.
    """
    if accept is None:
        accept = "*/*"
    try:
        ranges = [media for media in map(_media_range, accept.split(",")) if media]
    except ValueError:
        return []
    # Stable: entries Sanic ranks equal keep the header's order.
    return sorted(ranges, key=lambda m: (-m.q, -m.params, m.subtype == "*", m.type == "*"))


def _match(accepted: list[_MediaRange], mimes: list[str]) -> str | None:
    """Sanic's ``AcceptList.match``: by quality, then our preference, then the header.

    As in Sanic, an entry with ``q=0`` still matches, after every other one.
    """
    candidates = sorted(
        (-media.q, i, j, mime)
        for j, media in enumerate(accepted)
        for i, mime in enumerate(mimes)
        if media.matches(mime)
    )
    return candidates[0][3] if candidates else None


def _header(request: Any, name: str) -> str | None:
    """A request header by case-insensitive name, None when absent."""
    headers = getattr(request, "headers", None) or {}
    try:
        value = headers.get(name)
        if value is None:
            lowered = name.lower()
            value = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    except (AttributeError, TypeError):
        return None
    return None if value is None else str(value)


def _has_json_body(request: Any) -> bool:
    """Sanic 25.12 still guesses JSON from a parsed body (deprecated there).

    Only a request that holds its parsed body (Sanic's ``request.json``) is
    read; aiohttp's is a coroutine, and an error page does not read a body.
    """
    try:
        body = getattr(request, "json", None)
    except Exception:
        # Sanic raises BadRequest for a body that is not JSON.
        return False
    return bool(body) and not callable(body)


def guess_format(request: Any, fallback: str) -> str | None:
    """The format Sanic 25.12's ``guess_mime`` picks, or None to use the base renderer.

    Args:
        request: The request being answered (or None: it accepts everything).
        fallback: ``"auto"``, or ``"html"``, ``"text"`` or ``"json"``.

    Returns:
        ``"text"``, ``"json"`` or ``"html"``; None when the request accepts
        none of the candidates.
    """
    accepted = _accept_list(_header(request, "Accept"))
    formats: list[str] = []
    if fallback in _MIME_BY_FORMAT:
        # A forced format is still subject to Accept: if the client refuses
        # it, the base renderer answers.
        formats.append(fallback)
    elif fallback == "auto" and _match(accepted, [_JSON]):
        literal = any(media.mime == _JSON for media in accepted)
        content_type = _header(request, "Content-Type") or ""
        if literal or _JSON in content_type or _has_json_body(request):
            formats.append("json")
    if fallback == "auto":
        formats += [name for name in _MIME_BY_FORMAT if name not in formats]
    mime = _match(accepted, [_MIME_BY_FORMAT[name] for name in formats])
    return next((name for name, m in _MIME_BY_FORMAT.items() if m == mime), None)


def exception_response(
    request: Any,
    exception: BaseException,
    debug: bool,
    fallback: str = "auto",
    base: type[BaseRenderer] = TextRenderer,
    renderer: type[BaseRenderer] | None = None,
) -> RenderedError:
    """Render *exception* in the format the request asks for, as Sanic 25.12 chooses it.

    Args:
        request: The request being answered (or None).
        exception: What went wrong.
        debug: Whether full pages may be shown (never for quiet exceptions).
        fallback: ``"auto"`` chooses from Accept and Content-Type; ``"html"``,
            ``"text"`` or ``"json"`` choose that format if Accept allows it,
            else *base*.
        base: The renderer when the request accepts none of the candidates.
        renderer: A renderer class to use regardless of the request.

    Raises:
        CanvasException: ``Unknown format: <name>`` for any other *fallback*,
            as Sanic raises its base exception.
    """
    _check_format(fallback)
    chosen = renderer or RENDERERS.get(guess_format(request, fallback) or "", base)
    return chosen(request, exception, debug).render()


def _check_format(fallback: str) -> None:
    """Refuse an unknown format name as Sanic's ``check_error_format`` does.

    Raises:
        CanvasException: ``Unknown format: <name>``.
    """
    if fallback != "auto" and fallback not in RENDERERS:
        raise CanvasException(f"Unknown format: {fallback}")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(
    *, debug: bool = False, fallback: str = "auto", catch_all: bool = False
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp.web middleware that answers our exceptions with rendered pages.

    Args:
        debug: Whether full pages may be shown.
        fallback: As for :func:`exception_response`.
        catch_all: Also render every other ``Exception`` (500, apology text
            outside debug) instead of letting aiohttp handle it.

    Raises:
        CanvasException: ``Unknown format: <name>`` for an unknown *fallback*.
    """
    _check_format(fallback)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:
            if not (catch_all or isinstance(error, CanvasException)):
                raise
            page = exception_response(request, error, debug, fallback)
            # The renderer's Content-Type as it is (JSON without a charset, as Sanic sends it).
            headers = {**page.headers, "Content-Type": page.content_type}
            return web.Response(status=page.status, headers=headers, body=page.body_bytes)

    return middleware
