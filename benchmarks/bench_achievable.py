"""How close to the bucket's bound can any client get? An informed client, per grid cell.

``bench_installs.py`` divides each strategy's wall time by the leaky-bucket
lower bound, which is **clairvoyant**: it starts every call the instant the
bucket admits it, knowing when each call in flight will end. A real client
learns that a call ended only from its answer, one network transit after the
end, and its next request needs another transit to arrive. Where service
times vary and the network is slow, no client can keep the slots full without
being throttled.

This benchmark measures how much of that gap is physics rather than our
model. It plays each single-route cell with an **informed client**, given
everything a real one must learn or can never know:

- the install: how many requests fit at once, ``K`` (hwm over up_front_cost);
- the network: each transit is exactly the cell's mean one-way delay;
- the service-time distribution, exactly; and from its answers, which of its
  requests ended and when, one transit late (what a real answer tells).

What it does not know is how long each call in flight will still take. It
starts a request when the chance that all ``K`` slots are still busy when the
request arrives is at most ``risk`` (the Poisson-binomial tail of the calls in
flight, each still running with its conditional survival probability); a
request arriving at ``K`` busy slots is throttled, answered one transit later
and retried. The risk is swept, and the fastest run with at most 0.5%
throttled answers (issue 13's limit) is reported, as a ratio to the same
clairvoyant bound over the same draws.

Simplifications, each in the informed client's favour or neutral: no costs
and no leak (where the reservations bind, load < 1, the count is the
reservations; where the outflow binds too, load >= 1, the figure is the
reservations' share of the gap only, and marked so), a network without
jitter, and the slot model's own clairvoyant bound (list scheduling on
``K`` slots plus one round trip), not the replay of Canvas's bucket. The
threshold policy is greedy, so this is what an informed client reaches, not
a proof of the optimum; where it stays far above 1.10x at 0.5% throttled,
the 1.10x target asks for more than the information the network gives.

Run: ``python benchmarks/bench_achievable.py [--cell NAME ...] [--seeds N]``.
Writes ``benchmarks/results/achievable.json``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _harness import Workload, save_results
from bench_installs import _cells, describe

from resilient_canvas.testing import Distribution

#: Issue 13's limit on throttled answers.
THROTTLED_LIMIT = 0.005
RISKS = (0.0003, 0.001, 0.003, 0.01, 0.02, 0.05, 0.1)
#: How often the informed client looks again between events (chances change with time).
TICK_S = 0.002


@dataclass(frozen=True)
class Outcome:
    """One run: wall time over the clairvoyant bound, and the share of throttled answers."""

    ratio: float
    throttled: float


def survival(service: Distribution) -> Callable[[float], float]:
    """P(service time > x) for the simulator's three shapes."""
    if service.kind == "constant" or service.mean == 0:
        return lambda x: 1.0 if x < service.mean else 0.0
    if service.kind == "uniform":
        low, high = service.mean * (1 - service.spread), service.mean * (1 + service.spread)
        return lambda x: 1.0 if x <= low else 0.0 if x >= high else (high - x) / (high - low)
    sigma = service.spread
    mu = math.log(service.mean) - sigma * sigma / 2
    root2 = sigma * math.sqrt(2)
    return lambda x: 1.0 if x <= 0 else 0.5 * math.erfc((math.log(x) - mu) / root2)


def slots(workload: Workload) -> int:
    """How many requests Canvas admits from an empty bucket: ``count + U < hwm``."""
    hwm, reserve = workload.throttle.hwm, workload.throttle.up_front_cost
    return max(1, math.ceil(hwm / reserve - 1))


def all_busy(chances: list[float], k: int) -> float:
    """P(at least *k* of independent events with these chances happen)."""
    # dist[j]: P(exactly j) for j < k; dist[k]: P(k or more).
    dist = [1.0] + [0.0] * k
    for p in chances:
        q = 1.0 - p
        dist[k] += dist[k - 1] * p
        for j in range(k - 1, 0, -1):
            dist[j] = dist[j] * q + dist[j - 1] * p
        dist[0] *= q
    return dist[k]


def clairvoyant(draws: list[float], k: int, delay: float) -> float:
    """Every call started the moment a slot frees, in order, plus one round trip."""
    ends = [0.0] * k
    for seconds in draws:
        start = heapq.heappop(ends)
        heapq.heappush(ends, start + seconds)
    return max(ends) + 2 * delay


def informed(
    draws: list[float], k: int, delay: float, alive: Callable[[float], float], risk: float
) -> Outcome:
    """Play the job with the informed client at *risk*; see the module docstring."""
    draw = iter(draws)
    now, next_tick = 0.0, 0.0
    events: list[tuple[float, int, int]] = []  # (time, kind, request id)
    # At equal times a call ends before one arrives (its slot is free for it).
    END, ARRIVE, REFUSED, ANSWERED = 0, 1, 2, 3
    sent: dict[int, float] = {}  # in flight, by send time
    busy = 0
    waiting, done, throttled, requests = len(draws), 0, 0, 0

    def still_running(sent_at: float) -> float:
        # Arrives at sent_at + d; looked at from a request arriving at now + d.
        # No answer yet: it had not ended by now - d (if it had arrived by then).
        ran = now - sent_at
        seen = now - 2 * delay - sent_at
        if ran <= 0:
            return 1.0
        known = alive(seen) if seen > 0 else 1.0
        return alive(ran) / known if known > 0 else 0.0

    while done < len(draws):
        while waiting and all_busy([still_running(s) for s in sent.values()], k) <= risk:
            sent[requests] = now
            heapq.heappush(events, (now + delay, ARRIVE, requests))
            requests += 1
            waiting -= 1
        if not events or next_tick < events[0][0]:
            now, next_tick = next_tick, next_tick + TICK_S
            continue
        now, kind, request = heapq.heappop(events)
        if kind == ARRIVE:
            if busy >= k:
                throttled += 1
                heapq.heappush(events, (now + delay, REFUSED, request))
            else:
                busy += 1
                heapq.heappush(events, (now + next(draw), END, request))
        elif kind == END:
            busy -= 1
            heapq.heappush(events, (now + delay, ANSWERED, request))
        else:
            del sent[request]
            if kind == REFUSED:
                waiting += 1
            else:
                done += 1
    return Outcome(now / clairvoyant(draws, k, delay), throttled / requests)


def cell_report(workload: Workload, seeds: int) -> dict[str, Any]:
    service = workload.profile.service
    k, delay = slots(workload), workload.latency.mean
    alive = survival(service)
    rows = []
    for risk in RISKS:
        runs = []
        for seed in range(seeds):
            rng = random.Random(f"achievable:{workload.name}:{seed}")
            draws = [service.sample(rng) for _ in range(workload.calls)]
            runs.append(informed(draws, k, delay, alive, risk))
        rows.append(
            {
                "risk": risk,
                "ratio": round(statistics.fmean(r.ratio for r in runs), 3),
                "throttled_pct": round(100 * statistics.fmean(r.throttled for r in runs), 2),
            }
        )
    within = [row for row in rows if row["throttled_pct"] <= 100 * THROTTLED_LIMIT]
    best = min(within, key=lambda row: row["ratio"]) if within else None
    return {
        "slots": k,
        "one_way_s": delay,
        "service": f"{service.kind} {service.mean:g} s"
        + (f" ({service.spread:g})" if service.kind != "constant" else ""),
        "calls": workload.calls,
        "best_within_limit": best,
        "sweep": rows,
    }


def main() -> None:
    cells = {workload.name: workload for workload in _cells() if not workload.mix}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", choices=list(cells), action="append")
    parser.add_argument("--seeds", type=int, default=3, help="draws per risk level")
    args = parser.parse_args()
    report: dict[str, Any] = {"throttled_limit_pct": 100 * THROTTLED_LIMIT, "cells": {}}
    print("| install | slots | one-way | service | informed client at <= 0.5% throttled |")
    print("|---|---|---|---|---|")
    for name in args.cell or list(cells):
        cell = cell_report(cells[name], args.seeds)
        # Above 1 the outflow limits the job too, which the slot model leaves
        # out: its figure is then the reservations' share of the gap only.
        cell["load"] = describe(cells[name])["load"]
        report["cells"][name] = cell
        best = cell["best_within_limit"]
        shown = f"{best['ratio']:.2f}x ({best['throttled_pct']:g}%)" if best else "none within"
        if cell["load"] >= 1:
            shown += f", reservations alone (load {cell['load']}: the outflow binds too)"
        print(
            f"| {name} | {cell['slots']} | {cell['one_way_s']:g} s | {cell['service']} | {shown} |",
            flush=True,
        )
    save_results("achievable.json", report, partial=bool(args.cell))


if __name__ == "__main__":
    main()
