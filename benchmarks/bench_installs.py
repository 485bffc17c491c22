"""Does the throttle learn any Canvas install? A grid of installs, every strategy on each.

Each cell of the grid is one Canvas install (hwm, up_front_cost, per-path
up_front_cost, outflow, 403 or 429 throttling, network latency) and one bulk
job on it (service times and costs from light to saturating, constant to
heavy-tailed). Every cell runs, against the real simulator in its own process,
reset before each strategy:

- ``resilient_canvas``: CanvasClient with a fresh ``Throttle()``, every call
  handed over at once through ``canvas.map``;
- ``stamina``, ``tenacity``, ``aiohttp-retry``: plain aiohttp at concurrency
  20 retrying throttled answers (the strategies of ``bench_throttle.py``;
  they retry the install's throttle status, 403 with "Rate Limit Exceeded"
  or 429, and send a User-Agent as hosted Canvas requires);
- ``one-at-a-time``: CanvasClient without a throttle, one call after the
  other. It is **capped by time** (``--sequential-seconds``): its wall time is
  extrapolated from its rate over the calls it made (marked ``~``).

Recorded per cell and strategy: failed calls, throttled answers as a share of
requests, and wall time divided by the leaky-bucket lower bound of the cell's
exact draws (``Workload.bound``). The ratio, not seconds, is what is compared.

Costs are physical: Canvas charges a request's CPU and database seconds, so
every cell ties cost to the sampled service time with ``cost_rate <= 1`` (a
heavy-tailed service time gives a heavy-tailed cost). "Load" is what the
bucket would take in per second if as many calls ran as hwm / up_front_cost
allows, divided by the outflow: above 1 the bucket fills and the outflow,
not the reservations, limits the job.

Cells where retries pile up keep ``maximum - hwm`` above their largest
reservation (Canvas's defaults have 200 over 50; outflow20-ufc30 keeps
hwm = maximum = 800, where 20 calls reserve only 600). Canvas clamps the
count at ``maximum`` while adding a reservation, so near it a throttled request's refund erases part
of the in-flight requests' reservations, and retry storms get more calls in
flight than the bucket's arithmetic allows a polite client; the bound would
then no longer be a lower bound. The bound also starts calls in the given
order: on a mixed job a client that reorders (retries do) may beat it.

Targets (issue 13), in every cell: resilient_canvas has 0 failed calls,
<= 0.5% throttled, <= 1.10x the bound, and is faster than every peer.

Run: ``python benchmarks/bench_installs.py [--cell NAME ...] [--only STRATEGY ...]``.
Writes ``benchmarks/results/installs.json`` and ``installs_heatmap.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _harness import RESULTS, RouteShare, Workload, control, save_results, simulator_process

from resilient_canvas import CanvasClient, Throttle
from resilient_canvas.exceptions import RateLimitExceeded
from resilient_canvas.testing import Distribution, RouteProfile, ThrottleSettings

TOKEN = "bench-token"
CONCURRENCY = 20
ATTEMPTS = 30
#: Peers identify themselves as hosted Canvas requires (it refuses requests without one).
PEER_AGENT = "resilient-canvas-benchmarks/1.0 (peer strategy; bench_installs.py)"
#: A strategy still running after this many bounds is stopped (and marked so).
GIVE_UP_AFTER_BOUNDS = 8.0

COURSE = ("GET", "/api/v1/courses/101", "GET /api/v1/courses/{course_id}")
ENROLLMENTS = (
    "GET",
    "/api/v1/courses/101/enrollments",
    "GET /api/v1/courses/{course_id}/enrollments",
)
ASSIGNMENTS = (
    "GET",
    "/api/v1/courses/101/assignments",
    "GET /api/v1/courses/{course_id}/assignments",
)


def _tied(service: Distribution, cost_rate: float) -> RouteProfile:
    """A route whose cost is its CPU+DB share of the service time (physical: rate <= 1)."""
    assert cost_rate <= 1.0, "Canvas's cost is CPU+DB seconds: it cannot exceed the service time"
    return RouteProfile(service, cost_rate=cost_rate, base_cost=0.002)


def _mixed(calls: int) -> Workload:
    """Three routes, two with their own up_front_cost (Canvas's per-path regexes)."""
    throttle = ThrottleSettings(
        up_front_cost=50.0,
        up_front_cost_by_path={r"/enrollments": 110.0, r"/assignments": 25.0},
        throttled_status=429,
    )
    shares = (
        RouteShare(*ENROLLMENTS, _tied(Distribution.lognormal(0.4, 1.2), 0.8), weight=1),
        RouteShare(*COURSE, _tied(Distribution.uniform(0.1, 0.2), 0.5), weight=2),
        RouteShare(*ASSIGNMENTS, _tied(Distribution.lognormal(0.15, 0.7), 0.6), weight=2),
    )
    return Workload(
        "mixed-per-path",
        calls=calls,
        mix=shares,
        throttle=throttle,
        latency=Distribution.constant(0.03),
    )


def _single(
    name: str,
    calls: int,
    route: RouteProfile,
    throttle: ThrottleSettings,
    latency: Distribution | None = None,
) -> Workload:
    return Workload(
        name, calls=calls, route=route, throttle=throttle, latency=latency or Distribution()
    )


def _cells() -> list[Workload]:
    realistic = RouteProfile()  # the simulator's default: lognormal 0.2 s, sigma 0.7, rate 0.8
    return [
        _single("canvas-default", 330, realistic, ThrottleSettings()),
        _single(
            "light-ufc20",
            1500,
            _tied(Distribution.constant(0.1), 0.2),
            ThrottleSettings(up_front_cost=20.0),
            Distribution.constant(0.02),
        ),
        _single(
            "hosted-default",
            400,
            realistic,
            ThrottleSettings(hwm=700.0, throttled_status=429),
            Distribution.constant(0.05),
        ),
        _single(
            "hwm800-ufc120",
            140,
            _tied(Distribution.uniform(0.3, 0.2), 0.6),
            ThrottleSettings(hwm=800.0, maximum=1000.0, up_front_cost=120.0, throttled_status=429),
            Distribution.uniform(0.1, 0.5),
        ),
        _single(
            "ufc100-heavy",
            130,
            _tied(Distribution.lognormal(0.25, 1.2), 0.8),
            ThrottleSettings(up_front_cost=100.0),
        ),
        _single(
            "outflow3-saturating",
            900,
            _tied(Distribution.uniform(0.2, 0.2), 1.0),
            ThrottleSettings(hwm=500.0, up_front_cost=20.0, outflow=3.0),
        ),
        _single(
            "outflow5-heavy",
            160,
            _tied(Distribution.lognormal(0.3, 1.5), 0.9),
            ThrottleSettings(outflow=5.0, throttled_status=429),
            Distribution.lognormal(0.05, 1.2),
        ),
        _single(
            "outflow20-ufc30",
            900,
            _tied(Distribution.constant(0.15), 1.0),
            ThrottleSettings(hwm=800.0, up_front_cost=30.0, outflow=20.0, throttled_status=429),
            Distribution.constant(0.01),
        ),
        _single(
            "latency0.5",
            150,
            _tied(Distribution.lognormal(0.5, 0.7), 0.5),
            ThrottleSettings(up_front_cost=40.0, throttled_status=429),
            Distribution.uniform(0.5, 0.2),
        ),
        _single(
            "hwm500-ufc80-const",
            90,
            _tied(Distribution.constant(0.4), 1.0),
            ThrottleSettings(hwm=500.0, up_front_cost=80.0, outflow=8.0),
            Distribution.constant(0.02),
        ),
        _mixed(350),
    ]


@dataclass(frozen=True)
class Job:
    """What a strategy runs: the requests, where, and how the install throttles."""

    base: str
    requests: list[tuple[str, str]]
    throttled_status: int


class Throttled(Exception):
    """A throttled response, for the retry libraries to catch."""


def _peer_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "User-Agent": PEER_AGENT}


def _is_throttle(status: int, body: bytes, throttled_status: int) -> bool:
    # Legacy Canvas answers 403 for many reasons: only its body tells a throttle.
    return status == throttled_status and (status == 429 or b"Rate Limit Exceeded" in body)


async def _get_once(session: aiohttp.ClientSession, job: Job, path: str) -> Any:
    async with session.get(job.base + path, headers=_peer_headers()) as response:
        body = await response.read()
        if _is_throttle(response.status, body, job.throttled_status):
            raise Throttled
        response.raise_for_status()
        return json.loads(body)


async def _bounded(job: Job, one: Callable[[str], Awaitable[Any]]) -> int:
    """Run every request of *job*, CONCURRENCY at a time; return how many failed."""
    semaphore = asyncio.Semaphore(CONCURRENCY)
    failed = 0

    async def run(path: str) -> None:
        nonlocal failed
        async with semaphore:
            try:
                await one(path)
            except Exception:
                failed += 1

    await asyncio.gather(*(run(path) for _, path in job.requests))
    return failed


async def resilient_canvas(job: Job) -> int:
    async with CanvasClient(job.base, TOKEN, throttle=Throttle()) as canvas:
        result = await canvas.map(lambda request: canvas.get(request[1]), job.requests)
    return len(result.failures)


async def stamina_retry(job: Job) -> int:
    import stamina
    import stamina.instrumentation

    # Its default hook logs every retry: thousands of lines, and time spent logging.
    stamina.instrumentation.set_on_retry_hooks([])
    async with aiohttp.ClientSession() as session:

        @stamina.retry(on=Throttled, attempts=ATTEMPTS, timeout=None)
        async def one(path: str) -> Any:
            return await _get_once(session, job, path)

        return await _bounded(job, one)


async def tenacity_retry(job: Job) -> int:
    import tenacity

    async with aiohttp.ClientSession() as session:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(Throttled),
            wait=tenacity.wait_random_exponential(multiplier=1, max=60),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            reraise=True,
        )
        return await _bounded(job, lambda path: retrying.copy()(_get_once, session, job, path))


async def aiohttp_retry(job: Job) -> int:
    from aiohttp_retry import ExponentialRetry, RetryClient

    # aiohttp-retry retries by status only: on a legacy install that is every 403.
    options = ExponentialRetry(attempts=ATTEMPTS, statuses={job.throttled_status})
    async with RetryClient(retry_options=options, raise_for_status=False) as client:

        async def one(path: str) -> Any:
            async with client.get(job.base + path, headers=_peer_headers()) as response:
                response.raise_for_status()
                return await response.read()

        return await _bounded(job, one)


STRATEGIES: dict[str, Callable[[Job], Awaitable[int]]] = {
    "resilient_canvas": resilient_canvas,
    "stamina": stamina_retry,
    "tenacity": tenacity_retry,
    "aiohttp-retry": aiohttp_retry,
}
SEQUENTIAL = "one-at-a-time"
PEERS = ("stamina", "tenacity", "aiohttp-retry", SEQUENTIAL)


async def one_at_a_time(job: Job, seconds: float) -> tuple[int, int, float]:
    """Call one at a time for at most *seconds*; return (failed, calls made, elapsed)."""
    failed = made = 0
    async with CanvasClient(job.base, TOKEN, throttle=None) as canvas:
        started = time.perf_counter()
        for _, path in job.requests:
            if time.perf_counter() - started >= seconds:
                break
            try:
                await canvas.get(path)
            except RateLimitExceeded:
                failed += 1
            made += 1
        return failed, made, time.perf_counter() - started


async def measure(job: Job, name: str, bound: float, sequential_seconds: float) -> dict[str, Any]:
    await control(job.base, "reset")
    row: dict[str, Any] = {"strategy": name, "extrapolated": False, "gave_up": False}
    calls = len(job.requests)
    started = time.perf_counter()
    if name == SEQUENTIAL:
        failed, made, elapsed = await one_at_a_time(job, sequential_seconds)
        wall = elapsed * calls / max(1, made)
        row["extrapolated"] = made < calls
        row["calls_made"] = made
    else:
        try:
            failed = await asyncio.wait_for(
                STRATEGIES[name](job), timeout=max(30.0, GIVE_UP_AFTER_BOUNDS * bound)
            )
        except TimeoutError:
            failed, row["gave_up"] = -1, True
        wall = time.perf_counter() - started
    stats = await control(job.base, "stats")
    row.update(
        failed=failed,
        requests=stats["requests"],
        throttled=stats["throttled"],
        throttled_pct=round(100 * stats["throttled"] / max(1, stats["requests"]), 2),
        peak_in_flight=stats["peak_in_flight"],
        wall_s=round(wall, 2),
        ratio=round(wall / bound, 3),
    )
    return row


def describe(workload: Workload) -> dict[str, Any]:
    """The install and the job of a cell, for the table."""
    throttle = workload.throttle
    shares = workload.mix or (RouteShare("GET", "", "", workload.profile),)
    total = sum(share.weight for share in shares)
    cost = sum(share.weight * share.profile.mean_cost for share in shares) / total
    service = sum(share.weight * share.profile.service_time for share in shares) / total
    reserve = (
        sum(
            share.weight * throttle.up_front_cost_for(share.path or "/api/v1/courses/101")
            for share in shares
        )
        / total
    )
    kinds = sorted({share.profile.service.kind for share in shares})
    sigmas = [s.profile.service.spread for s in shares if s.profile.service.kind == "lognormal"]
    return {
        "hwm": throttle.hwm,
        "maximum": throttle.maximum,
        "up_front_cost": throttle.up_front_cost,
        "up_front_cost_by_path": dict(throttle.up_front_cost_by_path),
        "outflow": throttle.outflow,
        "status": throttle.throttled_status,
        "latency_s": workload.latency.mean,
        "calls": workload.calls,
        "mean_service_s": round(service, 3),
        "mean_cost": round(cost, 3),
        "distribution": "/".join(kinds) + (f" sigma {max(sigmas)}" if sigmas else ""),
        "load": round(throttle.hwm / reserve * cost / service / throttle.outflow, 2),
    }


def verdict(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Which of issue 13's targets the cell meets."""
    ours = next(row for row in rows if row["strategy"] == "resilient_canvas")
    peers = [row for row in rows if row["strategy"] in PEERS]
    return {
        "0 failed": ours["failed"] == 0,
        "<=0.5% throttled": ours["throttled_pct"] <= 0.5,
        "<=1.10x bound": ours["ratio"] <= 1.10,
        "beats every peer": all(ours["wall_s"] < peer["wall_s"] for peer in peers),
    }


def heatmap(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    cells = list(report["cells"])
    strategies = [*STRATEGIES, SEQUENTIAL]
    ratios = [
        [
            next(r["ratio"] for r in report["cells"][cell]["rows"] if r["strategy"] == s)
            for s in strategies
        ]
        for cell in cells
    ]
    figure, axis = plt.subplots(figsize=(9, 0.45 * len(cells) + 1.6))
    image = axis.imshow(ratios, cmap="RdYlGn_r", norm=LogNorm(vmin=1.0, vmax=8.0), aspect="auto")
    for i, cell in enumerate(cells):
        for j, strategy in enumerate(strategies):
            row = next(r for r in report["cells"][cell]["rows"] if r["strategy"] == strategy)
            mark = "~" if row["extrapolated"] else ""
            text = f"{mark}{row['ratio']:.2f}x"
            if strategy != SEQUENTIAL:
                text += f"\n{row['throttled_pct']:.1f}%"
            axis.text(j, i, text, ha="center", va="center", fontsize=7)
    axis.set_xticks(range(len(strategies)), strategies, fontsize=8)
    axis.set_yticks(range(len(cells)), cells, fontsize=8)
    axis.set_title(
        "Wall time / leaky-bucket lower bound (% throttled) per install; ~ = extrapolated",
        fontsize=9,
    )
    bar = figure.colorbar(image, ax=axis, label="ratio to bound (log scale)")
    ticks = [1.0, 1.1, 1.5, 2.0, 3.0, 5.0, 8.0]
    bar.set_ticks(ticks, labels=[f"{tick:g}x" for tick in ticks])
    bar.ax.minorticks_off()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def run_cell(
    workload: Workload, names: list[str], sequential_seconds: float
) -> tuple[float, list[dict[str, Any]]]:
    bound = workload.bound()
    job_requests = workload.requests()
    rows = []
    with simulator_process(workload.settings(record_timeline=False)) as base:
        job = Job(base, job_requests, workload.throttle.throttled_status)
        for name in names:
            row = asyncio.run(measure(job, name, bound, sequential_seconds))
            rows.append(row)
            mark = "~" if row["extrapolated"] else " "
            print(
                f"  {name:17} failed={row['failed']:4} throttled={row['throttled_pct']:6.2f}%"
                f" peak={row['peak_in_flight']:3} wall={mark}{row['wall_s']:7.2f}s"
                f" ratio={mark}{row['ratio']:5.2f}x",
                flush=True,
            )
    return bound, rows


def main() -> None:
    cells = {workload.name: workload for workload in _cells()}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=list(cells), action="append")
    parser.add_argument("--only", choices=[*STRATEGIES, SEQUENTIAL], action="append")
    parser.add_argument("--table", action="store_true", help="print the saved results' tables")
    parser.add_argument(
        "--sequential-seconds",
        type=float,
        default=4.0,
        help="time cap of one-at-a-time; its wall time is extrapolated from its rate",
    )
    args = parser.parse_args()
    if args.table:
        print_table(json.loads((RESULTS / "installs.json").read_text()))
        return
    names = args.only or [*STRATEGIES, SEQUENTIAL]
    report: dict[str, Any] = {
        "note": (
            "ratio = wall / leaky-bucket lower bound; one-at-a-time is capped at "
            f"{args.sequential_seconds} s and its wall time extrapolated from its rate"
        ),
        "cells": {},
    }
    started = time.perf_counter()
    for key in args.cell or list(cells):
        workload = cells[key]
        info = describe(workload)
        print(f"{key}: {info}", flush=True)
        bound, rows = run_cell(workload, names, args.sequential_seconds)
        print(f"  bound {bound:.2f}s", flush=True)
        cell: dict[str, Any] = {**info, "bound_s": round(bound, 2), "rows": rows}
        if "resilient_canvas" in names and any(name in PEERS for name in names):
            cell["targets"] = verdict(rows)
            print(f"  targets: {cell['targets']}", flush=True)
        report["cells"][key] = cell
    report["total_s"] = round(time.perf_counter() - started, 1)
    print(f"grid ran in {report['total_s']} s; one-at-a-time extrapolated (~) past its cap")
    print_table(report)
    if save_results("installs.json", report, partial=bool(args.cell or args.only)):
        heatmap(report, RESULTS / "installs_heatmap.png")


def print_table(report: dict[str, Any]) -> None:
    """Two Markdown tables: the installs, then ratio / % throttled / failed per strategy."""
    print(
        "| install | hwm | maximum | up-front cost | outflow | status | latency | calls "
        "| service, cost | load | bound |"
    )
    print("|---" * 11 + "|")
    for name, cell in report["cells"].items():
        ufc = f"{cell['up_front_cost']:g}"
        for pattern, cost in cell["up_front_cost_by_path"].items():
            ufc += f", `{pattern}` {cost:g}"
        print(
            f"| {name} | {cell['hwm']:g} | {cell['maximum']:g} | {ufc} | {cell['outflow']:g}/s "
            f"| {cell['status']} | {cell['latency_s']:g} s | {cell['calls']} "
            f"| {cell['mean_service_s']} s, {cell['mean_cost']} ({cell['distribution']}) "
            f"| {cell['load']} | {cell['bound_s']} s |"
        )
    print()
    strategies = [*STRATEGIES, SEQUENTIAL]
    print("| install |" + "".join(f" {s} |" for s in strategies) + " targets |")
    print("|---" * (len(strategies) + 2) + "|")
    for name, cell in report["cells"].items():
        line = f"| {name} |"
        for strategy in strategies:
            row = next((r for r in cell["rows"] if r["strategy"] == strategy), None)
            if row is None:
                line += " - |"
                continue
            mark = "~" if row["extrapolated"] else ""
            gave_up = " gave up" if row["gave_up"] else ""
            line += (
                f" {mark}{row['ratio']:.2f}x, {row['throttled_pct']:g}%, {row['failed']}{gave_up} |"
            )
        targets = cell.get("targets", {})
        missed = [target for target, held in targets.items() if not held]
        if not targets:
            line += " - |"
        else:
            line += " all held |" if not missed else " missed: " + "; ".join(missed) + " |"
        print(line)


if __name__ == "__main__":
    main()
