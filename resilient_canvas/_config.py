"""Process-wide switches: the testing mode that turns every wait to zero."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _TestingMode:
    enabled: bool = False
    attempts: int | None = None


_TESTING = _TestingMode()


def set_testing(enabled: bool, *, attempts: int | None = None) -> None:
    """Turn testing mode on or off for the whole process.

    In testing mode every retry and throttle wait is zero, so users' test
    suites exercise retries without sleeping.

    Args:
        enabled: Whether testing mode is on.
        attempts: When given, caps the attempts of every call (1 disables
            retries) while testing mode is on.

    Raises:
        ValueError: If *attempts* is smaller than 1.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}.")
    _TESTING.enabled = enabled
    _TESTING.attempts = attempts if enabled else None


def is_testing() -> bool:
    """Return whether testing mode is on."""
    return _TESTING.enabled


def testing_attempts() -> int | None:
    """Return the attempt cap of testing mode, if any."""
    return _TESTING.attempts if _TESTING.enabled else None
