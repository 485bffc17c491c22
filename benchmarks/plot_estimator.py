"""How fast the throttle's estimates converge from wrong priors: a figure for docs/throttle.md.

Runs the sans-IO bucket model against Canvas's own bucket in the test suite's
discrete-event world (tests/bucket_world.py) for three installs whose settings
are far from the priors (600 / 50 / 10), and plots each learnt parameter with
its +-2 sd band against the number of answers.

Run: ``python benchmarks/plot_estimator.py``; writes
``benchmarks/results/estimator_convergence.png`` and prints the answers each
estimate needed to come within 5% of the truth.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resilient_canvas._bucket_model import Observation, Permit  # noqa: E402
from resilient_canvas.testing import ThrottleSettings  # noqa: E402
from tests.bucket_world import World  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ROUTE = "GET /api/v1/courses/:id"
INSTALLS = {
    "up_front_cost 25 (prior 50)": ("up_front_cost", ThrottleSettings(up_front_cost=25.0), 25.0),
    "up_front_cost 120 (prior 50)": ("up_front_cost", ThrottleSettings(up_front_cost=120.0), 120.0),
    "outflow 3 /s (prior 10)": ("outflow", ThrottleSettings(outflow=3.0), 3.0),
    "hwm 700, hosted (prior 600)": (
        "hwm",
        ThrottleSettings(hwm=700.0, maximum=900.0, throttled_status=429),
        700.0,
    ),
}


def trace(settings: ThrottleSettings, parameter: str) -> list[tuple[int, float, float]]:
    """(answers, estimate, sd) after every answer of a busy 400-call run."""
    world = World(
        settings=settings,
        service=lambda rng: rng.uniform(0.15, 0.3),
        cost=lambda rng: 0.15,
    )
    points: list[tuple[int, float, float]] = []
    settle = world.model.settle

    def recording(permit: Permit, observation: Observation | None, now: float) -> None:
        settle(permit, observation, now)
        estimate = world.model.estimate(now)
        if parameter == "up_front_cost":
            value = world.model.up_front_for(ROUTE)
            sd = world.model.up_front_sd_for(ROUTE)
        else:
            value = getattr(estimate, parameter)
            sd = getattr(estimate, parameter + "_sd")
        points.append((len(points) + 1, value, sd))

    world.model.settle = recording  # type: ignore[method-assign]
    world.run(400)
    return points


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(INSTALLS), figsize=(4 * len(INSTALLS), 3.2))
    for axis, (title, (parameter, settings, truth)) in zip(axes, INSTALLS.items(), strict=True):
        points = trace(settings, parameter)
        answers = [p[0] for p in points]
        values = [p[1] for p in points]
        low = [p[1] - 2 * p[2] for p in points]
        high = [p[1] + 2 * p[2] for p in points]
        axis.fill_between(answers, low, high, alpha=0.2, label="+-2 sd")
        axis.plot(answers, values, label="estimate")
        axis.axhline(truth, color="black", linestyle="--", linewidth=1, label="truth")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("answers")
        axis.set_xlim(0, 400)
        within = next((n for n, v, _ in points if abs(v - truth) <= 0.05 * truth), None)
        print(f"{title}: within 5% after {within} answers; final {values[-1]:.2f}")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    figure.savefig(RESULTS / "estimator_convergence.png", dpi=110)


if __name__ == "__main__":
    main()
