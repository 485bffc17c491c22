"""Tests for the upload, download and sis-import commands, run in a subprocess."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resilient_canvas._cli import exit_code_for
from resilient_canvas.exceptions import (
    JobStuck,
    LocalFileError,
    SisImportFailed,
    UserAgentRejected,
)
from resilient_canvas.testing import CanvasSimulator, SimulatorSettings
from tests.test_cli import assert_clean, canvas_env, cli

USERS = b"user_id,login_id,full_name,status\nu1,ada,Ada L,active\nu2,,No Login,active\n"


@pytest.fixture
async def sim() -> AsyncIterator[CanvasSimulator]:
    """A running simulator that refuses one User-Agent."""
    settings = SimulatorSettings.instant(blocked_user_agents=("blockedbot",))
    async with CanvasSimulator(settings) as simulator:
        yield simulator


async def test_upload_then_download(sim: CanvasSimulator, tmp_path: Path) -> None:
    """upload prints the File as one JSON line; download writes the same bytes and says where."""
    source = tmp_path / "roster.csv"
    source.write_bytes(USERS)
    env = canvas_env(sim)
    up = await cli("upload", str(source), "--to", "courses/101/files", "--json", env=env)
    created = json.loads(up.stdout)
    dest = tmp_path / "copy.csv"
    down = await cli("download", created["url"], str(dest), "--json", env=env)
    assert (0, 0) == (up.code, down.code)
    assert ({"path": str(dest), "bytes": len(USERS)}, USERS) == (
        json.loads(down.stdout),
        dest.read_bytes(),
    )
    assert [None, None] == sim.files.authorization_seen
    assert_clean(up, sim.token)
    assert_clean(down, sim.token)


async def test_sis_import_wait_prints_the_result(sim: CanvasSimulator, tmp_path: Path) -> None:
    """sis-import --wait prints the final state, counts and warnings."""
    source = tmp_path / "users.csv"
    source.write_bytes(USERS)
    run = await cli(
        "sis-import",
        "1",
        str(source),
        "--wait",
        "--poll-every",
        "0.01",
        "--json",
        env=canvas_env(sim),
    )
    result = json.loads(run.stdout)
    assert (0, "imported_with_messages", 1) == (
        run.code,
        result["workflow_state"],
        result["counts"]["users"],
    )
    assert [["sis_import.csv", "Row 3: no login_id given, skipped"]] == result["warnings"]


@pytest.mark.parametrize(
    ("content", "outcome", "code", "says"),
    [
        (b"shoe_size\n42\n", None, 7, "Couldn't find Canvas CSV import headers"),
        (USERS, "stuck", 8, "looks stuck: still importing at 40%"),
    ],
)
async def test_sis_import_failures_exit_by_class(
    sim: CanvasSimulator,
    tmp_path: Path,
    content: bytes,
    outcome: str | None,
    code: int,
    says: str,
) -> None:
    """A failed import exits 7 with Canvas's message, a stuck one 8; stdout stays empty."""
    if outcome:
        sim.sis.next_outcomes.append(outcome)
    source = tmp_path / "import.csv"
    source.write_bytes(content)
    run = await cli(
        "sis-import",
        "1",
        str(source),
        "--wait",
        "--poll-every",
        "0.01",
        "--stuck-after",
        "0.05",
        env=canvas_env(sim),
    )
    assert (code, "") == (run.code, run.stdout)
    assert says in run.stderr
    assert_clean(run, sim.token)


async def test_refused_user_agent_exits_3(sim: CanvasSimulator, tmp_path: Path) -> None:
    """A blocked --user-agent is refused (403) and the page says how to fix it."""
    source = tmp_path / "a.txt"
    source.write_bytes(b"a")
    run = await cli(
        "upload",
        str(source),
        "--to",
        "users/self/files",
        "--user-agent",
        "BlockedBot/1",
        env=canvas_env(sim),
    )
    assert 3 == run.code
    assert "user_agent=" in run.stderr


async def test_missing_file_is_a_usage_error(sim: CanvasSimulator) -> None:
    """A path that is not a file exits 2 before anything is sent."""
    run = await cli("upload", "/nonexistent/x.pdf", "--to", "courses/1/files", env=canvas_env(sim))
    assert (2, 0) == (run.code, sim.stats.requests)
    assert "No file at /nonexistent/x.pdf" in run.stderr


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SisImportFailed("x"), 7),
        (JobStuck("x"), 8),
        (LocalFileError("x"), 9),
        (UserAgentRejected("x"), 3),
    ],
)
def test_exit_codes_of_the_workflow_errors(error: Exception, code: int) -> None:
    """Each workflow failure class has its exit code."""
    assert code == exit_code_for(error)  # type: ignore[arg-type]
