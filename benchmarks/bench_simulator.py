"""Requests per second the simulator serves on one core, unthrottled.

The simulator runs in its own process (one core); a separate load process
keeps 32 requests in flight with raw aiohttp for a fixed number of requests.
The baseline measured in the same run is a bare aiohttp.web app answering
the same JSON on the same machine, so the ratio shows what the simulator's
Canvas logic costs, and the absolute rate is checked against the target.

Target (issue 3): at least 1,000 requests per second.

Run: ``python benchmarks/bench_simulator.py [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.queues
import time
from pathlib import Path

import aiohttp
from _harness import simulator_process
from aiohttp import web

from resilient_canvas.testing import SimulatorSettings, ThrottleSettings

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
PATH = "/api/v1/courses/101"
IN_FLIGHT = 32


def _bare_server(port_queue: multiprocessing.queues.Queue[int]) -> None:
    course = {"id": 101, "name": "Biology 100", "course_code": "BIOL100"}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(course)

    async def main() -> None:
        app = web.Application()
        app.router.add_get(PATH, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(int(runner.addresses[0][1]))
        await asyncio.Event().wait()

    asyncio.run(main())


async def load(base: str, requests: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    remaining = requests
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(base + PATH, headers=headers) as response:
                    assert response.status == 200
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return requests / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    settings = SimulatorSettings(throttle=ThrottleSettings(enabled=False), token=TOKEN)
    with simulator_process(settings) as base:
        asyncio.run(load(base, 500))
        simulator_rate = asyncio.run(load(base, args.requests))
    context = multiprocessing.get_context("spawn")
    port_queue: multiprocessing.queues.Queue[int] = context.Queue()
    process = context.Process(target=_bare_server, args=(port_queue,), daemon=True)
    process.start()
    try:
        base = f"http://127.0.0.1:{port_queue.get(timeout=30)}"
        asyncio.run(load(base, 500))
        bare_rate = asyncio.run(load(base, args.requests))
    finally:
        process.terminate()
        process.join()
    print(f"simulator   {simulator_rate:8.0f} requests/s  (target >= 1000)")
    print(f"bare aiohttp {bare_rate:7.0f} requests/s  (baseline, same run)")
    print(f"simulator / bare = {simulator_rate / bare_rate:.2f}")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "simulator_rps": round(simulator_rate),
        "bare_aiohttp_rps": round(bare_rate),
        "ratio": round(simulator_rate / bare_rate, 3),
    }
    (RESULTS / "simulator.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
