"""``POST /api/graphql`` in the simulator: courses, enrollments, submissions, cursor pages.

Canvas's GraphQL schema is large; this serves the corner scripts use most
(a course, its enrollments, its assignments and their submissions) with
Canvas's conventions: ``_id`` is the REST id and ``id`` the opaque global
id, connections paginate with ``first``/``after`` and ``pageInfo``, pages hold
at most 100 nodes, cursors are base64 offsets. Errors come as Canvas (that
is, graphql-ruby) sends them: status 200 and an ``errors`` array with
``message`` and ``locations``, including the depth and complexity limits.

Parsing, validation and execution are graphql-core's (``pip install
graphql-core``, part of the ``test`` extra); without it the endpoint answers
an error saying so.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from resilient_canvas.testing._data import CanvasData

if TYPE_CHECKING:
    from graphql import GraphQLSchema
    from graphql.language import DocumentNode, FieldNode, SelectionSetNode

#: graphql-ruby's ``max_page_size`` as Canvas sets it.
MAX_PAGE_SIZE = 100
#: Canvas's reported limits (treat them as indicative).
MAX_DEPTH = 15
MAX_COMPLEXITY = 375_000

SCHEMA_SDL = """
type Query {
  course(id: ID!): Course
  allCourses: [Course!]
}

type Course {
  _id: ID!
  id: ID!
  name: String!
  courseCode: String
  state: String!
  enrollmentsConnection(first: Int, after: String): EnrollmentConnection
  assignmentsConnection(first: Int, after: String): AssignmentConnection
  submissionsConnection(first: Int, after: String): SubmissionConnection
}

type User {
  _id: ID!
  id: ID!
  name: String!
  sortableName: String
  sisId: String
}

type Enrollment {
  _id: ID!
  id: ID!
  type: String!
  state: String!
  user: User
}

type Assignment {
  _id: ID!
  id: ID!
  name: String!
  pointsPossible: Float
  gradingType: String
  submissionsConnection(first: Int, after: String): SubmissionConnection
}

type Submission {
  _id: ID!
  id: ID!
  score: Float
  grade: String
  state: String!
  user: User
  assignment: Assignment
}

type PageInfo {
  hasNextPage: Boolean!
  hasPreviousPage: Boolean!
  startCursor: String
  endCursor: String
}

type EnrollmentConnection { nodes: [Enrollment] edges: [EnrollmentEdge] pageInfo: PageInfo! }
type EnrollmentEdge { cursor: String! node: Enrollment }
type AssignmentConnection { nodes: [Assignment] edges: [AssignmentEdge] pageInfo: PageInfo! }
type AssignmentEdge { cursor: String! node: Assignment }
type SubmissionConnection { nodes: [Submission] edges: [SubmissionEdge] pageInfo: PageInfo! }
type SubmissionEdge { cursor: String! node: Submission }
"""


class GraphQLEndpoint:
    """The GraphQL handler over the simulator's data.

    Args:
        data: Returns the current data (it is replaced on reset).
        max_depth: Deepest query accepted.
        max_complexity: Most complex query accepted (each field costs 1, times
            the page size of the connections above it).
    """

    def __init__(
        self,
        data: Callable[[], CanvasData],
        *,
        max_depth: int = MAX_DEPTH,
        max_complexity: int = MAX_COMPLEXITY,
    ) -> None:
        self._data = data
        self.max_depth = max_depth
        self.max_complexity = max_complexity
        self._schema: GraphQLSchema | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one GraphQL request (always 200, as Canvas does)."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, Mapping) or not isinstance(body.get("query"), str):
            return _errors([{"message": "No query string was present"}])
        variables = body.get("variables") or {}
        if not isinstance(variables, Mapping):
            return _errors([{"message": "Variables must be an object"}])
        return web.json_response(self.execute(body["query"], dict(variables)))

    def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """Parse, validate, check the limits of and run *query*; the response document."""
        try:
            import graphql
        except ImportError:  # pragma: no cover - graphql-core is in the test extra
            return {"errors": [{"message": "The simulator's GraphQL needs graphql-core."}]}
        try:
            document = graphql.parse(query)
        except graphql.GraphQLError as error:
            return {"errors": [error.formatted]}
        schema = self._schema_or_build()
        problems = graphql.validate(schema, document)
        if problems:
            return {"errors": [problem.formatted for problem in problems]}
        limit = self._limits(document)
        if limit is not None:
            return {"errors": [{"message": limit}]}
        result = graphql.execute_sync(
            schema, document, root_value=_Root(self._data()), variable_values=variables
        )
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [error.formatted for error in result.errors]
        return answer

    def _schema_or_build(self) -> GraphQLSchema:
        if self._schema is None:
            import graphql

            self._schema = graphql.build_schema(SCHEMA_SDL)
        return self._schema

    def _limits(self, document: DocumentNode) -> str | None:
        from graphql.language import FragmentDefinitionNode, OperationDefinitionNode

        fragments = {
            d.name.value: d.selection_set
            for d in document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            depth = _depth(definition.selection_set, fragments)
            if depth > self.max_depth:
                return f"Query has depth of {depth}, which exceeds max depth of {self.max_depth}"
            complexity = _complexity(definition.selection_set, fragments)
            if complexity > self.max_complexity:
                return (
                    f"Query has complexity of {complexity}, which exceeds max complexity "
                    f"of {self.max_complexity}"
                )
        return None


def _fields(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, SelectionSetNode]
) -> list[FieldNode]:
    from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode

    found: list[FieldNode] = []
    for selection in selection_set.selections if selection_set else ():
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            found.extend(_fields(selection.selection_set, fragments))
        elif isinstance(selection, FragmentSpreadNode):
            found.extend(_fields(fragments.get(selection.name.value), fragments))
    return found


def _depth(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, SelectionSetNode]
) -> int:
    fields = _fields(selection_set, fragments)
    return max((1 + _depth(f.selection_set, fragments) for f in fields), default=0)


def _complexity(
    selection_set: SelectionSetNode | None, fragments: Mapping[str, SelectionSetNode]
) -> int:
    from graphql.language import IntValueNode

    total = 0
    for field in _fields(selection_set, fragments):
        first = next((a.value for a in field.arguments if a.name.value == "first"), None)
        # A variable page size is charged as the largest page.
        size = int(first.value) if isinstance(first, IntValueNode) else MAX_PAGE_SIZE
        multiplier = size if field.name.value.endswith("Connection") else 1
        total += 1 + multiplier * _complexity(field.selection_set, fragments)
    return total


def _errors(errors: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"errors": errors})


def _global_id(kind: str, rest_id: object) -> str:
    return base64.b64encode(f"{kind}-{rest_id}".encode()).decode()


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(cursor.encode(), validate=True).decode()) + 1
    except ValueError:
        return 0


def _connection(items: list[Any], first: int | None, after: str | None) -> dict[str, Any]:
    size = MAX_PAGE_SIZE if first is None else max(0, min(first, MAX_PAGE_SIZE))
    start = _offset(after)
    page = items[start : start + size]
    edges = [{"cursor": _cursor(start + i), "node": node} for i, node in enumerate(page)]
    return {
        "nodes": page,
        "edges": edges,
        "pageInfo": {
            "hasNextPage": start + size < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


class _Root:
    """Resolvers: graphql-core's default resolver calls a callable attribute with the args."""

    def __init__(self, data: CanvasData) -> None:
        self._data = data

    def course(self, info: object, id: str) -> dict[str, Any] | None:
        course = self._data.courses.get(_rest_id(id, "Course"))
        return None if course is None else self._course(course)

    def allCourses(self, info: object) -> list[dict[str, Any]]:
        return [self._course(course) for course in self._data.courses.values()]

    def _course(self, course: dict[str, Any]) -> dict[str, Any]:
        data, course_id = self._data, course["id"]
        roster = data.enrollments.get(course_id, [])
        assignments = data.assignments.get(course_id, [])

        def submissions() -> list[dict[str, Any]]:
            return [
                self._submission(submission)
                for assignment in assignments
                for submission in data.submissions.get((course_id, assignment["id"]), {}).values()
            ]

        return {
            "_id": str(course_id),
            "id": _global_id("Course", course_id),
            "name": course["name"],
            "courseCode": course.get("course_code"),
            "state": course.get("workflow_state", "available"),
            "enrollmentsConnection": _paged(lambda: [self._enrollment(e) for e in roster]),
            "assignmentsConnection": _paged(lambda: [self._assignment(a) for a in assignments]),
            "submissionsConnection": _paged(submissions),
        }

    def _user(self, user_id: int) -> dict[str, Any] | None:
        user = self._data.users.get(user_id)
        if user is None:
            return None
        return {
            "_id": str(user_id),
            "id": _global_id("User", user_id),
            "name": user["name"],
            "sortableName": user.get("sortable_name"),
            "sisId": user.get("sis_user_id"),
        }

    def _enrollment(self, enrollment: dict[str, Any]) -> dict[str, Any]:
        return {
            "_id": str(enrollment["id"]),
            "id": _global_id("Enrollment", enrollment["id"]),
            "type": enrollment["type"],
            "state": enrollment["enrollment_state"],
            "user": lambda info: self._user(enrollment["user_id"]),
        }

    def _assignment(self, assignment: dict[str, Any]) -> dict[str, Any]:
        key = (assignment["course_id"], assignment["id"])
        return {
            "_id": str(assignment["id"]),
            "id": _global_id("Assignment", assignment["id"]),
            "name": assignment["name"],
            "pointsPossible": assignment.get("points_possible"),
            "gradingType": assignment.get("grading_type"),
            "submissionsConnection": _paged(
                lambda: [self._submission(s) for s in self._data.submissions.get(key, {}).values()]
            ),
        }

    def _submission(self, submission: dict[str, Any]) -> dict[str, Any]:
        rest_id = submission["assignment_id"] * 100_000 + submission["user_id"]
        return {
            "_id": str(rest_id),
            "id": _global_id("Submission", rest_id),
            "score": submission.get("score"),
            "grade": submission.get("grade"),
            "state": submission.get("workflow_state", "unsubmitted"),
            "user": lambda info: self._user(submission["user_id"]),
            "assignment": lambda info: self._assignment_by_id(submission["assignment_id"]),
        }

    def _assignment_by_id(self, assignment_id: int) -> dict[str, Any] | None:
        # Assignment ids are course_id * 1000 + n in the generated data.
        for assignment in self._data.assignments.get(assignment_id // 1000, []):
            if assignment["id"] == assignment_id:
                return self._assignment(assignment)
        return None


def _paged(items: Callable[[], list[Any]]) -> Callable[..., dict[str, Any]]:
    def resolve(info: object, first: int | None = None, after: str | None = None) -> dict[str, Any]:
        return _connection(items(), first, after)

    return resolve


def _rest_id(raw: str, kind: str) -> int:
    """Canvas takes the REST id or the global id."""
    if raw.isdigit():
        return int(raw)
    try:
        decoded = base64.b64decode(raw.encode(), validate=True).decode()
    except ValueError:
        return -1
    prefix, _, number = decoded.partition("-")
    return int(number) if prefix == kind and number.isdigit() else -1
