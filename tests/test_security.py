"""The access token never leaves the process: a canary token through every channel.

Each scenario makes a real request over a socket to a small aiohttp server that
misbehaves (echoes the ``Authorization`` header into its error body, headers
or a 200 page, hangs, drops the connection, loops on redirects), then renders
the resulting error through every channel an application might use. None may
show the canary. Each scenario also checks that the server really received the
canary, so a leak-free result cannot come from a request that never carried it.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import pickle
import traceback
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from rich.console import Console
from rich.traceback import Traceback

from resilient_canvas import CanvasClient, RetryPolicy, resilient
from resilient_canvas import exceptions as exc
from resilient_canvas._secret import REDACTED, AccessToken, redact
from resilient_canvas.errorpages import RENDERERS, exception_response

#: Long enough to be redacted by value, and shaped like a Canvas token (``~``).
CANARY = "7~CanaryToken" + "Q" * 40
#: The echo without "Bearer" or "access_token=": only value redaction catches it.
BARE_ECHO = f"your credential {CANARY} is not allowed here"
#: A generous limit for structlog's dict tracebacks: a leak far into a long local
#: must show too. (The rich channels keep their defaults: the same reprs, and
#: rich renders slowly.)
MAX_STRING = 100_000


@pytest.fixture(autouse=True)
def _plain_source_in_rich_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich lexes each frame's whole file as Python (~60 ms a frame): show it as text.

    Only the source listing changes; the frame locals, where leaks would be,
    are rendered as usual.
    """
    monkeypatch.setattr(Traceback, "_guess_lexer", classmethod(lambda cls, name, code: "text"))


@dataclass
class Hostile:
    """A misbehaving server and what it saw."""

    url: str
    #: Whether each request carried the canary (not the header itself: the test's
    #: own frames are in the tracebacks rendered with their locals).
    carried: list[bool] = field(default_factory=list)


def _auth(request: web.Request) -> str:
    return request.headers.get("Authorization", "")


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    """An aiohttp server whose routes echo the Authorization header in every way."""
    server = Hostile("")

    def seen(request: web.Request) -> str:
        server.carried.append(_auth(request) == f"Bearer {CANARY}")
        return _auth(request)

    async def echo_json_400(request: web.Request) -> web.Response:
        auth = seen(request)
        body = {"errors": [{"message": BARE_ECHO}], "echo": {"Authorization": auth}}
        return web.json_response(body, status=400)

    async def echo_text_500(request: web.Request) -> web.Response:
        auth = seen(request)
        return web.Response(status=500, text=f"{BARE_ECHO}\nAuthorization: {auth}\n")

    async def echo_headers_401(request: web.Request) -> web.Response:
        seen(request)
        challenge = f'Bearer realm="canvas", error_description="{BARE_ECHO}"'
        return web.json_response(
            {"errors": [{"message": BARE_ECHO}]},
            status=401,
            headers={"WWW-Authenticate": challenge, "X-Request-Context-Id": CANARY},
        )

    async def echo_200_page(request: web.Request) -> web.Response:
        auth = seen(request)
        return web.Response(text=f"<html>{BARE_ECHO} ({auth})</html>", content_type="text/html")

    async def echo_error_report(request: web.Request) -> web.Response:
        seen(request)
        return web.json_response({"message": BARE_ECHO, "error_report_id": CANARY}, status=422)

    async def slow(request: web.Request) -> web.Response:
        seen(request)
        await asyncio.sleep(1)
        return web.json_response({})

    async def loop(request: web.Request) -> web.Response:
        seen(request)
        raise web.HTTPFound("/api/v1/loop")

    async def drop(request: web.Request) -> web.Response:
        seen(request)
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        return web.json_response({})

    app = web.Application()
    for name, handler in [
        ("echo_json_400", echo_json_400),
        ("echo_text_500", echo_text_500),
        ("echo_headers_401", echo_headers_401),
        ("echo_200_page", echo_200_page),
        ("echo_error_report", echo_error_report),
        ("slow", slow),
        ("loop", loop),
        ("drop", drop),
    ]:
        app.router.add_route("*", f"/api/v1/{name}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.05)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


#: Scenario: (method, path, the error expected, whether the rich channels run too).
SCENARIOS = {
    "json error body echoes the header": ("GET", "echo_json_400", exc.BadRequest, False),
    "text error body echoes the header": ("GET", "echo_text_500", exc.ServerError, False),
    "response headers echo the token": ("GET", "echo_headers_401", exc.InvalidAccessToken, False),
    "complete 200 page echoes the header": ("GET", "echo_200_page", exc.InvalidResponse, True),
    "error report id is the token": ("GET", "echo_error_report", exc.UnprocessableEntity, False),
    "read timeout": ("POST", "slow", exc.ReadTimeout, True),
    "dropped connection": ("POST", "drop", exc.ConnectionDropped, False),
    "redirect loop": ("GET", "loop", exc.InvalidResponse, False),
}


async def _fail(
    server: Hostile, method: str, path: str
) -> tuple[exc.CanvasException, list[MutableMapping[str, Any]], CanvasClient]:
    """Make the call fail; return the error, the library's log events and the live client."""
    policy = RetryPolicy(attempts=2, attempt_timeout=0.05, backoff_base=0.001, backoff_cap=0.001)
    client = CanvasClient(server.url, CANARY, throttle=None, policy=policy)
    with structlog.testing.capture_logs() as logs:
        async with client:
            try:
                # The JSON verb: request() hands a non-JSON success back as bytes.
                await (client.get(path) if method == "GET" else client.request(method, path))
            except exc.CanvasException as error:
                return error, logs, client
    raise AssertionError("the call did not fail")


def _chain(error: BaseException) -> list[BaseException]:
    """Every exception reachable through __cause__ and __context__."""
    found: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        pending += [link for link in (current.__cause__, current.__context__) if link]
    return found


def _logging_exception(error: BaseException) -> str:
    stream = io.StringIO()
    logger = logging.Logger("security-test")
    logger.addHandler(logging.StreamHandler(stream))
    try:
        raise error
    except exc.CanvasException:
        logger.exception("the call failed")
    return stream.getvalue()


def _structlog_console(error: BaseException) -> str:
    renderer = structlog.dev.ConsoleRenderer(
        colors=False,
        exception_formatter=structlog.dev.RichTracebackFormatter(
            show_locals=True, width=160, extra_lines=0
        ),
    )
    return str(renderer(None, "error", {"event": "failed", "exc_info": error}))


def _structlog_dict_tracebacks(error: BaseException) -> str:
    transformer = structlog.tracebacks.ExceptionDictTransformer(
        show_locals=True, locals_max_string=MAX_STRING
    )
    renderer = structlog.processors.ExceptionRenderer(transformer)
    event = renderer(None, "error", {"event": "failed", "exc_info": error})
    return json.dumps(event, default=repr)


def _rich_show_locals(error: BaseException) -> str:
    stream = io.StringIO()
    console = Console(file=stream, width=160, color_system=None)
    console.print(
        Traceback.from_exception(
            type(error),
            error,
            error.__traceback__,
            show_locals=True,
            extra_lines=0,
        )
    )
    return stream.getvalue()


def _pages(error: exc.CanvasException) -> dict[str, str]:
    pages = {}
    for name, renderer in RENDERERS.items():
        for debug in (False, True):
            for quiet in (True, False):
                # Quiet errors are always minimal: un-quiet them to reach full pages.
                error.quiet = quiet
                page = exception_response(None, error, debug, renderer=renderer)
                pages[f"page {name} debug={debug} quiet={quiet}"] = page.body + repr(page.headers)
    return pages


CHANNELS: dict[str, Callable[[exc.CanvasException], str]] = {
    "traceback.format_exception": lambda error: "".join(traceback.format_exception(error)),
    "logging.exception": _logging_exception,
    "structlog dict_tracebacks (show_locals)": _structlog_dict_tracebacks,
    "pickle": lambda error: pickle.dumps(error).decode("latin-1"),
}
#: Rich takes ~0.2 s a rendering: these run for one error made inside the attempt
#: (whose dropped frames held the body) and one translated at the aiohttp boundary;
#: structlog's dict tracebacks render the same frame locals for every scenario.
RICH_CHANNELS: dict[str, Callable[[exc.CanvasException], str]] = {
    "structlog ConsoleRenderer (rich, show_locals)": _structlog_console,
    "rich Traceback (show_locals)": _rich_show_locals,
}


def _renderings(
    error: exc.CanvasException, logs: list[MutableMapping[str, Any]], *, rich: bool
) -> dict[str, str]:
    texts: dict[str, str] = {}
    for depth, link in enumerate(_chain(error)):
        name = f"chain[{depth}] {type(link).__name__}"
        texts[f"{name} str"] = str(link)
        texts[f"{name} repr"] = repr(link)
        texts[f"{name} args"] = repr(link.args)
        texts[f"{name} vars"] = repr(vars(link))
    texts |= {name: render(error) for name, render in CHANNELS.items()}
    if rich:
        texts |= {name: render(error) for name, render in RICH_CHANNELS.items()}
    texts |= _pages(error)
    texts["library logs"] = repr(logs)
    texts["library logs, rendered"] = "".join(
        _structlog_console_event(event) for event in logs if "exception" in event
    )
    return texts


def _structlog_console_event(event: MutableMapping[str, Any]) -> str:
    return str(structlog.dev.ConsoleRenderer(colors=False)(None, "error", dict(event)))


def _around(text: str) -> str:
    """The text around the first canary, to say where a leak is."""
    at = text.index(CANARY)
    return text[max(0, at - 300) : at + len(CANARY)]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_canary_token_reaches_no_channel(hostile: Hostile, scenario: str) -> None:
    """No rendering of the error, its chain, pages, pickles or logs shows the token."""
    method, path, expected_cls, rich = SCENARIOS[scenario]

    error, logs, client = await _fail(hostile, method, path)
    leaks = {
        name: _around(text)
        for name, text in _renderings(error, logs, rich=rich).items()
        if CANARY in text
    }

    assert hostile.carried  # the token was really sent
    assert all(hostile.carried)
    assert expected_cls is type(error)
    assert {} == leaks
    del client


async def test_server_echo_is_redacted_in_place_not_dropped(hostile: Hostile) -> None:
    """The echoed text stays readable, with the token replaced by a marker."""
    error, _, client = await _fail(hostile, "GET", "echo_json_400")

    assert BARE_ECHO.replace(CANARY, REDACTED) in str(error)
    assert REDACTED in error.extra["body_excerpt"]
    del client


async def test_translated_errors_carry_a_sanitised_cause(hostile: Hostile) -> None:
    """A translated aiohttp error's cause is its type and message, no request_info."""
    error, _, client = await _fail(hostile, "GET", "loop")

    cause = error.__cause__
    assert isinstance(cause, exc.UnderlyingError)
    assert "aiohttp.client_exceptions.TooManyRedirects" == cause.type_name
    assert not hasattr(cause, "request_info")
    assert cause.__traceback__ is None
    assert [error, cause] == _chain(error)
    del client


async def test_resilient_code_with_its_own_session_gets_a_sanitised_cause(
    hostile: Hostile,
) -> None:
    """@resilient around hand-written aiohttp code: the request's headers are not chained."""

    @resilient(policy=RetryPolicy(attempts=1))
    async def fetch(session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {CANARY}"}
        async with session.get(f"{hostile.url}/api/v1/loop", headers=headers):
            pass

    async with aiohttp.ClientSession() as session:
        with pytest.raises(exc.InvalidResponse) as raised:
            await fetch(session)

    assert [] == [link for link in _chain(raised.value) if hasattr(link, "request_info")]
    assert CANARY not in _structlog_dict_tracebacks(raised.value)


def test_access_token_never_shows_its_value() -> None:
    """str, repr, f-strings and copies show a fingerprint; pickling refuses."""
    token = AccessToken(CANARY)

    shown = [str(token), repr(token), f"{token}", f"{token!r}", repr([token])]
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(token)

    assert [] == [text for text in shown if CANARY in text]
    assert f"AccessToken(<sha256:{token.fingerprint}>)" == repr(token)
    assert token is copy.deepcopy(token)
    assert f"Bearer {CANARY}" == token.authorization()


def test_client_pickling_refuses_to_carry_the_token() -> None:
    """An object graph holding the token fails to pickle instead of carrying it away."""
    client = CanvasClient("https://canvas.example.edu", CANARY, throttle=None)

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(client)
    assert CANARY not in repr(client) + repr(vars(client))


@pytest.mark.parametrize("value", ["", "tok en", "tok\r\nX-Evil: 1", "tok\x00"])
def test_access_token_refuses_unusable_values(value: str) -> None:
    """Empty tokens and tokens that could inject headers are refused up front."""
    with pytest.raises(ValueError, match="access_token"):
        AccessToken(value)


def test_redaction_covers_exact_and_encoded_values_of_live_tokens() -> None:
    """A live token is redacted as sent and percent-encoded; a collected one is forgotten."""
    token = AccessToken("5+" + "z" * 20)
    value = token.reveal()

    redacted = redact(f"a {value} b 5%2B{'z' * 20} c")
    del token

    assert f"a {REDACTED} b {REDACTED} c" == redacted
    assert f"a {value}" == redact(f"a {value}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"),
        ('{"access_token": "abc"}', '{"access_token": "[redacted]"}'),
        ("https://x/?access_token=abc&a=1", "https://x/?access_token=[redacted]&a=1"),
        ('Bearer realm="canvas-lms"', 'Bearer realm="canvas-lms"'),
    ],
)
def test_credential_shapes_are_redacted_without_a_live_token(text: str, expected: str) -> None:
    """Unknown tokens in credential-shaped text are redacted; challenges are kept."""
    assert expected == redact(text)


def test_library_log_fields_are_redacted() -> None:
    """A text field of any library event (a Redis error, a URL) is redacted before it is emitted."""
    from resilient_canvas import _logging

    client = CanvasClient("https://canvas.example.edu", CANARY, throttle=None)
    with structlog.testing.capture_logs() as logs:
        _logging.throttle_degraded(error=f"backend said {CANARY}", attempts=2)
        _logging.retry_scheduled(url=f"https://canvas.example.edu/x?echo={CANARY}")

    assert [
        {"error": "backend said [redacted]", "attempts": 2},
        {"url": "https://canvas.example.edu/x?echo=[redacted]"},
    ] == [{k: v for k, v in log.items() if k not in ("event", "log_level")} for log in logs]
    del client
