"""What CanvasClient costs per request over raw aiohttp, with nothing to retry or pace.

Measures 2,000 sequential GETs against the simulator in its own process with
throttling disabled and zero service time, through (1) raw aiohttp reading
and decoding JSON and (2) CanvasClient (classification, retry engine,
throttle bookkeeping, encoding). The machine is shared and noisy, so each
round runs both back to back (alternating which goes first) and yields one
ratio; the median of the rounds' ratios is reported. The client process's CPU
time per request is reported too: with sequential requests the wall-time
difference is the client's extra CPU, and CPU time is far less disturbed by
whatever else the machine runs.

Target (issue 6): CanvasClient <= 1.15x raw aiohttp.

Run: ``python benchmarks/bench_overhead.py [--calls N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
from _harness import simulator_process

from resilient_canvas import CanvasClient, Throttle
from resilient_canvas.testing import SimulatorSettings, ThrottleSettings

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
PATH = "/api/v1/courses/101"


async def raw(base: str, calls: int) -> tuple[float, float]:
    """Wall and client CPU seconds for *calls* GETs with raw aiohttp."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            async with session.get(base + PATH, headers=headers) as response:
                response.raise_for_status()
                json.loads(await response.read())
        return time.perf_counter() - wall, time.process_time() - cpu


async def client(base: str, calls: int) -> tuple[float, float]:
    """Wall and client CPU seconds for *calls* GETs through CanvasClient."""
    async with CanvasClient(base, TOKEN, throttle=Throttle()) as canvas:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await canvas.get(PATH)
        return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    settings = SimulatorSettings(throttle=ThrottleSettings(enabled=False), token=TOKEN)
    ratios: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {"raw aiohttp": [], "CanvasClient": []}
    with simulator_process(settings) as base:
        asyncio.run(raw(base, 200))  # warm up both processes
        asyncio.run(client(base, 200))
        for round_number in range(args.rounds):
            order = [("raw aiohttp", raw), ("CanvasClient", client)]
            for name, run in order[:: -1 if round_number % 2 else 1]:
                runs[name].append(asyncio.run(run(base, args.calls)))
            ratios.append(runs["CanvasClient"][-1][0] / runs["raw aiohttp"][-1][0])
    ratio = statistics.median(ratios)
    report: dict[str, object] = {"calls": args.calls, "rounds": args.rounds}
    for name, results in runs.items():
        wall = statistics.median(w for w, _ in results)
        cpu = statistics.median(c for _, c in results)
        report[name] = {
            "median_wall_s": round(wall, 4),
            "cpu_us_per_request": round(1e6 * cpu / args.calls, 1),
        }
        print(
            f"{name:13} median wall {wall:6.3f}s  {1e6 * wall / args.calls:6.1f} us/request"
            f"  client CPU {1e6 * cpu / args.calls:6.1f} us/request"
        )
    print(f"ratio per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"median wall ratio {ratio:.3f}x (target <= 1.15x)")
    report["ratios"] = [round(r, 3) for r in ratios]
    report["median_ratio"] = round(ratio, 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
