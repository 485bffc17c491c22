"""Tests for SIS imports and job waiting: deadline, backoff polling, stuck detection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from resilient_canvas import CanvasClient
from resilient_canvas import exceptions as exc
from resilient_canvas.testing import CanvasSimulator, FakeClock

USERS = b"user_id,login_id,full_name,status\nu1,ada,Ada L,active\nu2,alan,Alan T,active\n"


@pytest.fixture
def clock() -> FakeClock:
    """The virtual clock of the client (the simulator has its own)."""
    return FakeClock()


@pytest.fixture
async def canvas(sim: CanvasSimulator, clock: FakeClock) -> AsyncIterator[CanvasClient]:
    """A client of the simulator whose waits pass instantly, recorded on *clock*."""
    async with CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as client:
        yield client


async def test_import_from_a_path_streams_and_completes(
    canvas: CanvasClient, sim: CanvasSimulator, clock: FakeClock, tmp_path: Path
) -> None:
    """A CSV file is posted whole, then polled with growing waits until imported."""
    users = tmp_path / "users.csv"
    users.write_bytes(USERS)
    started = await canvas.start_sis_import(1, users)
    result = await canvas.wait_for_sis_import(1, started)
    assert ("imported", {"users": 2}, []) == (
        result.workflow_state,
        {k: v for k, v in result.counts.items() if v},
        result.warnings,
    )
    assert len(USERS) == sim.sis.received_bytes
    assert [2.0, 3.0, 4.5, 6.75] == clock.sleeps


async def test_warnings_are_exposed(canvas: CanvasClient) -> None:
    """Rows Canvas skips come back as (file, message) warnings on an imported_with_messages."""
    started = await canvas.start_sis_import("self", USERS + b"u3,,No Login,active\n")
    result = await canvas.wait_for_sis_import("self", started["id"])
    assert (
        "imported_with_messages",
        [("sis_import.csv", "Row 4: no login_id given, skipped")],
    ) == (
        result.workflow_state,
        result.warnings,
    )


async def test_failed_import_raises_with_canvas_messages(canvas: CanvasClient) -> None:
    """Unknown headers fail the import: SisImportFailed carries Canvas's processing errors."""
    started = await canvas.start_sis_import(1, b"shoe_size,colour\n42,red\n")
    with pytest.raises(exc.SisImportFailed) as caught:
        await canvas.wait_for_sis_import(1, started)
    assert "ended failed_with_messages. Canvas said: \"sis_import.csv: Couldn't find" in str(
        caught.value
    )
    assert [["sis_import.csv", "Couldn't find Canvas CSV import headers"]] == caught.value.errors
    assert isinstance(caught.value, exc.ProgressFailed)


@pytest.mark.parametrize("outcome", ["aborted", "failed"])
async def test_aborted_and_failed_imports_raise(
    canvas: CanvasClient, sim: CanvasSimulator, outcome: str
) -> None:
    """Every failure state raises, saying which, even without messages."""
    sim.sis.next_outcomes.append(outcome)
    started = await canvas.start_sis_import(1, USERS)
    with pytest.raises(exc.SisImportFailed, match=f"ended {outcome}. Canvas gave no message"):
        await canvas.wait_for_sis_import(1, started)


async def test_stuck_import_raises_job_stuck(
    canvas: CanvasClient, sim: CanvasSimulator, clock: FakeClock
) -> None:
    """An import that stops changing raises JobStuck after stuck_after, not at the deadline."""
    sim.sis.next_outcomes.append("stuck")
    started = await canvas.start_sis_import(1, USERS)
    began = clock()
    with pytest.raises(exc.JobStuck, match="still importing at 40% after") as caught:
        await canvas.wait_for_sis_import(1, started, stuck_after=120, within=3600)
    assert 120 <= clock() - began < 300
    assert {"sis_import_id": started["id"]} == caught.value.context


async def test_deadline_ends_the_wait(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """Without stuck detection, the deadline ends the wait with a RequestTimeout."""
    sim.sis.next_outcomes.append("stuck")
    started = await canvas.start_sis_import(1, USERS)
    with pytest.raises(exc.RequestTimeout, match=r"within 30 s \(last state: importing\)"):
        await canvas.wait_for_sis_import(1, started, within=30, stuck_after=None)


async def test_zip_import(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """A zip (by name or extension=) goes as application/zip and imports."""
    started = await canvas.start_sis_import(1, b"PK\x03\x04...", extension="zip")
    result = await canvas.wait_for_sis_import(1, started)
    assert "imported" == result.workflow_state


@pytest.fixture
async def frozen_progress() -> AsyncIterator[str]:
    """A Canvas whose Progress 7 stays running at 50% forever."""

    async def progress(request: web.Request) -> web.Response:
        return web.json_response({"id": 7, "workflow_state": "running", "completion": 50})

    app = web.Application()
    app.router.add_get("/api/v1/progress/7", progress)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_progress_wait_detects_a_stuck_job(frozen_progress: str) -> None:
    """wait_for_progress polls with backoff and reports a job frozen at 50% as stuck."""
    clock = FakeClock()
    async with CanvasClient(frozen_progress, "tok", clock=clock, sleep=clock.sleep) as canvas:
        with pytest.raises(exc.JobStuck, match="Canvas job 7 looks stuck: still running at 50%"):
            await canvas.wait_for_progress(7, stuck_after=10, max_poll_every=4)
    assert [1.0, 1.5, 2.25, 3.375, 4.0] == clock.sleeps


@pytest.mark.parametrize(
    "options",
    [{"poll_every": 0}, {"backoff": 0.5}, {"stuck_after": 0}, {"within": -1}],
)
async def test_wait_options_are_validated(canvas: CanvasClient, options: dict[str, Any]) -> None:
    """Nonsense waits are a ValueError before any poll."""
    with pytest.raises(ValueError, match="must be"):
        await canvas.wait_for_progress(1, **options)
