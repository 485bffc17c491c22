"""Writes that keep state, so that reads see them: sections, users, courses, groups, comments.

The checks that reconcile a write whose outcome is unknown (docs/write-safety.md)
read what the write would have created; these routes make that state real:

- sections: ``POST /courses/:id/sections`` and ``GET /sections/:id`` (also
  ``sis_section_id:…``), section enrollments; each course has a default
  section (id ``course_id * 10``);
- users: ``POST /accounts/:id/users`` and ``GET /accounts/:id/users?search_term=``;
- courses: ``POST /accounts/:id/courses``, found by ``sis_course_id:…``;
- groups: two per course (ids from 1), ``POST /groups/:id/memberships``,
  ``GET /groups/:id/users/:user_id``;
- submission comments: ``comment[text_comment]`` on the grading PUT, read
  with ``GET …/submissions/:user_id?include[]=submission_comments``.

As in Canvas, a SIS id or login already in use is refused (400), and adding a
user to a group twice answers the existing membership. The simulator's token
may use the account routes here (it acts as an account admin for them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from resilient_canvas.testing._data import TEACHER_ID, CanvasData, new_enrollment
from resilient_canvas.testing._pagination import ordinal_page
from resilient_canvas.testing._params import parse_nested

Params = Callable[[web.Request], Awaitable[dict[str, Any]]]
Record = Callable[..., None]

#: Where ids of created objects start, far from the seeded ones.
_FIRST_NEW_ID = 10_000


def default_section_id(course_id: int) -> int:
    """The id of a course's default section."""
    return course_id * 10


@dataclass(slots=True)
class WriteState:
    """Sections, groups, memberships and comments of the simulated Canvas."""

    sections: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    memberships: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    comments: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = _FIRST_NEW_ID

    @classmethod
    def seeded(cls, data: CanvasData) -> WriteState:
        """A default section per course and two empty groups per course."""
        state = cls()
        for course_id, course in data.courses.items():
            state.add_default_section(course_id, course["name"])
            for number in (1, 2):
                group_id = len(state.groups) + 1
                state.groups[group_id] = {
                    "id": group_id,
                    "name": f"{course['course_code']} group {number}",
                    "course_id": course_id,
                    "members_count": 0,
                }
                state.memberships[group_id] = {}
        return state

    def add_default_section(self, course_id: int, name: str) -> None:
        section_id = default_section_id(course_id)
        self.sections[section_id] = _section(section_id, course_id, name, None)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def section(self, raw: str) -> dict[str, Any] | None:
        """A section by id or ``sis_section_id:…``."""
        if raw.startswith("sis_section_id:"):
            sis = raw.removeprefix("sis_section_id:")
            return next((s for s in self.sections.values() if s["sis_section_id"] == sis), None)
        return self.sections.get(_int(raw))


def resolve_course(raw: str, data: CanvasData) -> int:
    """A course id from an id or ``sis_course_id:…`` (-1 when there is none)."""
    if raw.startswith("sis_course_id:"):
        sis = raw.removeprefix("sis_course_id:")
        return next((c["id"] for c in data.courses.values() if c.get("sis_course_id") == sis), -1)
    return _int(raw)


class WriteRoutes:
    """The routes above, over the simulator's data and write counters.

    Args:
        data: Returns the simulator's current data (it is replaced on reset).
        state: Returns the current :class:`WriteState`.
        params: Reads a request's query and body parameters as Canvas does.
        record: Counts an applied write (``key``, ``idempotent=``).
    """

    def __init__(
        self,
        data: Callable[[], CanvasData],
        state: Callable[[], WriteState],
        params: Params,
        record: Record,
    ) -> None:
        self._data = data
        self._state = state
        self._params = params
        self._record = record

    def add_routes(self, router: web.UrlDispatcher) -> None:
        r = router
        r.add_get("/api/v1/courses/{course_id}/sections", self._list_sections)
        r.add_post("/api/v1/courses/{course_id}/sections", self._create_section)
        r.add_get("/api/v1/sections/{section_id}", self._get_section)
        r.add_get("/api/v1/sections/{section_id}/enrollments", self._list_section_enrollments)
        r.add_post("/api/v1/sections/{section_id}/enrollments", self._create_section_enrollment)
        r.add_get("/api/v1/accounts/{account_id}/users", self._list_users)
        r.add_post("/api/v1/accounts/{account_id}/users", self._create_user)
        r.add_post("/api/v1/accounts/{account_id}/courses", self._create_course)
        r.add_get("/api/v1/groups/{group_id}", self._get_group)
        r.add_get("/api/v1/groups/{group_id}/memberships", self._list_memberships)
        r.add_post("/api/v1/groups/{group_id}/memberships", self._add_membership)
        r.add_get("/api/v1/groups/{group_id}/users/{user_id}", self._get_membership)
        r.add_get(
            "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions/{user_id}",
            self._get_submission,
        )

    # ------------------------------------------------------------- sections

    async def _list_sections(self, request: web.Request) -> web.Response:
        course_id = resolve_course(request.match_info["course_id"], self._data())
        if course_id not in self._data().courses:
            return _not_found()
        sections = [s for s in self._state().sections.values() if s["course_id"] == course_id]
        return ordinal_page(request, sections)

    async def _create_section(self, request: web.Request) -> web.Response:
        course_id = resolve_course(request.match_info["course_id"], self._data())
        if course_id not in self._data().courses:
            return _not_found()
        given = (await self._params(request)).get("course_section")
        given = given if isinstance(given, dict) else {}
        name = str(given.get("name") or "Section")
        sis = given.get("sis_section_id")
        state = self._state()
        if sis is not None and state.section(f"sis_section_id:{sis}") is not None:
            return _taken("sis_section_id", "SIS ID is already in use")
        section = _section(state.new_id(), course_id, name, None if sis is None else str(sis))
        self._record(("section", course_id, sis or name), idempotent=False)
        state.sections[section["id"]] = section
        return web.json_response(section)

    async def _get_section(self, request: web.Request) -> web.Response:
        section = self._state().section(request.match_info["section_id"])
        return web.json_response(section) if section else _not_found()

    async def _list_section_enrollments(self, request: web.Request) -> web.Response:
        section = self._state().section(request.match_info["section_id"])
        if section is None:
            return _not_found()
        query = parse_nested(request.query.items())
        states = set(_listed(query.get("state"))) or {"active", "invited"}
        roster = [
            e
            for e in self._data().enrollments.get(section["course_id"], [])
            if e.get("course_section_id") == section["id"] and e["enrollment_state"] in states
        ]
        if "user_id" in query:
            roster = [e for e in roster if str(e["user_id"]) == str(query["user_id"])]
        return ordinal_page(request, roster)

    async def _create_section_enrollment(self, request: web.Request) -> web.Response:
        section = self._state().section(request.match_info["section_id"])
        if section is None:
            return _not_found()
        given = (await self._params(request)).get("enrollment")
        if not isinstance(given, dict) or "user_id" not in given:
            return web.json_response({"message": "No parameters given"}, status=400)
        data = self._data()
        user_id = _int(str(given["user_id"]))
        if user_id not in data.users:
            return _not_found()
        kind = str(given.get("type", "StudentEnrollment"))
        state = str(given.get("enrollment_state", "invited"))
        course_id = section["course_id"]
        self._record(("enroll", course_id, user_id, kind, section["id"]), idempotent=False)
        created = new_enrollment(data, course_id, user_id, kind, state)
        created["course_section_id"] = section["id"]
        return web.json_response(created)

    # ---------------------------------------------------------------- users

    async def _list_users(self, request: web.Request) -> web.Response:
        term = str(parse_nested(request.query.items()).get("search_term", "")).casefold()
        users = [
            u
            for u in self._data().users.values()
            if not term or any(term in str(u.get(key) or "").casefold() for key in _USER_SEARCHED)
        ]
        return ordinal_page(request, users)

    async def _create_user(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        user = _dict(params.get("user"))
        login = _dict(params.get("pseudonym"))
        unique_id = login.get("unique_id")
        if not unique_id:
            body = {"errors": [{"message": "unique_id is missing"}]}
            return web.json_response(body, status=400)
        sis = login.get("sis_user_id")
        users = self._data().users.values()
        if any(u["login_id"] == unique_id for u in users):
            return _taken("unique_id", "ID already in use for this account")
        if sis is not None and any(u["sis_user_id"] == sis for u in users):
            return _taken("sis_user_id", "SIS ID is already in use")
        user_id = self._state().new_id()
        name = str(user.get("name") or unique_id)
        created = {
            "id": user_id,
            "name": name,
            "sortable_name": name,
            "login_id": str(unique_id),
            "sis_user_id": None if sis is None else str(sis),
        }
        self._record(("user", str(unique_id)), idempotent=False)
        self._data().users[user_id] = created
        return web.json_response(created)

    # -------------------------------------------------------------- courses

    async def _create_course(self, request: web.Request) -> web.Response:
        given = (await self._params(request)).get("course")
        given = given if isinstance(given, dict) else {}
        data = self._data()
        sis = given.get("sis_course_id")
        if sis is not None and resolve_course(f"sis_course_id:{sis}", data) != -1:
            return _taken("sis_course_id", "SIS ID is already in use")
        course_id = self._state().new_id()
        name = str(given.get("name") or "Unnamed Course")
        course = {
            "id": course_id,
            "name": name,
            "course_code": str(given.get("course_code") or name),
            "workflow_state": "unpublished",
            "account_id": _int(request.match_info["account_id"]),
            "enrollment_term_id": 1,
            "sis_course_id": None if sis is None else str(sis),
        }
        self._record(("course", sis or name), idempotent=False)
        data.courses[course_id] = course
        data.enrollments[course_id] = []
        data.assignments[course_id] = []
        self._state().add_default_section(course_id, name)
        return web.json_response(course)

    # --------------------------------------------------------------- groups

    async def _get_group(self, request: web.Request) -> web.Response:
        group = self._state().groups.get(_int(request.match_info["group_id"]))
        return web.json_response(group) if group else _not_found()

    async def _list_memberships(self, request: web.Request) -> web.Response:
        members = self._state().memberships.get(_int(request.match_info["group_id"]))
        if members is None:
            return _not_found()
        return ordinal_page(request, list(members.values()))

    async def _add_membership(self, request: web.Request) -> web.Response:
        state = self._state()
        group_id = _int(request.match_info["group_id"])
        members = state.memberships.get(group_id)
        if members is None:
            return _not_found()
        user_id = _int(str((await self._params(request)).get("user_id", "")))
        if user_id not in self._data().users:
            return _not_found()
        # Canvas answers a second add with the existing membership.
        self._record(("membership", group_id, user_id), idempotent=True)
        if user_id not in members:
            members[user_id] = {
                "id": state.new_id(),
                "group_id": group_id,
                "user_id": user_id,
                "workflow_state": "accepted",
                "moderator": False,
            }
            state.groups[group_id]["members_count"] = len(members)
        return web.json_response(members[user_id])

    async def _get_membership(self, request: web.Request) -> web.Response:
        members = self._state().memberships.get(_int(request.match_info["group_id"]), {})
        membership = members.get(_int(request.match_info["user_id"]))
        return web.json_response(membership) if membership else _not_found()

    # ------------------------------------------------------------- comments

    def add_comment(self, assignment_id: int, user_id: int, text: str) -> None:
        """Post a comment by the token's user on a submission (each call adds one)."""
        state = self._state()
        self._record(("comment", assignment_id, user_id, text), idempotent=False)
        state.comments.setdefault((assignment_id, user_id), []).append(
            {
                "id": state.new_id(),
                "author_id": TEACHER_ID,
                "comment": text,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")[:-6] + "Z",
            }
        )

    def with_comments(
        self, submission: dict[str, Any], assignment_id: int, user_id: int
    ) -> dict[str, Any]:
        """*submission* with its ``submission_comments``."""
        comments = self._state().comments.get((assignment_id, user_id), [])
        return {**submission, "submission_comments": list(comments)}

    async def _get_submission(self, request: web.Request) -> web.Response:
        data = self._data()
        course_id = resolve_course(request.match_info["course_id"], data)
        assignment_id = _int(request.match_info["assignment_id"])
        submissions = data.submissions.get((course_id, assignment_id))
        raw_user = request.match_info["user_id"]
        user_id = TEACHER_ID if raw_user == "self" else _int(raw_user)
        if submissions is None or user_id not in submissions:
            return _not_found()
        submission = submissions[user_id]
        include = _listed(parse_nested(request.query.items()).get("include"))
        if "submission_comments" in include:
            submission = self.with_comments(submission, assignment_id, user_id)
        return web.json_response(submission)


_USER_SEARCHED = ("name", "login_id", "sis_user_id")


def _section(section_id: int, course_id: int, name: str, sis: str | None) -> dict[str, Any]:
    return {"id": section_id, "course_id": course_id, "name": name, "sis_section_id": sis}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _taken(attribute: str, message: str) -> web.Response:
    error = {"attribute": attribute, "type": "taken", "message": message}
    return web.json_response({"errors": {attribute: [error]}}, status=400)


def _not_found() -> web.Response:
    body = {"errors": [{"message": "The specified resource does not exist."}]}
    return web.json_response(body, status=404)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return -1


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
