"""What the simulated Canvas is like: per-route work and cost, network latency, presets.

**The default is realistic.** A real Canvas spends time on every request, so
requests sent together are in flight together and the throttle's up-front
reservation bites: from an idle token, 11 concurrent requests fit under hwm
600 and the 12th is refused. The default route profile therefore has:

- **service time** lognormal, mean 0.2 s, sigma 0.7: median 0.16 s, 95th
  percentile 0.5 s, 99th 0.8 s. Canvas API calls are typically answered in
  100-300 ms (Instructure's guidance to keep one request in flight, and what
  integrators report for simple GETs on hosted Canvas), with a tail of slow
  listings; a lognormal is the usual model of web-request latency.
- **cost** ``0.002 + 0.8 x service seconds``: Canvas charges CPU plus database
  seconds, a large part of a request's server time, so costs follow the
  service time: mean 0.16, median 0.13, 99th percentile 0.64 units. That is
  "usually well under 1 unit, with a heavy tail", as ``X-Request-Cost``
  headers of ordinary calls read, and sequential clients are never throttled
  (0.16 units per ~0.2 s leaks away at 10 units/s), as Canvas's documentation
  promises.
- **no network latency**: it depends on where the client runs, not on Canvas;
  set :attr:`SimulatorSettings.latency` to model it.

``SimulatorSettings.instant()`` (or ``RouteProfile.instant()``) keeps the old
zero-time behaviour for tests that only check data and errors.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Literal

from resilient_canvas.testing._bucket import ThrottleSettings
from resilient_canvas.testing._data import DataSettings
from resilient_canvas.testing._distribution import Distribution
from resilient_canvas.testing._faults import FaultSettings

#: The default service time: median 0.16 s, 99th percentile 0.8 s (see above).
REALISTIC_SERVICE = Distribution.lognormal(0.2, 0.7)
#: Uniform spread the legacy ``service_time=`` keyword implies.
LEGACY_JITTER = 0.2


@dataclass(frozen=True, slots=True, init=False)
class RouteProfile:
    """How long a route works and what that costs against the throttle.

    Canvas charges a request its CPU and database seconds. By default the
    cost follows the sampled service time, ``base_cost + seconds * cost_rate``;
    give *cost* to draw it independently instead.

    Args:
        service: Service-time distribution in seconds (realistic by default).
        cost: Cost distribution; None ties the cost to the service time.
        cost_rate: Cost units per second of service time (tied costs only).
        base_cost: Cost of a request that does no work (tied costs only).
        service_time: Legacy shorthand for ``service``: this mean, varied
            uniformly by *jitter* (0.2 unless given) either way.
        jitter: See *service_time*.
    """

    service: Distribution
    cost: Distribution | None
    cost_rate: float
    base_cost: float

    def __init__(
        self,
        service: Distribution | None = None,
        *,
        cost: Distribution | None = None,
        cost_rate: float = 0.8,
        base_cost: float = 0.002,
        service_time: float | None = None,
        jitter: float | None = None,
    ) -> None:
        if service is not None and (service_time is not None or jitter is not None):
            raise ValueError("Give service, or service_time and jitter, not both.")
        if service is None and service_time is None:
            if jitter is not None:
                raise ValueError("jitter needs a service_time.")
            service = REALISTIC_SERVICE
        elif service is None:
            assert service_time is not None  # for the type checker: checked just above
            spread = LEGACY_JITTER if jitter is None else jitter
            service = (
                Distribution.uniform(service_time, spread)
                if spread
                else Distribution.constant(service_time)
            )
        if cost_rate < 0 or base_cost < 0:
            raise ValueError("cost_rate and base_cost must not be negative.")
        object.__setattr__(self, "service", service)
        object.__setattr__(self, "cost", cost)
        object.__setattr__(self, "cost_rate", cost_rate)
        object.__setattr__(self, "base_cost", base_cost)

    @classmethod
    def instant(cls) -> RouteProfile:
        """No service time and a negligible cost (0.002): nothing is ever in flight for long."""
        return cls(Distribution.constant(0.0))

    @property
    def service_time(self) -> float:
        """The mean service time in seconds."""
        return self.service.mean

    @property
    def mean_cost(self) -> float:
        """The expected cost of one request."""
        if self.cost is not None:
            return self.cost.mean
        return self.base_cost + self.service.mean * self.cost_rate

    def sample(self, rng: random.Random) -> tuple[float, float]:
        """Return (service seconds, cost) for one request."""
        seconds = self.service.sample(rng)
        if self.cost is not None:
            return seconds, self.cost.sample(rng)
        return seconds, self.base_cost + seconds * self.cost_rate


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """Everything that shapes the simulated Canvas.

    Attributes:
        throttle: The per-token leaky bucket.
        data: The size and seed of the data set.
        faults: Injected faults.
        default_route: Service time and cost of every route not in *routes*
            (realistic by default, see the module docs).
        routes: Profiles per route template, e.g.
            ``"GET /api/v1/courses/{course_id}/enrollments"`` (method optional).
        latency: One-way network delay, drawn independently for the request
            (before it reaches the throttle) and for the response (after its
            headers are computed, so a client reads them that much stale).
        token: The valid access token; a random one when None.
        expired_tokens: Tokens answered with "Expired access token.".
        insufficient_scope_tokens: Tokens answered with "Insufficient scopes on access token.".
        seed: Seed of service-time, cost and latency sampling.
        record_timeline: Record (time, bucket level, in flight) at every
            reservation and settlement, for plots.
        require_user_agent: Refuse (403, as hosted Canvas does since January
            2026) requests without a User-Agent or with a blocked one.
        blocked_user_agents: User-Agents refused even when present: a request
            whose User-Agent contains one of these (ignoring case) is refused.
        json_guard: When JSON answers start with ``while(1);``: ``"auto"``
            when the request's ``Accept`` names neither JSON nor ``*/*``,
            ``"always"``, or ``"never"``.
    """

    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    data: DataSettings = field(default_factory=DataSettings)
    faults: FaultSettings = field(default_factory=FaultSettings)
    default_route: RouteProfile = field(default_factory=RouteProfile)
    routes: Mapping[str, RouteProfile] = field(default_factory=dict)
    latency: Distribution = field(default_factory=Distribution)
    token: str | None = None
    expired_tokens: frozenset[str] = frozenset()
    insufficient_scope_tokens: frozenset[str] = frozenset()
    seed: int = 3
    record_timeline: bool = False
    require_user_agent: bool = True
    blocked_user_agents: tuple[str, ...] = ()
    json_guard: Literal["auto", "always", "never"] = "auto"

    @classmethod
    def hosted(cls, **changes: Any) -> SimulatorSettings:
        """Settings like Instructure-hosted Canvas (hwm 700, 429 when throttled)."""
        return replace(cls(throttle=ThrottleSettings.hosted()), **changes)

    @classmethod
    def instant(cls, **changes: Any) -> SimulatorSettings:
        """Every route answers at once: fast tests of data, errors and faults."""
        return replace(cls(default_route=RouteProfile.instant()), **changes)

    def route_profile(self, method: str, template: str) -> RouteProfile:
        """The profile of a route template (e.g. ``/api/v1/courses/{course_id}``)."""
        routes = self.routes
        return routes.get(f"{method} {template}") or routes.get(template) or self.default_route

    def profile_for_path(self, method: str, path: str) -> RouteProfile:
        """The profile serving a concrete *path* (``/api/v1/courses/101?per_page=5``)."""
        bare = path.partition("?")[0]
        for key in self.routes:
            wanted, _, template = key.rpartition(" ")
            if (not wanted or wanted == method) and _template_regex(template).fullmatch(bare):
                # An exact "METHOD template" key beats a method-less one, as for the server.
                return self.route_profile(method, template)
        return self.default_route


@lru_cache(maxsize=256)
def _template_regex(template: str) -> re.Pattern[str]:
    # aiohttp's {name} placeholders match one path segment.
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


def work_rng(seed: int) -> random.Random:
    """The stream service times and costs are drawn from (one draw set per served request)."""
    return random.Random(seed)


def latency_rng(seed: int) -> random.Random:
    """A separate stream for network latency, so it never shifts the work draws."""
    return random.Random(f"latency:{seed}")
