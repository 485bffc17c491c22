"""Canvas GraphQL: ``POST /api/graphql`` through the client, and connection paging.

GraphQL shares the REST throttle (same bucket, same headers), so queries go
through the client's send path like any call. Canvas answers errors with
status 200 and an ``errors`` array; those raise :class:`GraphQLError` with
the list kept. Connections page with ``first``/``after`` and ``pageInfo {
hasNextPage endCursor }``, at most 100 nodes a page (docs/graphql.md).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from resilient_canvas._api import CanvasApi
from resilient_canvas._errors import GraphQLError, InvalidResponse

#: Canvas's endpoint, below the client's base URL (and its path prefix, if any).
ENDPOINT = "/api/graphql"
#: Canvas's (graphql-ruby's) largest page.
MAX_PAGE_SIZE = 100

_MUTATION = re.compile(r"^\s*(?:#[^\n]*\n\s*)*mutation\b")


async def graphql(
    api: CanvasApi, query: str, variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run *query*; return its ``data``.

    Queries are repeated after a failure that may have been applied (they
    change nothing); mutations are not.

    Raises:
        GraphQLError: Canvas answered with ``errors`` (any partial ``data``
            is kept on the exception).
        InvalidResponse: The answer is not a GraphQL response (not JSON).
        CanvasException: The classified failure of the request.
    """
    body = {"query": query, "variables": dict(variables or {})}
    response = await api.request(
        "POST", ENDPOINT, json=body, idempotent=_MUTATION.match(query) is None
    )
    document = response.data
    if not isinstance(document, Mapping):
        error = InvalidResponse(
            f"POST {response.url} answered {response.status} with a body that is not a "
            "GraphQL response (not a JSON object)."
        )
        error.method, error.url, error.request_sent = "POST", response.url, True
        error.extra["body_excerpt"] = response.content[:500].decode("utf-8", errors="replace")
        raise error
    errors = document.get("errors")
    if errors:
        listed = errors if isinstance(errors, list) else [errors]
        raise GraphQLError(
            errors=listed, data=document.get("data"), method="POST", url=response.url
        )
    data = document.get("data")
    return dict(data) if isinstance(data, Mapping) else {}


def graphql_nodes(
    api: CanvasApi,
    query: str,
    *,
    connection: str | Sequence[str],
    variables: Mapping[str, Any] | None = None,
    page_size: int = MAX_PAGE_SIZE,
) -> AsyncIterator[Any]:
    """Yield every node of the connection at *connection* in *query*'s data, page by page.

    The query declares ``$first: Int`` and ``$after: String`` and passes them
    to the connection; *connection* is the connection's path in ``data``
    (``"course.enrollmentsConnection"``). Its ``nodes`` (or ``edges { node }``)
    are yielded and ``pageInfo { hasNextPage endCursor }`` followed.

    Raises:
        ValueError: For a page size outside 1..100.
        InvalidResponse: The connection has no ``pageInfo``, or Canvas says
            there is a next page without a new cursor (it would loop).
        GraphQLError: A page answered with errors.
    """
    # Checked at the call, not at the first iteration: nothing is sent.
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, not {page_size}.")
    path = connection.split(".") if isinstance(connection, str) else list(connection)
    return _pages(api, query, path, dict(variables or {}), page_size)


async def _pages(
    api: CanvasApi, query: str, path: list[str], variables: dict[str, Any], page_size: int
) -> AsyncIterator[Any]:
    after: str | None = None
    seen: set[str] = set()
    while True:
        page_variables = {**variables, "first": page_size, "after": after}
        data = await graphql(api, query, page_variables)
        found = _walk(data, path)
        if found is None:
            return  # a parent is null: the course does not exist, or is not visible
        for node in _nodes(found):
            yield node
        info = found.get("pageInfo")
        if not isinstance(info, Mapping):
            raise _paging_error(f"The connection {'.'.join(path)} has no pageInfo to follow.")
        if not info.get("hasNextPage"):
            return
        cursor = info.get("endCursor")
        if not isinstance(cursor, str) or cursor in seen:
            raise _paging_error(
                f"Canvas says {'.'.join(path)} has a next page but gave no new endCursor; "
                "stopping instead of looping forever."
            )
        seen.add(cursor)
        after = cursor


def _walk(data: Mapping[str, Any], path: list[str]) -> Mapping[str, Any] | None:
    current: Any = data
    for key in path:
        if not isinstance(current, Mapping):
            raise _paging_error(f"{'.'.join(path)} is not in the query's data ({key!r} missing).")
        current = current.get(key)
        if current is None:
            return None
    if not isinstance(current, Mapping):
        raise _paging_error(f"{'.'.join(path)} is not a connection.")
    return current


def _nodes(connection: Mapping[str, Any]) -> list[Any]:
    nodes = connection.get("nodes")
    if isinstance(nodes, list):
        return nodes
    edges = connection.get("edges")
    if isinstance(edges, list):
        return [edge.get("node") for edge in edges if isinstance(edge, Mapping)]
    raise _paging_error("The connection has neither nodes nor edges; select one of them.")


def _paging_error(message: str) -> InvalidResponse:
    error = InvalidResponse(message)
    error.method, error.request_sent = "POST", True
    return error
