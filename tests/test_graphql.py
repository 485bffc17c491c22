"""Tests for GraphQL: the client's query and paging against the simulator's endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from resilient_canvas import CanvasClient
from resilient_canvas import exceptions as exc
from resilient_canvas.testing import CanvasSimulator, FakeClock

ENROLLMENTS = """
query Roster($course: ID!, $first: Int, $after: String) {
  course(id: $course) {
    enrollmentsConnection(first: $first, after: $after) {
      nodes { _id type user { name } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


@pytest.fixture
async def canvas(sim: CanvasSimulator) -> AsyncIterator[CanvasClient]:
    """A client of the simulator whose waits pass instantly."""
    clock = FakeClock()
    async with CanvasClient(sim.base_url, sim.token, clock=clock, sleep=clock.sleep) as client:
        yield client


async def test_query_returns_data(canvas: CanvasClient) -> None:
    """A query answers its data, by REST id or by global id."""
    by_rest = await canvas.graphql('{ course(id: "101") { _id id name } }')
    course = by_rest["course"]
    by_global = await canvas.graphql(
        "query($id: ID!) { course(id: $id) { name } }", {"id": course["id"]}
    )
    assert ("101", course["name"]) == (course["_id"], by_global["course"]["name"])


async def test_nodes_follow_end_cursors(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """Every enrollment comes back, in REST's order, one request per page of 7."""
    before = sim.stats.requests
    nodes = [
        node
        async for node in canvas.graphql_nodes(
            ENROLLMENTS,
            connection="course.enrollmentsConnection",
            variables={"course": "101"},
            page_size=7,
        )
    ]
    expected = [str(e["id"]) for e in sim.data.enrollments[101]]
    assert expected == [node["_id"] for node in nodes]
    assert -(-len(expected) // 7) == sim.stats.requests - before


async def test_nodes_of_edges_and_of_a_missing_parent(canvas: CanvasClient) -> None:
    """edges { node } works like nodes; a null parent (unknown course) yields nothing."""
    query = """query($first: Int, $after: String) { course(id: "101") {
      assignmentsConnection(first: $first, after: $after) {
        edges { node { name } } pageInfo { hasNextPage endCursor } } } }"""
    names = [
        n["name"]
        async for n in canvas.graphql_nodes(query, connection=["course", "assignmentsConnection"])
    ]
    missing = [
        n
        async for n in canvas.graphql_nodes(
            ENROLLMENTS, connection="course.enrollmentsConnection", variables={"course": "9"}
        )
    ]
    assert (["Assignment 1", "Assignment 2", "Assignment 3"], []) == (names[:3], missing)


@pytest.mark.parametrize("size", [0, 101])
def test_page_size_is_at_most_100(canvas: CanvasClient, sim: CanvasSimulator, size: int) -> None:
    """Canvas serves at most 100 nodes a page: other sizes raise at the call, nothing sent."""
    with pytest.raises(ValueError, match="between 1 and 100"):
        canvas.graphql_nodes(ENROLLMENTS, connection="course", page_size=size)
    assert 0 == sim.stats.requests


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('{ course(id: "101") { nope } }', "Cannot query field 'nope' on type 'Course'"),
        ("{ course(id: ", "Syntax Error"),
        (
            "{ allCourses { enrollmentsConnection { nodes { user { name } } } "
            "submissionsConnection { nodes { assignment { submissionsConnection { nodes { "
            "assignment { submissionsConnection { nodes { grade } } } } } } } } } }",
            "exceeds max complexity of 375000",
        ),
    ],
)
async def test_errors_raise_graphql_error_once(
    canvas: CanvasClient, sim: CanvasSimulator, query: str, message: str
) -> None:
    """A 200 with errors raises GraphQLError with the list and a readable message, not retried."""
    with pytest.raises(exc.GraphQLError) as caught:
        await canvas.graphql(query)
    assert message in str(caught.value)
    assert message in caught.value.errors[0]["message"]
    assert (1, False) == (sim.stats.requests, caught.value.retryable)


async def test_depth_limit(canvas: CanvasClient, sim: CanvasSimulator) -> None:
    """A query deeper than the limit gets Canvas's depth error."""
    sim._canvas.graphql.max_depth = 3
    query = '{ course(id: "101") { enrollmentsConnection { nodes { user { name } } } } }'
    with pytest.raises(
        exc.GraphQLError, match="Query has depth of 5, which exceeds max depth of 3"
    ):
        await canvas.graphql(query)


@pytest.fixture
async def hostile() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A Canvas whose GraphQL answer each test chooses."""
    state: dict[str, Any] = {"hits": 0}

    async def answer(request: web.Request) -> web.StreamResponse:
        state["hits"] += 1
        return state["answer"]()  # type: ignore[no-any-return]

    app = web.Application()
    app.router.add_post("/api/graphql", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", state
    await runner.cleanup()


async def test_body_that_is_not_json_is_invalid(hostile: tuple[str, dict[str, Any]]) -> None:
    """An HTML page answered to a query raises InvalidResponse, not retried."""
    base, state = hostile
    state["answer"] = lambda: web.Response(text="<html>login</html>", content_type="text/html")
    async with CanvasClient(base, "tok", throttle=None) as canvas:
        with pytest.raises(exc.InvalidResponse, match="not a GraphQL response"):
            await canvas.graphql("{ x }")
    assert 1 == state["hits"]


async def test_repeated_cursor_stops_paging(hostile: tuple[str, dict[str, Any]]) -> None:
    """A next page promised with a cursor already used stops instead of looping."""
    base, state = hostile
    page = {"data": {"c": {"nodes": [1], "pageInfo": {"hasNextPage": True, "endCursor": "A"}}}}
    state["answer"] = lambda: web.json_response(page)
    async with CanvasClient(base, "tok", throttle=None) as canvas:
        with pytest.raises(exc.InvalidResponse, match="no new endCursor"):
            async for _ in canvas.graphql_nodes("q", connection="c"):
                pass
    assert 2 == state["hits"]


async def test_partial_data_is_kept_on_the_error(hostile: tuple[str, dict[str, Any]]) -> None:
    """Errors with partial data keep both; the path is in the message."""
    base, state = hostile
    body = {"data": {"a": 1, "b": None}, "errors": [{"message": "boom", "path": ["b"]}]}
    state["answer"] = lambda: web.json_response(body)
    async with CanvasClient(base, "tok", throttle=None) as canvas:
        with pytest.raises(exc.GraphQLError) as caught:
            await canvas.graphql("{ a b }")
    assert ("GraphQL query failed: boom (at b)", {"a": 1, "b": None}) == (
        str(caught.value),
        caught.value.data,
    )
