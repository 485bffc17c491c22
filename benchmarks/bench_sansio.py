"""The install grid without sockets: the throttle model alone, many seeds in seconds.

``bench_installs.py`` runs the real client against the real simulator, one
seed per cell, about ten minutes for the grid, on a machine whose load moves
the figures by several percent. To judge a change to the model
(``_bucket_model.py``) this replays the same cells in the discrete-event
world of the sans-IO tests (``tests/bucket_world.py``: Canvas's own
``LeakyBucket``, a network, the ``BucketModel`` under test, virtual time):
the same install settings, the same service-time and tied-cost
distributions (``RouteProfile.sample``), transits drawn from the cell's
latency, all calls handed over at once. Reported per cell, over several
seeds: the mean ratio of the (virtual) wall time to the leaky-bucket bound of
the same draws, the mean share of throttled answers, and the worst seed's.

What it leaves out, so its figures are not the grid's: no event loop (no
late sends, no answers read in bursts), no HTTP, and no mixed-route cell
(the world serves one route). Use it to compare two versions of the model
on the same seeds; confirm what matters on the real grid.

Run: ``python benchmarks/bench_sansio.py [--seeds N] [--cell NAME ...]``
(the whole grid at 10 seeds: about 30 s). Writes
``benchmarks/results/sansio.json`` for a full run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from _harness import Workload, save_results
from bench_installs import _cells

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilient_canvas.testing import RouteProfile  # noqa: E402
from resilient_canvas.testing._bound import CallShape, schedule_bound  # noqa: E402
from tests.bucket_world import World  # noqa: E402


class _Draws:
    """Service time then its tied cost, as the world asks for them (one profile draw)."""

    def __init__(self, profile: RouteProfile) -> None:
        self.profile = profile
        self.cost = 0.0

    def service(self, rng: random.Random) -> float:
        seconds, self.cost = self.profile.sample(rng)
        return seconds

    def tied_cost(self, rng: random.Random) -> float:
        return self.cost


def one_run(workload: Workload, seed: int) -> tuple[float, float]:
    """(wall / bound, throttled share) of one seed."""
    draws = _Draws(workload.profile)
    latency = workload.latency
    world = World(
        settings=workload.throttle,
        service=draws.service,
        cost=draws.tied_cost,
        transit=latency.sample if latency.mean else None,
        seed=seed,
    )
    wall = world.run(workload.calls)
    rng = random.Random(seed)
    shapes = []
    for _ in range(workload.calls):
        seconds, cost = workload.profile.sample(rng)
        shapes.append(CallShape(seconds, cost))
    bound = schedule_bound(shapes, workload.throttle, latency=latency.mean or world.one_way)
    return wall / bound, world.throttled / world.sent


def main() -> None:
    cells = {workload.name: workload for workload in _cells() if not workload.mix}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--cell", choices=list(cells), action="append")
    args = parser.parse_args()
    report: dict[str, Any] = {"seeds": args.seeds, "cells": {}}
    print(f"| install | ratio (mean of {args.seeds} seeds) | throttled (mean) | worst seed |")
    print("|---|---|---|---|")
    for name in args.cell or list(cells):
        runs = [one_run(cells[name], seed) for seed in range(1, args.seeds + 1)]
        row = {
            "ratio": round(statistics.fmean(r for r, _ in runs), 3),
            "throttled_pct": round(100 * statistics.fmean(t for _, t in runs), 2),
            "worst_throttled_pct": round(100 * max(t for _, t in runs), 2),
        }
        report["cells"][name] = row
        print(
            f"| {name} | {row['ratio']:.3f}x | {row['throttled_pct']:g}% "
            f"| {row['worst_throttled_pct']:g}% |",
            flush=True,
        )
    save_results("sansio.json", report, partial=bool(args.cell))


if __name__ == "__main__":
    main()
