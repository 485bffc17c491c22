"""What CanvasClient costs per request over raw aiohttp, with nothing to retry or pace.

Measures 2,000 sequential GETs through each of (1) raw aiohttp reading and
decoding JSON and (2) CanvasClient (classification, retry engine, throttle
bookkeeping, encoding), against the simulator in its own process with
throttling disabled and zero service time.

This machine is shared and noisy: whole runs measured one after the other
differ by more than the effect. So the two clients run **interleaved**, one
request each in turn on the same event loop, and every request is timed;
both see the same machine state at every moment. Reported: the ratio of the
summed times (the target) and of the median latencies (robust to pauses).

Target (issue 6): CanvasClient <= 1.15x raw aiohttp; issue 19: <= 1.10x with
the telemetry seam, whether the ``otel`` extra is installed (no SDK
configured: the API's no-op providers) or not (``--without-otel`` hides it).

Run: ``python benchmarks/bench_overhead.py [--calls N] [--without-otel]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

if "--without-otel" in sys.argv:
    # As if the otel extra were not installed: resilient_canvas installs no hooks.
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]

import aiohttp
from _harness import simulator_process

from resilient_canvas import CanvasClient, Throttle
from resilient_canvas.testing import SimulatorSettings, ThrottleSettings

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
PATH = "/api/v1/courses/101"


async def interleaved(base: str, calls: int) -> dict[str, list[float]]:
    """Time *calls* GETs with each client, alternating one request at a time."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    times: dict[str, list[float]] = {"raw aiohttp": [], "CanvasClient": []}
    async with (
        aiohttp.ClientSession() as session,
        CanvasClient(base, TOKEN, throttle=Throttle()) as canvas,
    ):

        async def raw_get() -> None:
            async with session.get(base + PATH, headers=headers) as response:
                response.raise_for_status()
                json.loads(await response.read())

        async def client_get() -> None:
            await canvas.get(PATH)

        for index in range(2 * calls):
            # Alternate which goes first in each pair, so neither is always second.
            name, call = (
                ("raw aiohttp", raw_get)
                if (index + index // 2) % 2 == 0
                else ("CanvasClient", client_get)
            )
            started = time.perf_counter()
            await call()
            times[name].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--without-otel", action="store_true", help="hide opentelemetry")
    args = parser.parse_args()
    from resilient_canvas import _telemetry

    telemetry = "none" if _telemetry.hooks is None else type(_telemetry.hooks).__name__
    # Instant: zero service time (the default simulator takes ~0.2 s per request).
    settings = SimulatorSettings.instant(throttle=ThrottleSettings(enabled=False), token=TOKEN)
    with simulator_process(settings) as base:
        asyncio.run(interleaved(base, 300))  # warm up both processes
        times = asyncio.run(interleaved(base, args.calls))
    raw_times, client_times = times["raw aiohttp"], times["CanvasClient"]
    total_ratio = sum(client_times) / sum(raw_times)
    median_ratio = statistics.median(client_times) / statistics.median(raw_times)
    for name, samples in times.items():
        print(
            f"{name:13} total {sum(samples):6.3f}s  median "
            f"{1e6 * statistics.median(samples):6.1f} us/request"
        )
    print(f"telemetry hooks: {telemetry}")
    print(f"total ratio {total_ratio:.3f}x (target <= 1.10x); median ratio {median_ratio:.3f}x")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "calls": args.calls,
        "telemetry": telemetry,
        "total_s": {name: round(sum(samples), 4) for name, samples in times.items()},
        "median_us": {
            name: round(1e6 * statistics.median(samples), 1) for name, samples in times.items()
        },
        "total_ratio": round(total_ratio, 3),
        "median_ratio": round(median_ratio, 3),
    }
    name = "overhead_without_otel.json" if args.without_otel else "overhead.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
