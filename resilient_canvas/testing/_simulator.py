"""A faithful Canvas LMS simulator on aiohttp.web: throttle, pagination, errors, faults.

Everything it does is taken from ``shared/spec/canvas-server.md``; the module
docstrings of ``_bucket``, ``_faults`` and ``_settings`` say which part does
what (``_settings`` also gives the realistic default service times and costs).

A request's life: request transit (``latency``), faults in front of Canvas,
the reservation (the path's ``up_front_cost``), the application (service
time, cost), the settlement refunding that same reservation, the headers,
then response transit (``latency`` again): a client reads headers as stale as
a real network makes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from yarl import URL

from resilient_canvas.testing._bucket import LeakyBucket
from resilient_canvas.testing._data import (
    TEACHER_ID,
    CanvasData,
    generate,
    new_enrollment,
    scheme_for,
)
from resilient_canvas.testing._faults import Fault, FaultPicker
from resilient_canvas.testing._files import FileStore
from resilient_canvas.testing._grading import GRADING_TYPES, GradeError, grade
from resilient_canvas.testing._graphql import GraphQLEndpoint
from resilient_canvas.testing._oauth import TOKEN_PATH, OAuthServer
from resilient_canvas.testing._pagination import bookmark_page, ordinal_page
from resilient_canvas.testing._params import parse_nested
from resilient_canvas.testing._settings import (
    RouteProfile,
    SimulatorSettings,
    latency_rng,
    work_rng,
)
from resilient_canvas.testing._sis import SisImports
from resilient_canvas.testing._writes import (
    WriteRoutes,
    WriteState,
    default_section_id,
    resolve_course,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Paths under this prefix control the simulator itself (stats, reset, timeline).
CONTROL_PREFIX = "/_simulator/"


@dataclass(slots=True)
class SimulatorStats:
    """What the simulator saw; read it in tests and benchmarks, reset with ``reset()``.

    Attributes:
        requests: Requests received (including throttled and faulted ones).
        throttled: Requests refused by the throttle.
        applied_writes: Writes that changed data.
        duplicate_writes: Non-idempotent writes (POST) applied more than once
            with the same content: the harm a careless retry does.
        repeated_idempotent_writes: PUTs applied again with the same content
            (harmless, counted for visibility).
        in_flight: Requests being handled now.
        peak_in_flight: The most requests handled at once.
        client_disconnects: Requests whose client went away before they were read.
        faults: How often each fault was injected.
        statuses: How often each status was answered.
        methods: How many requests came with each method (the reads that
            checked a write's outcome show here).
    """

    requests: int = 0
    throttled: int = 0
    applied_writes: int = 0
    duplicate_writes: int = 0
    repeated_idempotent_writes: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    client_disconnects: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)


def ruby_float(value: float) -> str:
    """Format *value* as Ruby's ``Float#to_s`` does (``600.0``, ``1.0e-05``)."""
    text = repr(float(value))
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    if "." not in mantissa:
        mantissa += ".0"
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-').zfill(2)}"


def token_key(token: str) -> str:
    """Canvas keys buckets by a hash of the token, never the token itself."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()


class CanvasApp:
    """The aiohttp.web application and the state behind it.

    Args:
        settings: What to simulate.
        clock: Time source for the throttle (inject a fake one in tests).
        sleep: How service time, hangs and slowness pass (inject with *clock*).
    """

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.token = settings.token or "sim-" + secrets.token_urlsafe(24)
        self._clock = clock
        self._sleep = sleep
        self.app = web.Application(
            middlewares=[self._canvas_middleware], client_max_size=64 * 1024**2
        )
        #: The second origin uploads go to and downloads come from.
        self.files = FileStore()
        self.graphql = GraphQLEndpoint(lambda: self.data)
        self.sis = SisImports()
        #: OAuth2 token records, the refresh grant and expiry.
        self.oauth = OAuthServer()
        self._writes = WriteRoutes(
            lambda: self.data, lambda: self.writes, _params, self._record_write
        )
        self._add_routes()
        self.reset()

    def reset(self) -> None:
        """Restore the data, buckets, faults and statistics to their initial state."""
        self.data: CanvasData = generate(self.settings.data)
        self.writes = WriteState.seeded(self.data)
        self.buckets: dict[str, LeakyBucket] = {}
        self.stats = SimulatorStats()
        self._faults = FaultPicker(self.settings.faults)
        self._rng = random.Random(self.settings.seed)
        # Separate streams: work draws line up with the bound's sampler
        # (one per served request, in arrival order) whatever else is drawn.
        self._work_rng = work_rng(self.settings.seed)
        self._latency_rng = latency_rng(self.settings.seed)
        self._write_keys: set[Any] = set()
        self._maintenance_until = float("-inf")
        self.timeline: list[tuple[float, float, int]] = []
        self._started_at = self._clock()

    def maintenance(self, seconds: float) -> None:
        """Answer every request with the 503 maintenance page for *seconds* from now."""
        self._maintenance_until = self._clock() + seconds

    def bucket(self, token: str | None = None) -> LeakyBucket:
        """Return the bucket of *token* (the simulator's own token by default)."""
        # Canvas keys the bucket by the token's record, which survives a refresh.
        chosen = token or self.token
        key = token_key(self.oauth.record_of(chosen) or chosen)
        if key not in self.buckets:
            self.buckets[key] = LeakyBucket(self.settings.throttle, self._clock)
        return self.buckets[key]

    # ------------------------------------------------------------- middleware

    @web.middleware
    async def _canvas_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        await self._transit()  # the request crosses the network
        stats = self.stats
        stats.requests += 1
        stats.methods[request.method] += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            fault = self._faults.pick(stats.requests, request.method)
            if self._clock() < self._maintenance_until:
                fault = Fault.MAINTENANCE
            if fault is not None:
                stats.faults[fault.value] += 1
            try:
                response = await self._serve(request, handler, fault)
            except ConnectionResetError:
                # The client gave up mid-request; Canvas answers 408 to nobody.
                stats.client_disconnects += 1
                response = web.Response(status=408)
            stats.statuses[response.status] += 1
        finally:
            stats.in_flight -= 1
        await self._transit()  # the answer, headers already computed, crosses back
        return response

    async def _transit(self) -> None:
        seconds = self.settings.latency.sample(self._latency_rng)
        if seconds > 0:
            await self._sleep(seconds)

    async def _serve(
        self, request: web.Request, handler: Handler, fault: Fault | None
    ) -> web.StreamResponse:
        # Refused at the edge, before the throttle: no Canvas headers.
        refused = _refuse_user_agent(request, self.settings)
        if refused is not None:
            return refused
        # Load-balancer faults happen in front of Canvas: no Canvas headers.
        if fault is Fault.MAINTENANCE:
            return _html(503, "Canvas is down for scheduled maintenance")
        if fault is Fault.BAD_GATEWAY:
            return _html(502, "502 Bad Gateway")
        if fault is Fault.HANG:
            await self._sleep(self.settings.faults.hang_seconds)
        elif fault is Fault.SLOW:
            await self._sleep(self.settings.faults.slow_seconds)

        token = _token_of(request)
        bucket = self.bucket(token) if token else self._anonymous_bucket(request)
        # One amount for the request: what is reserved is exactly what is refunded.
        reserved = self.settings.throttle.up_front_cost_for(request.path_qs)
        throttled = bucket.reserve(reserved) and self.settings.throttle.enabled
        self._record(bucket)
        if throttled:
            bucket.settle(0.0, reserved)
            self.stats.throttled += 1
            return self._throttled(bucket)

        cost = 0.0
        try:
            response, cost = await self._run_app(request, handler, fault, token)
        finally:
            bucket.settle(cost, reserved)
            self._record(bucket)
        response.headers["X-Request-Cost"] = ruby_float(cost)
        response.headers["X-Rate-Limit-Remaining"] = ruby_float(bucket.remaining)
        response.headers["X-Request-Context-Id"] = str(uuid.uuid4())
        response.headers["X-Canvas-Meta"] = f"q=0;a=1;g={uuid.uuid4().hex[:16]};s=1;"
        return await self._after_app(request, response, fault)

    async def _run_app(
        self, request: web.Request, handler: Handler, fault: Fault | None, token: str | None
    ) -> tuple[web.StreamResponse, float]:
        if fault is Fault.SERVER_ERROR:
            report_id = self._rng.randint(10_000, 99_999)
            body = {
                "errors": [
                    {"message": "An error occurred.", "error_code": "internal_server_error"}
                ],
                "error_report_id": report_id,
            }
            return web.json_response(body, status=500), 0.01
        if fault is Fault.HTML_ERROR:
            return _html(500, "We're sorry, but something went wrong"), 0.01
        if request.path == TOKEN_PATH:
            denied = None  # the grant authenticates the client, not a token
        elif token is not None and self.oauth.record_of(token) is not None:
            denied = self.oauth.authenticate(token)
        else:
            denied = _authenticate(token, self.token, self.settings)
        if denied is not None:
            return denied, 0.001
        seconds, cost = self._profile_for(request).sample(self._work_rng)
        if seconds > 0:
            await self._sleep(seconds)
        return await handler(request), cost

    async def _after_app(
        self, request: web.Request, response: web.StreamResponse, fault: Fault | None
    ) -> web.StreamResponse:
        if fault is Fault.GATEWAY_TIMEOUT:
            return _html(504, "504 Gateway Time-out")
        if fault is Fault.HANG_AFTER_WRITE:
            # The work is done; the answer comes after the client gave up.
            await self._sleep(self.settings.faults.hang_seconds)
        if fault is Fault.DROP_AFTER_WRITE:
            # The work is done; the client never learns it.
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if isinstance(response, web.Response) and _guards_json(request, response, self.settings):
            body = response.body if isinstance(response.body, bytes) else b""
            response.body = JSON_GUARD + body
        if fault is Fault.MALFORMED_JSON and isinstance(response, web.Response):
            body = response.body if isinstance(response.body, bytes) else b"{}"
            response.body = body[: max(1, len(body) // 2)]
        return response

    def _record(self, bucket: LeakyBucket) -> None:
        if self.settings.record_timeline:
            moment = round(self._clock() - self._started_at, 4)
            self.timeline.append((moment, round(bucket.count, 3), self.stats.in_flight))

    def stats_document(self) -> dict[str, Any]:
        """The statistics and the default token's bucket, as JSON-ready data."""
        stats = self.stats
        document: dict[str, Any] = {
            name: getattr(stats, name)
            for name in (
                "requests",
                "throttled",
                "applied_writes",
                "duplicate_writes",
                "repeated_idempotent_writes",
                "in_flight",
                "peak_in_flight",
            )
        }
        document["faults"] = dict(stats.faults)
        document["statuses"] = {str(status): count for status, count in stats.statuses.items()}
        document["methods"] = dict(stats.methods)
        document["bucket_level"] = round(self.bucket().level(), 3)
        return document

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats_document())

    async def _control_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    async def _control_timeline(self, request: web.Request) -> web.Response:
        return web.json_response(self.timeline)

    async def _control_maintenance(self, request: web.Request) -> web.Response:
        seconds = float(request.query.get("seconds", "60"))
        self.maintenance(seconds)
        return web.json_response({"maintenance_s": seconds})

    def _throttled(self, bucket: LeakyBucket) -> web.Response:
        status = self.settings.throttle.throttled_status
        phrase = "Forbidden" if status == 403 else "Too Many Requests"
        response = web.Response(
            status=status,
            text=f"{status} {phrase} (Rate Limit Exceeded)\n",
            content_type="text/plain",
            charset="utf-8",
        )
        # Throttled answers carry the remaining quota but never a cost or Retry-After.
        response.headers["X-Rate-Limit-Remaining"] = ruby_float(bucket.remaining)
        return response

    def _anonymous_bucket(self, request: web.Request) -> LeakyBucket:
        key = f"ip:{request.remote}"
        if key not in self.buckets:
            self.buckets[key] = LeakyBucket(self.settings.throttle, self._clock)
        return self.buckets[key]

    def _profile_for(self, request: web.Request) -> RouteProfile:
        route = request.match_info.route.resource
        template = route.canonical if route is not None else request.path
        return self.settings.route_profile(request.method, template)

    # ----------------------------------------------------------------- routes

    def _add_routes(self) -> None:
        r = self.app.router
        # Control endpoints for a simulator in another process; never throttled.
        r.add_get(CONTROL_PREFIX + "stats", self._control_stats)
        r.add_post(CONTROL_PREFIX + "reset", self._control_reset)
        r.add_get(CONTROL_PREFIX + "timeline", self._control_timeline)
        r.add_post(CONTROL_PREFIX + "maintenance", self._control_maintenance)
        r.add_get("/api/v1/courses", self._list_courses)
        r.add_get("/api/v1/courses/{course_id}", self._get_course)
        r.add_get("/api/v1/users/{user_id}", self._get_user)
        r.add_get("/api/v1/accounts/{account_id}", self._get_account)
        r.add_get("/api/v1/courses/{course_id}/enrollments", self._list_enrollments)
        r.add_post("/api/v1/courses/{course_id}/enrollments", self._create_enrollment)
        r.add_delete(
            "/api/v1/courses/{course_id}/enrollments/{enrollment_id}", self._end_enrollment
        )
        r.add_get("/api/v1/courses/{course_id}/assignments", self._list_assignments)
        r.add_post("/api/v1/courses/{course_id}/assignments", self._create_assignment)
        base = "/api/v1/courses/{course_id}/assignments/{assignment_id}/submissions"
        r.add_get(base, self._list_submissions)
        r.add_post(base + "/update_grades", self._update_grades)
        r.add_put(base + "/{user_id}", self._grade_submission)
        r.add_get("/api/v1/progress/{progress_id}", self._get_progress)
        self.files.add_canvas_routes(r)
        r.add_post("/api/graphql", self.graphql.handle)
        self.sis.add_routes(r)
        r.add_post(TOKEN_PATH, self.oauth.grant)
        self._writes.add_routes(r)

    async def _list_courses(self, request: web.Request) -> web.Response:
        params = _query(request)
        courses = list(self.data.courses.values())
        kind = _ENROLLMENT_TYPES.get(str(params.get("enrollment_type", "")))
        if kind is not None:
            # The token's user is the teacher of every course and nothing else.
            mine = {
                course_id
                for course_id, roster in self.data.enrollments.items()
                for e in roster
                if e["user_id"] == TEACHER_ID and e["type"] == kind
            }
            courses = [c for c in courses if c["id"] in mine]
        states = _listed(params.get("state"))
        if states:
            courses = [c for c in courses if c["workflow_state"] in states]
        return ordinal_page(request, courses)

    async def _get_course(self, request: web.Request) -> web.Response:
        course = self.data.courses.get(resolve_course(request.match_info["course_id"], self.data))
        return web.json_response(course) if course else _not_found()

    async def _get_user(self, request: web.Request) -> web.Response:
        raw = request.match_info["user_id"]
        user_id = 1 if raw == "self" else _resolve_user(raw, self.data)
        user = self.data.users.get(user_id)
        return web.json_response(user) if user else _not_found()

    async def _get_account(self, request: web.Request) -> web.Response:
        # The simulator's token belongs to a teacher, who may not read accounts.
        body = {
            "status": "unauthorized",
            "errors": [{"message": "user not authorized to perform that action"}],
        }
        return web.json_response(body, status=403)

    async def _list_enrollments(self, request: web.Request) -> web.Response:
        course_id = _int(request.match_info["course_id"])
        if course_id not in self.data.courses:
            return _not_found()
        roster = _filter_enrollments(self.data, self.data.enrollments.get(course_id, []), request)
        return bookmark_page(request, roster)

    async def _create_enrollment(self, request: web.Request) -> web.Response:
        course_id = _int(request.match_info["course_id"])
        if course_id not in self.data.courses:
            return _not_found()
        params = await _params(request)
        enrollment = params.get("enrollment")
        if not isinstance(enrollment, dict) or "user_id" not in enrollment:
            return web.json_response({"message": "No parameters given"}, status=400)
        user_id = _resolve_user(str(enrollment["user_id"]), self.data)
        if user_id not in self.data.users:
            return _not_found()
        kind = str(enrollment.get("type", "StudentEnrollment"))
        if kind not in _ENROLLMENT_TYPES.values():
            return web.json_response({"message": "Invalid type"}, status=400)
        # Canvas invites unless told otherwise; invited enrollments are listed by default.
        state = str(enrollment.get("enrollment_state", "invited"))
        if state not in ("active", "invited", "inactive"):
            state = "invited"
        section_id = _int(str(enrollment.get("course_section_id", default_section_id(course_id))))
        section = self.writes.sections.get(section_id)
        if section is None or section["course_id"] != course_id:
            return _not_found()
        self._record_write(("enroll", course_id, user_id, kind, section_id), idempotent=False)
        created = new_enrollment(self.data, course_id, user_id, kind, state)
        created["course_section_id"] = section_id
        return web.json_response(created)

    async def _end_enrollment(self, request: web.Request) -> web.Response:
        roster = self.data.enrollments.get(_int(request.match_info["course_id"]), [])
        wanted = _int(request.match_info["enrollment_id"])
        enrollment = next((e for e in roster if e["id"] == wanted), None)
        if enrollment is None:
            return _not_found()
        # Canvas's default task is "conclude"; "delete" removes it from listings.
        task = (await _params(request)).get("task", "conclude")
        state = {"delete": "deleted", "inactivate": "inactive"}.get(str(task), "completed")
        self._record_write(("end_enrollment", wanted, state), idempotent=True)
        enrollment["enrollment_state"] = state
        return web.json_response(enrollment)

    async def _list_assignments(self, request: web.Request) -> web.Response:
        course_id = _int(request.match_info["course_id"])
        if course_id not in self.data.courses:
            return _not_found()
        params = _query(request)
        assignments = list(self.data.assignments.get(course_id, []))
        term = str(params.get("search_term", "")).casefold()
        if term:
            assignments = [a for a in assignments if term in a["name"].casefold()]
        wanted = {_int(str(i)) for i in _listed(params.get("assignment_ids"))}
        if wanted:
            assignments = [a for a in assignments if a["id"] in wanted]
        if params.get("order_by") == "name":
            assignments.sort(key=lambda a: (a["name"].casefold(), a["id"]))
        return ordinal_page(request, assignments)

    async def _create_assignment(self, request: web.Request) -> web.Response:
        course_id = _int(request.match_info["course_id"])
        if course_id not in self.data.courses:
            return _not_found()
        params = await _params(request)
        assignment = params.get("assignment")
        if not isinstance(assignment, dict):
            return web.json_response({"errors": [{"message": "assignment is missing"}]}, status=400)
        name = str(assignment.get("name", "")).strip()
        if not name:
            error = {"attribute": "name", "type": "blank", "message": "can't be blank"}
            return web.json_response({"errors": {"name": [error]}}, status=422)
        kind = str(assignment.get("grading_type", "points"))
        if kind not in GRADING_TYPES:
            error = {"attribute": "grading_type", "type": "inclusion", "message": "is not included"}
            return web.json_response({"errors": {"grading_type": [error]}}, status=400)
        try:
            possible = float(assignment.get("points_possible", 100.0))
        except (TypeError, ValueError):
            possible = 0.0
        existing = self.data.assignments.setdefault(course_id, [])
        assignment_id = course_id * 1000 + len(existing) + 1
        created = {
            "id": assignment_id,
            "course_id": course_id,
            "name": name,
            "position": len(existing) + 1,
            "points_possible": possible,
            "grading_type": kind,
            "grading_standard_id": None,
        }
        self._record_write(("assignment", course_id, name), idempotent=False)
        existing.append(created)
        self.data.submissions[(course_id, assignment_id)] = {}
        return web.json_response(created)

    def _submissions(self, request: web.Request) -> dict[int, dict[str, Any]] | None:
        course_id = _int(request.match_info["course_id"])
        return self.data.submissions.get((course_id, _int(request.match_info["assignment_id"])))

    def _assignment(self, request: web.Request) -> dict[str, Any] | None:
        course_id = _int(request.match_info["course_id"])
        wanted = _int(request.match_info["assignment_id"])
        return next(
            (a for a in self.data.assignments.get(course_id, []) if a["id"] == wanted), None
        )

    async def _list_submissions(self, request: web.Request) -> web.Response:
        submissions = self._submissions(request)
        if submissions is None:
            return _not_found()
        items = list(submissions.values())
        if "user" in _listed(_query(request).get("include")):
            items = [{**s, "user": self.data.users.get(s["user_id"])} for s in items]
        return ordinal_page(request, items)

    async def _grade_submission(self, request: web.Request) -> web.Response:
        submissions = self._submissions(request)
        user_id = _resolve_user(request.match_info["user_id"], self.data)
        if submissions is None or user_id not in submissions:
            return _not_found()
        params = await _params(request)
        submission_params = params.get("submission")
        posted = (
            submission_params.get("posted_grade") if isinstance(submission_params, dict) else None
        )
        comment = params.get("comment")
        text = comment.get("text_comment") if isinstance(comment, dict) else None
        if posted is None and text is None:
            return web.json_response({"errors": [{"message": "submission is missing"}]}, status=400)
        assignment = self._assignment(request)
        assert assignment is not None  # submissions exist only for existing assignments
        if posted is not None:
            try:
                self._apply_grade(assignment, submissions[user_id], str(posted))
            except GradeError as error:
                return web.json_response({"error": str(error)}, status=400)
            key = ("grade", request.match_info["assignment_id"], user_id, str(posted))
            self._record_write(key, idempotent=True)
        if text is None:
            return web.json_response(submissions[user_id])
        # Each PUT with a comment adds one: this PUT is not idempotent.
        self._writes.add_comment(assignment["id"], user_id, str(text))
        return web.json_response(
            self._writes.with_comments(submissions[user_id], assignment["id"], user_id)
        )

    def _apply_grade(
        self, assignment: dict[str, Any], submission: dict[str, Any], posted: str
    ) -> None:
        """Grade *submission* by Canvas's rules; an empty grade clears it, as in Canvas."""
        if posted == "":
            submission.update(score=None, grade=None, posted_grade=None)
            return
        text, score = grade(assignment, posted, scheme_for(self.data, assignment))
        submission.update(score=score, grade=text, posted_grade=posted, workflow_state="graded")

    async def _update_grades(self, request: web.Request) -> web.Response:
        submissions = self._submissions(request)
        if submissions is None:
            return _not_found()
        grade_data = (await _params(request)).get("grade_data")
        if not isinstance(grade_data, dict) or not grade_data:
            return web.json_response({"errors": [{"message": "grade_data is missing"}]}, status=400)
        key = (
            "update_grades",
            request.match_info["assignment_id"],
            json.dumps(grade_data, sort_keys=True),
        )
        # The same payload sets the same grades: harmless when repeated.
        self._record_write(key, idempotent=True)
        progress_id = self.data.next_progress_id
        self.data.next_progress_id += 1
        progress = {
            "id": progress_id,
            "context_id": _int(request.match_info["course_id"]),
            "context_type": "Course",
            "tag": "submissions_update",
            "completion": 0,
            "workflow_state": "queued",
            "message": None,
            "url": str(request.url.with_path(f"/api/v1/progress/{progress_id}").with_query(None)),
        }
        self.data.progress[progress_id] = {
            "progress": progress,
            "submissions": submissions,
            "assignment": self._assignment(request),
            "grade_data": grade_data,
        }
        return web.json_response(progress)

    async def _get_progress(self, request: web.Request) -> web.Response:
        entry = self.data.progress.get(_int(request.match_info["progress_id"]))
        if entry is None:
            return _not_found()
        progress = entry["progress"]
        # Each poll moves the job one step: queued -> running -> completed.
        if progress["workflow_state"] == "queued":
            progress.update(workflow_state="running", completion=50)
        elif progress["workflow_state"] == "running":
            self._apply_grades(entry)
        return web.json_response(progress)

    def _apply_grades(self, entry: dict[str, Any]) -> None:
        progress, submissions = entry["progress"], entry["submissions"]
        for raw_user, values in entry["grade_data"].items():
            user_id = _resolve_user(str(raw_user), self.data)
            posted = values.get("posted_grade") if isinstance(values, dict) else None
            try:
                if user_id not in submissions or posted is None:
                    raise GradeError(f"Could not grade {raw_user}.")
                self._apply_grade(entry["assignment"], submissions[user_id], str(posted))
            except GradeError as error:
                progress.update(workflow_state="failed", message=str(error))
                return
        progress.update(workflow_state="completed", completion=100)

    def _record_write(self, key: Any, *, idempotent: bool) -> None:
        self.stats.applied_writes += 1
        if key in self._write_keys:
            if idempotent:
                self.stats.repeated_idempotent_writes += 1
            else:
                self.stats.duplicate_writes += 1
        self._write_keys.add(key)


# ---------------------------------------------------------------- helpers


def _token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("access_token") or None


#: What Canvas puts in front of JSON for a client that did not ask for JSON.
JSON_GUARD = b"while(1);"

#: Hosted Canvas's answer to a request without a valid User-Agent (the wording
#: Instructure announced; the exact text may differ).
USER_AGENT_REFUSAL = {
    "error": "Forbidden",
    "message": "You are not authorized to access this site because you have not provided "
    "a valid user agent.",
}


def _refuse_user_agent(request: web.Request, settings: SimulatorSettings) -> web.Response | None:
    if not settings.require_user_agent:
        return None
    agent = request.headers.get("User-Agent", "").strip()
    lowered = agent.lower()
    if agent and not any(blocked.lower() in lowered for blocked in settings.blocked_user_agents):
        return None
    return web.json_response(USER_AGENT_REFUSAL, status=403)


def _guards_json(request: web.Request, response: web.Response, settings: SimulatorSettings) -> bool:
    if settings.json_guard == "never" or response.content_type != "application/json":
        return False
    if settings.json_guard == "always":
        return True
    accept = request.headers.get("Accept", "*/*").lower()
    return "json" not in accept and "*/*" not in accept


def _authenticate(
    token: str | None, valid: str, settings: SimulatorSettings
) -> web.Response | None:
    challenge = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'}
    if token is None:
        body = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
        return web.json_response(body, status=401, headers=challenge)
    if token in settings.expired_tokens:
        body = {
            "errors": [{"message": "Expired access token.", "expired_at": "2026-01-01T00:00:00Z"}]
        }
        return web.json_response(body, status=401, headers=challenge)
    if token in settings.insufficient_scope_tokens:
        body = {"errors": [{"message": "Insufficient scopes on access token."}]}
        return web.json_response(body, status=401)
    if not secrets.compare_digest(token.encode(), valid.encode()):
        body = {"errors": [{"message": "Invalid access token."}]}
        return web.json_response(body, status=401, headers=challenge)
    return None


async def _params(request: web.Request) -> dict[str, Any]:
    """Read query and body parameters as Canvas does: form or JSON, Rails nesting."""
    params = parse_nested(request.query.items())
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif request.can_read_body:
        form = await request.post()
        params.update(parse_nested((k, v) for k, v in form.items() if isinstance(v, str)))
    return params


def _not_found() -> web.Response:
    body = {"errors": [{"message": "The specified resource does not exist."}]}
    return web.json_response(body, status=404)


def _html(status: int, title: str) -> web.Response:
    page = (
        f"<!DOCTYPE html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1></body></html>"
    )
    return web.Response(status=status, text=page, content_type="text/html")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        return -1


def _resolve_user(raw: str, data: CanvasData) -> int:
    if raw.startswith("sis_user_id:"):
        sis = raw.removeprefix("sis_user_id:")
        return next((u["id"] for u in data.users.values() if u["sis_user_id"] == sis), -1)
    return _int(raw)


_ENROLLMENT_TYPES = {
    "student": "StudentEnrollment",
    "teacher": "TeacherEnrollment",
    "ta": "TaEnrollment",
    "observer": "ObserverEnrollment",
    "designer": "DesignerEnrollment",
}

#: Listed when ``state[]`` is omitted (Canvas, for a caller who is not an account admin).
_DEFAULT_ENROLLMENT_STATES = frozenset({"active", "invited"})


def _query(request: web.Request) -> dict[str, Any]:
    return parse_nested(request.query.items())


def _listed(value: Any) -> list[str]:
    """Canvas's ``Array.wrap``: ``type[]=a&type[]=b``, ``type=a`` and nothing all work."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _filter_enrollments(
    data: CanvasData, roster: list[dict[str, Any]], request: web.Request
) -> list[dict[str, Any]]:
    """Apply the List enrollments filters Canvas documents: role, type, state, user, SIS id."""
    params = _query(request)
    states = set(_listed(params.get("state"))) or _DEFAULT_ENROLLMENT_STATES
    chosen = [e for e in roster if e["enrollment_state"] in states]
    roles = set(_listed(params.get("role")))
    types = set(_listed(params.get("type")))
    # Canvas ignores type[] when role[] is given.
    if roles:
        chosen = [e for e in chosen if e["role"] in roles]
    elif types:
        chosen = [e for e in chosen if e["type"] in types]
    if "user_id" in params:
        raw = str(params["user_id"])
        user_id = TEACHER_ID if raw == "self" else _resolve_user(raw, data)
        chosen = [e for e in chosen if e["user_id"] == user_id]
    sis_ids = set(_listed(params.get("sis_user_id")))
    if sis_ids:
        users = {u["id"] for u in data.users.values() if u["sis_user_id"] in sis_ids}
        chosen = [e for e in chosen if e["user_id"] in users]
    return chosen


class CanvasSimulator:
    """A simulated Canvas served on a free loopback port.

    Use it as an async context manager::

        async with CanvasSimulator() as sim:
            async with CanvasClient(sim.base_url, sim.token) as canvas:
                ...
            assert sim.stats.duplicate_writes == 0

    Args:
        settings: What to simulate; keyword arguments replace its fields.
        host: Interface to bind (loopback by default).
        port: Port to bind; 0 picks a free one.
        clock: Time source of the throttle.
        sleep: How simulated delays pass.
    """

    def __init__(
        self,
        settings: SimulatorSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        **changes: Any,
    ) -> None:
        resolved = replace(settings or SimulatorSettings(), **changes)
        self._canvas = CanvasApp(resolved, clock=clock, sleep=sleep)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._store_runner: web.AppRunner | None = None
        self.base_url: str = ""

    @property
    def settings(self) -> SimulatorSettings:
        """The settings being simulated."""
        return self._canvas.settings

    @property
    def token(self) -> str:
        """The valid access token."""
        return self._canvas.token

    @property
    def stats(self) -> SimulatorStats:
        """Counters of what the simulator saw."""
        return self._canvas.stats

    @property
    def data(self) -> CanvasData:
        """The simulated institution's data (mutable)."""
        return self._canvas.data

    @property
    def app(self) -> web.Application:
        """The aiohttp.web application, to mount elsewhere or drive with a test client."""
        return self._canvas.app

    def bucket(self, token: str | None = None) -> LeakyBucket:
        """The throttle bucket of *token* (the simulator's token by default)."""
        return self._canvas.bucket(token)

    @property
    def oauth(self) -> OAuthServer:
        """OAuth2 token records: ``authorize()`` one, ``expire()`` its token, count ``grants``."""
        return self._canvas.oauth

    @property
    def sis(self) -> SisImports:
        """The SIS imports received; force outcomes with ``next_outcomes``."""
        return self._canvas.sis

    @property
    def files(self) -> FileStore:
        """The file store: a second origin that records the Authorization headers it sees."""
        return self._canvas.files

    def reset(self) -> None:
        """Restore data, buckets, faults and statistics; the server keeps running."""
        self._canvas.reset()

    def maintenance(self, seconds: float) -> None:
        """Start a maintenance window: every request answers 503 (HTML) for *seconds*.

        Out of process: ``POST /_simulator/maintenance?seconds=60``.
        """
        self._canvas.maintenance(seconds)

    async def start(self) -> str:
        """Start serving; return the base URL."""
        if self._runner is not None:
            raise RuntimeError("The simulator is already running.")
        runner = web.AppRunner(
            self._canvas.app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        sockets = runner.addresses
        host, port = sockets[0][0], sockets[0][1]
        self.base_url = str(URL.build(scheme="http", host=host, port=port))
        # The store: same interface, another port, so another origin.
        store = web.AppRunner(
            self._canvas.files.store_app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=0.1,
        )
        await store.setup()
        await web.TCPSite(store, self._host, 0).start()
        self._store_runner = store
        store_host, store_port = store.addresses[0][0], store.addresses[0][1]
        self._canvas.files.base_url = str(
            URL.build(scheme="http", host=store_host, port=store_port)
        )
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        runner, self._runner = self._runner, None
        store, self._store_runner = self._store_runner, None
        if runner is not None:
            await runner.cleanup()
        if store is not None:
            await store.cleanup()
        self._canvas.files.close()

    async def __aenter__(self) -> CanvasSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(
    settings: SimulatorSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready: Callable[[CanvasSimulator], None] | None = None,
) -> None:
    """Serve a simulator until cancelled (for the CLI and out-of-process benchmarks).

    Args:
        settings: What to simulate.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        ready: Called with the running simulator once it accepts connections.
    """
    async with CanvasSimulator(settings, host=host, port=port) as simulator:
        if ready is not None:
            ready(simulator)
        await asyncio.Event().wait()
