"""What the Redis-backed throttle and circuit share: the optional client, errors, time.

Both keep their own scripts and decisions; this module holds only the
plumbing they would otherwise each repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

try:
    from redis import asyncio as redis_asyncio
    from redis.exceptions import RedisError

    HAVE_REDIS = True
except ImportError:  # pragma: no cover - exercised only without the redis extra
    redis_asyncio = None  # type: ignore[assignment]
    HAVE_REDIS = False
    RedisError = OSError  # type: ignore[misc,assignment]

__all__ = [
    "ERRORS",
    "HAVE_REDIS",
    "LUA_NOW",
    "RedisError",
    "redis_asyncio",
    "require_redis",
    "start_task",
    "text",
]

#: What a Redis call may raise that means "Redis is not answering now".
ERRORS = (RedisError, OSError, TimeoutError)

#: Lua: ``now`` is ``ARGV[1]`` when a clock is injected (tests), else Redis's
#: ``TIME``: one clock for every machine sharing the keys.
LUA_NOW = """
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""


def require_redis(what: str, injected: object) -> None:
    """Raise a clear error when *what* needs the redis package and no client was injected."""
    if not HAVE_REDIS and injected is None:
        raise RuntimeError(
            f"{what} needs the redis package: pip install 'resilient-canvas[redis]'."
        )


def text(value: Any) -> str:
    """A Redis reply item as text (replies are bytes unless decoded)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def start_task(
    tasks: set[asyncio.Task[None]],
    name: str,
    coroutine: Coroutine[Any, Any, None],
    *,
    unique: bool = True,
) -> None:
    """Run *coroutine* as a task of the running loop, kept in *tasks* until it ends.

    With *unique*, not if a task of that name is still running there (a
    heartbeat, a keeper, a reconnect loop: one per event loop).
    """
    if unique and any(task.get_name() == name and not task.done() for task in tasks):
        coroutine.close()
        return
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
