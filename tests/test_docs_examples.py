"""Every ```python example in README.md and docs/*.md runs, as a reader would run it.

Each example is a complete script that reads the Canvas URL and token from
``CANVAS_BASE_URL`` and ``CANVAS_ACCESS_TOKEN`` (as the ``api`` command
does). Here each runs in a fresh interpreter against its own
``CanvasSimulator``; an example that defines ``test_`` functions runs under
pytest with the ``asyncio_mode = "auto"`` the testing page asks for. It must
exit 0, print no traceback, and get no error status from the simulator: the
examples grade what the assignments they name take.

An example that cannot run here says why in an HTML comment right above it:
``<!-- example: no-run (needs a Redis server) -->``; those are listed below,
so a new one is a deliberate choice.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from resilient_canvas.testing import CanvasSimulator

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_NO_RUN = re.compile(r"<!-- example: no-run \((?P<reason>[^)]+)\) -->\s*$")

#: The examples that do not run here (document, reason); change it deliberately.
EXPECTED_NO_RUN = [
    ("docs/migrating-from-canvasapi.md", "the simulator has no file endpoints"),
    ("docs/migrating-from-canvasapi.md", "the simulator has no file endpoints"),
    ("docs/testing.md", "imports your own sync_grades"),
    ("docs/testing.md", "calls your own sync_grades"),
    ("docs/throttle.md", "needs a Redis server"),
]


@dataclass(frozen=True)
class Example:
    """One ```python block: where it is, its code, and why it does not run (if so)."""

    where: str
    code: str
    no_run: str | None


@dataclass(frozen=True)
class Outcome:
    """What running one example did."""

    code: int
    stdout: str
    stderr: str
    error_statuses: dict[int | str, int]


def find_examples() -> list[Example]:
    """Every ```python block of the documents, in order."""
    examples = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = _NO_RUN.search(before)
            examples.append(
                Example(
                    where=f"{document.relative_to(ROOT).as_posix()}:{line}",
                    code=match.group(1),
                    no_run=marker.group("reason") if marker else None,
                )
            )
    return examples


EXAMPLES = find_examples()
RUNNABLE = [example for example in EXAMPLES if example.no_run is None]


async def _run(example: Example, workdir: Path) -> Outcome:
    async with CanvasSimulator() as sim:
        name = re.sub(r"\W", "_", example.where)
        script = workdir / f"test_{name}.py"
        script.write_text(example.code, encoding="utf-8")
        if "def test_" in example.code:
            # What docs/testing.md tells readers to configure for their own tests.
            (workdir / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
            command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
        else:
            command = [script.name]
        env = {**os.environ, "CANVAS_BASE_URL": sim.base_url, "CANVAS_ACCESS_TOKEN": sim.token}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
        stats = sim.stats
        # A throttled request is retried by the client: not an error the reader
        # sees, but pacing must keep it rare (checked below).
        statuses = dict(stats.statuses)
        throttle_status = sim.settings.throttle.throttled_status
        statuses[throttle_status] = statuses.get(throttle_status, 0) - stats.throttled
        errors = {status: n for status, n in statuses.items() if status >= 400 and n}
        if stats.throttled > max(1, stats.requests // 50):
            errors["throttled"] = stats.throttled
    assert process.returncode is not None
    return Outcome(process.returncode, stdout.decode(), stderr.decode(), errors)


async def _run_all(root: Path) -> dict[str, Outcome]:
    workdirs = [root / str(index) for index in range(len(RUNNABLE))]
    for workdir in workdirs:
        workdir.mkdir()
    # A few at a time: twenty interpreters starting at once on a small CI
    # machine would starve the simulators' event loop of CPU, and no real
    # Canvas answers that late.
    limit = asyncio.Semaphore(4)

    async def run(example: Example, workdir: Path) -> Outcome:
        async with limit:
            return await _run(example, workdir)

    outcomes = await asyncio.gather(*(run(e, w) for e, w in zip(RUNNABLE, workdirs, strict=True)))
    return {example.where: outcome for example, outcome in zip(RUNNABLE, outcomes, strict=True)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every runnable example's outcome, run once for the module."""
    return asyncio.run(_run_all(tmp_path_factory.mktemp("examples")))


def test_examples_are_found() -> None:
    """The extraction finds the README's example and every document's blocks."""
    where = [example.where.split(":")[0] for example in EXAMPLES]

    assert "README.md" in where
    assert len(EXAMPLES) >= 15


def test_no_run_examples_are_the_expected_ones() -> None:
    """Only the listed examples are skipped, each with its reason."""
    skipped = [(e.where.split(":")[0], e.no_run) for e in EXAMPLES if e.no_run is not None]

    assert EXPECTED_NO_RUN == skipped


@pytest.mark.parametrize("example", RUNNABLE, ids=[example.where for example in RUNNABLE])
def test_example_runs_against_the_simulator(example: Example, outcomes: dict[str, Outcome]) -> None:
    """The example exits 0, prints no traceback and gets no error status from Canvas."""
    outcome = outcomes[example.where]

    assert (0, {}) == (outcome.code, outcome.error_statuses), outcome.stdout + outcome.stderr
    assert "Traceback" not in outcome.stderr
