"""Sanic 25.12's own exception and error-page tests, ported to our exceptions and pages.

Ported from sanic-org/sanic v25.12.0 ``tests/test_exceptions.py`` and
``tests/test_errorpages.py`` with their assertions intact. Only how the API is
called changed:

- ``SanicException`` is :class:`CanvasException`; Sanic's classes are ours of
  the same name (``NotFound``, ``Unauthorized``...).
- An ``app.test_client`` request becomes a request over a real socket to an
  aiohttp.web app whose :func:`error_middleware` renders the error, with
  ``debug`` and the format (Sanic's ``FALLBACK_ERROR_FORMAT`` or a route's
  ``error_format``) given to the middleware. ``response.content_type`` is the
  full ``Content-Type`` header, as Sanic's test client reports it.
- ``exception_response(fake_request, ...)`` is called with Sanic's own
  ``Request`` object: our renderers read Sanic's requests as they are.

Not ported: tests of Sanic's routing, blueprints, config loading, websockets,
middleware and handler-source sniffing (``route.extra.error_format``); our
pages have no routes, and the format is the ``fallback`` argument.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from bs4 import BeautifulSoup
from multidict import CIMultiDictProxy

from resilient_canvas.errorpages import (
    TextRenderer,
    error_middleware,
    exception_response,
    guess_format,
)
from resilient_canvas.exceptions import (
    BadRequest,
    CanvasException,
    ContentRangeError,
    ExpectationFailed,
    Forbidden,
    HeaderExpectationFailed,
    InvalidUsage,
    MethodNotAllowed,
    MethodNotSupported,
    NotFound,
    RangeNotSatisfiable,
    ServerError,
    Unauthorized,
)

SanicException = CanvasException


def dl_to_dict(soup: BeautifulSoup, dl_id: str) -> dict[str, str]:
    """Sanic's helper, unchanged: a <dl> of the page as a dict."""
    keys, values = [], []
    for dl in soup.find_all("dl", {"id": dl_id}):
        for dt in dl.find_all("dt"):
            keys.append(dt.text.split(":", 1)[0])
        for dd in dl.find_all("dd"):
            values.append(dd.text.strip())
    return dict(zip(keys, values, strict=False))


@dataclass
class Response:
    """What Sanic's test client returns, as far as the tests read it."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[web.Request], Any]


async def fetch(
    handler: Handler,
    *,
    method: str = "GET",
    fallback: str = "auto",
    debug: bool = False,
    **options: Any,
) -> Response:
    """Serve *handler* behind the error middleware and send one request to it."""

    async def endpoint(request: web.Request) -> web.StreamResponse:
        result = handler(request)
        assert isinstance(result, web.StreamResponse)
        return result

    app = web.Application(
        middlewares=[error_middleware(debug=debug, fallback=fallback, catch_all=True)]
    )
    app.router.add_route("*", "/{tail:.*}", endpoint)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"http://{host}:{port}/route", **options) as answer,
        ):
            return Response(answer.status, answer.headers, await answer.read())
    finally:
        await runner.cleanup()


def raiser(error: BaseException) -> Handler:
    """A handler that raises *error*."""

    def handler(request: web.Request) -> Any:
        raise error

    return handler


# ======================================================= tests/test_exceptions.py


async def test_server_error_exception() -> None:
    """Ports test_server_error_exception: ServerError answers 500."""
    response = await fetch(raiser(ServerError("OK")), fallback="html")
    assert response.status == 500


async def test_invalid_usage_exception() -> None:
    """Ports test_invalid_usage_exception: BadRequest answers 400."""
    response = await fetch(raiser(BadRequest("OK")), fallback="html")
    assert response.status == 400


async def test_not_found_exception() -> None:
    """Ports test_not_found_exception: NotFound answers 404."""
    response = await fetch(raiser(NotFound("OK")), fallback="html")
    assert response.status == 404


async def test_forbidden_exception() -> None:
    """Ports test_forbidden_exception: Forbidden answers 403."""
    response = await fetch(raiser(Forbidden("Forbidden")), fallback="html")
    assert response.status == 403


async def test_unauthorized_exception() -> None:
    """Ports test_unauthorized_exception: 401 with the WWW-Authenticate Sanic builds."""
    response = await fetch(raiser(Unauthorized("Unauthorized")), fallback="html")
    assert response.status == 401

    error = Unauthorized("Unauthorized", scheme="Basic", realm="Sanic")
    response = await fetch(raiser(error), fallback="html")
    assert response.status == 401
    assert response.headers.get("WWW-Authenticate") is not None
    assert response.headers.get("WWW-Authenticate") == 'Basic realm="Sanic"'

    error = Unauthorized(
        "Unauthorized",
        scheme="Digest",
        realm="Sanic",
        qop="auth, auth-int",
        algorithm="MD5",
        nonce="abcdef",
        opaque="zyxwvu",
    )
    response = await fetch(raiser(error), fallback="html")
    assert response.status == 401

    auth_header = response.headers.get("WWW-Authenticate")
    assert auth_header is not None
    assert auth_header.startswith("Digest")
    assert 'qop="auth, auth-int"' in auth_header
    assert 'algorithm="MD5"' in auth_header
    assert 'nonce="abcdef"' in auth_header
    assert 'opaque="zyxwvu"' in auth_header

    error = Unauthorized("Unauthorized", scheme="Bearer")
    response = await fetch(raiser(error), fallback="html")
    assert response.status == 401
    assert response.headers.get("WWW-Authenticate") == "Bearer"


async def test_handled_unhandled_exception() -> None:
    """Ports test_handled_unhandled_exception: a foreign error gets the apology page."""

    def divide_by_zero(request: web.Request) -> Any:
        return 1 / 0

    response = await fetch(divide_by_zero, fallback="html")
    assert response.status == 500
    soup = BeautifulSoup(response.body, "html.parser")
    assert soup.h1 is not None
    assert "Internal Server Error" in soup.h1.text

    assert soup.p is not None
    message = " ".join(soup.p.text.split())
    assert "The application encountered an unexpected error" in message


async def test_sanic_exception() -> None:
    """Ports test_sanic_exception: the base exception with a status, a message or neither."""
    response = await fetch(raiser(SanicException(status_code=401)), fallback="html")
    assert response.status == 401

    response = await fetch(raiser(SanicException(status_code=500)), fallback="html")
    assert response.status == 500
    # check fallback message
    assert "Internal Server Error" in response.text

    error = SanicException(message="Custom Message", status_code=500)
    response = await fetch(raiser(error), fallback="html")
    assert response.status == 500
    assert "Custom Message" in response.text


async def test_custom_exception_default_message() -> None:
    """Ports test_custom_exception_default_message: a class message and status on the page."""

    class TeaError(SanicException):
        message = "Tempest in a teapot"
        status_code = 418

    response = await fetch(raiser(TeaError()), fallback="html", debug=True)
    assert response.status == 418
    assert b"Tempest in a teapot" in response.body


@pytest.mark.parametrize("debug", [True, False])
async def test_contextual_exception_context(debug: bool) -> None:
    """Ports test_contextual_exception_context: context in JSON, HTML <dl> and text."""

    class TeapotError(SanicException):
        status_code = 418
        message = "Sorry, I cannot brew coffee"

    def fail(request: web.Request) -> Any:
        raise TeapotError(context={"foo": "bar"})

    response = await fetch(fail, method="POST", fallback="json", debug=debug)
    assert response.status == 418
    assert response.json["message"] == "Sorry, I cannot brew coffee"
    assert response.json["context"] == {"foo": "bar"}

    response = await fetch(fail, method="POST", fallback="html", debug=debug)
    soup = BeautifulSoup(response.body, "html.parser")
    dl = dl_to_dict(soup, "exception-context")
    assert response.status == 418
    assert "Sorry, I cannot brew coffee" in soup.find("p").text
    assert dl == {"foo": "bar"}

    response = await fetch(fail, method="POST", fallback="text", debug=debug)
    lines = [x.decode() for x in response.body.split(b"\n")]
    idx = lines.index("Context") + 1
    assert response.status == 418
    assert lines[2] == "Sorry, I cannot brew coffee"
    assert lines[idx] == '    foo: "bar"'


@pytest.mark.parametrize("debug", [True, False])
async def test_contextual_exception_extra(debug: bool) -> None:
    """Ports test_contextual_exception_extra: a message property; extra only in debug."""

    class TeapotError(SanicException):
        status_code = 418

        @property
        def message(self) -> str:  # type: ignore[override]
            return f"Found {self.extra['foo']}"

    def fail(request: web.Request) -> Any:
        raise TeapotError(extra={"foo": "bar"})

    response = await fetch(fail, method="POST", fallback="json", debug=debug)
    assert response.status == 418
    assert response.json["message"] == "Found bar"
    if debug:
        assert response.json["extra"] == {"foo": "bar"}
    else:
        assert "extra" not in response.json

    response = await fetch(fail, method="POST", fallback="html", debug=debug)
    soup = BeautifulSoup(response.body, "html.parser")
    dl = dl_to_dict(soup, "exception-extra")
    assert response.status == 418
    assert "Found bar" in soup.find("p").text
    if debug:
        assert dl == {"foo": "bar"}
    else:
        assert not dl

    response = await fetch(fail, method="POST", fallback="text", debug=debug)
    lines = [x.decode() for x in response.body.split(b"\n")]
    assert response.status == 418
    assert lines[2] == "Found bar"
    if debug:
        idx = lines.index("Extra") + 1
        assert lines[idx] == '    foo: "bar"'
    else:
        assert "Extra" not in lines


@pytest.mark.parametrize("override", [True, False])
async def test_contextual_exception_functional_message(override: bool) -> None:
    """Ports test_contextual_exception_functional_message: explicit message beats the property."""

    class TeapotError(SanicException):
        status_code = 418

        @property
        def message(self) -> str:  # type: ignore[override]
            return f"Received foo={self.context['foo']}"

    def make_coffee(request: web.Request) -> Any:
        error_args: dict[str, Any] = {"context": {"foo": "bar"}}
        if override:
            error_args["message"] = "override"
        raise TeapotError(**error_args)

    response = await fetch(make_coffee, method="POST", fallback="json", debug=True)
    error_message = "override" if override else "Received foo=bar"
    assert response.status == 418
    assert response.json["message"] == error_message
    assert response.json["context"] == {"foo": "bar"}


def test_exception_aliases() -> None:
    """Ports test_exception_aliases: the aliases are the same classes."""
    assert InvalidUsage is BadRequest
    assert MethodNotSupported is MethodNotAllowed
    assert ContentRangeError is RangeNotSatisfiable
    assert HeaderExpectationFailed is ExpectationFailed


def test_exception_message_attribute() -> None:
    """Ports test_exception_message_attribute: message from the argument, class or status."""
    assert ServerError("it failed").message == "it failed"
    assert ServerError(b"it failed").message == "it failed"
    assert ServerError().message == str(ServerError()) == "Internal Server Error"

    class CustomError(SanicException):
        message = "Something bad happened"

    assert CustomError().message == CustomError.message == str(CustomError())
    assert SanicException().message != ""
    assert SanicException("").message == ""


def test_exception_quiet_attribute() -> None:
    """Ports test_exception_quiet_attribute: an explicit quiet beats the class's."""

    class SilentException(SanicException):
        quiet = True

    class NoisyException(SanicException):
        quiet = False

    assert SilentException().quiet
    assert not NoisyException().quiet
    assert SilentException(quiet=True).quiet
    assert NoisyException(quiet=True).quiet
    assert not SilentException(quiet=False).quiet
    assert not NoisyException(quiet=False).quiet


# ======================================================= tests/test_errorpages.py

_apps = itertools.count()


@pytest.fixture
def fake_request() -> Any:
    """Sanic's fixture: Sanic's own Request for GET /foobar accepting */*."""
    from sanic import Sanic
    from sanic.compat import Header
    from sanic.request import Request

    app = Sanic(f"error_page_testing_{next(_apps)}", configure_logging=False)
    return Request(b"/foobar", Header({"accept": "*/*"}), "1.1", "GET", None, app)


@pytest.mark.parametrize(
    ("fallback", "content_type", "exception", "status"),
    [
        (None, "text/plain; charset=utf-8", Exception, 500),
        ("html", "text/html; charset=utf-8", Exception, 500),
        ("auto", "text/plain; charset=utf-8", Exception, 500),
        ("text", "text/plain; charset=utf-8", Exception, 500),
        ("json", "application/json", Exception, 500),
        (None, "text/plain; charset=utf-8", NotFound, 404),
        ("html", "text/html; charset=utf-8", NotFound, 404),
        ("auto", "text/plain; charset=utf-8", NotFound, 404),
        ("text", "text/plain; charset=utf-8", NotFound, 404),
        ("json", "application/json", NotFound, 404),
    ],
)
def test_should_return_html_valid_setting(
    fake_request: Any,
    fallback: str | None,
    content_type: str,
    exception: type[Exception],
    status: int,
) -> None:
    """Ports test_should_return_html_valid_setting: each format's type and the status."""
    try:
        raise exception("bad stuff")
    except Exception as e:
        response = exception_response(
            fake_request, e, True, base=TextRenderer, fallback=fallback or "auto"
        )

    assert response.status == status
    assert response.content_type == content_type


async def test_auto_fallback_with_data() -> None:
    """Ports test_auto_fallback_with_data: a JSON body (with its type) asks for JSON."""
    handler = raiser(Exception("something went wrong"))

    response = await fetch(handler)
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"

    response = await fetch(handler, method="POST", json={"foo": "bar"})
    assert response.status == 500
    assert response.content_type == "application/json"

    response = await fetch(handler, method="POST", data={"foo": "bar"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"


async def test_auto_fallback_with_content_type() -> None:
    """Ports test_auto_fallback_with_content_type: a JSON Content-Type asks for JSON."""
    handler = raiser(Exception("something went wrong"))

    response = await fetch(handler, headers={"content-type": "application/json", "accept": "*/*"})
    assert response.status == 500
    assert response.content_type == "application/json"

    response = await fetch(handler, headers={"content-type": "foo/bar", "accept": "*/*"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("bad", ["bad", "fake"])
def test_unknown_fallback_format(bad: str) -> None:
    """Ports test_unknown_fallback_format and test_config_fallback_bad_value."""
    with pytest.raises(SanicException, match=f"Unknown format: {bad}"):
        error_middleware(fallback=bad)


async def test_fallback_with_content_type_html() -> None:
    """Ports test_fallback_with_content_type_html: Accept text/html beats a JSON body."""
    response = await fetch(
        raiser(Exception("something went wrong")),
        headers={"content-type": "application/json", "accept": "text/html"},
    )
    assert response.status == 500
    assert response.content_type == "text/html; charset=utf-8"


async def test_fallback_with_content_type_mismatch_accept() -> None:
    """Ports test_fallback_with_content_type_mismatch_accept; route formats are fallbacks."""
    handler = raiser(Exception("something went wrong"))

    response = await fetch(
        handler, headers={"content-type": "application/json", "accept": "text/plain"}
    )
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"

    response = await fetch(handler, headers={"content-type": "text/html", "accept": "foo/bar"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"

    problem = raiser(Exception("problem here"))
    # /alt1: Sanic reads "json" from the handler's source; here it is given.
    response = await fetch(problem, fallback="json", headers={"accept": "foo/bar"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"
    response = await fetch(problem, fallback="json", headers={"accept": "foo/bar,*/*"})
    assert response.status == 500
    assert response.content_type == "application/json"

    # /alt2: error_format="text".
    response = await fetch(problem, fallback="text", headers={"accept": "foo/bar"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"
    response = await fetch(problem, fallback="text", headers={"accept": "foo/bar,*/*"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"

    # /alt3: error_format="html".
    response = await fetch(problem, fallback="html", headers={"accept": "foo/bar"})
    assert response.status == 500
    assert response.content_type == "text/plain; charset=utf-8"

    response = await fetch(problem, fallback="html", headers={"accept": "foo/bar,text/html"})
    assert response.status == 500
    assert response.content_type == "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("accept", "content_type", "expected"),
    [
        (None, None, "text/plain; charset=utf-8"),
        ("foo/bar", None, "text/plain; charset=utf-8"),
        ("application/json", None, "application/json"),
        ("application/json,text/plain", None, "application/json"),
        ("text/plain,application/json", None, "application/json"),
        ("text/plain,foo/bar", None, "text/plain; charset=utf-8"),
        ("text/plain,text/html", None, "text/plain; charset=utf-8"),
        ("*/*", "foo/bar", "text/plain; charset=utf-8"),
        ("*/*", "application/json", "application/json"),
        # App wants text/plain but accept has equal entries for it
        ("text/*,*/plain", None, "text/plain; charset=utf-8"),
    ],
)
def test_combinations_for_auto(
    fake_request: Any, accept: str | None, content_type: str | None, expected: str
) -> None:
    """Ports test_combinations_for_auto: Accept and Content-Type pairs under "auto"."""
    if accept:
        fake_request.headers["accept"] = accept
    else:
        del fake_request.headers["accept"]

    if content_type:
        fake_request.headers["content-type"] = content_type

    try:
        raise Exception("bad stuff")
    except Exception as e:
        response = exception_response(fake_request, e, True, base=TextRenderer, fallback="auto")

    assert response.content_type == expected


@pytest.mark.parametrize(
    ("fallback", "accept", "expected"),
    [
        ("html", "text/*,*/plain", "The client accepts text/*, using 'html' from"),
        ("json", "text/*,*/*", "The client accepts */*, using 'json' from FALLBACK_ERROR_FORMAT"),
        ("auto", "*/*,application/json;q=0.5", "using 'json' from request.accept"),
        ("auto", "*/*", "The client accepts */*, using 'json' from content-type"),
        ("auto", "text/html,text/plain", "The client accepts text/plain, using 'text' from any"),
        ("auto", "text/html,text/plain;q=0.9", "using 'html' from any"),
        ("auto", "*/*", "The client accepts */*, using 'text' from any"),
        ("", "*/*", "No format found, the client accepts [*/*]"),
        ("auto", "*/*", "The client accepts */*, using 'json' from request.json"),
    ],
)
def test_guess_mime_logging(fake_request: Any, fallback: str, accept: str, expected: str) -> None:
    """Ports test_guess_mime_logging's rows without a route format: the format chosen.

    Sanic asserts the debug line its ``guess_mime`` logs; we log nothing, so
    the format named in that line (or none) is compared with ours.
    """
    fake_request.headers["accept"] = accept

    if "content-type" in expected:
        fake_request.headers["content-type"] = "application/json"

    # Fake JSON content (DEPRECATED in Sanic, still there in 25.12)
    if "request.json" in expected:
        fake_request.parsed_json = {"foo": "bar"}

    chosen = guess_format(fake_request, fallback)

    named = expected.split("using '")[1].split("'")[0] if "using '" in expected else None
    assert named == chosen


@pytest.mark.parametrize(
    ("format", "expected"),
    [
        ("html", "text/html; charset=utf-8"),
        ("text", "text/plain; charset=utf-8"),
        ("json", "application/json"),
    ],
)
async def test_exception_header_on_renderers(format: str, expected: str) -> None:
    """Ports test_exception_header_on_renderers: an exception's headers reach the answer."""
    error = SanicException("test", status_code=400, headers={"exception": "test"})

    response = await fetch(raiser(error), fallback=format)
    assert response.status == 400
    assert response.headers.get("exception") == "test"
    assert response.content_type == expected


# ====================================== the choice, against Sanic's own guess_mime

ACCEPTS = [
    None,
    "",
    "*/*",
    "text/html",
    "text/plain",
    "application/json",
    "text/html,text/plain",
    "text/plain,text/html",
    "text/html;q=0.9,text/plain;q=0.8",
    "text/*",
    "*/plain",
    "application/*,text/html;q=0.5",
    "application/json;q=0",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "image/png",
    "foo/bar,*/*;q=0.1",
    "text/html;level=1,text/plain",
]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/html"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("fallback", ["auto", "html", "text", "json"])
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_choice_matches_sanics_guess_mime(
    accept: str | None, content_type: str | None, fallback: str
) -> None:
    """Not a port: for each Accept, Content-Type and fallback, Sanic 25.12 and we agree."""
    from sanic import Sanic
    from sanic.compat import Header
    from sanic.errorpages import guess_mime
    from sanic.request import Request

    app = Sanic(f"oracle_{next(_apps)}", configure_logging=False)
    headers = {
        name: value
        for name, value in (("accept", accept), ("content-type", content_type))
        if value is not None
    }

    def request() -> Any:
        return Request(b"/x", Header(headers), "1.1", "POST", None, app)

    sanic_mime = guess_mime(request(), fallback)
    ours = guess_format(request(), fallback)

    by_mime = {"text/plain": "text", "application/json": "json", "text/html": "html"}
    assert by_mime.get(sanic_mime) == ours
