"""Render any error as JSON, text or HTML: full for debugging, minimal for production.

Modelled on Sanic's error pages, framework-neutral. :func:`exception_response`
picks a format from the request's ``Accept`` and ``Content-Type``;
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
        parts = [f"<h1>{self._e(self.title)}</h1>", f"<p>{self._e(self.text)}</p>"]
        if self.context:
            parts.append(self._definitions("Context", self.context))
        if full:
            details = [
                f"<p>{self._e(type(self.exception).__name__)} while handling path "
                f"<code>{self._e(self.path)}</code></p>"
            ]
            if self.extra:
                details.append(self._definitions("Extra", self.extra))
            for error in self.exception_chain():
                trace = "".join(traceback.format_exception(error, chain=False))
                details.append(f"<pre>{self._e(trace)}</pre>")
            parts.append(
                "<details open><summary>Details</summary>" + "".join(details) + "</details>"
            )
        return (
            "<!DOCTYPE html><html lang=en><meta charset=utf-8>"
            f"<title>{self._e(self.title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "pre{background:#f4f4f4;padding:1em;overflow:auto}dt{font-weight:bold}</style>"
            f"<body>{''.join(parts)}</body></html>"
        )

    def _definitions(self, heading: str, values: Mapping[str, Any]) -> str:
        rows = "".join(
            f"<dt>{self._e(str(key))}</dt><dd><code>{self._e(self.dumps(value))}</code></dd>"
            for key, value in values.items()
        )
        return f"<h2>{heading}</h2><dl>{rows}</dl>"

    @staticmethod
    def _e(text: str) -> str:
        # Full escaping (quotes too): values may land anywhere in the page.
        return html.escape(text, quote=True)


RENDERERS: dict[str, type[BaseRenderer]] = {
    "text": TextRenderer,
    "json": JSONRenderer,
    "html": HTMLRenderer,
}
_BY_MIME = {"text/plain": "text", "application/json": "json", "text/html": "html"}


def _accepted(accept: str) -> list[tuple[str, float, int]]:
    """Parse an Accept header into (media type, quality, position)."""
    media: list[tuple[str, float, int]] = []
    for position, item in enumerate(accept.split(",")):
        kind, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = max(0.0, min(1.0, float(value)))
                except ValueError:
                    quality = 0.0
        if kind:
            media.append((kind.lower(), quality, position))
    return media


def _best_format(accept: str) -> str | None:
    best: tuple[float, int, int, str] | None = None
    for kind, quality, position in _accepted(accept):
        if quality <= 0:
            continue
        major = kind.split("/")[0]
        for mime, name in _BY_MIME.items():
            if kind == mime:
                specificity = 2
            elif kind == f"{major}/*" and mime.startswith(major + "/"):
                specificity = 1
            elif kind == "*/*":
                specificity = 0
            else:
                continue
            # Higher quality, then more specific, then earlier in the header.
            candidate = (quality, specificity, -position, name)
            if best is None or candidate[:3] > best[:3]:
                best = candidate
    return best[3] if best else None


def _header(request: Any, name: str) -> str:
    headers = getattr(request, "headers", None) or {}
    try:
        return str(headers.get(name, "") or "")
    except AttributeError:
        return ""


def exception_response(
    request: Any,
    exception: BaseException,
    debug: bool,
    fallback: str = "auto",
    base: type[BaseRenderer] = TextRenderer,
    renderer: type[BaseRenderer] | None = None,
) -> RenderedError:
    """Render *exception* in the format the request asks for.

    Args:
        request: The request being answered (or None).
        exception: What went wrong.
        debug: Whether full pages may be shown (never for quiet exceptions).
        fallback: ``"auto"`` chooses from Accept and Content-Type; ``"html"``,
            ``"text"`` or ``"json"`` force that format.
        base: The renderer when nothing in the request decides.
        renderer: A renderer class to use regardless of the request.

    Raises:
        ValueError: ``Unknown format: <name>`` for any other *fallback*.
    """
    chosen = renderer or _choose(request, fallback, base)
    return chosen(request, exception, debug).render()


def _choose(request: Any, fallback: str, base: type[BaseRenderer]) -> type[BaseRenderer]:
    if fallback in RENDERERS:
        return RENDERERS[fallback]
    if fallback != "auto":
        raise ValueError(f"Unknown format: {fallback}")
    accept = _header(request, "Accept")
    content_type = _header(request, "Content-Type").split(";")[0].strip().lower()
    named = {kind for kind, quality, _ in _accepted(accept) if quality > 0}
    if "application/json" in named or content_type == "application/json":
        return JSONRenderer
    best = _best_format(accept)
    return RENDERERS[best] if best else base


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
    """
    if fallback != "auto" and fallback not in RENDERERS:
        raise ValueError(f"Unknown format: {fallback}")

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
            return web.Response(
                status=page.status,
                headers=page.headers,
                body=page.body_bytes,
                content_type=page.content_type.split(";")[0],
                charset="utf-8",
            )

    return middleware
