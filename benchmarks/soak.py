"""A soak at scale: 50,000 mixed calls over ten minutes through faults and a maintenance window.

The simulator runs in a process of its own with a fault mix: 2% 503 HTML
maintenance pages, 0.5% 502 HTML pages from the gateway, 0.5% hangs longer
than the attempt timeout, 1% connections dropped after the request was
applied; halfway through, a 60 s maintenance window answers every request
with 503. The client runs 32 workers over 50,000 calls, paced to spread
over ten minutes: paginated GETs (a submissions listing, 3 pages), grade
PUTs and enrollment POSTs (each a new enrollment, so a duplicate shows).

Every second the client process samples its RSS, open file descriptors,
open sockets (its connections), asyncio tasks, calls done and the circuit
breaker's state; the plot is ``results/soak.png``.

Outcomes: a call succeeds, or fails *classified* (a ``CanvasException``),
or fails *unclassified* (anything else). A classified failure is *lost*
when the policy would have retried it (giving up on something retryable:
budget, deadline, attempts, ``CircuitOpen``); the others are failures by
design (a POST whose connection dropped after it was applied is not
repeated). Targets (issue 19): 0 lost, 0 duplicate writes, 0
unclassified, RSS growth < 20 MB after warm-up, fds and tasks flat, the
breaker opens during the window and closes after it.

With ``--redis``: 4 processes share one token through Redis (each a
quarter of the calls) and ``redis-server`` is killed for 20 s mid-run.
Their circuit breaker is shared through Redis too (``RedisCircuit``): one
process opens it for all, and while Redis is down each decides locally.

Run: ``python benchmarks/soak.py`` (>= 10 minutes; results
``results/soak.json`` and ``results/soak.png``), ``--quick`` (~60 s, 3,000
calls, a 10 s window; ``results/soak_quick.json``, no plot),
``--redis`` (``results/soak_redis.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from _harness import control, simulator_process

from resilient_canvas import (
    CanvasClient,
    CanvasException,
    CircuitOpen,
    CircuitState,
    RetryPolicy,
    clear_breakers,
)
from resilient_canvas.testing import (
    DataSettings,
    Distribution,
    Fault,
    FaultSettings,
    RouteProfile,
    SimulatorSettings,
)
from resilient_canvas.testing._data import generate

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
ENROLLMENT_TYPES = (
    "StudentEnrollment",
    "TeacherEnrollment",
    "TaEnrollment",
    "ObserverEnrollment",
    "DesignerEnrollment",
)
STATE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


@dataclass(frozen=True)
class Plan:
    """How big and how long a soak is.

    Attributes:
        calls: Logical calls in all.
        duration: Seconds the calls are paced over (the run takes at least this).
        window_at: Seconds from the start to the maintenance window.
        window: Length of the maintenance window.
        warmup: Seconds after which RSS growth is measured.
        workers: Calls in progress at once (per process).
        processes: Client processes (through Redis when more than one).
        redis_outage_at: Seconds from the start to killing redis-server (--redis).
        redis_outage: Seconds redis-server stays down.
    """

    calls: int = 50_000
    duration: float = 600.0
    window_at: float = 300.0
    window: float = 60.0
    warmup: float = 60.0
    workers: int = 32
    processes: int = 1
    redis_outage_at: float = 180.0
    redis_outage: float = 20.0


FULL = Plan()
QUICK = Plan(calls=3_000, duration=60.0, window_at=25.0, window=10.0, warmup=10.0)
DATA = DataSettings(courses=20, students_per_course=60, assignments_per_course=5, seed=1)
POLICY = RetryPolicy(attempt_timeout=5.0)


def simulator_settings() -> SimulatorSettings:
    """The install: fast cheap routes, Canvas's bucket, and the fault mix."""
    faults = FaultSettings(
        rates={
            Fault.MAINTENANCE: 0.02,
            Fault.BAD_GATEWAY: 0.005,
            Fault.HANG: 0.005,
            Fault.DROP_AFTER_WRITE: 0.01,
        },
        hang_seconds=8.0,
        seed=19,
    )
    route = RouteProfile(Distribution.constant(0.005), cost_rate=2.0, base_cost=0.005)
    return SimulatorSettings(data=DATA, faults=faults, default_route=route, token=TOKEN)


# ----------------------------------------------------------------- the calls


def workload(plan: Plan, seed: int = 19) -> list[dict[str, Any]]:
    """The calls: 40% paginated listings, 40% grade PUTs, 20% enrollment POSTs."""
    data = generate(DATA)
    rng = random.Random(seed)
    course_ids = sorted(data.courses)
    users = sorted(data.users)
    fresh = ((c, u, k) for k in ENROLLMENT_TYPES for u in users for c in course_ids)
    calls: list[dict[str, Any]] = []
    for _ in range(plan.calls):
        draw = rng.random()
        course = rng.choice(course_ids)
        points = data.assignments[course][0]  # assignment 1 of a course is graded by points
        if draw < 0.4:
            assignment = rng.choice(data.assignments[course])["id"]
            path = f"courses/{course}/assignments/{assignment}/submissions"
            calls.append({"kind": "list", "method": "GET", "path": path})
        elif draw < 0.8:
            student = rng.choice(list(data.submissions[(course, points["id"])]))
            path = f"courses/{course}/assignments/{points['id']}/submissions/{student}"
            grade = {"submission": {"posted_grade": str(rng.randint(0, 10))}}
            calls.append({"kind": "grade", "method": "PUT", "path": path, "data": grade})
        else:
            course, user, kind = next(fresh)
            enrollment = {"user_id": user, "type": kind, "enrollment_state": "active"}
            path = f"courses/{course}/enrollments"
            calls.append(
                {
                    "kind": "enroll",
                    "method": "POST",
                    "path": path,
                    "data": {"enrollment": enrollment},
                }
            )
    return calls


async def one_call(canvas: CanvasClient, call: dict[str, Any]) -> None:
    if call["kind"] == "list":
        async for _ in canvas.paginate(call["path"], params={"per_page": 20}):
            pass
    else:
        await canvas.request(call["method"], call["path"], data=call["data"])


# ------------------------------------------------------------------ sampling


class Events(logging.Handler):
    """Keeps the breaker's and the throttle's events (our records carry the event dict)."""

    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event_dict", {})
        if str(event.get("event", "")).startswith(("canvas.circuit", "canvas.throttle_")):
            moment = round(time.monotonic() - self.started, 1)
            self.events.append(
                {"t": moment, **{k: v for k, v in event.items() if k != "exception"}}
            )


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _fds() -> tuple[int, int]:
    """Open file descriptors, and how many of them are sockets."""
    names = os.listdir("/proc/self/fd")
    sockets = 0
    for name in names:
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/self/fd/{name}").startswith("socket:")
    return len(names), sockets


async def sample(canvas: CanvasClient, started: float, done: list[int], out: list[dict[str, Any]]):
    """Every second: RSS, fds, sockets, tasks, calls done, breaker state."""
    while True:
        fds, sockets = _fds()
        estimate = canvas.breaker.estimate() if canvas.breaker else None
        throttle = canvas.throttle.estimate() if canvas.throttle else None
        out.append(
            {
                "t": round(time.monotonic() - started, 2),
                "rss_mb": round(_rss_mb(), 2),
                "fds": fds,
                "sockets": sockets,
                "tasks": len(asyncio.all_tasks()),
                "done": done[0],
                "breaker": STATE_VALUE[estimate.state] if estimate else 0,
                "in_flight": throttle.in_flight if throttle else 0,
                "in_flight_limit": throttle.in_flight_limit if throttle else 0,
                "paused_s": throttle.paused_for_s if throttle else 0.0,
            }
        )
        await asyncio.sleep(1.0)


# ---------------------------------------------------------------- one client


async def run_client(
    base: str, plan: Plan, calls: list[dict[str, Any]], *, redis_url: str | None, window: bool
) -> dict[str, Any]:
    """Run *calls* with *plan.workers* workers, paced over the plan's duration."""
    started = time.monotonic()
    handler = Events(started)
    logger = logging.getLogger("resilient_canvas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outcomes: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    unclassified: list[str] = []
    late: list[float] = []
    refused: list[dict[str, Any]] = []  # every CircuitOpen, to see why it came
    done = [0]
    samples: list[dict[str, Any]] = []
    interval = plan.duration / len(calls)
    deadline = float(POLICY.deadline)  # type: ignore[arg-type]
    queue = iter(enumerate(calls))

    async with CanvasClient(base, TOKEN, policy=POLICY, redis_url=redis_url) as canvas:

        async def worker() -> None:
            for index, call in queue:
                delay = started + index * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                began = time.monotonic()
                try:
                    await one_call(canvas, call)
                    outcomes["ok"] += 1
                except CanvasException as error:
                    name = f"{call['kind']}:{type(error).__name__}"
                    outcomes[name] += 1
                    retryable = POLICY.allows(error, method=call["method"], idempotent=None)
                    if retryable or isinstance(error, CircuitOpen):
                        lost[name] += 1
                    if isinstance(error, CircuitOpen):
                        refused.append(
                            {
                                "t": round(time.monotonic() - started, 1),
                                "began": round(began - started, 1),
                                "kind": call["kind"],
                                "down_for": error.down_for,
                                "next_probe_in": error.next_probe_in,
                                "breaker": repr(canvas.breaker),
                            }
                        )
                except Exception as error:
                    unclassified.append(repr(error)[:300])
                took = time.monotonic() - began
                if took > deadline + 1.0:
                    late.append(round(took, 1))
                done[0] += 1

        async def maintenance() -> None:
            await asyncio.sleep(plan.window_at)
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{base}/_simulator/maintenance?seconds={plan.window}") as response,
            ):
                response.raise_for_status()

        sampler = asyncio.create_task(sample(canvas, started, done, samples))
        trigger = asyncio.create_task(maintenance()) if window else None
        await asyncio.gather(*(worker() for _ in range(plan.workers)))
        sampler.cancel()
        if trigger is not None:
            trigger.cancel()
        estimate = canvas.breaker.estimate() if canvas.breaker else None
    logger.removeHandler(handler)
    return {
        "calls": len(calls),
        "elapsed_s": round(time.monotonic() - started, 1),
        "outcomes": dict(outcomes),
        "lost": dict(lost),
        "unclassified": unclassified[:20],
        "unclassified_count": len(unclassified),
        "late": late[:20],
        "circuit_open": refused[:50],
        "breaker_opened": estimate.opened if estimate else 0,
        "breaker_final": estimate.state.value if estimate else None,
        "breaker_kind": type(canvas.breaker).__name__,
        "events": handler.events,
        "samples": samples,
    }


# ------------------------------------------------------------------- verdicts


def _at(samples: list[dict[str, Any]], moment: float) -> dict[str, Any]:
    return min(samples, key=lambda s: abs(s["t"] - moment))


def verdict(plan: Plan, client: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """The targets, measured."""
    samples = client["samples"]
    warm, last = _at(samples, plan.warmup), samples[-1]
    after = [s for s in samples if s["t"] >= plan.warmup]
    # The end of the steady state: the workers still busy (they finish in the last seconds).
    end = _at(samples, plan.duration - 5.0)
    # Flat: the median over the last stretch of steady state against the one after
    # warm-up (the pool opens and closes connections, so single samples jitter).
    span = plan.warmup
    first = [s for s in samples if plan.warmup <= s["t"] < plan.warmup + span]
    final = [s for s in samples if plan.duration - 5.0 - span <= s["t"] < plan.duration - 5.0]

    def drift(key: str) -> float:
        return statistics.median(s[key] for s in final) - statistics.median(s[key] for s in first)

    window_end = plan.window_at + plan.window
    opened_in_window = any(
        s["breaker"] > 0 for s in samples if plan.window_at <= s["t"] <= window_end + 10
    )
    numbers = {
        "lost_calls": sum(client["lost"].values()) + len(client["late"]),
        "duplicate_writes": stats["duplicate_writes"],
        "unclassified": client["unclassified_count"],
        "rss_growth_mb": round(last["rss_mb"] - warm["rss_mb"], 2),
        "rss_peak_growth_mb": round(max(s["rss_mb"] for s in after) - warm["rss_mb"], 2),
        "fds_drift": drift("fds"),
        "tasks_drift": drift("tasks"),
        "sockets_drift": drift("sockets"),
        "fds_warm_end": [warm["fds"], end["fds"]],
        "tasks_warm_end": [warm["tasks"], end["tasks"]],
        "sockets_warm_end": [warm["sockets"], end["sockets"]],
        "fds_max_after_warmup": max(s["fds"] for s in after),
        "tasks_max_after_warmup": max(s["tasks"] for s in after),
        "breaker_opened_in_window": opened_in_window,
        "breaker_closed_at_end": client["breaker_final"] == "closed",
        "breaker_kind": client.get("breaker_kind"),
        # Openings this process decided (a shared circuit: one process opens it for all).
        "breaker_openings_here": sum(
            event.get("event") == "canvas.circuit_opened" and event.get("reason") != "probe_failed"
            for event in client["events"]
        ),
    }
    numbers["targets_met"] = (
        numbers["lost_calls"] == 0
        and numbers["duplicate_writes"] == 0
        and numbers["unclassified"] == 0
        and numbers["rss_growth_mb"] < 20
        and numbers["fds_drift"] <= 2
        and numbers["tasks_drift"] <= 2
        and opened_in_window
        and numbers["breaker_closed_at_end"]
    )
    return numbers


def plot(plan: Plan, samples: list[dict[str, Any]], path: Path) -> None:
    """Four panels over time, the maintenance window and open-circuit spans shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    rate = [0.0] + [
        (b["done"] - a["done"]) / max(1e-9, b["t"] - a["t"]) for a, b in itertools.pairwise(samples)
    ]
    fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
    panels = [
        ("RSS (MB)", [("RSS", [s["rss_mb"] for s in samples])]),
        (
            "descriptors",
            [
                ("open fds", [s["fds"] for s in samples]),
                ("sockets", [s["sockets"] for s in samples]),
            ],
        ),
        ("asyncio tasks", [("tasks", [s["tasks"] for s in samples])]),
        ("calls done / s", [("throughput", rate)]),
    ]
    for axis, (label, series) in zip(axes, panels, strict=True):
        for name, values in series:
            axis.plot(t, values, label=name, linewidth=0.9)
        axis.set_ylabel(label)
        axis.axvspan(plan.window_at, plan.window_at + plan.window, color="red", alpha=0.12)
        for a, b in itertools.pairwise(samples):
            if a["breaker"] > 0:
                axis.axvspan(a["t"], b["t"], color="orange", alpha=0.25, linewidth=0)
        if len(series) > 1:
            axis.legend(loc="upper right")
    axes[0].set_title(
        "Soak: 50,000 calls through faults; red: maintenance window, orange: circuit not closed"
    )
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# --------------------------------------------------------------------- Redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = _start_redis(port)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "redis-server"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.1):
            return process
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def run_redis(plan: Plan, calls: list[dict[str, Any]], base: str) -> list[dict[str, Any]]:
    """4 client processes through one Redis; redis-server killed for a while mid-run."""
    port = _free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder, redis_server(port) as first:
        children = []
        for number in range(plan.processes):
            share = calls[number :: plan.processes]
            spec = {
                "base": base,
                "redis_url": redis_url,
                "plan": asdict(plan),
                "calls": share,
                "window": number == 0,
                "out": f"{folder}/client{number}.json",
            }
            spec_path = Path(folder) / f"spec{number}.json"
            spec_path.write_text(json.dumps(spec))
            children.append(subprocess.Popen([sys.executable, __file__, "--child", str(spec_path)]))
        time.sleep(plan.redis_outage_at)
        first.kill()
        first.wait()
        print(f"redis-server killed at {plan.redis_outage_at:.0f} s", flush=True)
        time.sleep(plan.redis_outage)
        second = _start_redis(port)
        print(f"redis-server back after {plan.redis_outage:.0f} s", flush=True)
        try:
            for child in children:
                child.wait()
        finally:
            second.kill()
            second.wait()
        for number in range(plan.processes):
            results.append(json.loads(Path(f"{folder}/client{number}.json").read_text()))
    return results


def child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    plan = Plan(**spec["plan"])
    result = asyncio.run(
        run_client(
            spec["base"], plan, spec["calls"], redis_url=spec["redis_url"], window=spec["window"]
        )
    )
    Path(spec["out"]).write_text(json.dumps(result))


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~60 s, 3,000 calls")
    parser.add_argument("--redis", action="store_true", help="4 processes through Redis")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    plan = QUICK if args.quick else FULL
    if args.redis:
        plan = replace(
            plan,
            processes=4,
            workers=plan.workers // 4,
            redis_outage_at=plan.duration * 0.3,
            redis_outage=20.0 if not args.quick else 5.0,
        )
    calls = workload(plan)
    name = "soak" + ("_redis" if args.redis else "") + ("_quick" if args.quick else "")
    print(f"{name}: {plan.calls} calls over {plan.duration:.0f} s", flush=True)
    clear_breakers()
    with simulator_process(simulator_settings()) as base:
        if args.redis:
            clients = run_redis(plan, calls, base)
        else:
            clients = [asyncio.run(run_client(base, plan, calls, redis_url=None, window=True))]
        stats = asyncio.run(control(base, "stats"))
    verdicts = [verdict(plan, client, stats) for client in clients]
    outcomes: Counter[str] = Counter()
    for client in clients:
        outcomes.update(client["outcomes"])
    report = {
        "plan": asdict(plan),
        "elapsed_s": max(client["elapsed_s"] for client in clients),
        "outcomes": dict(outcomes.most_common()),
        "lost": [client["lost"] for client in clients],
        "unclassified": [client["unclassified"] for client in clients],
        "late": [client["late"] for client in clients],
        "circuit_open": [client["circuit_open"] for client in clients],
        "simulator": stats,
        "verdicts": verdicts,
        "events": [client["events"] for client in clients],
        "samples": clients[0]["samples"] if not args.quick else [],
        "samples_by_process": [client["samples"][::5] for client in clients[1:] if not args.quick],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    if not args.quick and not args.redis:
        plot(plan, clients[0]["samples"], RESULTS / "soak.png")
    print(json.dumps({k: report[k] for k in ("elapsed_s", "outcomes", "lost")}, indent=1))
    print(json.dumps(verdicts, indent=1))
    print(json.dumps(report["events"], indent=1)[:3000])


if __name__ == "__main__":
    main()
