"""Memory of CanvasClient.paginate() stays flat however many pages a listing has.

A local aiohttp server serves a listing of N pages of 100 items (each item
~300 bytes of JSON) with Canvas-style Link headers. The client streams every
item, keeping none; tracemalloc's peak is measured for 200 and for 2,000
pages in the same run. (Below ~200 pages the peak still rises while yarl's
bounded URL caches fill; past that, only the loop-detection set grows, by a
hash per page.) As a baseline from the same run, the peak of collecting 200
pages into a list shows what accumulation would cost.

Target (issue 5): peak(2,000 pages) / peak(200 pages) <= 1.5.

Run: ``python benchmarks/bench_pagination_memory.py``.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

from aiohttp import web

from resilient_canvas import CanvasClient

RESULTS = Path(__file__).parent / "results"
PER_PAGE = 100


def make_app(pages: int) -> web.Application:
    async def listing(request: web.Request) -> web.Response:
        page = int(request.query.get("page", "1"))
        items = [{"id": (page - 1) * PER_PAGE + n, "name": "x" * 250} for n in range(PER_PAGE)]
        base = f"http://{request.host}/api/v1/items"
        links = [f'<{base}?page={page}&per_page={PER_PAGE}>; rel="current"']
        if page < pages:
            links.append(f'<{base}?page={page + 1}&per_page={PER_PAGE}>; rel="next"')
        return web.json_response(items, headers={"Link": ",".join(links)})

    app = web.Application()
    app.router.add_get("/api/v1/items", listing)
    return app


async def peak(pages: int, keep: bool) -> tuple[int, int]:
    runner = web.AppRunner(make_app(pages), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    kept: list[object] = []
    count = 0
    try:
        async with CanvasClient(f"http://{host}:{port}", "tok", throttle=None) as canvas:
            tracemalloc.start()
            async for item in canvas.paginate("items"):
                count += 1
                if keep:
                    kept.append(item)
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    finally:
        await runner.cleanup()
    return top, count


def main() -> None:
    small, small_count = asyncio.run(peak(200, keep=False))
    large, large_count = asyncio.run(peak(2000, keep=False))
    kept, _ = asyncio.run(peak(200, keep=True))
    assert (small_count, large_count) == (200 * PER_PAGE, 2000 * PER_PAGE)
    ratio = large / small
    print(f"streaming    200 pages: peak {small / 1e6:6.2f} MB")
    print(f"streaming  2,000 pages: peak {large / 1e6:6.2f} MB  ratio {ratio:.2f} (target <= 1.5)")
    print(f"collecting   200 pages (baseline): peak {kept / 1e6:6.2f} MB")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "peak_200_pages": small,
        "peak_2000_pages": large,
        "ratio": round(ratio, 3),
        "peak_200_pages_collected": kept,
    }
    (RESULTS / "pagination_memory.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
