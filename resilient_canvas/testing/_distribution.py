"""Random quantities of the simulated Canvas: service times, costs, network latency.

Three shapes, each set by its **mean** so that a benchmark can compare
"same mean, heavier tail" directly:

- ``constant``: always the mean;
- ``uniform``: the mean times ``1 ± spread`` (``spread`` in ``[0, 1)``);
- ``lognormal``: heavy right tail; ``spread`` is sigma, the standard deviation
  of the logarithm. Its median is ``mean * exp(-sigma**2 / 2)``: at sigma 1.2
  half the draws are below 49% of the mean and 1% above 7.9x the mean.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

DistributionKind = Literal["constant", "uniform", "lognormal"]


@dataclass(frozen=True, slots=True)
class Distribution:
    """A non-negative random quantity with a given mean.

    Attributes:
        kind: ``constant``, ``uniform`` or ``lognormal``.
        mean: The expected value (seconds, cost units...).
        spread: Uniform: the fraction either side of the mean, in ``[0, 1)``.
            Lognormal: sigma of the logarithm, positive. Unused for constant.
    """

    kind: DistributionKind = "constant"
    mean: float = 0.0
    spread: float = 0.0

    def __post_init__(self) -> None:
        # A negative or non-finite mean would make negative service times or costs.
        if not (math.isfinite(self.mean) and self.mean >= 0):
            raise ValueError(f"mean must be finite and not negative, not {self.mean}.")
        if self.kind == "uniform" and not 0 <= self.spread < 1:
            raise ValueError(f"A uniform spread must be in [0, 1), not {self.spread}.")
        if self.kind == "lognormal" and not (math.isfinite(self.spread) and self.spread > 0):
            raise ValueError(f"A lognormal sigma must be positive, not {self.spread}.")
        if self.kind not in ("constant", "uniform", "lognormal"):
            raise ValueError(f"Unknown distribution kind {self.kind!r}.")

    @classmethod
    def constant(cls, mean: float) -> Distribution:
        """Always *mean*."""
        return cls("constant", mean)

    @classmethod
    def uniform(cls, mean: float, spread: float) -> Distribution:
        """Uniform on ``mean * [1 - spread, 1 + spread]``."""
        return cls("uniform", mean, spread)

    @classmethod
    def lognormal(cls, mean: float, sigma: float) -> Distribution:
        """Lognormal with this *mean* and log-standard-deviation *sigma* (heavy right tail)."""
        return cls("lognormal", mean, sigma)

    @property
    def median(self) -> float:
        """The median: the mean except for the lognormal, whose median is lower."""
        if self.kind == "lognormal":
            return self.mean * math.exp(-(self.spread**2) / 2)
        return self.mean

    def sample(self, rng: random.Random) -> float:
        """Draw one value from *rng* (a constant draws nothing, keeping streams aligned)."""
        if self.kind == "constant" or self.mean == 0:
            return self.mean
        if self.kind == "uniform":
            return self.mean * (1 + rng.uniform(-self.spread, self.spread))
        # mu chosen so that E[exp(N(mu, sigma))] = exp(mu + sigma^2 / 2) = mean.
        return rng.lognormvariate(math.log(self.mean) - self.spread**2 / 2, self.spread)
