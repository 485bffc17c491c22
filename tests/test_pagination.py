"""Pagination: Link headers read entry by entry, never a silent early end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from resilient_canvas import CanvasClient, RetryPolicy
from resilient_canvas import exceptions as exc
from resilient_canvas._links import parse_links

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[str, Handler], Awaitable[str]]]:
    """Start a small aiohttp server with one GET route; return its base URL."""
    runners: list[web.AppRunner] = []

    async def start(route: str, handler: Handler) -> str:
        app = web.Application()
        app.router.add_get(route, handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _paged(links_for_page: Callable[[str, int], str], pages: int = 3) -> Handler:
    """Pages 1..pages of one item each; page n's Link header from links_for_page(base, n)."""

    async def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        base = f"http://{request.host}{request.path}"
        headers = {"Link": links_for_page(base, page)} if page < pages else {}
        return web.json_response([{"page": page}], headers=headers)

    return handler


def _client(url: str) -> CanvasClient:
    return CanvasClient(url, "tok", throttle=None, policy=RetryPolicy(attempts=1))


MALFORMED_ENTRIES = {
    "prev without <>": 'https://x/?page=0; rel="prev"',
    "first with a bad port": '<http://h:99999/?page=1>; rel="first"',
    "last with an unterminated quote": '<{base}?page=9>; rel="last',
    "prev with an unclosed target": '<{base}?page=0; rel="prev"',
    "last with a javascript target": '<javascript:alert(1)>; rel="last"',
    "current with garbage after the target": '<{base}?page=1> junk; rel="current"',
}


@pytest.mark.parametrize("name", sorted(MALFORMED_ENTRIES))
async def test_malformed_other_entry_does_not_hide_next(
    serve: Callable[[str, Handler], Awaitable[str]], name: str
) -> None:
    """A broken prev/first/last/current entry leaves a well-formed next to be followed."""
    bad = MALFORMED_ENTRIES[name]
    url = await serve(
        "/api/v1/items",
        _paged(lambda base, n: f'{bad.format(base=base)}, <{base}?page={n + 1}>; rel="next"'),
    )
    async with _client(url) as client:
        pages = [item["page"] async for item in client.paginate("items")]

    assert [1, 2, 3] == pages


MALFORMED_NEXT = {
    "no angle brackets": '{base}?page=2; rel="next"',
    "bad port": '<http://127.0.0.1:99999/api/v1/items?page=2>; rel="next"',
    "unterminated quote": '<{base}?page=2>; rel="next',
    "quoted text after the target": '<{base}?page=2> "x"; rel="next"',
    "two different targets": '<{base}?page=2>; rel="next", <{base}?page=3>; rel="next"',
    "no host": '<http:///api/v1/items?page=2>; rel="next"',
}


@pytest.mark.parametrize("name", sorted(MALFORMED_NEXT))
async def test_malformed_next_is_an_invalid_response(
    serve: Callable[[str, Handler], Awaitable[str]], name: str
) -> None:
    """A next entry that cannot be followed raises after page 1, never ends the listing."""
    bad = MALFORMED_NEXT[name]
    url = await serve("/api/v1/items", _paged(lambda base, n: bad.format(base=base)))
    seen: list[int] = []

    async def read(listing: AsyncIterator[Any]) -> None:
        async for item in listing:
            seen.append(item["page"])

    async with _client(url) as client:
        with pytest.raises(exc.InvalidResponse, match="next entry that cannot be followed"):
            await read(client.paginate("items"))

    assert [1] == seen


@pytest.mark.parametrize(
    "target", ["javascript:alert(1)", "data:application/json,[]", "file:///etc/passwd"]
)
async def test_next_link_with_a_non_http_scheme_is_an_invalid_response(
    serve: Callable[[str, Handler], Awaitable[str]], target: str
) -> None:
    """javascript:, data: and file: next links raise a CanvasException, not a raw ValueError."""
    url = await serve("/api/v1/items", _paged(lambda base, n: f'<{target}>; rel="next"'))
    async with _client(url) as client:
        with pytest.raises(exc.InvalidResponse, match="scheme, not http"):
            _ = [item async for item in client.paginate("items")]


async def test_callers_per_page_is_sent_once(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    """per_page in params is sent once and wins over the client's default."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query_string)
        return web.json_response([])

    url = await serve("/api/v1/courses", handler)
    async with _client(url) as client:
        _ = [x async for x in client.paginate("courses", params={"per_page": 10, "include": ["t"]})]
        _ = [x async for x in client.paginate("courses?per_page=20")]
        _ = [x async for x in client.paginate("courses", per_page=30)]

    assert ["per_page=10&include[]=t", "per_page=20", "per_page=30"] == seen


async def test_base_url_path_prefix_is_kept(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    """Canvas behind https://host/canvas/: requests and relative next links stay under it."""

    async def handler(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        # A relative reference resolves against the page's own URL (RFC 3986).
        links = {"Link": f'<courses?page={page + 1}>; rel="next"'} if page < 3 else {}
        return web.json_response([page], headers=links)

    url = await serve("/canvas/api/v1/courses", handler)
    async with _client(f"{url}/canvas/") as client:
        listed = [page async for page in client.paginate("courses")]
        absolute = await client.get("/api/v1/courses")

    assert f"{url}/canvas/" == client.base_url
    assert [1, 2, 3] == listed
    assert [1] == absolute


async def test_max_pages_stops_an_endless_listing(
    serve: Callable[[str, Handler], Awaitable[str]],
) -> None:
    """A server offering ever-new pages is stopped by max_pages with an error, not followed."""
    url = await serve(
        "/api/v1/items", _paged(lambda base, n: f'<{base}?page={n + 1}>; rel="next"', 10**9)
    )
    seen: list[int] = []

    async def read(listing: AsyncIterator[Any]) -> None:
        async for item in listing:
            seen.append(item["page"])

    async with _client(url) as client:
        with pytest.raises(exc.InvalidResponse, match="after max_pages=5 pages"):
            await read(client.paginate("items", max_pages=5))
        exact = [
            item["page"] async for item in client.paginate("items?page=999999999", max_pages=2)
        ]

    assert [1, 2, 3, 4, 5] == seen
    # A listing that ends within the limit is read whole.
    assert [999999999, 1000000000] == exact


async def test_max_pages_must_be_positive() -> None:
    """max_pages=0 is a programming error, raised before any request."""
    client = _client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="max_pages"):
        await anext(client.paginate("items", max_pages=0))


BASE = URL("https://canvas.test/canvas/api/v1/courses?page=1")


def test_parse_links_reads_entries_independently() -> None:
    """Each entry stands alone; relative targets resolve against the page URL."""
    header = (
        '<https://canvas.test/canvas/api/v1/courses?page=1>; rel="current",'
        '<courses?page=2>; rel="next", <bad; rel="prev",'
        '<https://canvas.test/x?a=1,2>; REL="Last First"'
    )

    parsed = parse_links([header], BASE)

    assert {
        "current": URL("https://canvas.test/canvas/api/v1/courses?page=1"),
        "next": URL("https://canvas.test/canvas/api/v1/courses?page=2"),
        "last": URL("https://canvas.test/x?a=1,2"),
        "first": URL("https://canvas.test/x?a=1,2"),
    } == parsed.urls
    assert {"prev": "its target is not enclosed in <>"} == parsed.errors


def test_parse_links_never_raises_on_garbage() -> None:
    """Junk without any relation yields nothing at all."""
    parsed = parse_links(["<<<>>>; rel=, ;;;" * 50, "", ",,,", "<>"], BASE)

    assert ({}, {}) == (parsed.urls, parsed.errors)
