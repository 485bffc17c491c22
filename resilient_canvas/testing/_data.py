"""Deterministic, seeded Canvas data: courses, users, enrollments, assignments, submissions."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from resilient_canvas.testing._grading import DEFAULT_SCHEME, GPA_SCHEME

_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Katherine",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Tim",
    "Whitfield",
    "Yukihiro",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "McCarthy",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Berners-Lee",
    "Diffie",
    "Matsumoto",
]
_SUBJECTS = [
    "Biology",
    "Chemistry",
    "History",
    "Literature",
    "Mathematics",
    "Physics",
    "Philosophy",
    "Economics",
    "Statistics",
    "Computer Science",
]

TEACHER_ID = 1

#: Assignment n of each course is graded by ``GRADING_CYCLE[(n - 1) % 5]``, so
#: with the default five assignments every grading type Canvas has is seeded:
#: in course 101, 101001 points, 101002 percent, 101003 letter_grade,
#: 101004 pass_fail, 101005 gpa_scale.
GRADING_CYCLE = ("points", "percent", "letter_grade", "pass_fail", "gpa_scale")

#: The id of the seeded GPA grading standard that gpa_scale assignments use
#: (letter_grade ones use Canvas's default scheme, ``grading_standard_id`` None).
GPA_STANDARD_ID = 1


@dataclass(frozen=True, slots=True)
class DataSettings:
    """The size of the simulated institution.

    Attributes:
        courses: Number of courses.
        students_per_course: Students enrolled in each course.
        assignments_per_course: Assignments in each course; their grading
            types cycle through ``GRADING_CYCLE``.
        seed: Seed of the data generator; equal seeds give equal data.
    """

    courses: int = 3
    students_per_course: int = 40
    assignments_per_course: int = 5
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("courses", "students_per_course", "assignments_per_course"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative.")


@dataclass(slots=True)
class CanvasData:
    """The mutable state of the simulated Canvas."""

    courses: dict[int, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    enrollments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    assignments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    submissions: dict[tuple[int, int], dict[int, dict[str, Any]]] = field(default_factory=dict)
    progress: dict[int, dict[str, Any]] = field(default_factory=dict)
    grading_standards: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_enrollment_id: int = 1
    next_progress_id: int = 1


def generate(settings: DataSettings) -> CanvasData:
    """Build the data set for *settings*; the same settings always give the same data."""
    rng = random.Random(settings.seed)
    data = CanvasData()
    data.users[TEACHER_ID] = _user(TEACHER_ID, "Terry Teacher", "teacher")
    data.grading_standards[GPA_STANDARD_ID] = {
        "id": GPA_STANDARD_ID,
        "title": "GPA Scale",
        "context_type": "Account",
        "context_id": 1,
        "grading_scheme": [{"name": name, "value": cutoff / 100} for name, cutoff in GPA_SCHEME],
    }
    user_id = 100
    for course_index in range(settings.courses):
        course_id = 101 + course_index
        subject = _SUBJECTS[course_index % len(_SUBJECTS)]
        data.courses[course_id] = {
            "id": course_id,
            "name": f"{subject} {100 + course_index}",
            "course_code": f"{subject[:4].upper()}{100 + course_index}",
            "workflow_state": "available",
            "account_id": 1,
            "enrollment_term_id": 1,
        }
        roster = [_enroll(data, course_id, TEACHER_ID, "TeacherEnrollment")]
        for _ in range(settings.students_per_course):
            user_id += 1
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            data.users[user_id] = _user(user_id, name, f"s{user_id}")
            roster.append(_enroll(data, course_id, user_id, "StudentEnrollment"))
        data.enrollments[course_id] = roster
        data.assignments[course_id] = []
        for number in range(1, settings.assignments_per_course + 1):
            assignment_id = course_id * 1000 + number
            kind = GRADING_CYCLE[(number - 1) % len(GRADING_CYCLE)]
            data.assignments[course_id].append(
                {
                    "id": assignment_id,
                    "course_id": course_id,
                    "name": f"Assignment {number}",
                    "position": number,
                    "points_possible": float(rng.choice([10, 20, 50, 100])),
                    "grading_type": kind,
                    "grading_standard_id": GPA_STANDARD_ID if kind == "gpa_scale" else None,
                }
            )
            data.submissions[(course_id, assignment_id)] = {
                enrollment["user_id"]: _submission(assignment_id, enrollment["user_id"])
                for enrollment in roster
                if enrollment["type"] == "StudentEnrollment"
            }
    return data


def _user(user_id: int, name: str, login: str) -> dict[str, Any]:
    return {
        "id": user_id,
        "name": name,
        "sortable_name": ", ".join(reversed(name.split(" ", 1))),
        "login_id": login,
        "sis_user_id": f"sis-{user_id}",
    }


def _enroll(
    data: CanvasData, course_id: int, user_id: int, kind: str, state: str = "active"
) -> dict[str, Any]:
    enrollment = {
        "id": data.next_enrollment_id,
        "course_id": course_id,
        "user_id": user_id,
        "type": kind,
        "enrollment_state": state,
        "role": kind,
    }
    data.next_enrollment_id += 1
    return enrollment


def _submission(assignment_id: int, user_id: int) -> dict[str, Any]:
    return {
        "assignment_id": assignment_id,
        "user_id": user_id,
        "score": None,
        "grade": None,
        "workflow_state": "unsubmitted",
        "posted_grade": None,
    }


def new_enrollment(
    data: CanvasData, course_id: int, user_id: int, kind: str, state: str = "invited"
) -> dict[str, Any]:
    """Create an enrollment as Canvas does: a new record every time (not idempotent)."""
    enrollment = _enroll(data, course_id, user_id, kind, state)
    data.enrollments.setdefault(course_id, []).append(enrollment)
    return enrollment


def scheme_for(data: CanvasData, assignment: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """The grading scheme of *assignment*: its standard's, else Canvas's default."""
    standard = data.grading_standards.get(assignment.get("grading_standard_id") or -1)
    if standard is None:
        return DEFAULT_SCHEME
    return tuple((e["name"], round(e["value"] * 100, 4)) for e in standard["grading_scheme"])
