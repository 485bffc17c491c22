"""Tests for resilient_canvas.errorpages: Sanic's behaviours, hostile content, secrets."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from bs4 import BeautifulSoup

from resilient_canvas import exceptions as exc
from resilient_canvas.errorpages import (
    FALLBACK_TEXT,
    HTMLRenderer,
    JSONRenderer,
    TextRenderer,
    error_middleware,
    escape,
    exception_response,
)
from resilient_canvas.exceptions import classify_response


@dataclass
class FakeRequest:
    """The smallest request: a method, a path, query args and headers."""

    method: str = "POST"
    path: str = "/lti/launch"
    args: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _error_with(
    context: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    quiet: bool | None = None,
) -> exc.CanvasException:
    return exc.ServerError("Canvas broke.", context=context, extra=extra, quiet=quiet)


RENDERERS = [TextRenderer, JSONRenderer, HTMLRenderer]


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("debug", [True, False])
def test_context_shown_in_every_format_and_mode(renderer: type, debug: bool) -> None:
    """Context is for the end user: shown in every format, debug or not."""
    page = exception_response(
        FakeRequest(), _error_with(context={"course": "BIO 101"}), debug, renderer=renderer
    )

    assert "course" in page.body
    assert "BIO 101" in page.body


@pytest.mark.parametrize("renderer", RENDERERS)
def test_extra_shown_only_in_debug(renderer: type) -> None:
    """Extra is for developers: shown in debug, never in production."""
    error = _error_with(extra={"request_id": "req-42"})

    assert "req-42" in exception_response(FakeRequest(), error, True, renderer=renderer).body
    assert "req-42" not in exception_response(FakeRequest(), error, False, renderer=renderer).body


@pytest.mark.parametrize("renderer", RENDERERS)
def test_quiet_errors_are_minimal_even_in_debug(renderer: type) -> None:
    """A quiet exception never gets the full page."""
    error = _error_with(extra={"request_id": "req-42"}, quiet=True)

    assert "req-42" not in exception_response(FakeRequest(), error, True, renderer=renderer).body


def test_text_page_layout() -> None:
    """Title with its bar, the message, then a Context block."""
    error = exc.NotFound("No such course.", context={"course_id": 7})

    page = exception_response(FakeRequest(), error, False, renderer=TextRenderer)

    title = "⚠️ 404 — Not Found"
    assert f"{title}\n{'=' * len(title)}\nNo such course.\n\n\nContext\n    course_id: 7" == (
        page.body
    )
    assert ("text/plain; charset=utf-8", 404) == (page.content_type, page.status)


def test_full_text_shows_the_cause_chain_oldest_first() -> None:
    """Debug text names the path and shows each exception of the __cause__ chain."""
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as cause:
            raise exc.ServerError("Canvas broke.") from cause
    except exc.ServerError as error:
        page = exception_response(FakeRequest(), error, True, renderer=TextRenderer)

    body = page.body
    assert "ServerError: Canvas broke. while handling path /lti/launch" in body
    assert body.index("ConnectionResetError: peer reset") < body.index("resilient_canvas")


def test_json_minimal_and_full_keys() -> None:
    """Minimal JSON has description, status, message, context; full adds the rest."""
    error = exc.Forbidden("Nope.", context={"a": 1}, extra={"b": 2})
    request = FakeRequest(args={"page": ["2"]})

    minimal = json.loads(exception_response(request, error, False, renderer=JSONRenderer).body)
    error.quiet = False
    full = json.loads(exception_response(request, error, True, renderer=JSONRenderer).body)

    assert {
        "description": "Forbidden",
        "status": 403,
        "message": "Nope.",
        "context": {"a": 1},
    } == minimal
    assert {
        "description",
        "status",
        "message",
        "context",
        "extra",
        "path",
        "args",
        "exceptions",
    } == set(full)
    assert ({"b": 2}, "/lti/launch", {"page": ["2"]}) == (full["extra"], full["path"], full["args"])
    assert "Forbidden" == full["exceptions"][0]["type"]


@pytest.mark.parametrize("debug", [True, False])
def test_html_context_is_a_definition_list_of_plain_values(debug: bool) -> None:
    """Context goes in <dl id="exception-context">, each value as text, not as JSON."""
    error = exc.NotFound("No such course.", context={"course": "BIO 101", "ids": [1, 2]})

    page = exception_response(FakeRequest(), error, debug, renderer=HTMLRenderer)

    soup = BeautifulSoup(page.body, "html.parser")
    (table,) = soup.find_all("dl", {"id": "exception-context"})
    assert ["course: ", "ids: "] == [dt.text for dt in table.find_all("dt")]
    assert ["BIO 101", "[1, 2]"] == [dd.text for dd in table.find_all("dd")]
    assert "No such course." == soup.find("p").text


def test_html_debug_page_names_the_request_and_each_exception_of_the_chain() -> None:
    """Debug HTML has an <h2> "<method> <path>" and one <h3> per exception, oldest first."""
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as cause:
            raise exc.ServerError("Canvas broke.") from cause
    except exc.ServerError as error:
        page = exception_response(FakeRequest(), error, True, renderer=HTMLRenderer)

    soup = BeautifulSoup(page.body, "html.parser")
    assert "POST /lti/launch" in [h2.text for h2 in soup.find_all("h2")]
    assert ["ConnectionResetError: peer reset", "ServerError: Canvas broke."] == [
        h3.text for h3 in soup.find_all("h3")
    ]


def test_html_minimal_page_has_no_details() -> None:
    """Outside debug the HTML page has no request heading, exceptions or extra."""
    error = exc.ServerError("Canvas broke.", extra={"request_id": "req-42"})

    soup = BeautifulSoup(
        exception_response(FakeRequest(), error, False, renderer=HTMLRenderer).body,
        "html.parser",
    )

    assert ([], [], None) == (
        soup.find_all("h3"),
        soup.find_all("details"),
        soup.find("dl", {"id": "exception-extra"}),
    )


@pytest.mark.parametrize("renderer", RENDERERS)
def test_a_computed_message_renders_its_page(renderer: type) -> None:
    """A subclass whose message is a property gets its own page, not a 500."""

    class Teapot(exc.CanvasException):
        status_code = 418

        @property
        def message(self) -> str:  # type: ignore[override]
            return f"Found {self.extra['foo']}"

    page = exception_response(FakeRequest(), Teapot(extra={"foo": "bar"}), False, renderer=renderer)

    assert 418 == page.status
    assert "Found bar" in page.body


def test_foreign_exception_apology_outside_debug() -> None:
    """A non-Canvas exception answers 500 with a fixed apology, never its text, in production."""
    error = RuntimeError("database password is hunter2")

    production = exception_response(FakeRequest(), error, False, renderer=JSONRenderer)
    debug = exception_response(FakeRequest(), error, True, renderer=JSONRenderer)

    assert 500 == production.status
    assert FALLBACK_TEXT == json.loads(production.body)["message"]
    assert "hunter2" not in production.body
    assert "hunter2" in debug.body


@pytest.mark.parametrize(
    ("error", "header", "value"),
    [
        (
            exc.Unauthorized("x", scheme="Bearer", realm="canvas-lms"),
            "WWW-Authenticate",
            'Bearer realm="canvas-lms"',
        ),
        (exc.MethodNotAllowed("x", "POST", ["GET", "HEAD"]), "Allow", "GET, HEAD"),
        (exc.RangeNotSatisfiable("x", 100), "Content-Range", "bytes */100"),
        (classify_response(503, {"Retry-After": "30"}, b""), "Retry-After", "30"),
    ],
)
@pytest.mark.parametrize("renderer", RENDERERS)
def test_exception_headers_go_on_the_result(
    error: exc.CanvasException, header: str, value: str, renderer: type
) -> None:
    """WWW-Authenticate, Allow, Content-Range and Retry-After reach the rendered result."""
    assert (
        value == exception_response(FakeRequest(), error, False, renderer=renderer).headers[header]
    )


@pytest.mark.parametrize(
    ("accept", "content_type", "expected"),
    [
        ("application/json", "", JSONRenderer),
        ("text/plain,application/json", "", JSONRenderer),
        ("text/plain,text/html", "", TextRenderer),
        ("*/*", "application/json", JSONRenderer),
        ("", "", TextRenderer),
        ("text/html", "", HTMLRenderer),
        ("text/html;q=0.5,text/plain;q=0.9", "", TextRenderer),
        ("text/*", "", TextRenderer),
        ("image/png", "", TextRenderer),
        # As in Sanic 25.12: q=0 still matches, only after every other entry.
        ("application/json;q=0", "", JSONRenderer),
        # A JSON body does not override an Accept that names only HTML or text.
        ("text/html", "application/json", HTMLRenderer),
        ("text/plain", "application/json", TextRenderer),
        # Equal quality: our preference (text, JSON, HTML) beats the header's order.
        ("text/html,text/plain", "", TextRenderer),
        # A header Sanic refuses accepts nothing: the base renderer answers.
        ("a/b;q=high", "", TextRenderer),
    ],
)
def test_auto_format_choice(accept: str, content_type: str, expected: type) -> None:
    """ "auto" picks JSON when Accept allows it and names it or the body is JSON, else the best."""
    headers = {k: v for k, v in (("Accept", accept), ("Content-Type", content_type)) if v}
    page = exception_response(FakeRequest(headers=headers), exc.NotFound(), False)

    assert expected.content_type == page.content_type


@pytest.mark.parametrize(
    ("name", "renderer"), [("html", HTMLRenderer), ("json", JSONRenderer), ("text", TextRenderer)]
)
def test_named_fallback_forces_the_format(name: str, renderer: type) -> None:
    """A named fallback wins over a JSON body and over an Accept that allows it."""
    request = FakeRequest(headers={"Accept": "*/*", "Content-Type": "application/json"})

    assert (
        renderer.content_type
        == exception_response(request, exc.NotFound(), False, fallback=name).content_type
    )


@pytest.mark.parametrize("accept", ["application/json", "text/plain", ""])
def test_forced_html_falls_back_when_accept_excludes_it(accept: str) -> None:
    """A forced format the client does not accept gives the base renderer, as in Sanic."""
    request = FakeRequest(headers={"Accept": accept})

    page = exception_response(request, exc.NotFound(), False, fallback="html")

    assert TextRenderer.content_type == page.content_type


def test_unknown_format_is_refused() -> None:
    """Any other fallback raises "Unknown format" as our base exception, as Sanic does."""
    with pytest.raises(exc.CanvasException, match="Unknown format: yaml"):
        exception_response(FakeRequest(), exc.NotFound(), False, fallback="yaml")
    with pytest.raises(exc.CanvasException, match="Unknown format: yaml"):
        error_middleware(fallback="yaml")


@pytest.mark.parametrize("debug", [True, False])
def test_hostile_canvas_message_is_inert_in_html(debug: bool) -> None:
    """A <script> in a Canvas error message, context or extra renders as text."""
    error = classify_response(
        400,
        {},
        b'{"errors":[{"message":"<script>alert(1)</script>"}]}',
        method="GET",
        url="https://c.test/x",
    )
    error.context["name"] = '"><img src=x onerror=alert(1)>'
    error.extra["note"] = "<script>alert(2)</script>"
    error.quiet = False

    body = exception_response(FakeRequest(), error, debug, renderer=HTMLRenderer).body

    assert "<script>" not in body
    assert "<img" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.parametrize("renderer", RENDERERS)
def test_no_token_in_any_output_even_debug(renderer: type) -> None:
    """Credentials that slipped into a message, extra or query args are redacted."""
    error = RuntimeError("GET https://c.test/x?access_token=SEKRET1 with Bearer SEKRET2")
    request = FakeRequest(
        args={"access_token": "SEKRET3"}, headers={"Authorization": "Bearer SEKRET4"}
    )

    body = exception_response(request, error, True, renderer=renderer).body

    assert "SEKRET" not in body


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("debug", [True, False])
def test_live_token_value_is_redacted_from_body_and_headers(renderer: type, debug: bool) -> None:
    """A live token's bare value, anywhere in a foreign error or its headers, never shows."""
    from resilient_canvas._secret import AccessToken

    token = AccessToken("9~" + "w" * 40)
    error = exc.ServerError(quiet=False, headers={"X-Echo": f"saw {token.reveal()}"})
    error.message = f"the proxy saw {token.reveal()}"
    error.extra["body_excerpt"] = f"echo: {token.reveal()}"

    page = exception_response(FakeRequest(), error, debug, renderer=renderer)

    assert token.reveal() not in page.body + repr(page.headers)
    assert "saw [redacted]" == page.headers["X-Echo"]


def test_escape_is_minimal() -> None:
    """escape() handles & and < only, as Sanic's does."""
    assert "&amp;&lt;>\"'" == escape("&<>\"'")


async def test_aiohttp_middleware_renders_our_exceptions() -> None:
    """The aiohttp.web middleware answers a CanvasException with its page, over a socket."""

    async def handler(request: web.Request) -> web.Response:
        raise exc.ResourceDoesNotExist("No such course.", context={"course_id": 9})

    async def boom(request: web.Request) -> web.Response:
        raise KeyError("internal")

    app = web.Application(middlewares=[error_middleware(debug=False, catch_all=True)])
    app.router.add_get("/course", handler)
    app.router.add_get("/boom", boom)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(f"http://{host}:{port}") as session:
            async with session.get("/course", headers={"Accept": "application/json"}) as answer:
                document = await answer.json()
                status = answer.status
            async with session.get("/boom") as answer:
                boom_text = await answer.text()
                boom_status = answer.status
    finally:
        await runner.cleanup()

    assert (404, "No such course.", {"course_id": 9}) == (
        status,
        document["message"],
        document["context"],
    )
    assert 500 == boom_status
    assert FALLBACK_TEXT in boom_text
    assert "internal" not in boom_text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sanic_error_handler_recipe() -> None:
    """The documented Sanic recipe renders our exceptions through Sanic itself."""
    sanic = pytest.importorskip("sanic")
    from sanic.handlers import ErrorHandler
    from sanic.response import raw

    from resilient_canvas import errorpages

    class CanvasErrorHandler(ErrorHandler):
        def default(self, request: Any, exception: Exception) -> Any:
            if not isinstance(exception, exc.CanvasException):
                return super().default(request, exception)
            page = errorpages.exception_response(request, exception, debug=False, fallback="auto")
            return raw(
                page.body_bytes,
                status=page.status,
                headers=page.headers,
                content_type=page.content_type,
            )

    app = sanic.Sanic("recipe_test", configure_logging=False)
    app.error_handler = CanvasErrorHandler()

    @app.get("/token")
    async def token(request: Any) -> Any:
        raise classify_response(
            401,
            {"WWW-Authenticate": 'Bearer realm="canvas-lms"'},
            b'{"errors":[{"message":"Invalid access token."}]}',
        )

    port = _free_port()
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.start_serving()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/token", headers={"Accept": "application/json"}
            ) as answer,
        ):
            document = await answer.json()
            headers = answer.headers
            status = answer.status
    finally:
        server.close()
        await server.wait_closed()

    assert 401 == status
    assert 'Bearer realm="canvas-lms"' == headers["WWW-Authenticate"]
    assert "Invalid access token." in document["message"]


@pytest.mark.parametrize("renderer", RENDERERS)
def test_request_is_optional(renderer: type) -> None:
    """Renderers work without a request (a CLI has none)."""
    page = exception_response(None, exc.NotFound("No such course."), True, renderer=renderer)

    assert 404 == page.status
    assert "No such course." in page.body
