"""Waiting for Canvas background jobs: a deadline, backoff polling and stuck detection.

Canvas runs long work (grade updates, SIS imports, reports) as jobs that a
client polls. Jobs can sit in ``running`` for hours, so a poller needs three
bounds: a deadline for the whole wait, polls that grow further apart
(``poll_every`` times ``backoff`` up to ``max_poll_every``), and stuck
detection: a job whose state and progress have not changed for
``stuck_after`` seconds raises :class:`~resilient_canvas.exceptions.JobStuck`
instead of being polled until the deadline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from resilient_canvas._errors import CanvasException, JobStuck, RequestTimeout
from resilient_canvas._policy import Seconds, seconds
from resilient_canvas._retry import Clock, Sleep


@dataclass(frozen=True, slots=True)
class JobWait:
    """How to wait for one job.

    Attributes:
        poll_every: Seconds before the second poll.
        max_poll_every: Longest wait between two polls.
        backoff: Each wait is the previous one times this (1 for a steady pace).
        within: Seconds for the whole wait, on the client's clock.
        stuck_after: Seconds without any change of state or progress after
            which the job is declared stuck; None never does.
    """

    poll_every: float
    max_poll_every: float
    backoff: float
    within: float
    stuck_after: float | None

    def __post_init__(self) -> None:
        # Zero or negative times would poll in a tight loop or never.
        if min(self.poll_every, self.max_poll_every, self.within) <= 0:
            raise ValueError("poll_every, max_poll_every and within must be positive.")
        if self.backoff < 1:
            raise ValueError(f"backoff must be at least 1, not {self.backoff}.")
        if self.stuck_after is not None and self.stuck_after <= 0:
            raise ValueError("stuck_after must be positive, or None.")

    @classmethod
    def of(
        cls,
        *,
        poll_every: Seconds,
        max_poll_every: Seconds | None,
        backoff: float,
        within: Seconds,
        stuck_after: Seconds | None,
    ) -> JobWait:
        """Build from seconds or ``timedelta`` values."""
        first = seconds(poll_every)
        return cls(
            poll_every=first,
            max_poll_every=max(first, seconds(max_poll_every)) if max_poll_every else first,
            backoff=backoff,
            within=seconds(within),
            stuck_after=None if stuck_after is None else seconds(stuck_after),
        )


@dataclass(frozen=True, slots=True)
class JobKind:
    """What a kind of job looks like: its name, states, progress field, and failure."""

    name: str
    done: Collection[str]
    failed: Collection[str]
    progress_key: str
    fail: Callable[[Mapping[str, Any]], CanvasException]
    #: The key naming the job in an error's ``context``.
    id_key: str = "job_id"


async def wait_for_job(
    fetch: Callable[[], Awaitable[Any]],
    *,
    kind: JobKind,
    job_id: object,
    wait: JobWait,
    clock: Clock,
    sleep: Sleep,
    on_poll: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll *fetch* until the job ends; return its final state.

    *on_poll*, if given, sees every state polled (for a progress display).

    Raises:
        CanvasException: ``kind.fail(state)`` for a failed job.
        JobStuck: Nothing changed for ``wait.stuck_after`` seconds.
        RequestTimeout: The job had not ended within ``wait.within`` seconds.
    """
    started = clock()
    changed_at, last_mark = started, None
    interval = wait.poll_every
    while True:
        state = await fetch()
        if not isinstance(state, Mapping):
            state = {}
        if on_poll is not None:
            on_poll(state)
        workflow = state.get("workflow_state")
        if workflow in kind.done:
            return dict(state)
        if workflow in kind.failed:
            raise kind.fail(state)
        now = clock()
        mark = (workflow, state.get(kind.progress_key))
        if mark != last_mark:
            changed_at, last_mark = now, mark
        elif wait.stuck_after is not None and now - changed_at >= wait.stuck_after:
            raise _stuck(kind, job_id, state, now - changed_at)
        if now - started + interval > wait.within:
            raise RequestTimeout(
                f"{kind.name} {job_id} had not finished within {wait.within:g} s "
                f"(last state: {workflow}); it may still complete.",
                context={kind.id_key: job_id},
            )
        await sleep(interval)
        interval = min(interval * wait.backoff, wait.max_poll_every)


def _stuck(kind: JobKind, job_id: object, state: Mapping[str, Any], idle: float) -> JobStuck:
    progress = state.get(kind.progress_key)
    error = JobStuck(
        f"{kind.name} {job_id} looks stuck: still {state.get('workflow_state')} at "
        f"{progress if progress is not None else 'unknown'}% after {idle:g} s without any "
        "change. Canvas jobs can stall for hours; check it in Canvas, or wait longer with a "
        "larger stuck_after.",
        context={kind.id_key: job_id},
    )
    error.extra["state"] = dict(state)
    return error
