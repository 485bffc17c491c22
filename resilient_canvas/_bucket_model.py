"""What the client believes about one token's Canvas bucket, and who may start: sans-IO.

Canvas keeps, per access token, a count ``C`` that leaks at ``outflow`` units
per second while positive. A request arriving adds a reservation
``up_front_cost`` (``U``, settable per path) and is refused when
``C >= hwm``; when it ends, the reservation is replaced by its real cost.
Every answer carries ``X-Rate-Limit-Remaining = hwm - C``.

Write ``D = hwm - B`` for the *headroom*, where ``B`` is the count without
the reservations of requests at the server. Then every answer says::

    remaining = D - sum(U of the other requests at the server)        (1)

and between two answers the headroom moves as::

    D' = D + outflow * dt - (costs settled in between)                (2)

**Admission** extrapolates from the latest answer (the *anchor*, Canvas's own
figure) and corrects it only for what happened since: reservations of
requests sent since, and requests counted in it that have probably ended at
the server. A request starts while what is left exceeds a safety margin: the
larger of ``ThrottleConfig.margin`` and 2.5 standard deviations of the
model's own doubt about that figure. A fresh model is careful, a converged
one runs at the edge.

**Learning**: ``U`` per route comes from a small linear Kalman filter
(``_Filter``) over ``[D, U, dU_route...]`` with (2) as the prediction and (1)
as the measurement; which of our requests were at the server comes from our
send times and the one-way delay (the least ``(round trip - cost) / 2``:
Canvas's cost is CPU plus database seconds). Routes are hierarchical, so a
route gets its own value only when the evidence says it differs.
``outflow`` comes from pairs of answers given with the same requests at the
server (``_Outflow``: the reservations cancel out of (2)). ``hwm`` comes from
``remaining <= hwm`` and from answers after the count drained.

Nothing here touches the network or an event loop: the in-process throttle,
the Redis throttle and the blocking client drive the same object.
docs/throttle.md explains each part with figures.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from resilient_canvas._lattice import ReservationLattice

#: Requests sent before any answer (see ``BucketModel.headerless_limit``).
FIRST_BURST = 4
#: Prefixes of a route's reservation and its variance in ``BucketModel.parameters``.
ROUTE_UP_FRONT = "up_front_cost@"
ROUTE_UP_FRONT_VAR = "up_front_cost_var@"
#: Physical bounds of what a Canvas header may say (documented in docs/throttle.md).
#: Values outside are garbage (or another system's header) and are ignored.
MAX_HWM = 100_000.0
MAX_ABS_REMAINING = 100_000.0
MAX_REQUEST_COST = 10_000.0
#: Bounds the estimates are kept in, whatever the evidence.
MIN_UP_FRONT_COST = 0.5
MIN_OUTFLOW = 0.05
MAX_OUTFLOW = 10_000.0
_MIN_HWM = 2 * MIN_UP_FRONT_COST
_MAX_HEADROOM = 2 * MAX_HWM
#: Standard deviations of admission's uncertainty kept as headroom.
_SAFETY_Z = 2.5
#: An answer further than this many standard deviations from the prediction is an outlier.
_GATE_Z = 6.0
_GATE_Z_SQUARED = _GATE_Z**2
#: After this many outliers in a row on the same side, the model accepts it was wrong.
_OUTLIERS_TO_RESET = 4
#: Variance of a state the filter knows nothing about.
_UNKNOWN_VAR = 1e8
#: Noise of one remaining measurement, in units squared (rounding, timing).
_MEASUREMENT_VAR = 1.0
#: Doubt about how many of ours were at the server, in reservations squared.
_COUNT_DOUBT = 0.1
#: Drift of the headroom from activity we cannot see, in units squared per second.
_HEADROOM_DRIFT_PER_S = 2.0
#: Drift allowed to the learned parameters per answer (they may change, slowly).
_UP_FRONT_DRIFT = 0.01
_OUTFLOW_DRIFT_PER_S = 1e-4
#: Answers kept to pair with later ones for the outflow; shortest pair used.
_OUTFLOW_POINTS = 64
_MIN_OUTFLOW_SPAN_S = 0.5
#: Noise of one remaining in a pair, in units squared (timing, others' activity).
_PAIR_VAR = 4.0
#: Routes that get their own reservation estimate; the rest share the global one.
#: (Cost averages are kept for more routes: they are cheap.)
_MAX_ROUTES = 6
_MAX_COST_ROUTES = 512
#: Weight of a new sample in the per-route cost averages.
_COST_WEIGHT = 0.1
#: Round trips seen before a route's are trusted, and how many are kept.
_TRIP_SAMPLES = 10
_TRIP_KEPT = 64
#: Fewer round trips than this longer than a request's age tell nothing of its end.
_TAIL_SAMPLES = 5
#: Fewer than this share of a route's answers come back quicker than its
#: "low" round trip (the shortest a request may have ended at the server in).
_TRIP_LOW_SHARE = 0.02
#: A parameter moving more than this fraction since last logged is logged again.
_LOG_MOVE = 0.10
#: How far the true network delay may be below the least one measured, as a fraction.
_DELAY_DOUBT = 0.1
#: How late a busy event loop may send a request it was allowed to send, in seconds.
_SEND_LAG_S = 0.005
#: Where that allowance starts, and how far a throttle may push it: a fresh
#: model does not know how busy this process (or the server) is, and a
#: throttle shows the allowance was too short. It shrinks back with each
#: answer that was not throttled.
_FIRST_SEND_LAG_S = 0.05
_MAX_SEND_LAG_S = 0.2
_SEND_LAG_SHRINK = 0.97
#: Once the reservations are known to within a unit, one answer in this many teaches.
_CONVERGED_STRIDE = 4
#: Throttled round trips kept to measure the network's jitter, the least used,
#: and the quantile of them taken as a slow transit.
_NETWORK_KEPT = 32
_NETWORK_MIN = 3
_NETWORK_QUANTILE = 0.9
#: Fresh remaining steps between two measurements of a reservation by its lattice,
#: and the least step taken as a change in requests: units, plus typical costs
#: (others' costs settle between two answers unseen).
_LATTICE_EVERY = 6
_LATTICE_FLOOR_UNITS = 3.0
_LATTICE_FLOOR_COSTS = 3.0
#: Associating an answer with our recent requests (``_associate``): the
#: prediction's standard deviation must be within this fraction of a
#: reservation, and the answer within this fraction of one hypothesis.
_ASSOCIATE_SD_SHARE = 6.0
_ASSOCIATE_MISS_SHARE = 0.25
#: Bounds of the network's transits from associated answers needed before
#: they are used, and the quantile of the lower bounds taken as the least.
_TRANSIT_MIN = 8
_TRANSIT_LOW_QUANTILE = 0.1
#: The quantile of the lower bounds that the longest two transits are taken
#: to reach at least (see ``BucketModel._longest_transits``).
_TRANSIT_HIGH_QUANTILE = 0.9
#: Lower bounds of the transits kept over a longer span, and the rank among
#: them (from the highest) trusted as the least (wrong associations overstate).
_TRANSIT_LONG_KEPT = 256
_TRANSIT_TRUSTED_RANK = 3
#: Quantiles of a route's round trips at which a waiter looks whether our
#: requests have probably ended enough (``BucketModel._ended_enough_in``).
_ENDING_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)
_ENDING_LOOKS = 8
#: How long after another process's request was seen in flight its
#: reservation or cost may still move Canvas's figure (its round trip).
_OTHERS_FOR_S = 1.0
#: Answers after which a drained-bucket sample's reservations are taken as known.
_HWM_REWEIGHS = 200
#: Such throttles after which a drained-bucket sample of hwm is dropped.
_HWM_DOUBTS = 2
#: After the count drained, answers show hwm for this long (then the leak blurs it).
_DRAINED_FOR_S = 1.0
#: Clean answers between probes, at first; doubled by a throttled probe.
_PROBE_COOLDOWN = 50
#: Backoff of a throttle without quota headers, in seconds, doubling per event.
_HEADERLESS_PAUSE_S = 0.5
_HEADERLESS_PAUSE_CAP_S = 30.0

Emit = Callable[..., None]


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleConfig:
    """Priors and limits of the client-side throttle.

    Attributes:
        hwm: Prior for Canvas's high-water mark (open-source default 600).
        up_front_cost: Prior for the per-request reservation (default 50).
        outflow: Prior for the leak rate in units per second (default 10).
        margin: Least headroom kept unused, in cost units; more is kept while
            the model is unsure.
        max_in_flight: Hard cap on concurrent requests, whatever the model says.
        headerless_in_flight: Concurrency used until (or unless) quota headers appear.
        learn: Whether to learn hwm, up_front_cost and outflow from responses.
            Off, the priors are taken as exact; the headroom is still tracked.
        explore: Whether to probe one request beyond a cautious model's limit
            when there is work waiting, to learn faster.
        hwm_sd: How unsure the *hwm* prior is (standard deviation).
        up_front_cost_sd: How unsure the *up_front_cost* prior is.
        outflow_sd: How unsure the *outflow* prior is.
    """

    hwm: float = 600.0
    up_front_cost: float = 50.0
    outflow: float = 10.0
    margin: float = 5.0
    max_in_flight: int = 64
    headerless_in_flight: int = 8
    learn: bool = True
    explore: bool = True
    hwm_sd: float = 150.0
    up_front_cost_sd: float = 20.0
    outflow_sd: float = 4.0

    def __post_init__(self) -> None:
        # These feed divisions and comparisons; a zero or negative one would
        # either stall every request forever or disable pacing silently.
        priors = (self.hwm, self.up_front_cost, self.outflow)
        if not all(math.isfinite(value) and value > 0 for value in priors):
            raise ValueError("hwm, up_front_cost and outflow must be positive and finite.")
        if self.up_front_cost >= self.hwm:
            raise ValueError("up_front_cost must be below hwm, or no request would ever fit.")
        if self.hwm > MAX_HWM or self.outflow > MAX_OUTFLOW:
            raise ValueError(f"hwm must be at most {MAX_HWM:g}, outflow at most {MAX_OUTFLOW:g}.")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError("margin must be finite and not negative.")
        if self.max_in_flight < 1 or self.headerless_in_flight < 1:
            raise ValueError("max_in_flight and headerless_in_flight must be at least 1.")
        spreads = (self.hwm_sd, self.up_front_cost_sd, self.outflow_sd)
        if not all(math.isfinite(value) and value > 0 for value in spreads):
            raise ValueError("The prior standard deviations must be positive and finite.")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one response says about the bucket.

    Attributes:
        remaining: ``X-Rate-Limit-Remaining``, if present.
        cost: ``X-Request-Cost``, if present.
        throttled: Whether Canvas refused the request as throttled.
    """

    remaining: float | None = None
    cost: float | None = None
    throttled: bool = False


@dataclass(frozen=True, slots=True)
class ThrottleEstimate:
    """A snapshot of what the throttle believes, for logs, progress and tests.

    The ``*_sd`` fields are standard deviations: how sure the model is.
    """

    remaining: float
    in_flight: int
    in_flight_limit: int
    hwm: float
    up_front_cost: float
    outflow: float
    paused_for_s: float
    headers_seen: bool
    throttled_responses: int
    hwm_sd: float = 0.0
    up_front_cost_sd: float = 0.0
    outflow_sd: float = 0.0
    one_way_delay_s: float = 0.0
    route_up_front_costs: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Permit:
    """A granted place in flight; give it back with the throttle's ``release``."""

    route: str | None
    predicted_cost: float
    admitted_at: float
    released: bool = False
    #: The Redis lease behind this permit, for a shared throttle.
    lease: str | None = None
    #: Admitted beyond the model's limit to learn (see ``ThrottleConfig.explore``).
    probe: bool = False
    #: Filter slot of the route's reservation (-1: the global one only).
    slot: int = -1


class _RouteStats:
    """Moving averages of one route's costs, and its latest round trips."""

    __slots__ = (
        "cost",
        "cost_var",
        "excess",
        "excess_var",
        "floor",
        "order",
        "sorted",
        "throttled",
    )

    def __init__(self) -> None:
        self.cost: float | None = None
        self.cost_var = 0.0
        self.excess = 0.0
        self.excess_var = 0.0
        # The latest round trips, in arrival order and sorted (for quantiles).
        self.order: collections.deque[float] = collections.deque()
        self.sorted: list[float] = []
        # The remaining of the route's latest throttled answers: Canvas refused
        # because count + U >= hwm, so each says U >= remaining (roughly: one
        # overstates when another request settled in between). Their median
        # is a floor that one odd answer cannot move.
        self.throttled: collections.deque[float] = collections.deque(maxlen=5)
        self.floor = 0.0

    def add_cost(self, cost: float, up_front: float) -> None:
        # Exponentially weighted means and variances, the first sample starting the mean.
        mean = self.cost
        if mean is None:
            self.cost, self.cost_var = cost, 0.0
        else:
            delta = cost - mean
            self.cost = mean + _COST_WEIGHT * delta
            self.cost_var = (1 - _COST_WEIGHT) * (self.cost_var + _COST_WEIGHT * delta * delta)
        # What a request adds to the count beyond its reservation when it ends:
        # zero for most routes, real for heavy or heavy-tailed ones.
        excess = cost - up_front
        delta = (excess if excess > 0.0 else 0.0) - self.excess
        self.excess += _COST_WEIGHT * delta
        self.excess_var = (1 - _COST_WEIGHT) * (self.excess_var + _COST_WEIGHT * delta * delta)

    def add_throttled(self, remaining: float) -> None:
        self.throttled.append(remaining)
        if len(self.throttled) >= 3:
            self.floor = sorted(self.throttled)[len(self.throttled) // 2]

    def add_trip(self, seconds: float) -> None:
        order, kept = self.order, self.sorted
        order.append(seconds)
        bisect.insort(kept, seconds)
        if len(order) > _TRIP_KEPT:
            del kept[bisect.bisect_left(kept, order.popleft())]

    def ending_points(self, seen: float, window: float) -> list[float]:
        """Seconds from now at which :meth:`ended_between` of a request unanswered
        after *seen* seconds, for a window of *window*, next rises: the next
        round trip it passes and a few quantiles beyond (empty until enough
        were seen). A handful, not every step: a waiter wakes at one of them
        and looks again."""
        kept = self.sorted
        n = len(kept)
        if n < _TRIP_SAMPLES:
            return []
        first = bisect.bisect_right(kept, seen + window)
        if first >= n:
            return []
        picks = {first, n - 1}
        for share in _ENDING_SHARES:
            index = int(share * (n - 1))
            if index > first:
                picks.add(index)
        # Just past the sample, so that it is within the window then.
        return [kept[i] - window - seen + 1e-6 for i in picks]

    def trip_low(self) -> float:
        """A round trip few answered requests of the route beat (0 until enough were seen)."""
        kept = self.sorted
        if len(kept) < _TRIP_SAMPLES:
            return 0.0
        return kept[int(_TRIP_LOW_SHARE * len(kept))]

    def ended_between(self, seen: float, by: float) -> float:
        """Chance a request unanswered after *seen* seconds has a round trip of at most *by*.

        From the route's latest round trips (0 until enough were seen).
        """
        kept = self.sorted
        if len(kept) < _TRIP_SAMPLES or by <= seen:
            return 0.0
        n = len(kept)
        alive = n - bisect.bisect_right(kept, seen if seen > 0.0 else 0.0)
        if alive < _TAIL_SAMPLES:
            # Older than all but a few seen: a straggler, whose end those few
            # cannot tell (one of them, within the window, would say surely).
            return 0.0
        ended = bisect.bisect_right(kept, by) - (n - alive)
        return max(0.0, ended / alive)


class _Outflow:
    """The leak rate, from pairs of answers given with the same requests of ours at Canvas.

    Between two such answers the reservations cancel out, so eq. (2) reads
    ``remaining' - remaining = outflow * dt - (costs settled in between)``,
    whatever the reservations are: the rate is measured without trusting
    any other estimate. Pairs where the count may have reached zero (the
    leak stops there) are not used.
    """

    __slots__ = ("high", "mean", "outliers", "points", "surprises", "var")

    def __init__(self, prior: float, prior_var: float) -> None:
        self.mean = prior
        self.var = prior_var
        self.outliers = 0
        self.high = False
        #: The outlying samples in a row on one side, since the last one taken.
        self.surprises: list[tuple[float, float]] = []
        #: Per set of requests at the server: (remaining, answered at, costs settled so far).
        self.points: collections.OrderedDict[tuple[int, ...], tuple[float, float, float]] = (
            collections.OrderedDict()
        )

    def observe(
        self, key: tuple[int, ...], remaining: float, at: float, settled: float, noise: float
    ) -> None:
        before = self.points.pop(key, None)
        self.points[key] = (remaining, at, settled)
        if len(self.points) > _OUTFLOW_POINTS:
            self.points.popitem(last=False)
        if before is None:
            return
        remaining0, at0, settled0 = before
        span = at - at0
        if span < _MIN_OUTFLOW_SPAN_S:
            self.points[key] = before
            return
        sample = (remaining - remaining0 + settled - settled0) / span
        sample_var = 2 * noise / (span * span)
        if (sample - self.mean) ** 2 > _GATE_Z_SQUARED * (self.var + sample_var):
            # A pair we miscounted (or another client's burst): one is noise,
            # several in a row on one side mean the rate is elsewhere.
            same_side = (sample > self.mean) == self.high
            self.outliers = self.outliers + 1 if same_side else 1
            self.high = sample > self.mean
            if not same_side:
                self.surprises.clear()
            self.surprises.append((sample, sample_var))
            if self.outliers < _OUTLIERS_TO_RESET:
                return
            # Only if they agree with one another: miscounts come in runs too
            # (short pairs over a refund they missed read 105 to 624 units/s
            # for 5 on a heavy-tailed job, and their median was taken).
            middle = statistics.median(value for value, _ in self.surprises)
            if any(
                (value - middle) ** 2 > _GATE_Z_SQUARED * 2 * variance
                for value, variance in self.surprises
            ):
                self.outliers = 0
                self.surprises.clear()
                return
            sample = middle
            self.var += (sample - self.mean) ** 2
        self.outliers = 0
        self.surprises.clear()
        gain = self.var / (self.var + sample_var)
        self.mean = min(max(self.mean + gain * (sample - self.mean), MIN_OUTFLOW), MAX_OUTFLOW)
        self.var = max((1 - gain) * self.var, 1e-6) + _OUTFLOW_DRIFT_PER_S * span

    def forget(self) -> None:
        """The count may have hit zero: no pair spanning this moment is valid."""
        self.points.clear()


class _Filter:
    """A linear Kalman filter over ``[D, U, dU_1..dU_k]`` (lists, no numpy)."""

    __slots__ = ("p", "x")

    D, U = 0, 1

    def __init__(self, x: list[float], variances: list[float]) -> None:
        self.x = x
        n = len(x)
        self.p = [[variances[i] if i == j else 0.0 for j in range(n)] for i in range(n)]

    def add_state(self, value: float, variance: float) -> int:
        for row in self.p:
            row.append(0.0)
        self.x.append(value)
        self.p.append([0.0] * (len(self.x) - 1) + [variance])
        return len(self.x) - 1

    def predict(self, dt: float, rate: float, rate_var: float, drift: float, learn: bool) -> None:
        """Advance by *dt* seconds: the headroom grows by the leak (eq. 2)."""
        x, p = self.x, self.p
        x[self.D] += rate * dt
        p[self.D][self.D] += rate_var * dt * dt + drift
        if learn:
            for i in range(self.U, len(x)):
                p[i][i] += _UP_FRONT_DRIFT

    # The filter runs on every answer with two to four states and one to three
    # coefficients: plain loops over local names, no generators, and a single
    # coefficient without a loop. The sums are taken in the same order (sum()
    # stays where it was: from 3.12 it compensates), so the results are the
    # same to the last bit.

    def variance(self, h: dict[int, float]) -> float:
        """Variance of the linear combination ``sum(h[i] * x[i])``."""
        p = self.p
        if len(h) == 1:
            ((i, hi),) = h.items()
            total = 0.0 + hi * p[i][i] * hi  # the loop below, for one term
            return total if total > 0.0 else 0.0
        total = 0.0
        items = h.items()
        for i, hi in items:
            row = p[i]
            for j, hj in items:
                total += hi * row[j] * hj
        return total if total > 0.0 else 0.0

    def value(self, h: dict[int, float]) -> float:
        x = self.x
        if len(h) == 1:  # the headroom alone, on most answers of a sequential caller
            ((i, coefficient),) = h.items()
            return 0.0 + coefficient * x[i]  # what sum() of one term gives
        return sum([coefficient * x[i] for i, coefficient in h.items()])

    def update(self, h: dict[int, float], measured: float, noise: float) -> float:
        """Measure ``sum(h[i] * x[i])`` with variance *noise*; return the innovation."""
        x, p = self.x, self.p
        if len(h) == 1:
            return self._update_one(h, measured, noise)
        items = list(h.items())
        ph = [sum([row[j] * hj for j, hj in items]) for row in p]
        s = sum([h_i * ph[i] for i, h_i in items]) + noise
        innovation = measured - sum([coefficient * x[i] for i, coefficient in items])
        return self._correct(ph, s, innovation)

    def _correct(self, ph: list[float], s: float, innovation: float) -> float:
        """Move the state and shrink its covariance by the gain ``ph / s``."""
        if s <= 0:
            return innovation
        x, p = self.x, self.p
        for i, value in enumerate(ph):
            gi = value / s
            x[i] += gi * innovation
            if gi:
                row = p[i]
                for j, phj in enumerate(ph):
                    row[j] -= gi * phj
        return innovation

    def _update_one(self, h: dict[int, float], measured: float, noise: float) -> float:
        """:meth:`update` for one coefficient (the headroom alone: one request at a time).

        The same arithmetic: a sum of one term is ``0.0 + term``.
        """
        x, p = self.x, self.p
        ((k, hk),) = h.items()
        ph = [0.0 + row[k] * hk for row in p]
        s = (0.0 + hk * ph[k]) + noise
        return self._correct(ph, s, measured - (0.0 + hk * x[k]))

    def forget(self, index: int, value: float) -> None:
        """Set ``x[index]`` to *value* and know nothing more about it (nor its links)."""
        self.x[index] = value
        for j, row in enumerate(self.p):
            row[index] = self.p[index][j] = 0.0
        self.p[index][index] = _UNKNOWN_VAR


class BucketModel:
    """The client's estimate of one token's bucket and the admission arithmetic.

    Args:
        config: Priors and limits.
        now: The current time on the caller's clock.
        name: A label for events (never the token).
        emit: Called as ``emit(event, level=..., **fields)`` for structured
            events (``canvas.throttle_learned``, ``canvas.throttle_header_ignored``,
            ``canvas.throttle_paused``).
    """

    def __init__(
        self,
        config: ThrottleConfig | None = None,
        *,
        now: float,
        name: str = "canvas",
        emit: Emit | None = None,
    ) -> None:
        self.config = config or ThrottleConfig()
        self.name = name
        self._emit = emit or _no_event
        c = self.config
        self._learn = c.learn
        spread = 1.0 if c.learn else 0.0
        self._filter = _Filter(
            [c.hwm, c.up_front_cost], [c.hwm_sd**2, spread * c.up_front_cost_sd**2]
        )
        self._outflow = _Outflow(c.outflow, spread * c.outflow_sd**2)
        self._lattice = ReservationLattice()
        self._leaking = False
        #: Costs of all our answers so far (for the outflow's pairs).
        self._settled = 0.0
        self._hwm = c.hwm
        self._hwm_sd = c.hwm_sd if c.learn else 0.0
        self._hwm_prior_var = c.hwm_sd**2
        # Since when the model believes Canvas's count was zero (a fresh
        # model assumes an idle token), and the costs our answers added since.
        self._drained_at: float | None = now
        self._charged_since_drain = 0.0
        #: The latest drained-bucket answer: hwm = base + sum(h[i] * x[i]).
        self._drain_sample: tuple[float, dict[int, float]] | None = None
        self._reweighs_left = 0
        #: Throttles (not probes) while hwm stood above every remaining seen.
        self._hwm_doubts = 0
        self._observed = 0
        self._associated = 0
        #: Until when another process's requests may be moving the figure.
        self._others_until = -math.inf
        #: Bounds on two network transits (a request's and an answer's) that
        #: associated answers showed: each at least a `lo`, at most a `hi`.
        self._transit_lo: collections.deque[float] = collections.deque(maxlen=_NETWORK_KEPT)
        #: The latest lower bounds over a longer span, and the tightest of
        #: them that a couple of wrong associations cannot set.
        self._transit_lo_long: collections.deque[float] = collections.deque(
            maxlen=_TRANSIT_LONG_KEPT
        )
        self._transit_tight = 0.0
        self._transit_hi: collections.deque[float] = collections.deque(maxlen=_NETWORK_KEPT)
        #: The largest remaining any answer showed (hwm is at least that).
        self._highest = -math.inf
        self._at = now
        # The anchor: the latest answer's remaining, when Canvas computed it,
        # and which of our requests it already counted as reserved.
        self._anchor: float | None = None
        self._anchor_at = now
        # The permits themselves, not their ids: a released permit's id may be
        # reused by a new one, which would pass for counted.
        self._anchor_set: set[Permit] = set()
        self._anchor_exact = False
        self._slots: dict[str, int] = {}
        self._stats: dict[str, _RouteStats] = {}
        self._default_stats = _RouteStats()
        self._active: list[Permit] = []
        self._throttled = 0
        self._one_way = 0.0
        #: The delay as this model's own answers bound it (not another's).
        self._own_one_way = 0.0
        self._rtt_floor = math.inf
        #: Two transits as another process on this machine learnt them (see adopt_network).
        self._shared_trip = math.inf
        self._network_trips: collections.deque[float] = collections.deque(maxlen=_NETWORK_KEPT)
        self._timings = 0
        self._send_lag = _FIRST_SEND_LAG_S
        #: The route delay() last let through as a probe (None: its last answer was no probe).
        self._last_probe: tuple[str | None] | None = None
        self._outliers = 0
        self._answers = 0
        self._any_answer = False
        self._since_throttle = 0
        self._probe_cooldown = _PROBE_COOLDOWN
        self._warned_header = False
        self._logged = {"hwm": c.hwm, "up_front_cost": c.up_front_cost, "outflow": c.outflow}
        # Without quota headers: AIMD on the concurrency, and backoff pauses.
        self._cap: float | None = None
        self._cut_at = -math.inf
        self._headerless_events = 0
        self._pause_until = -math.inf

    # ------------------------------------------------------------- properties

    @property
    def hwm(self) -> float:
        """The estimated high-water mark."""
        return self._hwm

    @property
    def up_front_cost(self) -> float:
        """The estimated reservation of a route without one of its own."""
        return self._filter.x[_Filter.U]

    @property
    def outflow(self) -> float:
        """The estimated leak rate, in units per second."""
        return self._outflow.mean

    @property
    def one_way_delay_s(self) -> float:
        """The network's one-way delay, as far as answers bound it (an upper bound)."""
        return self._one_way

    @property
    def own_one_way_delay_s(self) -> float:
        """The one-way delay as this model's own answers bound it, another's left out:
        what it shares (sharing the shared one back would only ever lower it)."""
        return self._own_one_way

    @property
    def network_learnt(self) -> bool:
        """Whether the one-way delay comes from the network itself: throttled round
        trips (no work in them), or answers that showed which of our requests
        had arrived (``_associate``), not only from round trips less cost."""
        return len(self._network_trips) >= _NETWORK_MIN or len(self._transit_hi) >= _TRANSIT_MIN

    def adopt_network(self, one_way: float) -> None:
        """Take the one-way delay another process on this machine learnt (same path).

        A process that shares its bucket is never alone: its answers move with
        the others' requests, and never show which of its own had arrived.
        Without a throttle its delay stays the bound from round trips less
        cost, which costs that are not seconds make no bound at all (workload
        B: 22 ms where the network takes 0.2), and every request admitted
        within it is charged twice. Its own bound still holds where smaller.
        """
        if not (math.isfinite(one_way) and one_way >= 0.0):
            return
        self._shared_trip = 2 * one_way
        if self._timings:
            self._one_way = min(self._one_way, one_way)

    @property
    def lag_allowance_s(self) -> float:
        """How late a busy event loop may send a request, or read an answer, in seconds.

        Grows with each throttle and shrinks back with each clean answer
        (between 5 ms and 0.2 s): another process's request is sent later
        than its lease says, and our answer read later than Canvas sent it.
        """
        return self._send_lag

    @property
    def headerless_limit(self) -> int:
        """Requests in flight allowed without quota headers.

        Before any answer, the first burst: no more than an install whose
        reservation is a quarter of its hwm admits from idle (hwm 500 with
        up_front_cost 120 fits four), so a short job is not throttled before
        it has learned anything. Once answers came without headers, the
        configured concurrency.
        """
        if not self._any_answer:
            return min(self.config.headerless_in_flight, FIRST_BURST)
        return self.config.headerless_in_flight

    @property
    def headers_seen(self) -> bool:
        """Whether any answer carried ``X-Rate-Limit-Remaining``."""
        return self._anchor is not None

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet settled."""
        return len(self._active)

    @property
    def active(self) -> list[Permit]:
        """The permits in flight, oldest first."""
        return self._active

    def up_front_for(self, route: str | None) -> float:
        """The estimated reservation of *route* (the global one for an unknown route).

        Never below what the route's recent throttled answers say it is at least.
        """
        x = self._filter.x
        if not route:
            estimate = x[_Filter.U] + 0.0
            floor = 0.0
        else:
            slot = self._slots.get(route, -1)
            estimate = x[_Filter.U] + (x[slot] if slot >= 0 else 0.0)
            stats = self._stats.get(route)
            floor = stats.floor if stats is not None else 0.0
        # max(MIN_UP_FRONT_COST, estimate, floor), without the call (every admission)
        least = estimate if estimate > MIN_UP_FRONT_COST else MIN_UP_FRONT_COST
        return floor if floor > least else least

    def up_front_sd_for(self, route: str | None) -> float:
        """How unsure the reservation of *route* is (standard deviation)."""
        h = {_Filter.U: 1.0}
        slot = self._slots.get(route, -1) if route else -1
        if slot >= 0:
            h[slot] = 1.0
        return math.sqrt(self._filter.variance(h))

    # -------------------------------------------------------------- admission

    def delay(self, now: float, route: str | None = None, *, sees_all: bool = False) -> float:
        """Seconds until one more request of *route* may start: 0 now, inf until a release.

        *sees_all*: the caller sees every request on the token (a bucket
        shared through Redis, whose leases name them all), so nothing of
        ours in flight means nothing at all in flight (see ``_lone_wait``).
        """
        # Only the latest answer is a probe's: the caller admits right after it.
        self._last_probe = None
        if now < self._pause_until:
            return self._pause_until - now
        n = len(self._active)
        if n >= self.config.max_in_flight or (self._cap is not None and n >= self._cap):
            return math.inf
        if self._anchor is None:
            return 0.0 if n < self.headerless_limit else math.inf
        free, doubt = self._free(now, route)
        shortfall = self._safety(doubt) - free
        # Canvas refuses at count >= hwm: room exactly zero is no room.
        if shortfall < 0:
            return 0.0
        if self._may_probe(free, doubt):
            self._last_probe = (route,)
            return 0.0
        # The leak makes room, but only until the count is zero; past that
        # only a request ending does. Nothing in flight and nothing left to
        # leak: one request always fits an empty bucket, however unsure we are.
        # Requests of ours probably ending make room too, before their answers.
        ending = self._ended_enough_in(now, route) if n else math.inf
        leak_left = max(self._hwm, self._anchor) - self._remaining_now(now)
        if leak_left <= 0:
            return ending if n else 0.0
        wait = max(min(shortfall, leak_left), 0.01) / self.outflow
        if ending < wait:
            return ending
        if not n:
            # Nothing in flight: no answer will come to tell us more, and the
            # room waited for may never clear the safety (see _lone_wait).
            return min(wait, self._lone_wait(now, route, sees_all))
        return wait

    def _ended_enough_in(self, now: float, route: str | None) -> float:
        """Seconds until our requests in flight have probably ended enough for one more
        of *route* to fit, as ``_free`` bets (inf: not before an answer comes).

        The bets grow with the requests' age, between answers too: a waiter
        that slept until the next answer let a slot the server had already
        freed sit idle for the answer's transit and the next request's (one
        more round trip per cycle where service times are short). The room is
        a step function of time: checked at the times the chances rise (a
        few of them, spread out), the first that fits returned; a wake-up
        that finds no room after all merely looks again.
        """
        least = self._least_transits()
        if least <= 0.0:
            return math.inf  # no request is taken as ended before its answer
        points: set[float] = set()
        for permit in self._active:
            stats = self._stats_of(permit.route)
            points.update(stats.ending_points(now - permit.admitted_at, least))
        times = sorted(t for t in points if t > 0.0)
        # Spread over the lot, in order, not bisected: the room need not grow
        # monotonically (a straggler's bet lapses).
        step = max(1, len(times) // _ENDING_LOOKS)
        for seconds in times[::step]:
            if self._fits(now + seconds, route):
                return seconds
        return math.inf

    def _fits(self, at: float, route: str | None) -> bool:
        """Whether one more request of *route* fits at *at* if no answer comes before."""
        free, doubt = self._free(at, route)
        return free > self._safety(doubt)

    def _lone_wait(self, now: float, route: str | None, sees_all: bool) -> float:
        """With nothing in flight: until the leak made room for one request, by its estimate.

        Waiting for the room to clear the safety ends only if the leak's
        lower bound (mean less 2.5 standard deviations) is positive, and it
        may not be: other clients of the token dragged one estimate down to
        0.05 units/s (sd 3.7), and 204 calls failed at their deadline; a
        process that shares its bucket through Redis keeps the prior (10,
        sd 4: a lower bound of exactly zero) and waited 55 s for the count to
        reach zero. With nothing in flight no answer comes to teach more.
        One request alone risks at most one throttle, and its answer shows
        the bucket as it is. Where the doubt exceeds the mean (a mean dragged
        down by unseen clients is no guide) it goes once the fast end of the
        estimate (mean + 2.5 sd) made room. Otherwise only where the caller
        sees every request on the token, once the mean made room: beside
        unseen clients each one's lone requests would add up (four processes
        sharing a token without Redis failed 6 to 17 calls of 1,500 so).
        """
        assert self._anchor is not None
        sd = math.sqrt(self._outflow.var)
        if sd > self.outflow:
            leak = self.outflow + _SAFETY_Z * sd
        elif sees_all:
            leak = self.outflow
        else:
            return math.inf
        since = max(0.0, now - self._anchor_at)
        ceiling = max(self._hwm, self._anchor)
        room = min(self._anchor + leak * since, ceiling)
        short = self.up_front_for(route) + self.config.margin - room
        # Nothing left to leak: one request always fits an empty bucket.
        return 0.0 if short < 0 or room >= ceiling else short / leak

    def admit(self, now: float, route: str | None = None, lease: str | None = None) -> Permit:
        """Record a request starting now (call when ``delay()`` said 0)."""
        probe = False
        if self._anchor is not None:
            # Admitted beyond what the model allows: delay() said yes to a probe.
            # (By route, not time: the caller's clock moves between the two calls.)
            probe = self._last_probe == (route,)
            self._last_probe = None
            if not self._active and self._remaining_now(now) >= self._hwm:
                # Idle long enough for the count to leak to zero.
                self._drained_at, self._charged_since_drain = now, 0.0
        permit = Permit(
            route,
            self._stats_of(route).cost or 0.0,
            admitted_at=now,
            lease=lease,
            probe=probe,
            slot=self._slot(route),
        )
        self._active.append(permit)
        return permit

    def may_pass(self, waited: float) -> bool:
        """Whether a request of another route may start before one waiting *waited* seconds.

        Routes reserve different amounts, so a light request often fits where
        the heavy one waiting does not. Each one passing delays the heavy one
        by at most its own round trip, so passing stops once it has waited a
        typical round trip (the median of the latest answered): from then it
        waits for nobody. Before any round trip is known, nobody passes.
        """
        trips = self._default_stats.sorted
        if len(trips) < _TRIP_SAMPLES:
            return False
        return waited < trips[len(trips) // 2]

    def room(
        self, now: float, route: str | None = None, others: Iterable[tuple[float, float]] = ()
    ) -> float:
        """Room for one more request of *route* beyond the safety margin (inf without headers).

        For a bucket shared by other processes (Redis): *others* are the
        requests of theirs the anchor did not count, each as what its
        process reserved for it and how unsure that process was (standard
        deviation). ``delay()`` already covers our own requests.
        """
        if self._anchor is None:
            return math.inf
        free, doubt = self._free(now, route)
        sd = math.sqrt(doubt)
        for reservation, reservation_sd in others:
            free -= reservation
            # Reservations are (nearly) perfectly correlated through U: deviations add.
            sd += reservation_sd
        return free - self._safety(sd**2)

    def note_others(self, now: float) -> None:
        """Another process's requests are in flight on this token (a shared bucket).

        Their reservations and costs move Canvas's figure where this model
        cannot see them, and would read as a smaller leak or a wandering
        reservation (in a 4-process run the reservation went from 17 to 61
        and the leak to 0.6 units/s). Until ``_OTHERS_FOR_S`` after the last
        such sighting, answers teach only what holds whoever else is
        counted: a throttle's lower bound on the reservation, hwm at least
        any remaining. The parameters are learnt when a process is alone, or
        shared by one that was.
        """
        self._others_until = max(self._others_until, now + _OTHERS_FOR_S)

    def adopt_anchor(
        self, remaining: float, at: float, counted_before: float | None = None
    ) -> None:
        """Take another process's newer answer (computed by Canvas at *at*) as the anchor.

        Only admission's starting point moves; the estimator learns from our own
        answers alone. Our requests admitted before *counted_before* were
        counted (default: a one-way delay before *at*; a caller that knows
        how early *at* may be, and how late our loop may send, gives less).
        """
        if not (math.isfinite(remaining) and abs(remaining) <= MAX_ABS_REMAINING):
            return
        if self._anchor is not None and at < self._anchor_at:
            return
        self._anchor, self._anchor_at = remaining, at
        before = at - self._one_way if counted_before is None else counted_before
        self._anchor_set = {p for p in self._active if p.admitted_at < before}
        self._anchor_exact = False  # another process's answer: its view of ours is a guess

    def pause_remaining(self, now: float) -> float:
        """Seconds until one request fits if every request in flight ended: a throttle's wait."""
        if now < self._pause_until:
            return self._pause_until - now
        if self._anchor is None:
            return 0.0
        # Requests in flight give their reservations back when they end.
        free = self._remaining_now(now) - self.up_front_cost
        for permit in self._active:
            if permit in self._anchor_set:
                free += self.up_front_for(permit.route) - (self._stats_of(permit.route).cost or 0.0)
        return max(0.0, self.config.margin - free) / self.outflow

    # ------------------------------------------------------------- settlement

    def settle(self, permit: Permit, observation: Observation | None, now: float) -> None:
        """Learn from *permit*'s answer (None: no answer at all) and free its place.

        Safe to call twice; the second call does nothing.
        """
        if permit.released:
            return
        permit.released = True
        try:
            self._active.remove(permit)
        except ValueError:
            return
        self._any_answer = self._any_answer or observation is not None
        remaining, cost = self._checked(observation)
        throttled = observation is not None and observation.throttled
        if cost is not None:
            self._learn_cost(permit.route, cost)
        if remaining is None:
            self._without_headers(permit, throttled, cost, now)
            return
        self._cap = None
        self._measure_timing(permit, now, throttled, cost)
        if not self._plausible_remaining(remaining):
            return
        sure, maybe, young, assumed = self._at_server(permit, now)
        resolved = not maybe and not young
        # Another process's requests move Canvas's figure unseen (their
        # reservations, their costs): its answers then teach only bounds.
        alone = now >= self._others_until
        if self._learn and alone and not throttled and not (resolved and not assumed):
            sure, maybe, resolved = self._associate(
                permit, remaining, cost or 0.0, sure, maybe, young, assumed, now
            )
        self._learn_hwm(permit, remaining, None if throttled else (cost or 0.0), sure, maybe, now)
        if self._learn and alone:
            self._observe(remaining, None if throttled else (cost or 0.0), sure, maybe, now)
            self._learn_lattice(permit, remaining, 0.0 if throttled else (cost or 0.0), now)
        # The anchor: what admission extrapolates from until the next answer.
        self._anchor = remaining
        answered_at = now - self._one_way
        if answered_at > self._anchor_at:
            self._anchor_at = answered_at
        # Exact when every request of ours in flight is known counted or not.
        self._anchor_set, self._anchor_exact = set(sure), resolved
        if throttled:
            self._send_lag = min(_MAX_SEND_LAG_S, 1.5 * self._send_lag)
            self._on_throttled(permit, remaining, now)
        else:
            lag = self._send_lag * _SEND_LAG_SHRINK
            self._send_lag = lag if lag > _SEND_LAG_S else _SEND_LAG_S
            self._since_throttle += 1
            if permit.probe:
                self._probe_cooldown = max(_PROBE_COOLDOWN, self._probe_cooldown // 2)
        self._answers += 1
        self._log_moves()

    # ------------------------------------------------------------- reporting

    def estimate(self, now: float) -> ThrottleEstimate:
        """What the model believes now."""
        p = self._filter.p
        free, _ = self._free(now, None) if self._anchor is not None else (self._hwm, 0.0)
        return ThrottleEstimate(
            remaining=round(free + self.up_front_cost, 3),
            in_flight=len(self._active),
            in_flight_limit=self.in_flight_limit(now),
            hwm=round(self._hwm, 3),
            up_front_cost=round(self.up_front_cost, 3),
            outflow=round(self.outflow, 3),
            paused_for_s=round(max(0.0, self._pause_until - now), 3),
            headers_seen=self._anchor is not None,
            throttled_responses=self._throttled,
            hwm_sd=round(self._hwm_sd, 3),
            up_front_cost_sd=round(math.sqrt(max(0.0, p[_Filter.U][_Filter.U])), 3),
            outflow_sd=round(math.sqrt(self._outflow.var), 3),
            one_way_delay_s=round(self._one_way, 4),
            route_up_front_costs={
                route: round(self.up_front_for(route), 3) for route in self._slots
            },
        )

    def in_flight_limit(self, now: float) -> int:
        """How many requests the model would allow in flight at once now."""
        c = self.config
        if self._anchor is None:
            limit = self.headerless_limit
        else:
            free, doubt = self._free(now, None)
            room = free - self._safety(doubt)
            more = math.ceil(room / self.up_front_cost) if room > 0 else 0
            limit = len(self._active) + more
        if self._cap is not None:
            limit = min(limit, int(self._cap))
        return max(0, min(limit, c.max_in_flight))

    def route_cost(self, route: str | None) -> float | None:
        """The moving average of ``X-Request-Cost`` for *route*, if any was seen."""
        stats = self._stats.get(route) if route else None
        return stats.cost if stats is not None else None

    def eta(self, calls: int, now: float, route: str | None = None) -> float:
        """A lower bound of the seconds the bucket needs to absorb *calls* more calls."""
        mean = self._stats_of(route).cost or self._default_stats.cost or 0.0
        headroom = self._remaining_now(now) if self._anchor is not None else self._hwm
        headroom = max(0.0, headroom - self.config.margin)
        return max(0.0, (calls * mean - headroom) / self.outflow)

    def parameters(self) -> dict[str, float]:
        """The learned parameters and their variances, to share (Redis) or persist.

        Each route with its own reservation estimate adds
        ``up_front_cost@<route>`` and ``up_front_cost_var@<route>``: what a
        route's answers teach lands mostly in its own term, so the global
        value alone stays nearly as unsure as the prior (a route learnt to
        sd 0.6 left the global one at sd 12).
        """
        p = self._filter.p
        shared = {
            "hwm": self._hwm,
            "hwm_var": self._hwm_sd**2,
            "up_front_cost": self.up_front_cost,
            "up_front_cost_var": p[_Filter.U][_Filter.U],
            "outflow": self.outflow,
            "outflow_var": self._outflow.var,
        }
        for route in self._slots:
            shared[ROUTE_UP_FRONT + route] = self.up_front_for(route)
            shared[ROUTE_UP_FRONT_VAR + route] = self.up_front_sd_for(route) ** 2
        return shared

    def merge_parameters(self, shared: dict[str, float]) -> None:
        """Fold in another process's learned parameters as an independent measurement.

        Only what the other knows better than we do is taken; nothing when
        learning is off (a worker told its settings keeps them).
        """
        if not self._learn:
            return
        self._merge_up_front({_Filter.U: 1.0}, shared, "up_front_cost", "up_front_cost_var")
        for name in shared:
            if name.startswith(ROUTE_UP_FRONT):
                route = name[len(ROUTE_UP_FRONT) :]
                slot = self._slot(route)
                if slot >= 0:  # else no room for its own term: the global value stands
                    h = {_Filter.U: 1.0, slot: 1.0}
                    self._merge_up_front(h, shared, name, ROUTE_UP_FRONT_VAR + route)
        value, variance = shared.get("outflow"), shared.get("outflow_var")
        if value is not None and variance is not None and _plausible(value, variance):
            flow = self._outflow
            if variance < flow.var:
                gain = flow.var / (flow.var + variance)
                flow.mean += gain * (value - flow.mean)
                flow.var *= 1 - gain
        value, variance = shared.get("hwm"), shared.get("hwm_var")
        if (
            value is not None
            and variance is not None
            and _plausible(value, variance + 1.0)
            and math.sqrt(variance) < self._hwm_sd
        ):
            self._hwm, self._hwm_sd = value, math.sqrt(variance)
        self._clamp()

    def _merge_up_front(
        self, h: dict[int, float], shared: dict[str, float], name: str, var_name: str
    ) -> None:
        """Take another's reservation estimate (``h`` of the state) where it is surer than ours.

        Measured with its own variance: it started from the same prior, so
        where ours is still the prior theirs is all there is to know (adding
        our variance to its noise, as this once did, kept half the prior's).
        """
        value, variance = shared.get(name), shared.get(var_name)
        if value is None or variance is None or not _plausible(value, variance):
            return
        if variance < self._filter.variance(h):
            self._filter.update(h, value, variance)

    # ------------------------------------------------------------- internals

    def _stats_of(self, route: str | None) -> _RouteStats:
        stats = self._stats.get(route) if route else None
        return stats if stats is not None else self._default_stats

    def _remaining_now(self, now: float) -> float:
        """The anchor's remaining, leaked up to now; never above hwm (the count is >= 0)."""
        anchor = self._anchor
        assert anchor is not None
        # min(leaked, max(hwm, anchor)) and max(0, since), without the calls
        since = now - self._anchor_at
        leaked = anchor + self._outflow.mean * (since if since > 0.0 else 0.0)
        hwm = self._hwm
        ceiling = anchor if anchor > hwm else hwm
        return ceiling if ceiling < leaked else leaked

    def _free(self, now: float, route: str | None) -> tuple[float, float]:
        """Room left for one more request of *route* once ours in flight are counted.

        Starts from the anchor (Canvas's own figure, exact) and corrects it
        only for what happened since: requests sent since, whose reservations
        it did not count, and requests that have probably ended at the server
        (their answer still on the way): refunded, cost charged. Counting a
        probable end is a bet, whose doubt the safety then keeps: only the
        bets that leave more room beyond the safety are taken (``_bets``);
        a request not bet on holds its reservation, the safe side.
        Returns the room and the variance of its error.
        """
        free = self._remaining_now(now) - self.up_front_for(route)
        slot = self._slots.get(route, -1) if route else -1
        # Coefficients of the reservations not in the anchor, for their doubt.
        h: dict[int, float] = {_Filter.U: 1.0}
        if slot >= 0:
            h[slot] = 1.0
        # The leak's doubt grows with time, but only until the count is zero.
        cap = max(self._hwm, self._anchor or 0.0)
        leaking = min(now - self._anchor_at, max(0.0, cap - (self._anchor or 0.0)) / self.outflow)
        variance = self._outflow.var * leaking**2
        # The network's least round trip, known only from throttled answers
        # (no work in them). Round trip less cost is no lower bound (cost is
        # CPU and database time, not the waiting): without a throttled one,
        # no request is taken as ended before its answer.
        least_trip = self._least_transits()
        anchored = self._anchor_set
        bets: list[tuple[float, float, float, Permit]] = []
        for permit in self._active:
            stats = self._stats_of(permit.route)
            up_front = self.up_front_for(permit.route)
            free -= stats.excess
            variance += stats.excess_var
            if permit not in anchored:
                # Sent since the anchor (or in doubt): it holds its reservation.
                free -= up_front
                _add(h, permit, 1.0)
            # It ends at the server before a request sent now arrives if its
            # round trip is within two transits of its age (its answer's and
            # ours); each is at least half the least throttled round trip.
            age = now - permit.admitted_at
            ended = stats.ended_between(age, age + least_trip)
            if ended > 0.0:
                # Ending gives the reservation back and charges the cost.
                bets.append((ended, up_front - (stats.cost or 0.0), up_front, permit))
        if bets:
            free, variance = self._bets(bets, free, variance, h)
        return free, variance + self._filter.variance(h)

    def _bets(
        self,
        bets: list[tuple[float, float, float, Permit]],
        free: float,
        variance: float,
        h: dict[int, float],
    ) -> tuple[float, float]:
        """Take the bets that requests ended which leave the most room beyond the safety.

        Each (chance, refund, reservation, permit) adds chance * refund to the
        room, and ``_bet_variance(chance) * reservation**2`` to its variance.
        Taking every bet once cost more safety than it gave room (eleven
        requests each 10% likely to have ended: 55 units gained, 2.5 sd = 125
        kept back). The surest bets pay best for their doubt, so the best set
        is a prefix of them sorted by chance.
        """
        if self._network_jitter() > _SEND_LAG_S:
            # Where transits differ the chances are rough (a round trip mixes
            # the work with both transits): every bet is taken, and its doubt
            # kept (fewer bets throttled hwm 800 / up_front_cost 120 runs more).
            for chance, refund, up_front, permit in bets:
                free += chance * refund
                variance += chance * (1.0 - chance) * up_front * up_front
                _add(h, permit, -chance)
            return free, variance
        bets.sort(key=lambda bet: bet[0], reverse=True)
        # The reservations' own doubt moves little with the bets: taken as fixed here.
        base = variance + self._filter.variance(h)
        best_gain, best_var, best_count = 0.0, 0.0, 0
        best = free - self._safety(base)
        gain = added = 0.0
        for count, (chance, refund, up_front, _) in enumerate(bets, start=1):
            gain += chance * refund
            added += _bet_variance(chance) * up_front * up_front
            left = free + gain - self._safety(base + added)
            if left > best:
                best, best_gain, best_var, best_count = left, gain, added, count
        for chance, _, _, permit in bets[:best_count]:
            # Its reservation holds with the chance it did not end.
            _add(h, permit, -chance)
        return free + best_gain, variance + best_var

    def _safety(self, variance: float) -> float:
        """Headroom kept for the model's own doubt."""
        kept = _SAFETY_Z * math.sqrt(variance)
        margin = self.config.margin
        return kept if kept > margin else margin

    def _may_probe(self, free: float, doubt: float) -> bool:
        """One request beyond a cautious model, to learn whether the room is there.

        Only into the model's doubt, not past its best guess: the room must
        be there by the estimate less one standard deviation (of the 2.5 the
        safety keeps), so a probe is seldom throttled.
        """
        if not (self.config.explore and self._learn):
            return False
        if free - math.sqrt(doubt) <= self.config.margin:
            return False
        if self._since_throttle < self._probe_cooldown:
            return False
        return not any(p.probe for p in self._active)

    def _slot(self, route: str | None) -> int:
        if not route or not self._learn:
            return -1
        slot = self._slots.get(route)
        if slot is None:
            if len(self._slots) >= _MAX_ROUTES:
                return -1
            # A new route's reservation starts as the global one; the evidence
            # must pull it away (Canvas sets up_front_cost per path regex).
            spread = self.config.up_front_cost_sd * 0.75
            slot = self._filter.add_state(0.0, spread**2)
            self._slots[route] = slot
        return slot

    def _checked(self, observation: Observation | None) -> tuple[float | None, float | None]:
        """The observation's values, with physically impossible ones dropped (and reported)."""
        if observation is None:
            return None, None
        remaining, cost = observation.remaining, observation.cost
        # The common case, both plausible, in comparisons alone (NaN and the
        # infinities fail them too); else each is checked and reported below.
        if (remaining is None or -MAX_ABS_REMAINING <= remaining <= MAX_ABS_REMAINING) and (
            cost is None or 0.0 <= cost <= MAX_REQUEST_COST
        ):
            return remaining, cost
        bad: dict[str, float] = {}
        if remaining is not None and not (
            math.isfinite(remaining) and abs(remaining) <= MAX_ABS_REMAINING
        ):
            bad["rate_limit_remaining"], remaining = remaining, None
        if cost is not None and not (math.isfinite(cost) and 0.0 <= cost <= MAX_REQUEST_COST):
            bad["request_cost"], cost = cost, None
        if bad:
            self._header_ignored(bad)
        return remaining, cost

    def _plausible_remaining(self, remaining: float) -> bool:
        """A remaining far above the known hwm is another system's header (a gateway's),
        unless it keeps coming: then the install's hwm is larger than we thought."""
        limit = self._hwm + max(4 * self._hwm_sd, 0.25 * self._hwm)
        if remaining <= limit:
            self._outliers = 0
            return True
        self._outliers += 1
        if self._outliers < _OUTLIERS_TO_RESET:
            self._header_ignored({"rate_limit_remaining": remaining})
            return False
        self._outliers = 0
        return True

    def _header_ignored(self, bad: dict[str, Any]) -> None:
        if not self._warned_header:
            self._warned_header = True
            self._emit(
                "canvas.throttle_header_ignored",
                level="warning",
                throttle=self.name,
                **{key: str(value)[:40] for key, value in bad.items()},
            )

    def _measure_timing(
        self, permit: Permit, now: float, throttled: bool, cost: float | None
    ) -> None:
        """Learn the one-way network delay and the route's round trips.

        A throttled answer does no work at the server, so its round trip is
        the network's; an answered one worked at least its cost in seconds
        (Canvas's cost is CPU plus database time), so the network took at
        most the rest. The delay kept is the least such bound seen lately.
        """
        rtt = max(0.0, now - permit.admitted_at)
        network = rtt
        # A cost beyond the whole round trip is not seconds of work (not
        # Canvas, or a proxy): that answer bounds the network by its round trip.
        if not throttled and cost is not None and cost < rtt:
            network = rtt - cost
        self._rtt_floor = min(self._rtt_floor * 1.001 + 1e-6, network)
        if throttled:
            # A throttled answer's round trip is the network's alone: their
            # spread is how much one answer's transit may exceed another's.
            self._network_trips.append(rtt)
        self._timings += 1
        round_trip = self._rtt_floor
        if len(self._transit_hi) >= _TRANSIT_MIN and self._network_jitter() <= _SEND_LAG_S:
            # Answers showed requests of this age already counted: the bound
            # from round trips less cost may be far looser (costs that are
            # not seconds, a server that queues before it charges).
            round_trip = min(round_trip, self._longest_transits())
        self._own_one_way = round_trip / 2
        self._one_way = min(round_trip, self._shared_trip) / 2
        if not throttled:
            # Round trips, not service times: the delay subtracted would be an
            # upper bound (cost is at most the work), so a service time made
            # from it could end a request too early.
            stats = self._stats.get(permit.route) if permit.route else None
            if stats is not None:
                stats.add_trip(rtt)
            self._default_stats.add_trip(rtt)

    def _settled_after(self) -> float:
        """Age past which a request of ours is surely at Canvas and was not throttled.

        A throttled answer takes one network round trip; the delay we know
        is the least seen, so allow it some slack, and a busy event loop
        sends late.
        """
        return 2 * self._one_way * (1 + _DELAY_DOUBT) + self._send_lag

    def _at_server(
        self, answered: Permit, now: float
    ) -> tuple[list[Permit], list[Permit], list[Permit], list[Permit]]:
        """Our requests at the server when it answered, those we cannot be sure of,
        those too young to have reached it, and those of the first
        list taken as there only by the transits answers showed (an event
        loop that sends or reads late would fool that: ``_associate`` checks).

        One sent before the answered request reached Canvas before it and was
        still there (it has not ended: we have no answer). One sent after it
        was there if it was sent a round trip before now; but the delay we
        know is an upper bound (see ``_measure_timing``) and a busy event
        loop sends late, so only well past that is it sure. And a request
        may have been throttled on arrival (holding nothing) without our
        knowing yet: only one older than a throttled answer takes is surely
        holding its reservation. The doubtful ones count as at the server
        for admission (the safe side) and keep the answer out of learning.
        """
        sure_after = self._settled_after()
        # A request younger than the least two transits had surely not
        # arrived when Canvas answered (its own transit and the answer's).
        # Not the delay we know: that is an upper bound (round trip less
        # cost), and where Canvas spends more than CPU and database time on
        # a request it is several times the truth.
        least = self._least_transits()
        not_before = least - self._send_lag if least > 0.0 else -math.inf
        jitter = self._network_jitter()
        jittery = jitter > _SEND_LAG_S
        # Past this age a request was there even by the bound from round trips.
        surely_after = self._rtt_floor * (1 + _DELAY_DOUBT) + self._send_lag
        at_server: list[Permit] = []
        doubtful: list[Permit] = []
        young: list[Permit] = []
        assumed: list[Permit] = []
        for permit in self._active:
            elapsed = now - permit.admitted_at
            # Sent before the answered one, by a margin: two requests sent at
            # once may reach Canvas in either order, and where transits differ
            # one sent earlier may arrive later.
            sent_before = permit.admitted_at <= answered.admitted_at - self._send_lag - jitter
            if jittery and elapsed >= self._stats_of(permit.route).trip_low():
                # Where answers' transits differ, one may have ended at the
                # server before this answer was computed, its own answer
                # slower on the way: counted by Canvas as nothing held.
                doubtful.append(permit)
            elif elapsed >= sure_after or sent_before:
                at_server.append(permit)
                if not sent_before and elapsed < surely_after:
                    assumed.append(permit)
            elif elapsed >= not_before:
                # The delay we know is an upper bound, and may be loose.
                doubtful.append(permit)
            else:
                young.append(permit)
        return at_server, doubtful, young, assumed

    def _associate(
        self,
        answered: Permit,
        remaining: float,
        cost: float,
        sure: list[Permit],
        doubtful: list[Permit],
        young: list[Permit],
        assumed: list[Permit],
        now: float,
    ) -> tuple[list[Permit], list[Permit], bool]:
        """Tell from the answer itself which of our recent requests Canvas had counted.

        Requests sent after the answered one are at the server or not
        depending on a network delay we only bound from above. But between
        two answers Canvas's figure moves by the leak, by the answered
        request's end, and by a whole reservation for each request of ours
        that arrived: where the previous answer's requests at the server are
        known exactly, the difference shows how many of the recent ones had
        arrived (the earliest sent first, on a network whose transits do not
        differ). Those taken as there by the learnt transits alone are
        checked too: an event loop that sends or reads late (a busy process,
        threads holding the GIL) makes a request look older than it is.
        Without such a clear answer the requests stay as they were:
        doubtful, or young (taken as not there). Returns the requests at the
        server, the doubtful ones, and whether the answer settled them all.
        """
        # Without a clear answer: as classified by age (exact if none was in doubt).
        by_age = not doubtful and not young
        given = sure
        pending = sorted((*doubtful, *young, *assumed), key=lambda p: p.admitted_at)
        anchor = self._anchor
        if not pending or anchor is None or not self._anchor_exact:
            return given, doubtful, by_age
        if self._network_jitter() > _SEND_LAG_S:
            return given, doubtful, by_age
        anchored = self._anchor_set
        if assumed:
            sure = [p for p in sure if p not in assumed]  # to be checked like the rest
        # The figure at the previous answer, leaked to this one, with the
        # answered request's end, and our requests surely arrived since.
        gap = max(0.0, now - self._one_way - self._anchor_at)
        predicted = anchor + self.outflow * gap - cost
        if answered in anchored:
            predicted += self.up_front_for(answered.route)
        arrived = [p for p in sure if p not in anchored]
        predicted -= sum(self.up_front_for(p.route) for p in arrived)
        if predicted >= self._hwm - self.config.margin:
            return given, doubtful, by_age  # the count may have drained: the leak stopped
        # Those the previous answer counted had arrived, and so had any sent before them.
        first = max((i + 1 for i, p in enumerate(pending) if p in anchored), default=0)
        for p in pending[:first]:
            if p not in anchored:
                predicted -= self.up_front_for(p.route)
        reservations = [self.up_front_for(p.route) for p in pending[first:]]
        if not reservations:
            self._associated += 1
            return [*sure, *pending], [], True
        least = min(reservations)
        u_sd = max(self.up_front_sd_for(p.route) for p in pending)
        spread = (
            _MEASUREMENT_VAR
            + self._outflow.var * gap * gap
            + ((len(arrived) + len(pending)) * u_sd) ** 2
        )
        if math.sqrt(spread) > least / _ASSOCIATE_SD_SHARE:
            return given, doubtful, by_age
        # Hypothesis k: the k earliest sent had arrived.
        best, best_miss = first, abs(remaining - predicted)
        level = predicted
        for k, reservation in enumerate(reservations, start=first + 1):
            level -= reservation
            miss = abs(remaining - level)
            if miss < best_miss:
                best, best_miss = k, miss
        if best_miss > _ASSOCIATE_MISS_SHARE * least:
            # Nothing fits: others' activity moved the figure. Learn nothing.
            return given, doubtful, by_age
        self._associated += 1
        # The answer also brackets the network: the youngest request counted
        # had arrived (two transits took at most its age), the oldest not
        # counted had not (they took longer than its age).
        if best:
            self._transit_hi.append(now - pending[best - 1].admitted_at)
        if best < len(pending):
            self._record_transit_lo(now - pending[best].admitted_at)
        return [*sure, *pending[:best]], [], True

    def _record_transit_lo(self, bound: float) -> None:
        """Keep a lower bound on two transits, and the tightest one trusted."""
        self._transit_lo.append(bound)
        self._transit_lo_long.append(bound)
        if len(self._transit_lo_long) >= _TRANSIT_TRUSTED_RANK:
            kept = heapq.nlargest(_TRANSIT_TRUSTED_RANK, self._transit_lo_long)
            self._transit_tight = kept[-1]

    def _longest_transits(self) -> float:
        """Two network transits seldom exceed this, by associated answers.

        Each upper bound is at least its own answer's transits, each lower
        bound below them: a low quantile of the upper bounds is at least
        the transits when they do not differ (robust to a wrong
        association), and a high quantile of the lower bounds follows
        them where they do.
        """
        upper, lower = sorted(self._transit_hi), sorted(self._transit_lo)
        longest = upper[int(_TRANSIT_LOW_QUANTILE * (len(upper) - 1))]
        if len(lower) >= _TRANSIT_MIN:
            longest = max(longest, lower[int(_TRANSIT_HIGH_QUANTILE * (len(lower) - 1))])
        return longest

    def _least_transits(self) -> float:
        """A lower bound on two network transits (0: none known).

        Throttled round trips are exact; without them, answers associated
        with our recent requests bracket the transits: above the age of the
        oldest request not counted yet, at most the youngest counted. The
        larger of two readings of the lower bounds, neither above any upper
        bound (where transits differ the least one is what counts): a low
        quantile of the latest, and the third highest of a longer span less
        the round trips' spread (one or two wrong associations must not make
        requests end early).
        """
        if len(self._network_trips) >= _NETWORK_MIN:
            # One or two may both be slow ones where transits differ.
            return min(self._network_trips)
        bounds = sorted(self._transit_lo)
        if len(bounds) < _TRANSIT_MIN:
            return 0.0
        least_upper = min(self._transit_hi, default=math.inf)
        low = bounds[int(_TRANSIT_LOW_QUANTILE * (len(bounds) - 1))]
        # Most lower bounds are weak (requests just sent): the informative
        # ones are the highest, less the couple a wrong association could
        # make; and transits differ from one another at most as much as the
        # round trips they are part of do.
        tight = self._transit_tight - self._trip_spread()
        ceiling = min(least_upper, 2 * self._own_one_way)
        return max(min(low, least_upper), min(tight, ceiling))

    def _trip_spread(self) -> float:
        """How much the round trips of all routes differ (inf until enough were seen)."""
        kept = self._default_stats.sorted
        if len(kept) < _TRIP_SAMPLES:
            return math.inf
        return kept[int(0.9 * (len(kept) - 1))] - kept[int(0.1 * (len(kept) - 1))]

    def _network_jitter(self) -> float:
        """How much longer than the shortest a network round trip may take (0: unknown)."""
        trips = sorted(self._network_trips)
        if len(trips) < _NETWORK_MIN:
            return 0.0
        return trips[int(_NETWORK_QUANTILE * (len(trips) - 1))] - trips[0]

    def _learn_hwm(
        self,
        permit: Permit,
        remaining: float,
        cost: float | None,
        sure: list[Permit],
        maybe: list[Permit],
        now: float,
    ) -> None:
        """remaining <= hwm always; alone after the bucket drained, remaining + cost == hwm."""
        if not self._learn:
            return
        if remaining > self._highest:
            # Tiny rises are the leak between answers: not worth a recomputation.
            risen = remaining > self._highest + 1.0 or remaining > self._hwm
            self._highest = remaining
            if risen:
                self._reweigh_hwm()
        if cost is None or now < self._others_until:
            # Throttled: the count was anything but zero. Or others share it.
            self._drained_at = None
        if (
            self._drained_at is None
            or maybe
            or len(sure) < len(self._active)
            or (sure and self._any_younger(sure, now))
        ):
            # Only requests known to hold their reservation may be added back,
            # and only when every request in flight is known to: one taken as
            # not arrived yet may have been there (the delay that rules it
            # out is an upper bound), and hwm would come out a reservation low.
            return
        answered_at = now - self._one_way
        self._charged_since_drain += cost or 0.0
        if answered_at - self._drained_at > _DRAINED_FOR_S:
            self._drained_at = None
            return
        # The count started at zero, so it now holds our reservations at the
        # server and the costs our answers added, less what leaked: the
        # answer shows hwm itself, as well as we know the reservations. They
        # may be unsure yet, so the sample is kept as a linear function of
        # them and weighed again as the filter learns them.
        since = answered_at - self._drained_at
        leaked = self._outflow.mean * (since if since > 0.0 else 0.0)
        charged = self._charged_since_drain - leaked
        base = remaining + (charged if charged > 0.0 else 0.0)
        reserved = {k: -v for k, v in self._reserved_vector(sure).items()} if sure else {}
        self._drain_sample = (base, reserved)
        # A sample with no reservations in it does not move as the filter learns.
        self._reweighs_left = _HWM_REWEIGHS if reserved else 0
        self._reweigh_hwm()

    def _any_younger(self, sure: list[Permit], now: float) -> bool:
        """Whether any of *sure* is too young to be surely holding its reservation."""
        sure_after = self._settled_after()
        return any(now - p.admitted_at < sure_after for p in sure)

    def _reweigh_hwm(self) -> None:
        """hwm: the prior and the latest drained-bucket sample, never below a remaining seen."""
        if not self._learn:
            return
        prior, prior_var = self.config.hwm, self._hwm_prior_var
        estimate, variance = prior, prior_var
        if self._drain_sample is not None:
            base, h = self._drain_sample
            if h:
                sample = base + self._filter.value(h)
                noise = self._filter.variance(h) + _PAIR_VAR
            else:
                # No reservations in the sample (value and variance of nothing: zero).
                sample, noise = base + 0.0, 0.0 + _PAIR_VAR
            gain = prior_var / (prior_var + noise)
            estimate, variance = prior + gain * (sample - prior), (1 - gain) * prior_var
        if self._highest > estimate:
            # remaining <= hwm always: the count is never negative.
            estimate = self._highest
            if _PAIR_VAR < variance:
                variance = _PAIR_VAR
        sd = math.sqrt(variance)
        self._hwm, self._hwm_sd = estimate, sd if sd > 1.0 else 1.0
        self._clamp()

    def _observe(
        self,
        remaining: float,
        cost: float | None,
        sure: list[Permit],
        maybe: list[Permit],
        now: float,
    ) -> None:
        """Teach the filter one answer: predict to when Canvas computed it, then measure.

        The measurement is eq. (1); how many of ours were at the server is
        uncertain (in transit, throttled at once, just ended), so its noise
        allows a fraction of a reservation either way.
        """
        f = self._filter
        at = self._at
        answered_at = now - self._one_way
        if not answered_at > at:
            answered_at = at
        dt = answered_at - at
        f.predict(dt, self._outflow.mean, self._outflow.var, _HEADROOM_DRIFT_PER_S * dt, True)
        self._at = answered_at
        if cost is not None:
            f.x[_Filter.D] -= cost
            self._settled += cost
        if self._learn:
            self._learn_outflow(remaining, answered_at, sure, maybe)
        h = self._reserved_vector(sure) if sure else {}
        h[_Filter.D] = 1.0
        u = f.x[_Filter.U]
        noise = _MEASUREMENT_VAR + _COUNT_DOUBT * u * u
        if maybe:
            # Some of ours may or may not have reached Canvas: whatever we
            # assumed would bias the parameters. The headroom follows eq. (2)
            # without this answer; the next clean one measures it.
            return
        self._observed += 1
        if self._observed % _CONVERGED_STRIDE and self._converged():
            # Converged: every answer would teach next to nothing, and the
            # headroom follows eq. (2) meanwhile. Learn from one in a few.
            return
        innovation = remaining - f.value(h)
        spread = f.variance(h) + noise
        if innovation * innovation > _GATE_Z_SQUARED * spread:
            # Far from what the filter expects: restart its headroom from this
            # answer rather than let one surprise drag the parameters.
            f.forget(_Filter.D, remaining - f.value({**h, _Filter.D: 0.0}))
            return
        f.update(h, remaining, noise)
        self._clamp()
        if self._reweighs_left > 0:
            # The reservations in the drained-bucket sample are better known now.
            self._reweighs_left -= 1
            self._reweigh_hwm()

    def _learn_lattice(self, permit: Permit, remaining: float, cost: float, now: float) -> None:
        """Measure the route's reservation from the spacing of remaining steps (``_lattice``).

        Only while every request of ours in flight is of the answered route:
        steps then are whole reservations of that route.
        """
        slot = permit.slot
        if self._active and any(other.slot != slot for other in self._active):
            self._lattice.forget()
            return
        answered_at = now - self._one_way
        gap = answered_at - self._at
        if not gap > 0.0:
            gap = 0.0
        # The count stayed above zero (the leak ran) if both answers show it well above.
        leak = self._outflow.mean
        leaking = self._hwm - remaining > leak * (gap + 0.1) + self.config.margin
        self._lattice.observe(remaining, answered_at, cost, slot, leak, leaking and self._leaking)
        self._leaking = leaking
        if self._lattice.fresh_steps < _LATTICE_EVERY:
            return
        stats = self._stats.get(permit.route) if permit.route else None
        typical = (stats or self._default_stats).cost or 0.0
        measured = self._lattice.take(_LATTICE_FLOOR_UNITS + _LATTICE_FLOOR_COSTS * typical)
        if measured is None:
            return
        spacing, variance = measured
        h = {_Filter.U: 1.0}
        if permit.slot >= 0:
            h[permit.slot] = 1.0
        self._filter.update(h, spacing, variance)
        self._clamp()

    def _learn_outflow(
        self, remaining: float, answered_at: float, sure: list[Permit], maybe: list[Permit]
    ) -> None:
        if self._hwm - remaining < 2 * self._filter.x[_Filter.U] + self.config.margin:
            # A count near zero, where the leak stops: no pair may span it.
            self._outflow.forget()
            return
        # A request sent lately may have been throttled on arrival (holding
        # nothing) without our knowing yet: only settled facts make a pair.
        settled_before = answered_at + self._one_way - self._settled_after()
        if maybe or any(permit.admitted_at > settled_before for permit in sure):
            return
        counts: dict[int, int] = {}
        for permit in sure:
            counts[permit.slot] = counts.get(permit.slot, 0) + 1
        key = tuple(value for pair in sorted(counts.items()) for value in pair)
        # The reservations cancel out of a pair: only the answers' own noise.
        self._outflow.observe(key, remaining, answered_at, self._settled, _PAIR_VAR)

    def _converged(self) -> bool:
        """Whether every route's reservation is known to within a unit."""
        # up_front_sd_for(route) < 1.0 for each, without building the coefficients:
        # the variance of U + dU_slot is the same sum, term by term, as _Filter.variance.
        p = self._filter.p
        row = p[_Filter.U]
        if not self._slots:
            total = 0.0 + row[_Filter.U]
            return math.sqrt(total if total > 0.0 else 0.0) < 1.0
        for slot in self._slots.values():
            total = 0.0 + row[_Filter.U] + row[slot] + p[slot][_Filter.U] + p[slot][slot]
            if not math.sqrt(total if total > 0.0 else 0.0) < 1.0:
                return False
        return True

    def _reserved_vector(self, permits: Iterable[Permit], weight: float = 1.0) -> dict[int, float]:
        """Coefficients of the sum of *permits*' reservations over the filter's state, negated."""
        # No zero coefficients: the filter's sums run over the entries.
        h: dict[int, float] = {}
        for permit in permits:
            h[_Filter.U] = h.get(_Filter.U, 0.0) - weight
            if permit.slot >= 0:
                h[permit.slot] = h.get(permit.slot, 0.0) - weight
        return h

    def _on_throttled(self, permit: Permit, remaining: float, now: float) -> None:
        """Canvas refused: ``count + U >= hwm``, so this route's reservation is >= remaining."""
        self._throttled += 1
        self._since_throttle = 0
        if self._learn and permit.route:
            stats = self._stats.get(permit.route)
            if stats is None and len(self._stats) < _MAX_COST_ROUTES:
                stats = self._stats[permit.route] = _RouteStats()
            if stats is not None:
                stats.add_throttled(remaining)
        if permit.probe:
            # The probe found the edge: charge the estimate, and probe less often.
            self._probe_cooldown = min(5000, self._probe_cooldown * 2)
        elif self._learn and self._drain_sample is not None:
            self._doubt_drain_sample()
        h = {k: -v for k, v in self._reserved_vector([permit]).items()}
        if self._learn and self._filter.value(h) < remaining:
            # Another request may have settled between Canvas's check and its
            # answer, so this is evidence, not a bound: a loose measurement.
            self._filter.update(h, remaining, (0.25 * remaining) ** 2 + 4.0)
            self._clamp()
        self._emit(
            "canvas.throttle_paused",
            level="info",
            throttle=self.name,
            wait_s=round(self.pause_remaining(now), 3),
            wait_source="model",
            rate_limit_remaining=round(remaining, 3),
            in_flight=len(self._active),
            in_flight_limit=self.in_flight_limit(now),
            probe=permit.probe,
        )

    def _doubt_drain_sample(self) -> None:
        """Drop a drained-bucket hwm above every remaining seen once throttles contradict it.

        The sample adds back our reservations at the server; one counted there
        that had ended (its answer slow on the wire) raises hwm by a whole
        reservation, and every later admission overshoots. ``remaining <= hwm``
        is the one fact no timing can bend: fall back to it.
        """
        if self._hwm <= self._highest + 0.5 * self.up_front_cost:
            return
        self._hwm_doubts += 1
        if self._hwm_doubts >= _HWM_DOUBTS:
            self._hwm_doubts = 0
            self._drain_sample = None
            self._reweighs_left = 0
            self._reweigh_hwm()

    def _without_headers(
        self, permit: Permit, throttled: bool, cost: float | None, now: float
    ) -> None:
        """No quota header: pace by AIMD on throttles alone (one cut per congestion event)."""
        # A request ended without an answer: what it cost Canvas is unknown.
        self._outflow.forget()
        if not throttled:
            self._headerless_events = 0
            if self._cap is not None:
                self._cap += 1
                if self._cap >= self.config.max_in_flight:
                    self._cap = None
            return
        self._throttled += 1
        if permit.admitted_at < self._cut_at:
            # Sent before the last cut: part of the same congestion event.
            return
        self._headerless_events += 1
        self._cut_at = now
        self._cap = max(1.0, len(self._active) / 2)
        wait = min(
            _HEADERLESS_PAUSE_CAP_S, _HEADERLESS_PAUSE_S * 2 ** (self._headerless_events - 1)
        )
        self._pause_until = max(self._pause_until, now + wait)
        self._emit(
            "canvas.throttle_paused",
            level="info",
            throttle=self.name,
            wait_s=round(wait, 3),
            wait_source="backoff",
            rate_limit_remaining=None,
            in_flight=len(self._active),
            in_flight_limit=int(self._cap),
            probe=False,
        )

    def _learn_cost(self, route: str | None, cost: float) -> None:
        up_front = self.up_front_for(route)
        self._default_stats.add_cost(cost, up_front)
        if route:
            stats = self._stats.get(route)
            if stats is None:
                if len(self._stats) >= _MAX_COST_ROUTES:
                    return
                stats = self._stats[route] = _RouteStats()
            stats.add_cost(cost, up_front)

    def _clamp(self) -> None:
        """Keep every estimate within physical bounds, whatever the evidence did."""
        # Comparisons, not min/max calls: this runs on every answer, often twice.
        x = self._filter.x
        hwm = self._hwm
        if hwm < _MIN_HWM:
            hwm = self._hwm = _MIN_HWM
        elif hwm > MAX_HWM:
            hwm = self._hwm = MAX_HWM
        u = x[_Filter.U]
        if u < MIN_UP_FRONT_COST:
            u = x[_Filter.U] = MIN_UP_FRONT_COST
        elif u > hwm:
            u = x[_Filter.U] = hwm
        d = x[_Filter.D]
        if d < -MAX_HWM:
            x[_Filter.D] = -MAX_HWM
        elif d > _MAX_HEADROOM:
            x[_Filter.D] = _MAX_HEADROOM
        if self._slots:
            low = MIN_UP_FRONT_COST - u
            for slot in self._slots.values():
                value = x[slot]
                if value < low:
                    x[slot] = low
                elif value > hwm:
                    x[slot] = hwm

    def _log_moves(self) -> None:
        logged = self._logged
        # The common case, that nothing moved, without building the loop's tuples.
        before = logged["hwm"]
        if abs(self._hwm - before) <= _LOG_MOVE * abs(before):
            before = logged["up_front_cost"]
            if abs(self._filter.x[_Filter.U] - before) <= _LOG_MOVE * abs(before):
                before = logged["outflow"]
                if abs(self._outflow.mean - before) <= _LOG_MOVE * abs(before):
                    return
        for name, value in (
            ("hwm", self._hwm),
            ("up_front_cost", self.up_front_cost),
            ("outflow", self.outflow),
        ):
            before = self._logged[name]
            if abs(value - before) > _LOG_MOVE * abs(before):
                self._logged[name] = value
                variance = self.parameters()[name + "_var"]
                self._emit(
                    "canvas.throttle_learned",
                    level="info",
                    throttle=self.name,
                    parameter=name,
                    value=round(value, 3),
                    previous=round(before, 3),
                    sd=round(math.sqrt(max(0.0, variance)), 3),
                    answers=self._answers,
                )


def _add(h: dict[int, float], permit: Permit, weight: float) -> None:
    """Add *permit*'s reservation, times *weight*, to the coefficients *h*."""
    h[_Filter.U] = h.get(_Filter.U, 0.0) + weight
    if permit.slot >= 0:
        h[permit.slot] = h.get(permit.slot, 0.0) + weight


def _bet_variance(chance: float) -> float:
    """The variance a bet that succeeds with *chance* is kept for (per unit of stake squared).

    Not the Bernoulli's own, chance * (1 - chance): 2.5 of its standard
    deviations cover its loss only up to a chance of 0.86, so a single
    surer bet would be taken with up to a 14% chance of a throttle (the
    hosted install throttled 0.74% so). The least variance whose Gaussian
    tail bounds the Bernoulli's (its sub-Gaussian variance proxy, Kearns and
    Saul 1998): (1 - 2p) / (2 ln((1 - p) / p)), a quarter at p = 1/2.
    """
    if chance <= 0.0 or chance >= 1.0:
        return 0.0
    if abs(chance - 0.5) < 1e-9:
        return 0.25
    return (1.0 - 2.0 * chance) / (2.0 * math.log((1.0 - chance) / chance))


def _plausible(value: float, variance: float) -> bool:
    return (
        math.isfinite(value) and math.isfinite(variance) and 0 < value <= MAX_HWM and variance > 0
    )


def _no_event(event: str, **fields: Any) -> None:
    """Default event sink: drop."""
