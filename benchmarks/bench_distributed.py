"""Four processes sharing one token: a Redis-shared throttle versus one per process.

Workload B (1,500 GETs, ~50 ms, cost ~0.4) is split evenly across four worker
processes that start together against the simulator (its own process) at
Canvas's defaults. Measured in the same run for both modes: throttled
responses as a share of requests, failed calls, and the aggregate wall time
(first start to last finish) divided by the leaky-bucket lower bound.

Targets (issues 6, 13): with Redis, throttled <= 1% and aggregate wall <= 1.25x the
bound; the in-memory run is reported for comparison.

Run: ``python benchmarks/bench_distributed.py [--processes N]`` (needs
``redis-server`` on PATH; it is started on a free port and stopped after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from _harness import Workload, control, leaky_bucket_bound, simulator_process

from resilient_canvas import CanvasClient, RedisThrottle, Throttle

RESULTS = Path(__file__).parent / "results"
WORKLOAD = Workload("B", calls=1500, service=0.05, cost=0.4)
TOKEN = "bench-token"


def _worker(base: str, calls: int, redis_url: str | None, start: Any, out: Any) -> None:
    async def run() -> tuple[float, float, int]:
        throttle = RedisThrottle(redis_url, "bench#distributed") if redis_url else Throttle()
        start.wait()
        began = time.perf_counter()
        async with CanvasClient(base, TOKEN, throttle=throttle) as canvas:
            result = await canvas.map(lambda _: canvas.get("/api/v1/courses/101"), range(calls))
        ended = time.perf_counter()
        await throttle.aclose()
        return began, ended, len(result.failures)

    out.put(asyncio.run(run()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_mode(base: str, processes: int, redis_url: str | None) -> dict[str, Any]:
    asyncio.run(control(base, "reset"))
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    share = WORKLOAD.calls // processes
    workers = [
        context.Process(target=_worker, args=(base, share, redis_url, start, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(2.0)  # let every worker import and be ready before the common start
    start.set()
    reports = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    stats = asyncio.run(control(base, "stats"))
    wall = max(end for _, end, _ in reports) - min(begin for begin, _, _ in reports)
    return {
        "mode": "redis" if redis_url else "in-memory per process",
        "failed": sum(failed for _, _, failed in reports),
        "requests": stats["requests"],
        "throttled": stats["throttled"],
        "throttled_pct": round(100 * stats["throttled"] / max(1, stats["requests"]), 2),
        "peak_in_flight": stats["peak_in_flight"],
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = _free_port()
    redis = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    bound = leaky_bucket_bound(WORKLOAD)
    rows = []
    try:
        time.sleep(0.5)
        with simulator_process(WORKLOAD.settings(record_timeline=False)) as base:
            for redis_url in (f"redis://127.0.0.1:{port}/0", None):
                row = run_mode(base, args.processes, redis_url)
                row["ratio"] = round(row["wall_s"] / bound, 2)
                rows.append(row)
                print(
                    f"{row['mode']:22} failed={row['failed']} "
                    f"throttled={row['throttled_pct']}% peak={row['peak_in_flight']} "
                    f"wall={row['wall_s']}s ratio={row['ratio']}x",
                    flush=True,
                )
    finally:
        redis.terminate()
        redis.wait()
    RESULTS.mkdir(exist_ok=True)
    report = {"processes": args.processes, "bound_s": round(bound, 2), "rows": rows}
    (RESULTS / "distributed.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
