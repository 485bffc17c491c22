"""The process-wide throttle and retry budget of each token on each Canvas.

Every client of one token on one origin must pace through one throttle (the
bucket is the token's, not the client's) and share one retry budget (an
outage is the origin's). The registry hands them out by origin and token
fingerprint, never by the token itself, and forgets them: a throttle stays
while any client holds it and, after that, while it is among the most
recently used, so scripts that create a client per call still share state
while rotating OAuth tokens cannot grow memory without bound.
"""

from __future__ import annotations

import collections
import time
import weakref
from collections.abc import Callable
from typing import Any

from yarl import URL

from resilient_canvas._breaker import Circuit, breaker_for
from resilient_canvas._bucket_model import ThrottleConfig
from resilient_canvas._http import origin_of, token_fingerprint
from resilient_canvas._policy import BudgetSettings, RetryBudget
from resilient_canvas._throttle import Throttle

#: Throttles kept alive after the last client let go, most recent first out last.
RECENT_THROTTLES = 256

Key = tuple[str, str, str | None]


class _Registry:
    """Values alive anywhere (weakly held) plus the most recently used (strongly held)."""

    def __init__(self, keep: int) -> None:
        self._alive: weakref.WeakValueDictionary[Key, Any] = weakref.WeakValueDictionary()
        self._recent: collections.OrderedDict[Key, Any] = collections.OrderedDict()
        self._keep = keep

    def get(self, key: Key) -> Any:
        value = self._alive.get(key)
        if value is not None:
            self._touch(key, value)
        return value

    def put(self, key: Key, value: Any) -> None:
        self._alive[key] = value
        self._touch(key, value)

    def _touch(self, key: Key, value: Any) -> None:
        self._recent[key] = value
        self._recent.move_to_end(key)
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)

    def values(self) -> list[Any]:
        return list(self._alive.values())

    def clear(self) -> None:
        self._alive.clear()
        self._recent.clear()

    def __len__(self) -> int:
        return len(self._alive)


_THROTTLES = _Registry(RECENT_THROTTLES)
_BUDGETS = _Registry(RECENT_THROTTLES)


def _key(base_url: Any, access_token: str, redis_url: str | None = None) -> Key:
    return origin_of(URL(str(base_url))), token_fingerprint(access_token), redis_url


def throttle_for(
    base_url: Any,
    access_token: str,
    *,
    config: ThrottleConfig | None = None,
    redis_url: str | None = None,
) -> Throttle:
    """Return the process-wide throttle for one token on one Canvas, creating it once.

    The key is the origin and a hash of the token, never the token itself.
    With *redis_url*, the throttle's state is shared through Redis with every
    process using the same token on the same Canvas.

    Raises:
        ValueError: If *config* differs from the one the shared throttle was
            made with: two settings for one bucket cannot both hold. Pass the
            same config (or none), or give the client its own ``Throttle``.
    """
    key = _key(base_url, access_token, redis_url)
    throttle: Throttle | None = _THROTTLES.get(key)
    if throttle is not None:
        if config is not None and config != throttle.config:
            raise ValueError(
                f"The shared throttle of {throttle.name} already runs with {throttle.config}; "
                f"it cannot also run with {config}. Pass the same config, or none, or give "
                "this client a Throttle of its own."
            )
        return throttle
    name = f"{key[0]}#{key[1]}"
    if redis_url is None:
        throttle = Throttle(config, name=name)
    else:
        from resilient_canvas._redis_throttle import RedisThrottle

        throttle = RedisThrottle(redis_url, name, config=config)
    _THROTTLES.put(key, throttle)
    return throttle


def budget_for(
    base_url: Any, access_token: str, settings: BudgetSettings | None = None
) -> RetryBudget:
    """Return the retry budget shared by every client of one token on one Canvas.

    Raises:
        ValueError: If *settings* differ from those the shared budget was made with.
    """
    key = _key(base_url, access_token)
    budget: RetryBudget | None = _BUDGETS.get(key)
    if budget is None:
        budget = RetryBudget(settings)
        _BUDGETS.put(key, budget)
    elif settings is not None and settings != budget.settings:
        raise ValueError(
            f"The retry budget of this token on {key[0]} already runs with {budget.settings}; "
            f"it cannot also run with {settings}."
        )
    return budget


def circuit_for(
    origin: str, throttle: Throttle | None, clock: Callable[[], float] = time.monotonic
) -> Circuit:
    """Return the circuit breaker a client on *origin* shares: through Redis when its throttle is.

    Keyed by origin, never by token: an outage is Canvas's. A client whose
    clock is not the real one (tests) gives it to the shared circuit too.
    """
    url = getattr(throttle, "redis_url", None)
    if not isinstance(url, str):
        return breaker_for(origin, clock=clock)
    from resilient_canvas._redis_circuit import redis_breaker_for

    return redis_breaker_for(origin, url, clock=None if clock is time.monotonic else clock)


def clear_throttles() -> None:
    """Forget every shared throttle and retry budget (for tests)."""
    _THROTTLES.clear()
    _BUDGETS.clear()


async def close_throttles() -> None:
    """Close every shared throttle's and circuit's connections (Redis); call at shutdown."""
    from resilient_canvas._redis_circuit import close_redis_breakers

    throttles = _THROTTLES.values()
    clear_throttles()
    for throttle in throttles:
        await throttle.aclose()
    await close_redis_breakers()
