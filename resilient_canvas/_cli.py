"""The ``resilient-canvas`` command: ``demo``, ``api``, ``upload``, ``download``,
``sis-import`` and ``simulate``.

stdout carries only results (JSON); progress, logs and errors go to stderr.
Exit codes: 0 success, 1 other Canvas error, 2 usage, 3 authentication or
permission, 4 not found, 5 throttled until retries ran out, 6 server or
network failure, 7 a Canvas job (an SIS import) failed, 8 a job got stuck or
outlasted the wait, 9 a local file could not be written (disk full), 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import MutableMapping, Sequence
from types import SimpleNamespace
from typing import Any

import structlog
from rich.console import Console
from yarl import URL

from resilient_canvas import __version__, _cli_workflows
from resilient_canvas._client import CanvasClient
from resilient_canvas._demo import DemoOptions, EventCounter, run_demo
from resilient_canvas._logging import REQUEST_FAILED
from resilient_canvas._policy import RetryPolicy
from resilient_canvas._secret import redact
from resilient_canvas.errorpages import TextRenderer
from resilient_canvas.exceptions import (
    CanvasException,
    ConnectError,
    ConnectionDropped,
    ConnectTimeout,
    Forbidden,
    InvalidResponse,
    JobStuck,
    LocalFileError,
    ProgressFailed,
    RateLimitExceeded,
    ReadTimeout,
    RequestTimeout,
    ResourceDoesNotExist,
    ServerError,
    ServiceUnavailable,
    ThrottleTimeout,
    TLSError,
    TransportError,
    Unauthorized,
)
from resilient_canvas.testing import (
    DataSettings,
    Fault,
    FaultSettings,
    SimulatorSettings,
    ThrottleSettings,
)
from resilient_canvas.testing._simulator import CanvasSimulator, serve

EXIT_OK, EXIT_CANVAS, EXIT_USAGE = 0, 1, 2
EXIT_AUTH, EXIT_NOT_FOUND, EXIT_THROTTLED, EXIT_SERVER = 3, 4, 5, 6
EXIT_JOB_FAILED, EXIT_JOB_STUCK, EXIT_LOCAL_FILE = 7, 8, 9
EXIT_INTERRUPTED = 130

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class UsageError(Exception):
    """The command line is wrong; the message says how."""


#: Titles for failures no HTTP status describes: an error page's "502 Bad
#: Gateway" or "408" would claim a server answered. Subclasses come first.
_NO_RESPONSE_TITLES: tuple[tuple[type[CanvasException], str], ...] = (
    (ConnectTimeout, "Connection error: timed out connecting (nothing was sent)"),
    (ConnectError, "Connection error: could not connect (nothing was sent)"),
    (TLSError, "Connection error: no trusted TLS connection (nothing was sent)"),
    (ConnectionDropped, "Connection error: connection lost after sending"),
    (InvalidResponse, "Invalid response: the answer could not be read"),
    (ReadTimeout, "Timeout: no answer in time"),
    (ThrottleTimeout, "Timeout: waited too long for a place in the throttle (not sent)"),
)


class CliRenderer(TextRenderer):
    """Text error pages titled by what happened when no HTTP status did."""

    @property
    def title(self) -> str:
        for kind, title in _NO_RESPONSE_TITLES:
            if isinstance(self.exception, kind):
                return f"⚠️ {title}"
        return super().title


def error_page(error: CanvasException, *, debug: bool, token: str | None = None) -> str:
    """The page the CLI prints for *error*: minimal, or with ``debug`` the full one.

    The full page has the traceback of every exception in the chain, even for
    quiet errors (whose pages are otherwise minimal): asking for ``--debug``
    is asking for it. Credentials are redacted, and the token itself, if
    given, is replaced wherever it might appear.
    """
    # The "request" the page describes is the failed call: its path reads better than none.
    request = SimpleNamespace(path=URL(error.url).path if error.url else "", args={})
    renderer = CliRenderer(request, error, debug)
    page = redact(renderer.full() if debug else renderer.minimal())
    if token:
        page = page.replace(token, "[redacted]")
    return page


def exit_code_for(error: CanvasException) -> int:
    """The exit status that names the class of *error*."""
    if isinstance(error, ProgressFailed):
        return EXIT_JOB_FAILED
    if isinstance(error, JobStuck):
        return EXIT_JOB_STUCK
    if isinstance(error, LocalFileError):
        return EXIT_LOCAL_FILE
    if isinstance(error, RateLimitExceeded):
        return EXIT_THROTTLED
    if isinstance(error, Unauthorized | Forbidden):
        return EXIT_AUTH
    if isinstance(error, ResourceDoesNotExist):
        return EXIT_NOT_FOUND
    if isinstance(error, ServerError | ServiceUnavailable | TransportError | RequestTimeout):
        return EXIT_SERVER
    return EXIT_CANVAS


def configure_logging(
    log_format: str, level: str, counter: EventCounter | None, *, pages_errors: bool = False
) -> None:
    """Send structlog events to stderr as JSON or console lines; count demo events.

    Args:
        log_format: ``console`` or ``json``.
        level: The lowest level shown.
        counter: Counts demo events (retries, pauses) before any filtering.
        pages_errors: The command prints the final error as a page: on the
            console the ``canvas.request_failed`` line would say it twice, so
            it is left out (JSON keeps it, for machines).
    """
    drop_failures = pages_errors and log_format == "console"

    def drop_below(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if _LEVELS.get(method, logging.INFO) < _LEVELS[level]:
            raise structlog.DropEvent
        if drop_failures and event.get("event") == REQUEST_FAILED:
            raise structlog.DropEvent
        return event

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    processors: list[Any] = [counter] if counter is not None else []
    processors += [
        drop_below,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def parse_pairs(values: Sequence[str]) -> list[tuple[str, str]]:
    """Turn ``-p key=value`` options into pairs, keeping Canvas's nested keys as given."""
    pairs = []
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-p needs key=value (like -p 'user[name]=Jo'), not {value!r}.")
        pairs.append((key.strip(), text))
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resilient-canvas",
        description="Canvas LMS API calls that survive throttling, outages and bad networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console",
        help="how log events are written to stderr (default: console)",
    )
    parser.add_argument(
        "--log-level",
        choices=list(_LEVELS),
        default=None,
        help="lowest level of log event shown (default: warning; error for demo)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a grade sync against an embedded simulator")
    demo.add_argument("--students", type=int, default=150, help="students (default: 150)")
    demo.add_argument("--assignments", type=int, default=4, help="assignments (default: 4)")
    demo.add_argument(
        "--fault-rate",
        type=float,
        default=0.03,
        help="share of requests hit by a fault (default: 0.03)",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of data and faults")
    demo.add_argument(
        "--compare",
        action="store_true",
        help="run the job with naive concurrent aiohttp first, for comparison",
    )

    api = commands.add_parser("api", help="call the Canvas API, like 'gh api'")
    api.add_argument("method", help="GET, POST, PUT, PATCH or DELETE")
    api.add_argument("path", help="e.g. courses/101 or /api/v1/courses/101")
    api.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter; nested keys as Canvas takes them (user[name]=Jo)",
    )
    api.add_argument(
        "--paginate", action="store_true", help="follow every page; print one JSON item per line"
    )
    api.add_argument("--json", action="store_true", help="print compact JSON")
    api.add_argument(
        "--base-url",
        default=os.environ.get("CANVAS_BASE_URL"),
        help="Canvas root URL (default: $CANVAS_BASE_URL)",
    )
    api.add_argument(
        "--token",
        default=None,
        help="access token (default: $CANVAS_ACCESS_TOKEN; prefer the variable)",
    )
    api.add_argument("--attempts", type=int, default=5, help="attempts per request (default: 5)")
    api.add_argument(
        "--debug",
        action="store_true",
        help="show the full error page: every exception in the chain with its traceback",
    )

    api.add_argument(
        "--user-agent",
        default=os.environ.get("CANVAS_USER_AGENT"),
        help="your product and contact, sent before ours (default: $CANVAS_USER_AGENT)",
    )
    _cli_workflows.add_commands(commands)

    simulate = commands.add_parser("simulate", help="serve the Canvas simulator")
    simulate.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    simulate.add_argument("--port", type=int, default=8765, help="port (default: 8765)")
    simulate.add_argument(
        "--profile",
        choices=["open-source", "hosted"],
        default="open-source",
        help="open-source (hwm 600, 403) or hosted (hwm 700, 429)",
    )
    simulate.add_argument("--token", default=None, help="the valid token (default: random)")
    simulate.add_argument("--students", type=int, default=40)
    simulate.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of requests hit by maintenance, gateway or drop faults",
    )
    simulate.add_argument("--seed", type=int, default=1)
    return parser


async def run_api(args: argparse.Namespace, stdout: Any) -> int:
    token = args.token or os.environ.get("CANVAS_ACCESS_TOKEN")
    if not args.base_url:
        raise UsageError("No Canvas URL: set CANVAS_BASE_URL or pass --base-url.")
    if not token:
        raise UsageError("No access token: set CANVAS_ACCESS_TOKEN or pass --token.")
    method = args.method.upper()
    if method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}:
        raise UsageError(f"Unknown method {args.method!r}: use GET, POST, PUT, PATCH or DELETE.")
    if args.paginate and method != "GET":
        raise UsageError("--paginate only works with GET.")
    if args.attempts < 1:
        raise UsageError("--attempts must be at least 1.")
    pairs = parse_pairs(args.param)
    policy = RetryPolicy(attempts=args.attempts, deadline=60.0, attempt_timeout=30.0)
    try:
        canvas = CanvasClient(args.base_url, token, policy=policy, user_agent=args.user_agent)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    indent = None if args.json else 2
    async with canvas:
        try:
            if args.paginate:
                async for item in canvas.paginate(args.path, params=pairs):
                    print(json.dumps(item), file=stdout, flush=True)
                return EXIT_OK
            query, body = (pairs, None) if method in {"GET", "HEAD", "DELETE"} else (None, pairs)
            response = await canvas.request(method, args.path, params=query, data=body)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    print(json.dumps(response.data, indent=indent), file=stdout)
    return EXIT_OK


async def run_simulate(args: argparse.Namespace, console: Console) -> int:
    rate = args.fault_rate
    if not 0 <= rate <= 1:
        raise UsageError("--fault-rate must be between 0 and 1.")
    throttle = ThrottleSettings.hosted() if args.profile == "hosted" else ThrottleSettings()
    faults = FaultSettings(
        rates={
            Fault.MAINTENANCE: rate / 3,
            Fault.BAD_GATEWAY: rate / 3,
            Fault.DROP_AFTER_WRITE: rate / 3,
        },
        seed=args.seed,
    )
    settings = SimulatorSettings(
        throttle=throttle,
        data=DataSettings(students_per_course=args.students, seed=args.seed),
        faults=faults,
        token=args.token,
    )

    def ready(sim: CanvasSimulator) -> None:
        console.print(f"Canvas simulator ({args.profile}) at {sim.base_url}")
        console.print("Stop with Ctrl-C. Try:")
        console.print(
            f"  CANVAS_BASE_URL={sim.base_url} CANVAS_ACCESS_TOKEN={sim.token} "
            "resilient-canvas api GET courses --paginate",
            soft_wrap=True,
        )

    try:
        await serve(settings, host=args.host, port=args.port, ready=ready)
    except OSError as exc:
        raise UsageError(f"Cannot serve on {args.host}:{args.port}: {exc.strerror}.") from None
    return EXIT_OK


_WORKFLOWS = {
    "upload": _cli_workflows.run_upload,
    "download": _cli_workflows.run_download,
    "sis-import": _cli_workflows.run_sis_import,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    counter = EventCounter() if args.command == "demo" else None
    level = args.log_level or ("error" if args.command == "demo" else "warning")
    pages_errors = args.command in {"api", *_WORKFLOWS}
    configure_logging(args.log_format, level, counter, pages_errors=pages_errors)
    try:
        if args.command == "demo":
            options = DemoOptions(
                students=args.students,
                assignments=args.assignments,
                fault_rate=args.fault_rate,
                seed=args.seed,
                compare=args.compare,
            )
            assert counter is not None
            return asyncio.run(run_demo(options, counter, console))
        if args.command == "api":
            return asyncio.run(run_api(args, sys.stdout))
        if args.command in _WORKFLOWS:
            run = _WORKFLOWS[args.command]
            return asyncio.run(run(args, sys.stdout, console, UsageError))
        return asyncio.run(run_simulate(args, console))
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"resilient-canvas: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"resilient-canvas: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CanvasException as error:
        debug = bool(getattr(args, "debug", False))
        token = getattr(args, "token", None) or os.environ.get("CANVAS_ACCESS_TOKEN")
        print(error_page(error, debug=debug, token=token), file=sys.stderr)
        return exit_code_for(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def entry_point() -> None:
    """Console-script entry: exit with :func:`main`'s status."""
    sys.exit(main())
