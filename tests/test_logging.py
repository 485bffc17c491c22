"""Tests for where the library's events go: silent by default, visible once configured."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from resilient_canvas import _logging
from resilient_canvas.testing import CanvasSimulator, Fault, FaultSettings, SimulatorSettings

#: A script that retries once (the first request meets maintenance) and prints a result.
SCRIPT = """
import asyncio, os
from resilient_canvas import CanvasClient, RetryPolicy

async def main():
    policy = RetryPolicy(backoff_base=0.01)
    async with CanvasClient(os.environ["CANVAS_BASE_URL"], os.environ["CANVAS_ACCESS_TOKEN"],
                            policy=policy) as canvas:
        print((await canvas.get("courses/101"))["id"])

asyncio.run(main())
"""


@pytest.fixture
def _unconfigured_structlog() -> Iterator[None]:
    """structlog as a script that never configured it has it; restored afterwards."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


async def _run_script(prelude: str = "") -> tuple[str, str, str]:
    """Run SCRIPT in a fresh interpreter against a simulator whose first request faults."""
    settings = SimulatorSettings(faults=FaultSettings(schedule={1: Fault.MAINTENANCE}))
    async with CanvasSimulator(settings) as sim:
        env = {**os.environ, "CANVAS_BASE_URL": sim.base_url, "CANVAS_ACCESS_TOKEN": sim.token}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            prelude + SCRIPT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert 1 == sim.stats.statuses[503]
    return stdout.decode(), stderr.decode(), sim.token


async def test_script_without_logging_config_gets_no_library_output() -> None:
    """A retry in a script that configures no logging prints nothing but the script's own output."""
    stdout, stderr, _ = await _run_script()

    assert ("101\n", "") == (stdout, stderr)


async def test_basic_config_shows_retry_warnings_on_stderr() -> None:
    """logging.basicConfig() shows the retry as a stdlib warning of logger resilient_canvas."""
    stdout, stderr, token = await _run_script("import logging; logging.basicConfig()\n")

    assert "101\n" == stdout
    assert stderr.startswith("WARNING:resilient_canvas:event='canvas.retry_scheduled' attempt=1")
    assert "reason='unavailable'" in stderr
    assert token not in stderr


@pytest.mark.usefixtures("_unconfigured_structlog")
def test_unconfigured_structlog_events_are_stdlib_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without structlog configuration an event is a stdlib record with its flat dict attached."""
    caplog.set_level(logging.INFO, logger="resilient_canvas")

    _logging.retry_scheduled(attempt=2, reason="throttled", wait_s=0.5)

    record = caplog.records[0]
    assert ("resilient_canvas", logging.WARNING) == (record.name, record.levelno)
    assert "event='canvas.retry_scheduled' attempt=2 reason='throttled' wait_s=0.5" == (
        record.getMessage()
    )
    expected = {
        "event": "canvas.retry_scheduled",
        "attempt": 2,
        "reason": "throttled",
        "wait_s": 0.5,
    }
    assert expected == record.event_dict  # type: ignore[attr-defined]


@pytest.mark.usefixtures("_unconfigured_structlog")
def test_library_logger_has_a_null_handler() -> None:
    """The resilient_canvas logger carries a NullHandler, so stdlib's last resort stays quiet."""
    handlers = logging.getLogger("resilient_canvas").handlers

    assert [logging.NullHandler] == [type(h) for h in handlers]


@pytest.mark.usefixtures("_unconfigured_structlog")
def test_capture_logs_still_sees_flat_event_dicts() -> None:
    """structlog.testing.capture_logs configures structlog, so events reach it as flat dicts."""
    with capture_logs() as logs:
        _logging.throttle_paused(wait_s=1.5, wait_source="model")

    expected = {
        "event": "canvas.throttle_paused",
        "log_level": "info",
        "wait_s": 1.5,
        "wait_source": "model",
    }
    assert [expected] == logs
