"""Built-in checks for Canvas writes that are not idempotent, keyed by route template.

Each answers "did this write happen?" with a lookup Canvas offers (see
:class:`~resilient_canvas._reconcile.Reconciler` for what a check returns);
docs/write-safety.md lists their lookups and limits. They only read, through
the client given to them, so they run under the call's throttle and deadline.

:func:`known_idempotency` holds the Canvas writes whose method misleads: a
submission PUT with a comment adds the comment again when repeated, and
``update_grades`` with the same payload leaves the same grades.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from resilient_canvas._errors import ResourceDoesNotExist
from resilient_canvas._reconcile import CheckReader, Reconciler, Write

#: Enrollment states a just-created enrollment can be in (Canvas lists only
#: active and invited ones unless asked).
_NEW_ENROLLMENT_STATES = ["active", "invited", "creation_pending", "inactive"]
#: How far before the call a comment's ``created_at`` may be and still count as
#: this write's: the client's and Canvas's clocks differ by a few seconds.
COMMENT_CLOCK_SKEW = dt.timedelta(seconds=60)

SUBMISSION_ROUTE = "PUT /api/v1/courses/:id/assignments/:id/submissions/:id"
UPDATE_GRADES_ROUTE = "POST /api/v1/courses/:id/assignments/:id/submissions/update_grades"


async def enrollment_created(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The enrollments of the course (or section) matching the user, type, role and section.

    Lookup: ``GET <the same enrollments path>?user_id=…&state[]=…``. Needs
    ``enrollment[user_id]``. An enrollment that already existed before the
    write matches too: Canvas itself answers such a write with the existing
    enrollment, so "found" is the truth either way.
    """
    user = write.param("enrollment[user_id]")
    if user is None:
        return None
    kind = write.param("enrollment[type]")
    role_id = write.param("enrollment[role_id]")
    section = write.param("enrollment[course_section_id]")
    params = {"user_id": user, "state": _NEW_ENROLLMENT_STATES}
    found = []
    async for enrollment in canvas.paginate(write.path, params=params):
        if not isinstance(enrollment, Mapping):
            continue
        if user.isdigit() and str(enrollment.get("user_id")) != user:
            continue
        if kind is not None and enrollment.get("type") != kind:
            continue
        if role_id is not None and str(enrollment.get("role_id")) != role_id:
            continue
        if section is not None and str(enrollment.get("course_section_id")) != section:
            continue
        found.append(enrollment)
    return found


async def user_created(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The user with the write's SIS id, else with its login (``unique_id``).

    Lookup: ``GET /api/v1/users/sis_user_id:<id>``, else ``GET
    /api/v1/accounts/:id/users?search_term=<unique_id>`` matched exactly on
    ``login_id``. Needs ``pseudonym[sis_user_id]`` or ``pseudonym[unique_id]``.
    """
    sis = write.param("pseudonym[sis_user_id]")
    if sis is not None:
        return await _lookup(canvas, f"/api/v1/users/sis_user_id:{quote(sis, safe='')}")
    login = write.param("pseudonym[unique_id]")
    if login is None:
        return None
    account = write.ids[0]
    return [
        user
        async for user in canvas.paginate(
            f"/api/v1/accounts/{account}/users", params={"search_term": login}
        )
        if isinstance(user, Mapping) and user.get("login_id") == login
    ]


async def group_membership_created(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The membership of the user in the group.

    Lookup: ``GET /api/v1/groups/:group_id/users/:user_id``. Needs ``user_id``.
    """
    user = write.param("user_id")
    if user is None:
        return None
    group = write.ids[0]
    return await _lookup(canvas, f"/api/v1/groups/{group}/users/{quote(user, safe='')}")


async def section_created(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The section with the write's SIS id.

    Lookup: ``GET /api/v1/sections/sis_section_id:<id>``. Needs
    ``course_section[sis_section_id]``: Canvas has no other unique key for a
    section, so a section created without one cannot be checked.
    """
    sis = write.param("course_section[sis_section_id]")
    if sis is None:
        return None
    return await _lookup(canvas, f"/api/v1/sections/sis_section_id:{quote(sis, safe='')}")


async def course_created(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The course with the write's SIS id.

    Lookup: ``GET /api/v1/courses/sis_course_id:<id>``. Needs
    ``course[sis_course_id]`` (course names and codes are not unique).
    """
    sis = write.param("course[sis_course_id]")
    if sis is None:
        return None
    return await _lookup(canvas, f"/api/v1/courses/sis_course_id:{quote(sis, safe='')}")


async def comment_posted(write: Write, canvas: CheckReader) -> Sequence[Any] | None:
    """The submission, if the caller posted a comment with the same text since the call began.

    Lookup: ``GET /api/v1/users/self`` (the caller), then the submission with
    ``include[]=submission_comments``; a comment counts when its author is
    the caller, its text is the write's, and it is at most
    ``COMMENT_CLOCK_SKEW`` older than the call. Two such comments are
    ambiguous. Needs ``comment[text_comment]`` (a PUT without one only grades,
    which is idempotent).
    """
    text = write.param("comment[text_comment]")
    if text is None:
        return None
    me = await canvas.get("/api/v1/users/self")
    submission = await canvas.get(write.path, params={"include": ["submission_comments"]})
    if not isinstance(submission, Mapping) or not isinstance(me, Mapping):
        return []
    since = write.sent_at - COMMENT_CLOCK_SKEW
    matches = [
        comment
        for comment in submission.get("submission_comments") or []
        if isinstance(comment, Mapping)
        and comment.get("author_id") == me.get("id")
        and comment.get("comment") == text
        and _at_or_after(comment.get("created_at"), since)
    ]
    return [submission] if len(matches) == 1 else matches


async def _lookup(canvas: CheckReader, path: str) -> Sequence[Any]:
    """One object by a unique key: found, or not (404)."""
    try:
        return [await canvas.get(path)]
    except ResourceDoesNotExist:
        return []


def _at_or_after(stamp: Any, since: dt.datetime) -> bool:
    if not isinstance(stamp, str):
        return False
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment >= since


#: The built-in checks, by route template (``route_template()`` form).
BUILTIN_RECONCILERS: Mapping[str, Reconciler] = {
    "POST /api/v1/courses/:id/enrollments": enrollment_created,
    "POST /api/v1/sections/:id/enrollments": enrollment_created,
    "POST /api/v1/accounts/:id/users": user_created,
    "POST /api/v1/groups/:id/memberships": group_membership_created,
    "POST /api/v1/courses/:id/sections": section_created,
    "POST /api/v1/accounts/:id/courses": course_created,
    SUBMISSION_ROUTE: comment_posted,
}


#: The routes :func:`known_idempotency` knows something about.
IDEMPOTENCY_ROUTES = frozenset({SUBMISSION_ROUTE, UPDATE_GRADES_ROUTE})


def known_idempotency(route: str, params: Sequence[tuple[str, str]]) -> bool | None:
    """Whether Canvas makes this write idempotent, where its method says otherwise.

    Returns:
        False for a submission PUT that posts a comment (each repeat adds
        one); True for ``update_grades`` (the same payload sets the same
        grades); None elsewhere: the method decides.
    """
    if route == SUBMISSION_ROUTE and any(key == "comment[text_comment]" for key, _ in params):
        return False
    if route == UPDATE_GRADES_ROUTE:
        return True
    return None
