"""Faults the simulated Canvas injects: by probability from a seeded RNG, or on a schedule."""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field


class Fault(enum.Enum):
    """Every way the simulator can misbehave, named after what a client observes."""

    #: 503 HTML maintenance page, no Canvas headers; the request never ran.
    MAINTENANCE = "maintenance"
    #: 502 HTML from the load balancer; the request never ran.
    BAD_GATEWAY = "bad_gateway"
    #: The request ran (a write is applied), then the gateway answers 504 HTML.
    GATEWAY_TIMEOUT = "gateway_timeout"
    #: The server stalls for ``hang_seconds`` (longer than a client's timeout) and then runs.
    HANG = "hang"
    #: The server answers ``slow_seconds`` late.
    SLOW = "slow"
    #: The request ran, then the connection is closed without an answer.
    DROP_AFTER_WRITE = "drop_after_write"
    #: The request ran (a write is applied), then the answer stalls for
    #: ``hang_seconds``: the client's attempt times out after the write.
    HANG_AFTER_WRITE = "hang_after_write"
    #: 200 with a truncated JSON body; the request ran.
    MALFORMED_JSON = "malformed_json"
    #: 500 with a Canvas error report; the request never ran.
    SERVER_ERROR = "server_error"
    #: 500 HTML page: an error while rendering the error.
    HTML_ERROR = "html_error"


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Which faults happen, how often, and to what.

    Attributes:
        rates: Probability of each fault per eligible request (summing to at most 1).
        schedule: Faults forced on given request numbers (1 for the first request
            the simulator serves), for deterministic tests.
        methods: Methods eligible for random faults (scheduled ones always apply).
            DROP_AFTER_WRITE, HANG_AFTER_WRITE and GATEWAY_TIMEOUT are only
            useful on writes.
        hang_seconds: How long a HANG or a HANG_AFTER_WRITE stalls.
        slow_seconds: How late a SLOW answers.
        seed: Seed of the fault RNG.
    """

    rates: Mapping[Fault, float] = field(default_factory=dict)
    schedule: Mapping[int, Fault] = field(default_factory=dict)
    methods: frozenset[str] = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"})
    hang_seconds: float = 30.0
    slow_seconds: float = 0.5
    seed: int = 7

    def __post_init__(self) -> None:
        # Probabilities outside [0, 1] are a typo that would silently do nothing.
        if any(not 0.0 <= rate <= 1.0 for rate in self.rates.values()):
            raise ValueError("Every fault rate must be between 0 and 1.")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("Fault rates must sum to at most 1.")
        if self.hang_seconds < 0 or self.slow_seconds < 0:
            raise ValueError("hang_seconds and slow_seconds must not be negative.")


class FaultPicker:
    """Chooses the fault, if any, for each request, reproducibly."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._ordered = sorted(settings.rates.items(), key=lambda item: item[0].value)

    def pick(self, request_number: int, method: str) -> Fault | None:
        """Return the fault for the *request_number*-th request, or None."""
        scheduled = self.settings.schedule.get(request_number)
        if scheduled is not None:
            return scheduled
        if not self._ordered or method not in self.settings.methods:
            return None
        draw = self._rng.random()
        for fault, rate in self._ordered:
            if draw < rate:
                return fault
            draw -= rate
        return None
