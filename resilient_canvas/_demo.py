"""``resilient-canvas demo``: a realistic grade sync against the embedded simulator.

The job a Canvas admin script really runs: list a course's students (bookmark
pages) and assignments, read each assignment's submissions (ordinal pages),
create a lab section (by SIS id) and enroll every student in it, then post a
grade for every student and assignment, all at once, while the simulated
Canvas throttles like hosted Canvas (hwm 700, 429), goes into maintenance,
times out at the gateway after applying writes, drops connections after
writes, and answers some writes too late. Enrollments are not idempotent:
those whose answer is lost are looked up (reconciled) or, not found, sent
once more (repeated); the summary counts both.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from resilient_canvas._bulk import BulkResult
from resilient_canvas._client import CanvasClient
from resilient_canvas._policy import RetryPolicy
from resilient_canvas._throttle import Throttle
from resilient_canvas.testing import (
    CanvasSimulator,
    DataSettings,
    Fault,
    FaultSettings,
    RouteProfile,
    SimulatorSettings,
    bucket_lower_bound,
)

COURSE = 101
GRADE_ROUTE = "PUT /api/v1/courses/{course_id}/assignments/{assignment_id}/submissions/{user_id}"
# Grading is costly enough that the bucket fills: pacing, not luck, avoids 429s.
#: How the client's throttle names the grading route when it learns its cost.
GRADE_ROUTE_KEY = "PUT /api/v1/courses/:id/assignments/:id/submissions/:id"
GRADE_PROFILE = RouteProfile(service_time=0.04, cost_rate=37.5, base_cost=0.0)
LIST_PROFILE = RouteProfile(service_time=0.03, cost_rate=5.0)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Size and fault rate of the demo job."""

    students: int = 150
    assignments: int = 4
    fault_rate: float = 0.03
    seed: int = 1
    compare: bool = False

    def __post_init__(self) -> None:
        if self.students < 1 or self.assignments < 1:
            raise ValueError("students and assignments must be at least 1.")
        if not 0 <= self.fault_rate <= 0.5:
            raise ValueError("fault_rate must be between 0 and 0.5.")

    def settings(self) -> SimulatorSettings:
        """Hosted-like Canvas with a realistic mix of faults."""
        rate = self.fault_rate
        faults = FaultSettings(
            rates={
                Fault.MAINTENANCE: rate * 0.3,
                Fault.BAD_GATEWAY: rate * 0.15,
                Fault.GATEWAY_TIMEOUT: rate * 0.2,
                Fault.DROP_AFTER_WRITE: rate * 0.25,
                # Answers that come too late after the write was applied (a write
                # still running when its check looks is the one case a check misses).
                Fault.HANG_AFTER_WRITE: rate * 0.1,
            },
            hang_seconds=3.0,
            seed=self.seed,
        )
        return SimulatorSettings.hosted(
            data=DataSettings(
                courses=1,
                students_per_course=self.students,
                assignments_per_course=self.assignments,
                seed=self.seed,
            ),
            faults=faults,
            default_route=LIST_PROFILE,
            routes={GRADE_ROUTE: GRADE_PROFILE},
            seed=self.seed,
        )


@dataclass(slots=True)
class JobReport:
    """What one run of the job did, read from the client and the simulator."""

    name: str
    calls: int = 0
    enrollments: int = 0
    grades: int = 0
    failed: int = 0
    reconciled: int | None = None
    repeated: int | None = None
    throttled: int = 0
    applied_writes: int = 0
    duplicate_writes: int = 0
    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    pauses: int = 0
    wall_s: float = 0.0


#: Called with (grades done, grades in all, status fields) as grading goes on.
StatusCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass(slots=True)
class EventCounter:
    """A structlog processor that counts retries by reason and throttle pauses."""

    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    pauses: int = 0

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        name = event.get("event")
        if name == "canvas.retry_scheduled":
            self.retries[str(event.get("reason"))] += 1
        elif name == "canvas.throttle_paused":
            self.pauses += 1
        return event

    def reset(self) -> None:
        self.retries.clear()
        self.pauses = 0


async def paced_job(
    sim: CanvasSimulator,
    counter: EventCounter,
    on_status: StatusCallback | None = None,
) -> JobReport:
    """The grade sync with CanvasClient: paced, retried, nothing lost or duplicated.

    Each assignment gets a grade its grading type takes (Canvas refuses a
    letter grade on a points assignment, and anything but full or no points
    on a pass_fail one).
    """
    report = JobReport("resilient_canvas")
    policy = RetryPolicy(attempt_timeout=1.5, deadline=90.0)
    started = time.perf_counter()
    async with CanvasClient(sim.base_url, sim.token, policy=policy, throttle=Throttle()) as canvas:
        students = [
            e["user_id"]
            async for e in canvas.paginate(
                f"courses/{COURSE}/enrollments", params={"type": ["StudentEnrollment"]}, per_page=50
            )
        ]
        assignments = [a async for a in canvas.paginate(f"courses/{COURSE}/assignments")]
        for assignment in assignments:
            path = f"courses/{COURSE}/assignments/{assignment['id']}/submissions"
            _ = [s async for s in canvas.paginate(path, per_page=50)]
        enrolled = await _enroll_in_lab(canvas, students)
        work = [(assignment, student) for assignment in assignments for student in students]
        if on_status is not None:
            on_status(0, len(work), _status(canvas, counter, 0, len(work)))

        def on_progress(state: Any) -> None:
            if on_status is not None:
                left = len(work) - state.done
                on_status(state.done, len(work), _status(canvas, counter, state.in_flight, left))

        async def grade(item: tuple[dict[str, Any], int]) -> Any:
            assignment, student = item
            return await canvas.put(
                f"courses/{COURSE}/assignments/{assignment['id']}/submissions/{student}",
                data={"submission": {"posted_grade": grade_for(assignment, student)}},
            )

        result = await canvas.map(grade, work, on_progress=on_progress)
    report.wall_s = time.perf_counter() - started
    report.enrollments = len(students)
    report.grades = len(work)
    report.failed = result.failed + enrolled.failed
    report.reconciled = result.reconciled + enrolled.reconciled
    report.repeated = result.repeated + enrolled.repeated
    _read_simulator(report, sim, counter)
    return report


async def _enroll_in_lab(canvas: CanvasClient, students: list[int]) -> BulkResult[int, Any]:
    """Create the lab section (found by its SIS id if its answer is lost), enroll everyone."""
    lab = await canvas.post(
        f"courses/{COURSE}/sections",
        data={"course_section": {"name": "Lab", "sis_section_id": f"LAB-{COURSE}"}},
    )

    async def enroll(student: int) -> Any:
        form = {"user_id": student, "type": "StudentEnrollment", "enrollment_state": "active"}
        return await canvas.post(f"sections/{lab['id']}/enrollments", data={"enrollment": form})

    return await canvas.map(enroll, students)


#: What the demo posts per grading type (its own notion of each student's work).
_LETTERS = ("A", "A-", "B+", "B", "B-", "C+", "C")
_GPA = ("4.0", "3.7", "3.3", "3.0", "2.7")


def grade_for(assignment: dict[str, Any], student: int) -> str:
    """A grade *assignment*'s grading type accepts, varied by *student*."""
    seed = student * 7 + assignment["id"]
    kind = assignment.get("grading_type", "points")
    if kind == "letter_grade":
        return _LETTERS[seed % len(_LETTERS)]
    if kind == "gpa_scale":
        return _GPA[seed % len(_GPA)]
    if kind == "pass_fail":
        return "complete" if seed % 5 else "incomplete"
    if kind == "percent":
        return f"{60 + seed % 41}%"
    return str(seed % int(assignment.get("points_possible") or 100) + 1)


def _status(canvas: CanvasClient, counter: EventCounter, started: int, left: int) -> dict[str, Any]:
    """The progress line's fields: what the throttle believes and what happened so far.

    *started* counts calls begun and not finished; those not yet sent are
    waiting for the throttle.
    """
    throttle = canvas.throttle
    estimate = throttle.estimate() if throttle else None
    sent = estimate.in_flight if estimate else started
    eta = "…"
    if throttle is not None and throttle.route_cost(GRADE_ROUTE_KEY) is not None:
        # The bucket's estimate from the learned cost of grading: a lower bound.
        eta = f"{throttle.eta(left, GRADE_ROUTE_KEY):.0f}s"
    return {
        "sent": sent,
        "waiting": max(0, started - sent),
        "quota": f"{estimate.remaining:.0f}" if estimate else "-",
        "retries": sum(counter.retries.values()),
        "pauses": counter.pauses,
        "eta": eta,
    }


async def naive_job(sim: CanvasSimulator, options: DemoOptions) -> JobReport:
    """The same grades with plain concurrent aiohttp: no pacing, no retries."""
    report = JobReport("naive aiohttp")
    headers = {"Authorization": f"Bearer {sim.token}"}
    students = [
        s["user_id"] for s in sim.data.enrollments[COURSE] if s["type"] == "StudentEnrollment"
    ]
    assignments = list(sim.data.assignments[COURSE])
    work = [(assignment, student) for assignment in assignments for student in students]
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(sim.base_url, headers=headers, timeout=timeout) as session:
        enrolled = await _naive_enrollments(session, students)

        async def grade(item: tuple[dict[str, Any], int]) -> bool:
            assignment, student = item
            path = f"/api/v1/courses/{COURSE}/assignments/{assignment['id']}/submissions/{student}"
            posted = {"submission[posted_grade]": grade_for(assignment, student)}
            try:
                async with session.put(path, data=posted) as response:
                    json.loads(await response.read())
                    return response.status < 400
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False

        results = await asyncio.gather(*(grade(item) for item in work))
    report.wall_s = time.perf_counter() - started
    report.enrollments = len(students)
    report.grades = len(work)
    report.failed = results.count(False) + enrolled.count(False)
    _read_simulator(report, sim, EventCounter())
    return report


async def _naive_enrollments(session: aiohttp.ClientSession, students: list[int]) -> list[bool]:
    """The lab section and its enrollments, each sent once, all at once."""
    section = {"course_section[name]": "Lab", "course_section[sis_section_id]": f"LAB-{COURSE}"}
    try:
        async with session.post(f"/api/v1/courses/{COURSE}/sections", data=section) as response:
            lab = json.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return [False] * len(students)

    async def enroll(student: int) -> bool:
        form = {"enrollment[user_id]": str(student), "enrollment[type]": "StudentEnrollment"}
        try:
            async with session.post(
                f"/api/v1/sections/{lab.get('id')}/enrollments", data=form
            ) as response:
                await response.read()
                return response.status < 400
        except (aiohttp.ClientError, TimeoutError):
            return False

    return list(await asyncio.gather(*(enroll(student) for student in students)))


def _read_simulator(report: JobReport, sim: CanvasSimulator, counter: EventCounter) -> None:
    stats = sim.stats
    report.calls = stats.requests
    report.throttled = stats.throttled
    report.applied_writes = stats.applied_writes
    report.duplicate_writes = stats.duplicate_writes
    report.retries = collections.Counter(counter.retries)
    report.pauses = counter.pauses


def lower_bound(options: DemoOptions) -> float:
    """The leaky-bucket bound of the enrollment and grading phases at the hosted settings."""
    grades = GRADE_PROFILE.base_cost + GRADE_PROFILE.service_time * GRADE_PROFILE.cost_rate
    enrollments = LIST_PROFILE.base_cost + LIST_PROFILE.service_time * LIST_PROFILE.cost_rate
    return bucket_lower_bound(
        options.students,
        service_time=LIST_PROFILE.service_time,
        cost=enrollments,
        hwm=700.0,
    ) + bucket_lower_bound(
        options.students * options.assignments,
        service_time=GRADE_PROFILE.service_time,
        cost=grades,
        hwm=700.0,
    )


def summary(reports: list[JobReport], bound: float) -> Table:
    """A table of each run's numbers, side by side."""
    table = Table(title="Grade sync: what happened")
    table.add_column("")
    for report in reports:
        table.add_column(report.name, justify="right")
    rows: list[tuple[str, Callable[[JobReport], str]]] = [
        ("lab enrollments to make", lambda r: str(r.enrollments)),
        ("grades to post", lambda r: str(r.grades)),
        ("HTTP calls sent", lambda r: str(r.calls)),
        ("retries", lambda r: _retries(r.retries)),
        ("throttled responses", lambda r: str(r.throttled)),
        ("shared throttle pauses", lambda r: str(r.pauses)),
        ("writes applied", lambda r: str(r.applied_writes)),
        ("duplicate writes", lambda r: _flag(r.duplicate_writes)),
        ("lost answers found (reconciled)", lambda r: _count(r.reconciled)),
        ("not found, sent again", lambda r: _count(r.repeated)),
        ("failed calls", lambda r: _flag(r.failed)),
        ("wall time", lambda r: f"{r.wall_s:.1f} s"),
        ("vs. bucket lower bound", lambda r: f"{r.wall_s / bound:.2f}x of {bound:.1f} s"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(report) for report in reports))
    return table


#: The status fields: label, name in ``_status()``, format spec.
_FIELDS = (
    ("at Canvas", "sent", ">2"),
    ("queued", "waiting", ">2"),
    ("quota", "quota", ">4"),
    ("retries", "retries", ">3"),
    ("pauses", "pauses", ""),
    ("ETA", "eta", ">4"),
)


def _status_template(field_ref: Callable[[str], str]) -> str:
    """``at Canvas {<ref of sent>:>2} · queued ...`` for str.format."""
    return " · ".join(f"{label} {{{field_ref(name)}:{spec}}}" for label, name, spec in _FIELDS)


@contextmanager
def _status_display(console: Console) -> Iterator[StatusCallback]:
    """A live progress bar on a terminal; plain progress lines anywhere else.

    Rich draws nothing live when its output is not a terminal (a pipe, a CI
    log) and prints the bar once at the end, cut to 80 columns: there, one
    plain line per tenth of the work says what is happening as it happens.
    """
    if not console.is_terminal:
        yield _LineProgress(console)
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn(_status_template(lambda name: f"task.fields[{name}]")),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: list[TaskID] = []

        def update(done: int, total: int, fields: dict[str, Any]) -> None:
            # The task starts with the first status: its columns need every field.
            if not tasks:
                tasks.append(progress.add_task("grading", total=total, **fields))
            progress.update(tasks[0], completed=done, total=total, **fields)

        yield update


@dataclass(slots=True)
class _LineProgress:
    """Prints a status line at the start, at each tenth of the work, and at the end."""

    console: Console
    started: float = field(default_factory=time.perf_counter)
    next_tenth: int = 0

    def __call__(self, done: int, total: int, fields: dict[str, Any]) -> None:
        tenth = 10 * done // total if total else 10
        if tenth < self.next_tenth:
            return
        self.next_tenth = tenth + 1
        elapsed = time.perf_counter() - self.started
        status = _status_template(lambda name: name).format(**fields)
        line = f"grading {done}/{total} · {status} · {elapsed:.0f}s"
        # soft_wrap: never cut or wrap the line at the console's width.
        self.console.print(line, soft_wrap=True, highlight=False, markup=False)


def _retries(retries: collections.Counter[str]) -> str:
    if not retries:
        return "0"
    details = ", ".join(f"{reason} {count}" for reason, count in retries.most_common())
    return f"{sum(retries.values())} ({details})"


def _count(count: int | None) -> str:
    return "-" if count is None else str(count)


def _flag(count: int) -> str:
    return f"[green]{count}[/]" if count == 0 else f"[bold red]{count}[/]"


async def run_demo(options: DemoOptions, counter: EventCounter, console: Console) -> int:
    """Run the demo; return the exit status (0 when nothing was lost or duplicated)."""
    reports: list[JobReport] = []
    async with CanvasSimulator(options.settings()) as sim:
        console.print(
            f"Simulated hosted Canvas at {sim.base_url}: 1 course, {options.students} students, "
            f"{options.assignments} assignments, {options.fault_rate:.0%} of requests faulted."
        )
        if options.compare:
            console.print("Running the same grade sync with naive concurrent aiohttp first…")
            reports.append(await naive_job(sim, options))
            sim.reset()
            counter.reset()
        with _status_display(console) as on_status:
            paced = await paced_job(sim, counter, on_status)
        reports.append(paced)
    console.print(summary(reports, lower_bound(options)))
    ok = paced.failed == 0 and paced.duplicate_writes == 0
    console.print(
        "[green]Every lab enrollment made once. Every grade posted exactly once.[/]"
        if ok
        else "[bold red]Some enrollments or grades were lost or duplicated.[/]"
    )
    return 0 if ok else 1
