"""Tests for the resilient-canvas command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from resilient_canvas.testing import CanvasSimulator, Fault, FaultSettings, SimulatorSettings


@dataclass
class Run:
    """What a command did."""

    code: int
    stdout: str
    stderr: str


async def cli(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``python -m resilient_canvas ARGS`` without blocking the simulator's loop."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CANVAS_")}
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_canvas",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
async def sim() -> AsyncIterator[CanvasSimulator]:
    """A running simulator."""
    async with CanvasSimulator(SimulatorSettings.instant()) as simulator:
        yield simulator


def canvas_env(sim: CanvasSimulator, token: str | None = None) -> dict[str, str]:
    return {"CANVAS_BASE_URL": sim.base_url, "CANVAS_ACCESS_TOKEN": token or sim.token}


def assert_clean(run: Run, token: str) -> None:
    """No traceback and no token in anything the command printed."""
    assert "Traceback" not in run.stderr
    assert token not in run.stdout + run.stderr


async def test_api_get_prints_json(sim: CanvasSimulator) -> None:
    """GET prints the decoded JSON on stdout and exits 0."""
    run = await cli("api", "GET", "courses/101", env=canvas_env(sim))

    assert 0 == run.code
    assert 101 == json.loads(run.stdout)["id"]
    assert_clean(run, sim.token)


async def test_api_paginate_prints_one_item_per_line(sim: CanvasSimulator) -> None:
    """--paginate follows every page and prints JSON lines."""
    run = await cli(
        "api",
        "GET",
        "courses/101/enrollments",
        "--paginate",
        "-p",
        "per_page=7",
        env=canvas_env(sim),
    )

    lines = run.stdout.splitlines()
    assert (0, 41) == (run.code, len(lines))
    assert 1 == json.loads(lines[0])["id"]


async def test_api_post_with_nested_params(sim: CanvasSimulator) -> None:
    """-p 'enrollment[user_id]=101' is sent as Canvas's nested form parameter."""
    run = await cli(
        "api",
        "POST",
        "courses/102/enrollments",
        "-p",
        "enrollment[user_id]=101",
        "--json",
        env=canvas_env(sim),
    )

    assert 0 == run.code
    assert 101 == json.loads(run.stdout)["user_id"]
    assert 1 == sim.stats.applied_writes


@pytest.mark.parametrize(
    ("args", "token", "code", "says"),
    [
        (["api", "GET", "courses/999"], None, 4, "404 — Not Found"),
        (["api", "GET", "courses/101"], "wrong-token", 3, "invalid, expired or revoked"),
        (["api", "GET", "accounts/1"], None, 3, "not allowed"),
        (
            [
                "api",
                "PUT",
                "courses/101/assignments/101001/submissions/101",
                "-p",
                "submission[posted_grade]=banana",
            ],
            None,
            1,
            "Invalid grade",
        ),
    ],
)
async def test_api_errors_have_pages_and_exit_codes(
    sim: CanvasSimulator, args: list[str], token: str | None, code: int, says: str
) -> None:
    """Canvas errors print a minimal text error page and a distinct exit code."""
    run = await cli(*args, env=canvas_env(sim, token))

    assert code == run.code
    assert says in run.stderr
    assert "" == run.stdout
    assert_clean(run, sim.token)


async def test_api_throttled_out_exits_5(sim: CanvasSimulator) -> None:
    """A throttle that outlasts the attempts exits 5."""
    for _ in range(16):
        sim.bucket().reserve()

    run = await cli("api", "GET", "courses/101", "--attempts", "1", env=canvas_env(sim))

    assert 5 == run.code
    assert "Too Many Requests" in run.stderr or "Rate Limit Exceeded" in run.stderr


async def test_api_unreachable_url_exits_6() -> None:
    """Nothing listening: a clear could-not-connect message, exit 6, no traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"CANVAS_BASE_URL": f"http://127.0.0.1:{port}", "CANVAS_ACCESS_TOKEN": "tok-123"}

    run = await cli("api", "GET", "courses", "--attempts", "1", env=env)

    assert 6 == run.code
    assert "Could not connect" in run.stderr
    assert_clean(run, "tok-123")


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["api", "GET", "courses"], {"CANVAS_BASE_URL": "http://127.0.0.1:1"}, "No access token"),
        (["api", "GET", "courses"], {"CANVAS_ACCESS_TOKEN": "t"}, "No Canvas URL"),
        (
            ["api", "GET", "courses", "-p", "novalue"],
            {"CANVAS_BASE_URL": "http://127.0.0.1:1", "CANVAS_ACCESS_TOKEN": "t"},
            "key=value",
        ),
        (
            ["api", "FETCH", "courses"],
            {"CANVAS_BASE_URL": "http://127.0.0.1:1", "CANVAS_ACCESS_TOKEN": "t"},
            "Unknown method",
        ),
        (
            ["api", "POST", "courses", "--paginate"],
            {"CANVAS_BASE_URL": "http://127.0.0.1:1", "CANVAS_ACCESS_TOKEN": "t"},
            "only works",
        ),
        (
            ["api", "GET", "https://evil.example/x"],
            {"CANVAS_BASE_URL": "http://127.0.0.1:1", "CANVAS_ACCESS_TOKEN": "t"},
            "Refusing",
        ),
        (["frobnicate"], {}, "invalid choice"),
        (["demo", "--students", "0"], {}, "at least 1"),
    ],
)
async def test_usage_errors_exit_2(args: list[str], env: dict[str, str], says: str) -> None:
    """Bad input is a clear message and exit 2, never a traceback."""
    run = await cli(*args, env=env)

    assert 2 == run.code
    assert says in run.stderr
    assert "Traceback" not in run.stderr


async def test_json_log_format_writes_json_events() -> None:
    """--log-format json writes one JSON event per line on stderr, stdout stays JSON."""
    faults = FaultSettings(schedule={1: Fault.MAINTENANCE})
    async with CanvasSimulator(SimulatorSettings.instant(faults=faults)) as sim:
        run = await cli("--log-format", "json", "api", "GET", "courses/101", env=canvas_env(sim))

    events = [json.loads(line) for line in run.stderr.splitlines()]
    assert 0 == run.code
    assert "canvas.retry_scheduled" == events[0]["event"]
    assert "unavailable" == events[0]["reason"]
    assert 101 == json.loads(run.stdout)["id"]
    assert_clean(run, sim.token)


async def test_demo_runs_and_posts_every_grade_once() -> None:
    """A small demo finishes, exits 0, and reports no loss and no duplicates."""
    run = await cli("demo", "--students", "8", "--assignments", "2", "--fault-rate", "0.05")

    assert 0 == run.code
    assert "Every grade posted exactly once." in run.stderr
    assert "duplicate writes" in run.stderr
    assert "Traceback" not in run.stderr


async def test_simulate_serves_until_stopped() -> None:
    """simulate serves a simulator that answers API calls with the printed token."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "resilient_canvas",
        "simulate",
        "--port",
        str(port),
        "--token",
        "cli-token",
        "--profile",
        "hosted",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"Canvas simulator (hosted)" in line
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/api/v1/courses/101",
                headers={"Authorization": "Bearer cli-token"},
            ) as response,
        ):
            assert 200 == response.status
    finally:
        process.terminate()
        await process.wait()


# ------------------------------------------- a newcomer's first hour (issue 15)


def _closed_port_env(token: str) -> dict[str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"CANVAS_BASE_URL": f"http://127.0.0.1:{port}", "CANVAS_ACCESS_TOKEN": token}


async def test_refused_connection_is_titled_a_connection_error() -> None:
    """A refused connection is a connection error, not a "502 Bad Gateway" no server sent."""
    run = await cli("api", "GET", "courses", "--attempts", "1", env=_closed_port_env("tok-123"))

    assert run.stderr.startswith("⚠️ Connection error: could not connect (nothing was sent)\n")
    assert "502" not in run.stderr
    assert "Bad Gateway" not in run.stderr


async def test_api_error_is_printed_once(sim: CanvasSimulator) -> None:
    """The final error is the page alone: no canvas.request_failed log line repeating it."""
    run = await cli("api", "GET", "courses/999", env=canvas_env(sim))

    assert 4 == run.code
    assert "canvas.request_failed" not in run.stderr
    assert 1 == run.stderr.count("The specified resource does not exist.")


async def test_json_log_format_keeps_the_failure_event(sim: CanvasSimulator) -> None:
    """With --log-format json the failure stays an event for machines, beside the page."""
    run = await cli("--log-format", "json", "api", "GET", "courses/999", env=canvas_env(sim))

    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert ["canvas.request_failed"] == [e["event"] for e in events]


async def test_debug_shows_the_full_page_with_tracebacks_and_no_token() -> None:
    """--debug adds every exception of the chain with its traceback; the token stays out."""
    env = _closed_port_env("tok-SECRET-456")
    plain = await cli("api", "GET", "courses", "--attempts", "1", env=env)
    debug = await cli("api", "GET", "courses", "--attempts", "1", "--debug", env=env)

    assert "Traceback" not in plain.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    # The chain is sealed (docs/security.md): the cause is named, not carried.
    assert "ClientConnectorError" in debug.stderr
    assert "resilient_canvas.exceptions.ConnectError" in debug.stderr
    assert "tok-SECRET-456" not in debug.stderr


async def test_demo_prints_plain_progress_lines_outside_a_terminal() -> None:
    """Piped, the demo prints whole progress lines as it goes, before the summary."""
    run = await cli("demo", "--students", "8", "--assignments", "5", "--fault-rate", "0")

    lines = run.stderr.splitlines()
    progress = [i for i, line in enumerate(lines) if line.startswith("grading ")]
    summary = next(i for i, line in enumerate(lines) if "Grade sync: what happened" in line)
    assert 0 == run.code
    assert len(progress) >= 3
    assert max(progress) < summary
    assert lines[progress[-1]].startswith("grading 40/40 · at Canvas")
    assert lines[progress[-1]].endswith("s")  # elapsed time: the line was not cut
