"""Blocking code at Canvas's default throttle: canvasapi, canvasapi + install, the sync client.

Measures, against the simulator in its own process (a fresh one per strategy,
Canvas's default throttle, benchmark B's workload: 1,500 GETs of cost ~0.4):

1. Pacing. Four strategies run the 1,500 GETs: plain canvasapi in a
   16-thread pool, canvasapi + ``install`` in the same pool, one
   ``resilient_canvas.sync.CanvasClient`` shared by 16 threads, and the async
   client (``map``). Reported: failed calls, throttled responses as a share of
   requests, wall time divided by the leaky-bucket lower bound of the workload,
   and what the token's throttle believed at the end: the one-way network
   delay it measured and the hwm it learnt (the loopback's delay is ~0.5 ms
   and Canvas's hwm 600: a model that believes otherwise paces too
   cautiously, whatever face drives it).
2. Writes whose answer is lost. 400 POST enrollments through canvasapi +
   ``install`` (16 threads) while 5% of POST responses are dropped after the
   write is applied. Reported: duplicate writes (the harm of a blind retry),
   calls raised to the script (their outcome is unknown), writes applied.
3. Overhead. 2,000 sequential GETs through plain ``requests`` and through the
   sync client, throttling off and zero service time, **interleaved** one
   request each in turn (the machine is shared and noisy: runs measured one
   after the other differ by more than the effect). Reported: the ratio of
   the summed times and of the median latencies.

Targets (issue 16): canvasapi + install and the sync client have 0 failed,
<= 0.5% throttled and <= 1.20x the bound; 0 duplicate writes; the sync
client's overhead <= 1.15x plain requests.

Run: ``python benchmarks/bench_sync.py [--only pacing|writes|overhead ...]``.
Writes ``benchmarks/results/sync.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from _harness import Workload, control, leaky_bucket_bound, simulator_process
from canvasapi import Canvas
from canvasapi.exceptions import CanvasException as CanvasapiError

from resilient_canvas import CanvasClient, clear_throttles, throttle_for
from resilient_canvas.canvasapi import install
from resilient_canvas.exceptions import CanvasException
from resilient_canvas.sync import CanvasClient as SyncCanvasClient
from resilient_canvas.testing import (
    DataSettings,
    Fault,
    FaultSettings,
    SimulatorSettings,
    ThrottleSettings,
)

RESULTS = Path(__file__).parent / "results"
WORKLOAD = Workload("B", calls=1500, service=0.05, cost=0.4)
TOKEN = "bench-token"
COURSE = 101
PATH = f"/api/v1/courses/{COURSE}"
THREADS = 16
WRITES = 400
DROP_RATE = 0.05
OVERHEAD_CALLS = 2000


def _canvas(base: str) -> Canvas:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # canvasapi warns about plain http
        return Canvas(base, TOKEN)


def _pool(calls: int, one: Callable[[], Any]) -> int:
    """Run *calls* calls of *one* in a 16-thread pool; return how many raised."""

    def run(_: int) -> bool:
        try:
            one()
        except (CanvasapiError, CanvasException, requests.RequestException):
            return False
        return True

    with ThreadPoolExecutor(THREADS) as pool:
        return sum(not ok for ok in pool.map(run, range(calls)))


# ------------------------------------------------------------------- pacing


def plain_canvasapi(base: str, calls: int) -> int:
    canvas = _canvas(base)
    return _pool(calls, lambda: canvas.get_course(COURSE))


def canvasapi_install(base: str, calls: int) -> int:
    canvas = install(_canvas(base))
    return _pool(calls, lambda: canvas.get_course(COURSE))


def sync_client(base: str, calls: int) -> int:
    with SyncCanvasClient(base, TOKEN) as canvas:
        return _pool(calls, lambda: canvas.get(PATH))


def async_client(base: str, calls: int) -> int:
    async def run() -> int:
        async with CanvasClient(base, TOKEN) as canvas:
            result = await canvas.map(lambda _: canvas.get(PATH), range(calls))
        return len(result.failures)

    return asyncio.run(run())


STRATEGIES: dict[str, Callable[[str, int], int]] = {
    "canvasapi, 16 threads": plain_canvasapi,
    "canvasapi + install, 16 threads": canvasapi_install,
    "sync client, 16 threads": sync_client,
    "async client (map)": async_client,
}


def pacing() -> dict[str, Any]:
    bound = leaky_bucket_bound(WORKLOAD)
    rows = []
    for name, strategy in STRATEGIES.items():
        clear_throttles()  # each strategy starts with a cold throttle, as a new script would
        with simulator_process(WORKLOAD.settings(record_timeline=False)) as base:
            started = time.perf_counter()
            failed = strategy(base, WORKLOAD.calls)
            wall = time.perf_counter() - started
            stats = asyncio.run(control(base, "stats"))
            # The token's throttle, as the strategy left it (plain canvasapi has none).
            model = throttle_for(base, TOKEN).estimate()
        paced = strategy is not plain_canvasapi
        row = {
            "strategy": name,
            "failed": failed,
            "requests": stats["requests"],
            "throttled": stats["throttled"],
            "throttled_pct": round(100 * stats["throttled"] / max(1, stats["requests"]), 2),
            "peak_in_flight": stats["peak_in_flight"],
            "wall_s": round(wall, 2),
            "ratio": round(wall / bound, 3),
            "model_one_way_ms": round(1000 * model.one_way_delay_s, 2) if paced else None,
            "model_hwm": model.hwm if paced else None,
        }
        rows.append(row)
        believed = (
            f" model: one-way {row['model_one_way_ms']} ms, hwm {row['model_hwm']}" if paced else ""
        )
        print(
            f"{name:32} failed={failed:5} throttled={row['throttled_pct']:6}% "
            f"peak={row['peak_in_flight']:3} wall={row['wall_s']:7}s ratio={row['ratio']:6}x"
            + believed,
            flush=True,
        )
    return {"bound_s": round(bound, 2), "calls": WORKLOAD.calls, "rows": rows}


# ------------------------------------------------------------------- writes


def writes() -> dict[str, Any]:
    faults = FaultSettings(
        rates={Fault.DROP_AFTER_WRITE: DROP_RATE}, methods=frozenset({"POST"}), seed=11
    )
    settings = WORKLOAD.settings(
        faults=faults, data=DataSettings(courses=4, students_per_course=100), record_timeline=False
    )
    clear_throttles()
    with simulator_process(settings) as base:
        canvas = install(_canvas(base))
        courses = list(canvas.get_courses())
        users = sorted({e.user_id for c in courses for e in c.get_enrollments(per_page=100)})
        # Distinct (course, user) pairs: enrolling the same pair twice would be a
        # legitimate second write, not a duplicate.
        pairs = list(itertools.islice(itertools.product(courses, users), WRITES))
        jobs = iter(pairs)

        def enroll() -> None:
            course, user = next(jobs)
            course.enroll_user(user, enrollment={"type": "TaEnrollment"})

        started = time.perf_counter()
        raised = _pool(len(pairs), enroll)
        wall = time.perf_counter() - started
        stats = asyncio.run(control(base, "stats"))
    report = {
        "posts": len(pairs),
        "dropped": stats["faults"].get("drop_after_write", 0),
        "raised_unknown_outcome": raised,
        "applied_writes": stats["applied_writes"],
        "duplicate_writes": stats["duplicate_writes"],
        "wall_s": round(wall, 2),
    }
    print(
        f"writes: {report['posts']} POSTs, {report['dropped']} dropped after applying, "
        f"{raised} raised, {report['applied_writes']} applied, "
        f"{report['duplicate_writes']} duplicates",
        flush=True,
    )
    return report


# ----------------------------------------------------------------- overhead


def interleaved(base: str, calls: int) -> dict[str, list[float]]:
    """Time *calls* GETs with each client, alternating one request at a time."""
    times: dict[str, list[float]] = {"requests": [], "sync client": []}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with requests.Session() as session, SyncCanvasClient(base, TOKEN) as canvas:

        def raw_get() -> None:
            response = session.get(base + PATH, headers=headers)
            response.raise_for_status()
            json.loads(response.content)

        def client_get() -> None:
            canvas.get(PATH)

        for index in range(2 * calls):
            # Alternate which goes first in each pair, so neither is always second.
            name, call = (
                ("requests", raw_get)
                if (index + index // 2) % 2 == 0
                else ("sync client", client_get)
            )
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return times


def overhead() -> dict[str, Any]:
    settings = SimulatorSettings.instant(throttle=ThrottleSettings(enabled=False), token=TOKEN)
    clear_throttles()
    with simulator_process(settings) as base:
        interleaved(base, 300)  # warm up both processes
        times = interleaved(base, OVERHEAD_CALLS)
    raw, sync = times["requests"], times["sync client"]
    report = {
        "calls": OVERHEAD_CALLS,
        "total_s": {name: round(sum(samples), 4) for name, samples in times.items()},
        "median_us": {
            name: round(1e6 * statistics.median(samples), 1) for name, samples in times.items()
        },
        "total_ratio": round(sum(sync) / sum(raw), 3),
        "median_ratio": round(statistics.median(sync) / statistics.median(raw), 3),
    }
    print(
        f"overhead: requests {report['median_us']['requests']} us, sync client "
        f"{report['median_us']['sync client']} us (median); total ratio "
        f"{report['total_ratio']}x, median ratio {report['median_ratio']}x",
        flush=True,
    )
    return report


PARTS: dict[str, Callable[[], dict[str, Any]]] = {
    "pacing": pacing,
    "writes": writes,
    "overhead": overhead,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(PARTS), action="append")
    args = parser.parse_args()
    report = {name: PARTS[name]() for name in args.only or list(PARTS)}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "sync.json"
    if args.only and path.exists():
        report = {**json.loads(path.read_text()), **report}
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
