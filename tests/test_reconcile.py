"""Writes whose outcome is unknown are looked up, then returned, repeated once, or reported."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any
from unittest.mock import ANY

import pytest
from structlog.testing import capture_logs

from resilient_canvas import (
    CanvasClient,
    CheckReader,
    RetryPolicy,
    Throttle,
    Write,
    resilient,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._checks import known_idempotency
from resilient_canvas._reconcile import Described, Reconciliation, Settle, Verdict, reconcile
from resilient_canvas.testing import (
    CanvasSimulator,
    DataSettings,
    FakeClock,
    Fault,
    FaultSettings,
    SimulatorSettings,
)

#: A student of course 102, not enrolled in course 101.
NEWCOMER = 150
ENROLL = ("courses/101/enrollments", {"enrollment": {"user_id": NEWCOMER}})


@pytest.fixture
async def world() -> AsyncIterator[tuple[CanvasSimulator, FakeClock]]:
    """An instant simulator and a client clock, both virtual."""
    clock = FakeClock()
    async with CanvasSimulator(
        SimulatorSettings.instant(), clock=clock, sleep=clock.sleep
    ) as simulator:
        yield simulator, clock


def _schedule(sim: CanvasSimulator, faults: dict[int, Fault]) -> None:
    sim.reset()
    object.__setattr__(sim._canvas._faults.settings, "schedule", faults)


def _client(sim: CanvasSimulator, clock: FakeClock, **options: Any) -> CanvasClient:
    return CanvasClient(
        sim.base_url, sim.token, throttle=None, clock=clock, sleep=clock.sleep, **options
    )


def _enrollments_of(sim: CanvasSimulator, user_id: int) -> list[dict[str, Any]]:
    return [e for e in sim.data.enrollments[101] if e["user_id"] == user_id]


# ------------------------------------------------------------------ decision


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        (None, Verdict.UNCHECKABLE),
        ([], Verdict.REPEAT),
        ([{"id": 1}], Verdict.FOUND),
        ([{"id": 1}, {"id": 2}], Verdict.AMBIGUOUS),
    ],
)
def test_first_check_decides(candidates: list[Any] | None, expected: Verdict) -> None:
    """One candidate is found, none repeats, two are ambiguous, None cannot tell."""
    assert expected == Reconciliation().after_check(candidates)


def test_timed_out_write_is_looked_at_twice_before_repeating() -> None:
    """After a timeout, a first "not found" is not trusted: look again, then repeat."""
    decision = Reconciliation()

    verdicts = [decision.after_check([], may_still_run=True) for _ in range(3)]

    assert [Verdict.LOOK_AGAIN, Verdict.REPEAT, Verdict.NOT_FOUND_AFTER_REPEAT] == verdicts


async def test_second_look_finds_a_write_canvas_was_still_running() -> None:
    """A write applied while the check paused is found on the second look, not repeated."""
    answers: list[list[str]] = [[], ["late enrollment"]]
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    async def never() -> str:
        raise AssertionError("repeated")

    async def check() -> list[str]:
        return answers.pop(0)

    found = await reconcile(
        exc.ReadTimeout("slow", method="POST"),
        check=check,
        repeat=never,
        found=str,
        described=Described("POST", "https://c.test/x", "check"),
        settle=Settle(2.0, pause, lambda: 60.0),
    )

    assert ("late enrollment", [2.0]) == (found, pauses)


async def test_no_time_for_a_second_look_is_outcome_unknown() -> None:
    """Without deadline left for the pause, a timed-out write is reported, not repeated."""

    async def never() -> str:
        raise AssertionError("repeated")

    async def nothing() -> list[str]:
        return []

    async def pause(seconds: float) -> None:
        raise AssertionError("paused")

    with pytest.raises(exc.OutcomeUnknown, match="may still be working on it"):
        await reconcile(
            exc.GatewayTimeout("504", method="POST"),
            check=nothing,
            repeat=never,
            found=str,
            described=Described("POST", "https://c.test/x", "check"),
            settle=Settle(2.0, pause, lambda: 1.5),
        )


def test_write_is_repeated_at_most_once() -> None:
    """After one repeat, "not found" no longer repeats: the write is sent twice at most."""
    decision = Reconciliation()

    verdicts = [decision.after_check([]), decision.after_check([]), decision.after_check([])]

    assert [Verdict.REPEAT, *[Verdict.NOT_FOUND_AFTER_REPEAT] * 2] == verdicts


@pytest.mark.parametrize(
    ("route", "params", "expected"),
    [
        (
            "PUT /api/v1/courses/:id/assignments/:id/submissions/:id",
            [("comment[text_comment]", "Well done")],
            False,
        ),
        (
            "PUT /api/v1/courses/:id/assignments/:id/submissions/:id",
            [("submission[posted_grade]", "9")],
            None,
        ),
        (
            "POST /api/v1/courses/:id/assignments/:id/submissions/update_grades",
            [("grade_data[5][posted_grade]", "9")],
            True,
        ),
        ("POST /api/v1/courses/:id/enrollments", [], None),
    ],
)
def test_known_idempotency(route: str, params: list[tuple[str, str]], expected: bool) -> None:
    """A comment PUT is not idempotent; update_grades is; elsewhere the method decides."""
    assert expected == known_idempotency(route, params)


def test_write_param_and_ids() -> None:
    """A check reads the first value sent for a Rails key and the ids of the path."""
    write = Write(
        "POST",
        "/api/v1/groups/7/memberships",
        "POST /api/v1/groups/:id/memberships",
        (("user_id", "5"), ("user_id", "6")),
        dt.datetime.now(dt.UTC),
    )

    assert ("5", None, ("7",)) == (write.param("user_id"), write.param("x"), write.ids)


# ------------------------------------------------------------ the client


async def test_dropped_enrollment_is_found_not_repeated(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A POST enrollment dropped after Canvas applied it returns the enrollment Canvas made."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:
        with capture_logs() as logs:
            response = await canvas.request("POST", ENROLL[0], data=ENROLL[1])

    made = _enrollments_of(sim, NEWCOMER)
    assert [made[0]["id"]] == [e["id"] for e in made]
    assert (made[0], True) == (response.data, response.reconciled)
    assert (1, 0, {"POST": 1, "GET": 1}) == (
        sim.stats.applied_writes,
        sim.stats.duplicate_writes,
        dict(sim.stats.methods),
    )
    assert [
        {
            "event": "canvas.write_reconciled",
            "log_level": "info",
            "method": "POST",
            "url": f"{sim.base_url}/api/v1/courses/101/enrollments",
            "check": "enrollment_created",
            "token": canvas.fingerprint,
            "cause": "connection_dropped",
            "found_id": made[0]["id"],
            "after_repeat": False,
            "looked_again": False,
        }
    ] == logs


async def test_check_reads_go_through_the_client_throttle(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """The check's read is paced by the write's throttle, which learns its route's cost."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    throttle = Throttle(clock=clock, sleep=clock.sleep)
    async with CanvasClient(
        sim.base_url, sim.token, throttle=throttle, clock=clock, sleep=clock.sleep
    ) as canvas:
        await canvas.post(ENROLL[0], data=ENROLL[1])

    assert 0.002 == throttle.route_cost("GET /api/v1/courses/:id/enrollments")


async def test_timed_out_enrollment_is_found() -> None:
    """An attempt that times out after Canvas applied the write is reconciled, not repeated."""
    faults = FaultSettings(schedule={1: Fault.HANG_AFTER_WRITE}, hang_seconds=1.0)
    policy = RetryPolicy(attempt_timeout=0.05)
    async with (
        CanvasSimulator(SimulatorSettings.instant(faults=faults)) as sim,
        CanvasClient(sim.base_url, sim.token, throttle=None, policy=policy) as canvas,
    ):
        created = await canvas.post(*ENROLL[:1], data=ENROLL[1])
        made = _enrollments_of(sim, NEWCOMER)

    assert [created] == made
    assert (1, 0) == (sim.stats.applied_writes, sim.stats.duplicate_writes)


async def test_write_not_applied_is_repeated_once(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A 502 from the gateway may have reached Canvas; not found, it is sent once more."""
    sim, clock = world
    _schedule(sim, {1: Fault.BAD_GATEWAY})
    async with _client(sim, clock) as canvas:
        with capture_logs() as logs:
            created = await canvas.post(ENROLL[0], data=ENROLL[1])

    assert [created] == _enrollments_of(sim, NEWCOMER)
    assert (1, 0, 2) == (
        sim.stats.applied_writes,
        sim.stats.duplicate_writes,
        sim.stats.methods["POST"],
    )
    assert ["canvas.write_repeated"] == [log["event"] for log in logs]
    assert "bad_gateway" == logs[0]["cause"]


async def test_not_found_twice_is_not_sent_a_third_time(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A repeat that fails like the write is checked again and then reported, not resent."""
    sim, clock = world
    _schedule(sim, {1: Fault.BAD_GATEWAY, 3: Fault.BAD_GATEWAY})
    async with _client(sim, clock) as canvas:
        with capture_logs() as logs, pytest.raises(exc.OutcomeUnknown) as raised:
            await canvas.post(ENROLL[0], data=ENROLL[1])

    assert (0, 2, 2) == (
        sim.stats.applied_writes,
        sim.stats.methods["POST"],
        sim.stats.methods["GET"],
    )
    assert isinstance(raised.value.write_error, exc.BadGateway)
    assert "not find it after it was repeated once" in str(raised.value)
    # One final failure is logged, not the repeat's on the way.
    assert [("canvas.write_repeated", None), ("canvas.request_failed", "outcome_unknown")] == [
        (log["event"], log.get("gave_up_because")) for log in logs
    ]


async def test_two_candidates_are_ambiguous(world: tuple[CanvasSimulator, FakeClock]) -> None:
    """An enrollment already there plus the new one: OutcomeUnknown lists both, nothing resent."""
    sim, clock = world
    _schedule(sim, {2: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:
        first = await canvas.post(ENROLL[0], data=ENROLL[1])
        with pytest.raises(exc.OutcomeUnknown) as raised:
            await canvas.post(ENROLL[0], data=ENROLL[1])

    error = raised.value
    assert [first["id"], first["id"] + 1] == [c["id"] for c in error.candidates]
    assert (isinstance(error.write_error, exc.ConnectionDropped), error.check_error) == (True, None)
    assert "error.candidates" in error.look_at
    assert 2 == sim.stats.methods["POST"]


async def test_failing_check_reports_both_causes(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A check that raises gives OutcomeUnknown carrying the write's and the check's errors."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})

    async def broken(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
        raise KeyError("bug in my check")

    async with _client(sim, clock) as canvas:
        with capture_logs() as logs:
            with pytest.raises(exc.OutcomeUnknown) as raised:
                await canvas.post(ENROLL[0], data=ENROLL[1], reconcile=broken)

    error = raised.value
    assert isinstance(error.write_error, exc.ConnectionDropped)
    assert isinstance(error.check_error, KeyError)
    assert error.check_error is error.__cause__
    assert "bug in my check" in str(error)
    assert [("canvas.request_failed", "outcome_unknown", "connection_dropped")] == [
        (log["event"], log["gave_up_because"], log["cause"]) for log in logs
    ]


async def test_check_runs_within_the_call_deadline(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A check whose reads keep failing stops at the write's deadline: OutcomeUnknown."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE, **dict.fromkeys(range(2, 200), Fault.MAINTENANCE)})
    # Attempts that cannot run out first: ten jittered waits may sum under 3 s
    # (a flaky "attempts_exhausted"), and the deadline is what this is about.
    policy = RetryPolicy(deadline=3.0, backoff_base=0.5, backoff_cap=2.0, attempts=100)
    # No breaker: with jittered backoff, ten failures in a row could open it
    # first (a CircuitOpen check error), which is another test's subject.
    async with _client(sim, clock, policy=policy, breaker=None) as canvas:
        with pytest.raises(exc.OutcomeUnknown) as raised:
            await canvas.post(ENROLL[0], data=ENROLL[1])

    check_error = raised.value.check_error
    assert isinstance(check_error, exc.ServiceUnavailable)
    assert check_error.attempts is not None
    assert "wait_exceeds_deadline" == check_error.attempts.gave_up_because
    assert sum(clock.sleeps) < 3.0


async def test_uncheckable_write_fails_as_without_a_check(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """A section without a SIS id cannot be looked up: the dropped write is raised as is."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:
        with capture_logs() as logs:
            with pytest.raises(exc.ConnectionDropped):
                await canvas.post(
                    "courses/101/sections", data={"course_section": {"name": "Evening"}}
                )

    assert (1, 1) == (sim.stats.requests, sim.stats.applied_writes)
    assert [("canvas.request_failed", False)] == [(log["event"], log["checkable"]) for log in logs]


async def test_registry_and_per_call_checks(world: tuple[CanvasSimulator, FakeClock]) -> None:
    """A client's check for a route applies to every call; a per-call one takes precedence."""
    sim, clock = world
    seen: list[str] = []

    async def assignment_named(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
        seen.append("registry")
        name = write.param("assignment[name]")
        path = f"courses/{write.ids[0]}/assignments"
        return [a async for a in canvas.paginate(path, params={"search_term": name})]

    async def nothing_found(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
        seen.append("per call")
        return []

    route = "POST /api/v1/courses/:id/assignments"
    async with _client(sim, clock, reconcilers={route: assignment_named}) as canvas:
        _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
        found = await canvas.post("courses/101/assignments", data={"assignment": {"name": "Lab"}})
        _schedule(sim, {1: Fault.BAD_GATEWAY})
        await canvas.post(
            "courses/101/assignments",
            data={"assignment": {"name": "Quiz"}},
            reconcile=nothing_found,
        )

    assert "Lab" == found["name"]
    assert ["registry", "per call"] == seen
    assert 0 == sim.stats.duplicate_writes


async def test_a_builtin_check_can_be_turned_off(world: tuple[CanvasSimulator, FakeClock]) -> None:
    """reconcilers={route: None} removes the built-in check: the failure is raised as before."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    off = {"POST /api/v1/courses/:id/enrollments": None}
    async with _client(sim, clock, reconcilers=off) as canvas:
        with pytest.raises(exc.ConnectionDropped):
            await canvas.post(ENROLL[0], data=ENROLL[1])

    assert 1 == sim.stats.requests


def test_registry_keys_are_route_templates() -> None:
    """A key that is not 'METHOD /path' is refused when the client is made."""
    with pytest.raises(ValueError, match="route template"):
        CanvasClient("https://c.test", "t", throttle=None, reconcilers={"enrollments": None})


# --------------------------------------------------------- built-in checks


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        (
            "accounts/1/users",
            {"user": {"name": "Ada"}, "pseudonym": {"unique_id": "ada", "sis_user_id": "S-1"}},
            {"login_id": "ada", "sis_user_id": "S-1"},
        ),
        (
            "accounts/1/users",
            {"user": {"name": "Bob"}, "pseudonym": {"unique_id": "bob"}},
            {"login_id": "bob", "sis_user_id": None},
        ),
        ("groups/1/memberships", {"user_id": NEWCOMER}, {"group_id": 1, "user_id": NEWCOMER}),
        (
            "courses/101/sections",
            {"course_section": {"name": "Evening", "sis_section_id": "EVE-1"}},
            {"sis_section_id": "EVE-1", "course_id": 101},
        ),
        (
            "accounts/1/courses",
            {"course": {"name": "Algebra", "sis_course_id": "ALG-1"}},
            {"sis_course_id": "ALG-1", "name": "Algebra"},
        ),
        (
            "sections/1010/enrollments",
            {"enrollment": {"user_id": NEWCOMER, "type": "StudentEnrollment"}},
            {"course_section_id": 1010, "user_id": NEWCOMER},
        ),
        (
            "courses/101/enrollments",
            {
                "enrollment": {
                    "user_id": NEWCOMER,
                    "type": "TaEnrollment",
                    "course_section_id": 1010,
                }
            },
            {"course_section_id": 1010, "type": "TaEnrollment"},
        ),
    ],
)
async def test_builtin_check_finds_a_dropped_write(
    world: tuple[CanvasSimulator, FakeClock],
    path: str,
    data: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """Each built-in check finds the object its write created after the answer was lost."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:
        with capture_logs() as logs:
            found = await canvas.post(path, data=data)

    assert expected == {key: found[key] for key in expected}
    assert (1, 0) == (sim.stats.applied_writes, sim.stats.duplicate_writes)
    assert ["canvas.write_reconciled"] == [log["event"] for log in logs]


@pytest.mark.parametrize("body", ["data", "json"])
async def test_comment_put_is_checked_not_retried(
    world: tuple[CanvasSimulator, FakeClock], body: str
) -> None:
    """A grading PUT with a comment (form or JSON) is not idempotent: looked up, posted once."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    path = "courses/101/assignments/101001/submissions/101"
    async with _client(sim, clock) as canvas:
        comment = {"comment": {"text_comment": "Well done"}}
        found = await canvas.put(path, **{body: comment})

    assert ["Well done"] == [c["comment"] for c in found["submission_comments"]]
    assert (1, 0, {"PUT": 1, "GET": 2}) == (
        sim.stats.applied_writes,
        sim.stats.duplicate_writes,
        dict(sim.stats.methods),
    )


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("courses/101/assignments/101001/submissions/101", {"submission": {"posted_grade": "9"}}),
        (
            "courses/101/assignments/101001/submissions/update_grades",
            {"grade_data": {"101": {"posted_grade": "9"}}},
        ),
    ],
)
async def test_idempotent_grade_writes_are_retried(
    world: tuple[CanvasSimulator, FakeClock], path: str, data: dict[str, Any]
) -> None:
    """A grade PUT and update_grades set the same grades again: retried, without a check."""
    sim, clock = world
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:
        await canvas.request("PUT" if "update" not in path else "POST", path, data=data)

    assert (2, 0, 1) == (
        sim.stats.applied_writes,
        sim.stats.duplicate_writes,
        sim.stats.repeated_idempotent_writes,
    )
    assert 0 == sim.stats.methods["GET"]


# --------------------------------------------------------------------- map


async def test_map_counts_reconciled_repeated_and_failed(
    world: tuple[CanvasSimulator, FakeClock],
) -> None:
    """map() reports each kind separately, on the outcome and in all."""
    sim, clock = world
    # POST 1 dropped after apply (found), POST 3 refused by the gateway (repeated),
    # then a second enrollment of user 151 is dropped: two candidates (failed).
    _schedule(sim, {1: Fault.DROP_AFTER_WRITE, 3: Fault.BAD_GATEWAY, 7: Fault.DROP_AFTER_WRITE})
    async with _client(sim, clock) as canvas:

        async def enroll(user_id: int) -> Any:
            return await canvas.post(
                "courses/101/enrollments", data={"enrollment": {"user_id": user_id}}
            )

        result = await canvas.map(enroll, [150, 160, 151, 151], concurrency=1)

    assert [(1, 0, True), (0, 1, True), (0, 0, True), (0, 0, False)] == [
        (o.reconciled, o.repeated, o.ok) for o in result
    ]
    assert (1, 1, 1) == (result.reconciled, result.repeated, result.failed)
    assert isinstance(result.outcomes[3].error, exc.OutcomeUnknown)


async def test_bulk_enrollments_with_lost_answers_end_clean() -> None:
    """Issue 18's workload, small: lost answers and 503s give 0 duplicates and 0 failures."""
    clock = FakeClock()
    faults = FaultSettings(
        rates={Fault.DROP_AFTER_WRITE: 0.05, Fault.MAINTENANCE: 0.03},
        methods=frozenset({"POST"}),
        seed=4,
    )
    data = DataSettings(courses=2, students_per_course=200, assignments_per_course=0)
    settings = SimulatorSettings.instant(faults=faults, data=data)
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim:
        students = [e["user_id"] for e in sim.data.enrollments[102] if e["user_id"] != 1]
        async with _client(sim, clock) as canvas:

            async def enroll(user_id: int) -> Any:
                form = {"enrollment": {"user_id": user_id, "type": "StudentEnrollment"}}
                return await canvas.post("courses/101/enrollments", data=form)

            result = await canvas.map(enroll, students, concurrency=1)
        drops, unavailable = sim.stats.faults["drop_after_write"], sim.stats.faults["maintenance"]

    assert drops > 0
    assert unavailable > 0
    assert (0, 0, drops) == (result.failed, sim.stats.duplicate_writes, result.reconciled)


# ------------------------------------------------------------- @resilient


async def test_resilient_reconcile_returns_what_the_check_found() -> None:
    """@resilient(reconcile=...) calls the check with the function's arguments."""
    clock = FakeClock()
    calls: list[str] = []

    async def already_there(name: str) -> list[str]:
        calls.append(f"check {name}")
        return [f"{name} (found)"]

    @resilient(reconcile=already_there, clock=clock, sleep=clock.sleep)
    async def create(name: str) -> str:
        calls.append(f"create {name}")
        raise exc.ConnectionDropped("lost", method="POST")

    assert "x (found)" == await create("x")
    assert ["create x", "check x"] == calls


async def test_resilient_reconcile_repeats_once_when_not_found() -> None:
    """Not found, the decorated call is made once more; its answer is returned."""
    clock = FakeClock()
    outcomes: list[Exception | str] = [exc.ReadTimeout("slow", method="POST"), "created"]

    async def nothing(name: str) -> list[str]:
        return []

    @resilient(reconcile=nothing, clock=clock, sleep=clock.sleep)
    async def create(name: str) -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with capture_logs() as logs:
        assert "created" == await create("x")

    assert [
        {
            "event": "canvas.write_repeated",
            "log_level": "warning",
            "method": "POST",
            "url": None,
            "check": ANY,
            "callable": ANY,
            "cause": "read_timeout",
            "looked_again": True,
        }
    ] == logs
    # After a timeout, "not found" was only trusted on a second look, 30 s later.
    assert [30.0] == clock.sleeps


# --------------------------------------------------------------- simulator


async def test_hang_after_write_applies_then_stalls() -> None:
    """HANG_AFTER_WRITE applies the write before the answer stalls past the client's timeout."""
    faults = FaultSettings(schedule={1: Fault.HANG_AFTER_WRITE}, hang_seconds=1.0)
    policy = RetryPolicy(attempt_timeout=0.05)
    off = {"POST /api/v1/courses/:id/enrollments": None}
    async with (
        CanvasSimulator(SimulatorSettings.instant(faults=faults)) as sim,
        CanvasClient(
            sim.base_url, sim.token, throttle=None, policy=policy, reconcilers=off
        ) as canvas,
    ):
        with pytest.raises(exc.ReadTimeout):
            await canvas.post(ENROLL[0], data=ENROLL[1])
        applied = sim.stats.applied_writes

    assert (1, {"hang_after_write": 1}) == (applied, dict(sim.stats.faults))


async def test_simulator_reads_see_writes(world: tuple[CanvasSimulator, FakeClock]) -> None:
    """Created sections, courses and users are found by SIS id; a taken SIS id is refused."""
    sim, clock = world
    async with _client(sim, clock) as canvas:
        await canvas.post("accounts/1/courses", data={"course": {"sis_course_id": "C9"}})
        await canvas.post(
            "courses/sis_course_id:C9/sections",
            data={"course_section": {"sis_section_id": "S9"}},
        )
        await canvas.post(
            "accounts/1/users", data={"pseudonym": {"unique_id": "zoe", "sis_user_id": "U9"}}
        )
        course = await canvas.get("courses/sis_course_id:C9")
        section = await canvas.get("sections/sis_section_id:S9")
        user = await canvas.get("users/sis_user_id:U9")
        listed = [
            u async for u in canvas.paginate("accounts/1/users", params={"search_term": "zo"})
        ]
        with pytest.raises(exc.BadRequest, match="already in use"):
            await canvas.post("accounts/1/courses", data={"course": {"sis_course_id": "C9"}})

    assert course["id"] == section["course_id"]
    assert [user] == listed
