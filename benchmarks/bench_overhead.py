"""What CanvasClient costs per request over raw aiohttp, with nothing to retry or pace.

Measures 2,000 sequential GETs against the simulator in its own process with
throttling disabled and zero service time, through (1) raw aiohttp reading
and decoding JSON and (2) CanvasClient (classification, retry engine,
throttle bookkeeping, encoding). Rounds alternate between the two to spread
machine noise; the best round of each is compared.

Target (issue 6): CanvasClient <= 1.15x raw aiohttp.

Run: ``python benchmarks/bench_overhead.py [--calls N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp
from _harness import simulator_process

from resilient_canvas import CanvasClient, Throttle
from resilient_canvas.testing import SimulatorSettings, ThrottleSettings

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
PATH = "/api/v1/courses/101"


async def raw(base: str, calls: int) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for _ in range(calls):
            async with session.get(base + PATH, headers=headers) as response:
                response.raise_for_status()
                json.loads(await response.read())
        return time.perf_counter() - started


async def client(base: str, calls: int) -> float:
    async with CanvasClient(base, TOKEN, throttle=Throttle()) as canvas:
        started = time.perf_counter()
        for _ in range(calls):
            await canvas.get(PATH)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = SimulatorSettings(throttle=ThrottleSettings(enabled=False), token=TOKEN)
    best = {"raw aiohttp": float("inf"), "CanvasClient": float("inf")}
    with simulator_process(settings) as base:
        asyncio.run(raw(base, 200))  # warm up both processes
        for _ in range(args.rounds):
            best["raw aiohttp"] = min(best["raw aiohttp"], asyncio.run(raw(base, args.calls)))
            best["CanvasClient"] = min(best["CanvasClient"], asyncio.run(client(base, args.calls)))
    ratio = best["CanvasClient"] / best["raw aiohttp"]
    for name, seconds in best.items():
        print(f"{name:13} {seconds:6.3f}s  {1e6 * seconds / args.calls:7.1f} us/request")
    print(f"ratio {ratio:.3f}x (target <= 1.15x)")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "calls": args.calls,
        "best_s": {k: round(v, 4) for k, v in best.items()},
        "ratio": round(ratio, 3),
    }
    (RESULTS / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
