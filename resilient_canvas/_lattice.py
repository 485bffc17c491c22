"""The reservation read off the steps between successive remaining values.

Canvas computes ``X-Rate-Limit-Remaining`` after settling the answered
request, so between two answers moments apart the remaining moves by

    r_b - r_a = -U * (change in requests at the server) + leak - cost_b

where ``leak`` is the outflow over the gap and ``cost_b`` the second answer's
own cost (both known). The change in requests is a small whole number we need
not know: the corrected steps lie on a lattice whose spacing is the
reservation ``U``. This module finds that spacing as an approximate greatest
common divisor of recent steps, which makes it immune to the one thing the
filter cannot know well on a real network: how many of our requests were at
the server when an answer was computed (requests in transit either way,
answers still on the wire).

Any divisor of ``U`` fits the lattice too, so the estimate is the *largest*
spacing that fits nearly every step; it can never exceed the smallest
significant step, which is one reservation whenever one request ended or
started between two answers. When steps do not fit any spacing (several
routes reserving different amounts, or costs as large as a reservation),
there is no estimate and the filter learns alone.

Sans-IO: plain arithmetic on numbers handed in.
"""

from __future__ import annotations

import collections
import math

#: Steps kept, and the least number of significant ones before any estimate.
_STEPS_KEPT = 48
_MIN_STEPS = 6
#: Only answers this close in time make a step (the leak's error grows with the gap).
_MAX_GAP_S = 0.5
#: Fraction of significant steps a spacing must fit.
_FIT_SHARE = 0.85
#: How far a step may sit from the lattice: absolute units plus a fraction of the spacing.
_TOLERANCE_UNITS = 1.5
_TOLERANCE_SHARE = 0.06
#: A spacing must be this many tolerances wide: on a finer lattice, steps of
#: several unrelated reservations fit by chance (one in three at this width).
_MIN_SPACING_TOLERANCES = 6.0
#: Smallest steps tried as (multiples of) the spacing, and the divisors tried.
_CANDIDATE_STEPS = 6
_DIVISORS = (1, 2, 3, 4)


def _tolerance(spacing: float) -> float:
    return _TOLERANCE_UNITS + _TOLERANCE_SHARE * spacing


class ReservationLattice:
    """Learns one route's reservation from the spacing of remaining-value steps."""

    def __init__(self) -> None:
        self._steps: collections.deque[float] = collections.deque(maxlen=_STEPS_KEPT)
        self._last: tuple[float, float, int] | None = None
        self._fresh = 0

    @property
    def fresh_steps(self) -> int:
        """Steps added since the estimate was last taken (see :meth:`take`)."""
        return self._fresh

    def forget(self) -> None:
        """Drop every step (the route mix changed: old steps mix reservations)."""
        self._steps.clear()
        self._last = None
        self._fresh = 0

    def observe(
        self,
        remaining: float,
        answered_at: float,
        own_cost: float,
        group: int,
        leak: float,
        leaking: bool,
    ) -> None:
        """Add the step from the previous answer of the same *group* to this one.

        Args:
            remaining: This answer's ``X-Rate-Limit-Remaining``.
            answered_at: When Canvas computed it (our clock).
            own_cost: This answer's ``X-Request-Cost`` (0 when throttled).
            group: Which reservation the requests in flight share; a step
                between answers of different groups is no step.
            leak: Units per second leaking while the count is above zero.
            leaking: Whether the count stayed above zero between the answers.
        """
        last, self._last = self._last, (remaining, answered_at, group)
        if last is None:
            return
        before, before_at, before_group = last
        gap = answered_at - before_at
        if before_group != group or not 0.0 <= gap <= _MAX_GAP_S or not leaking:
            return
        step = remaining - before - leak * gap + own_cost
        if math.isfinite(step):
            self._steps.append(step)
            self._fresh += 1

    def spacing(self, noise_floor: float) -> tuple[float, float] | None:
        """The lattice spacing and its variance, or None when the steps fit none.

        Args:
            noise_floor: Steps smaller than this are taken as no change in the
                requests at the server (costs of others, timing).
        """
        significant = sorted(abs(step) for step in self._steps if abs(step) > noise_floor)
        if len(significant) < _MIN_STEPS:
            return None
        best: tuple[float, float] | None = None
        for step in significant[:_CANDIDATE_STEPS]:
            for divisor in _DIVISORS:
                candidate = step / divisor
                if candidate <= noise_floor or (best is not None and candidate <= best[0]):
                    break
                fitted = _fit(candidate, significant)
                if fitted is not None:
                    best = fitted
        return best

    def take(self, noise_floor: float) -> tuple[float, float] | None:
        """Like :meth:`spacing`, and mark the steps as used (each feeds the filter once)."""
        estimate = self.spacing(noise_floor)
        if estimate is not None:
            self._fresh = 0
        return estimate


def _fit(candidate: float, steps: list[float]) -> tuple[float, float] | None:
    """Refine *candidate* by least squares over the steps it fits, if it fits enough."""
    tolerance = _tolerance(candidate)
    if candidate < _MIN_SPACING_TOLERANCES * tolerance:
        return None
    multiples: list[tuple[int, float]] = []
    for step in steps:
        multiple = round(step / candidate)
        if multiple > 0 and abs(step - multiple * candidate) <= tolerance:
            multiples.append((multiple, step))
    if len(multiples) < max(_MIN_STEPS, _FIT_SHARE * len(steps)):
        return None
    weight = sum(m * m for m, _ in multiples)
    spacing = sum(m * step for m, step in multiples) / weight
    residual = sum((step - m * spacing) ** 2 for m, step in multiples) / max(1, len(multiples) - 1)
    # The least-squares variance of the spacing, never below one unit squared:
    # steps also carry others' costs, which no residual shows.
    return spacing, max(1.0, residual / weight)
