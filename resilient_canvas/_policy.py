"""What to retry, how long to wait, and when to stop: ``RetryPolicy`` and ``RetryBudget``."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field

from resilient_canvas._errors import (
    CanvasException,
    ConnectError,
    ConnectionDropped,
    InvalidResponse,
    RateLimitExceeded,
    RequestTimeout,
    ServiceUnavailable,
)

Seconds = float | dt.timedelta

#: Methods that may be repeated without changing the result (RFC 9110 9.2.2, minus TRACE).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

DEFAULT_RETRY_ON: tuple[type[CanvasException], ...] = (
    RateLimitExceeded,
    ServiceUnavailable,
    RequestTimeout,
    ConnectError,
    ConnectionDropped,
    InvalidResponse,
)


def seconds(value: Seconds) -> float:
    """Return *value* in seconds, whether a number or a ``timedelta``."""
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSettings:
    """Parameters of a :class:`RetryBudget` (botocore's standard-mode numbers).

    Attributes:
        capacity: Tokens when full.
        retry_cost: Tokens a retry spends.
        timeout_retry_cost: Tokens a retry after a timeout spends.
        throttle_retry_cost: Tokens a retry after a throttle spends. Zero by
            default: throttles are paced by the throttle, not an outage.
        success_refund: Tokens a success returns when it needed no retry.
    """

    capacity: float = 500.0
    retry_cost: float = 5.0
    timeout_retry_cost: float = 10.0
    throttle_retry_cost: float = 0.0
    success_refund: float = 1.0

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError("capacity must be positive.")
        if min(self.retry_cost, self.timeout_retry_cost, self.throttle_retry_cost) < 0:
            raise ValueError("Retry costs must not be negative.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a call is retried.

    Attributes:
        attempts: Most attempts in all, the first included (1 disables retries).
            Under a throttle, attempts that Canvas throttled count against
            *throttled_attempts* instead.
        throttled_attempts: Most attempts of one call that Canvas may
            throttle while a throttle paces the call. They did no work at
            Canvas, and the throttle waits for room before each: counted as
            failures, they failed calls of a bulk job that only had to wait
            (processes sharing a token without Redis).
        backoff_base: First backoff ceiling in seconds; it doubles per attempt
            (full jitter: the wait is uniform between 0 and the ceiling).
        backoff_cap: Largest backoff ceiling.
        deadline: Wall time allowed for the whole call, waits included; a wait
            that would cross it is not taken.
        attempt_timeout: Time allowed for one attempt.
        max_wait: Longest single wait we accept. A server or model asking for
            more makes the call fail at once, with the hint on the error.
        retry_on: Exception classes that may be retried (their subclasses too).
            Whether a failure that may have been applied is retried still
            depends on the method (see ``idempotent``).
        budget: Settings of the retry budget created for calls under this
            policy (one per client, throttle or decorated function: the
            budget is shared state, the policy only configures it).
    """

    attempts: int = 10
    throttled_attempts: int = 30
    backoff_base: Seconds = 0.5
    backoff_cap: Seconds = 10.0
    deadline: Seconds = 120.0
    attempt_timeout: Seconds = 30.0
    max_wait: Seconds = 60.0
    retry_on: tuple[type[CanvasException], ...] = field(default=DEFAULT_RETRY_ON)
    budget: BudgetSettings = BudgetSettings()

    def __post_init__(self) -> None:
        # Zero or negative times would turn every call into an instant failure
        # or an endless loop, and such typos are otherwise hard to spot.
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}.")
        if self.throttled_attempts < 1:
            raise ValueError(
                f"throttled_attempts must be at least 1, not {self.throttled_attempts}."
            )
        for name in ("backoff_base", "backoff_cap", "deadline", "attempt_timeout", "max_wait"):
            if seconds(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}.")
        if seconds(self.backoff_cap) < seconds(self.backoff_base):
            raise ValueError("backoff_cap must not be smaller than backoff_base.")
        if not all(isinstance(c, type) and issubclass(c, CanvasException) for c in self.retry_on):
            raise TypeError("retry_on must contain CanvasException subclasses.")

    def allows(
        self, error: CanvasException, *, method: str | None, idempotent: bool | None
    ) -> bool:
        """Return whether *error* may be retried for a request of *method*.

        A failure that certainly did not reach the application (throttled, 503,
        could not connect) is retried for any method; one that may have been
        applied only when the request is idempotent.
        """
        if not isinstance(error, self.retry_on) or not error.retryable:
            return False
        if not error.may_have_been_applied:
            return True
        if idempotent is not None:
            return idempotent
        return method is not None and method.upper() in IDEMPOTENT_METHODS


class RetryBudget:
    """Tokens shared by every call of a client, so an outage cannot become a retry storm.

    Each retry spends tokens; each success refunds some. When the budget is
    empty, failures are raised at once instead of retried.
    """

    def __init__(self, settings: BudgetSettings | None = None) -> None:
        self.settings = settings or BudgetSettings()
        self._tokens = self.settings.capacity
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RetryBudget(tokens={self._tokens:.1f}/{self.settings.capacity:.0f})"

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._tokens

    def cost_of(self, error: CanvasException) -> float:
        """Return how many tokens retrying after *error* costs."""
        if isinstance(error, RateLimitExceeded):
            return self.settings.throttle_retry_cost
        if isinstance(error, RequestTimeout):
            return self.settings.timeout_retry_cost
        return self.settings.retry_cost

    def try_spend(self, amount: float) -> bool:
        """Spend *amount* tokens if there are enough; return whether it was spent."""
        with self._lock:
            if amount > self._tokens:
                return False
            self._tokens -= amount
            return True

    def refund(self, amount: float) -> None:
        """Return *amount* tokens, up to capacity."""
        with self._lock:
            self._tokens = min(self.settings.capacity, self._tokens + amount)

    def record_success(self, spent: float) -> None:
        """Refund after a successful call: what it spent, or the success refund."""
        amount = spent if spent > 0 else self.settings.success_refund
        # A full budget (the usual state) stays full: no lock for a refund that
        # adds nothing. Reading the float is atomic, and a spend racing with
        # this check is then simply the later of the two.
        if amount >= 0 and self._tokens >= self.settings.capacity:
            return
        self.refund(amount)
