"""What happened on each attempt of a call, attached to the error when we give up."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt: why it failed and how long we waited after it.

    Attributes:
        number: 1 for the first attempt.
        reason: The failure's short name (``throttled``, ``read_timeout``...).
        status: The HTTP status, when there was a response.
        wait_s: The wait scheduled after this attempt (0.0 when we gave up).
        wait_source: ``server`` (Retry-After), ``model`` (Canvas bucket) or
            ``backoff``; None when no wait followed.
    """

    number: int
    reason: str
    status: int | None
    wait_s: float = 0.0
    wait_source: str | None = None


@dataclass(slots=True)
class AttemptHistory:
    """Every failed attempt of one call, in order, and why retrying stopped."""

    attempts: list[Attempt] = field(default_factory=list)
    gave_up_because: str | None = None

    @property
    def count(self) -> int:
        """How many attempts failed."""
        return len(self.attempts)

    @property
    def total_wait_s(self) -> float:
        """Seconds spent waiting between attempts."""
        return round(sum(attempt.wait_s for attempt in self.attempts), 3)

    @property
    def reasons(self) -> list[str]:
        """The failure reason of each attempt, in order."""
        return [attempt.reason for attempt in self.attempts]
