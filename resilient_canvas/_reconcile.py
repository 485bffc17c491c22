"""Reconciling writes whose outcome is unknown: look before repeating.

A POST whose connection dropped after it was sent, or whose attempt timed
out, may have been applied. Repeating it blindly can duplicate it; raising
leaves the caller to find out by hand. With a *check* (a read that answers
"did this write happen?") the call decides instead:

- the check finds exactly one candidate: the write happened; the call
  returns that object, flagged as reconciled;
- the check finds nothing: the write did not happen; it is repeated, once.
  After a timeout Canvas may still be running the write, so "nothing" is
  only trusted after a second look, one attempt timeout later;
- the check fails, or finds two or more candidates: the call raises
  :class:`~resilient_canvas.exceptions.OutcomeUnknown` with both causes;
- the check returns None (it cannot look this write up): the original
  failure is raised, as without a check.

:class:`Reconciliation` is that decision as a plain object (no I/O);
:func:`reconcile` drives it with the check and the repeat it is given. The
shells (the client, ``@resilient``) build those two callables, so the
checks run under the call's throttle and deadline.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

from resilient_canvas import _logging
from resilient_canvas._config import is_testing
from resilient_canvas._errors import CanvasException, OutcomeUnknown, RequestTimeout
from resilient_canvas._secret import redact

T = TypeVar("T")

#: Logged when a check found the write: the call returns what it found.
WRITE_RECONCILED = "canvas.write_reconciled"
#: Logged when a check did not find the write and it is sent once more.
WRITE_REPEATED = "canvas.write_repeated"

#: The give-up reason of a write that failed in a way that may have been applied.
MAY_HAVE_BEEN_APPLIED = "may_have_been_applied"


@dataclass(frozen=True, slots=True)
class Write:
    """A write whose outcome is unknown, as a check sees it.

    Attributes:
        method: The HTTP method (``POST``).
        path: The URL path, without query (``/api/v1/courses/101/enrollments``).
        route: The route template (``POST /api/v1/courses/:id/enrollments``).
        params: Every parameter sent (query and body, a JSON body too), as
            the flat Rails pairs Canvas reads: ``("enrollment[user_id]", "5")``.
        sent_at: When the call started (UTC), to tell new objects from old.
    """

    method: str
    path: str
    route: str
    params: tuple[tuple[str, str], ...]
    sent_at: dt.datetime

    def param(self, key: str) -> str | None:
        """The first value sent for the Rails *key* (``"enrollment[user_id]"``), or None."""
        return next((value for name, value in self.params if name == key), None)

    @property
    def ids(self) -> tuple[str, ...]:
        """The path segments the route template replaced with ``:id``, in order."""
        template = self.route.partition(" ")[2].split("/")
        segments = self.path.split("/")
        return tuple(seg for seg, part in zip(segments, template, strict=False) if part == ":id")


class CheckReader(Protocol):
    """The reads a check may make: the client's, under the call's throttle and deadline."""

    async def get(self, path: str, *, params: Any = None) -> Any:
        """GET *path* and return its decoded JSON."""
        ...

    def paginate(self, path: str, *, params: Any = None) -> AsyncIterator[Any]:
        """Yield every item of a listing."""
        ...


class Reconciler(Protocol):
    """A check: "did this write happen?".

    Return the objects the write would have created or changed: ``[]`` when
    it did not happen, one object when it did, two or more when the answer
    is ambiguous. Return None when this write cannot be looked up (a field
    the lookup needs is missing): the call then fails as without a check.
    Raise when the lookup itself fails.
    """

    def __call__(self, write: Write, canvas: CheckReader, /) -> Awaitable[Sequence[Any] | None]: ...


class Verdict(enum.Enum):
    """What follows a check."""

    #: Exactly one candidate: the write happened; return it.
    FOUND = "found"
    #: Nothing found: send the write again (once).
    REPEAT = "repeat"
    #: Nothing found yet, but the write timed out and Canvas may still be
    #: running it: look again after a pause before trusting "not found".
    LOOK_AGAIN = "look_again"
    #: Nothing found after the repeat failed too: not sent a third time.
    NOT_FOUND_AFTER_REPEAT = "not_found_after_repeat"
    #: Two or more candidates: a person must look.
    AMBIGUOUS = "ambiguous"
    #: The check cannot look this write up: fail as without a check.
    UNCHECKABLE = "uncheckable"


@dataclass(slots=True)
class Reconciliation:
    """The decision for one write across its checks: at most one repeat.

    Attributes:
        repeated: Whether the write has been sent again after "not found".
        looked_again: Whether "not found" was checked a second time, after a pause.
    """

    repeated: bool = False
    looked_again: bool = False

    def after_check(
        self, candidates: Sequence[Any] | None, *, may_still_run: bool = False
    ) -> Verdict:
        """Decide what follows a check that returned *candidates*.

        Args:
            candidates: What the check returned.
            may_still_run: The failure was a timeout: Canvas may still be
                applying the write, so a first "not found" is not trusted.
        """
        if candidates is None:
            return Verdict.UNCHECKABLE
        if len(candidates) == 1:
            return Verdict.FOUND
        if candidates:
            return Verdict.AMBIGUOUS
        if self.repeated:
            # A write whose repeat also failed is not sent a third time: the
            # promise is "at most once more", whatever the check says.
            return Verdict.NOT_FOUND_AFTER_REPEAT
        if may_still_run and not self.looked_again:
            self.looked_again = True
            return Verdict.LOOK_AGAIN
        self.repeated = True
        return Verdict.REPEAT


@dataclass(frozen=True, slots=True)
class Settle:
    """How to take the second look at a timed-out write that was not found.

    Attributes:
        seconds: The pause before looking again (the attempt timeout: Canvas
            gets as long again as the client waited for its answer).
        pause: How the pause passes.
        time_left: Seconds left of the write's deadline.
    """

    seconds: float
    pause: Callable[[float], Awaitable[None]]
    time_left: Callable[[], float]


@dataclass(slots=True)
class WriteNotes:
    """What reconciliation did during one bulk item (read by ``map``)."""

    reconciled: int = 0
    repeated: int = 0


#: The notes of the bulk item being run, if any: ``map`` sets a fresh one per item.
current_notes: contextvars.ContextVar[WriteNotes | None] = contextvars.ContextVar(
    "resilient_canvas_write_notes", default=None
)


def outcome_unknown(error: CanvasException) -> bool:
    """Whether retrying gave up on *error* because the write may have been applied."""
    history = error.attempts
    return history is not None and history.gave_up_because == MAY_HAVE_BEEN_APPLIED


@dataclass(frozen=True, slots=True)
class Described:
    """What the events and errors of one reconciliation name.

    Attributes:
        method: The write's HTTP method, when known.
        url: The write's URL without credentials, when known.
        check: The check's name.
        label: The decorated function's name, for ``@resilient``.
        token: The token's fingerprint, never the token.
    """

    method: str | None
    url: str | None
    check: str
    label: str | None = None
    token: str | None = None

    def fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"method": self.method, "url": self.url, "check": self.check}
        if self.label:
            fields["callable"] = self.label
        if self.token:
            fields["token"] = self.token
        return fields

    @property
    def what(self) -> str:
        if self.method and self.url:
            return f"{self.method} {self.url}"
        return self.label or "The write"


async def reconcile(
    failure: CanvasException,
    *,
    check: Callable[[], Awaitable[Sequence[Any] | None]],
    repeat: Callable[[], Awaitable[T]],
    found: Callable[[Any], T],
    described: Described,
    settle: Settle | None = None,
) -> T:
    """Find out whether a write whose outcome is unknown happened; repeat it at most once.

    Args:
        failure: Why the write's outcome is unknown (retrying gave up on it).
        check: Looks the write up (see :class:`Reconciler`).
        repeat: Sends the write again, with the usual retries of failures
            that were certainly not applied.
        found: Turns the object a check found into the call's result.
        described: What events and errors name.
        settle: How to look again before repeating a timed-out write; None
            repeats at once.

    Returns:
        What the check found (through *found*), or the repeated write's answer.

    Raises:
        OutcomeUnknown: The check failed or was ambiguous, or the write was
            not found after its repeat failed too.
        CanvasException: *failure* itself when the check cannot look the write
            up; the repeat's failure when it certainly was not applied.
    """
    decision = Reconciliation()
    notes = current_notes.get()
    while True:
        try:
            candidates = await check()
        except Exception as check_error:
            # A failed read, or a bug in a user's check: the write's outcome
            # stays unknown and the error says so, with the check's error attached.
            raise _unknown(failure, described, check_error=check_error) from check_error
        # A timeout leaves Canvas possibly still at work; a dropped connection does not.
        may_still_run = settle is not None and isinstance(failure, RequestTimeout)
        verdict = decision.after_check(candidates, may_still_run=may_still_run)
        if verdict is Verdict.FOUND:
            assert candidates is not None
            _logging.logger.info(
                WRITE_RECONCILED,
                **_fields(described, failure),
                found_id=_id_of(candidates[0]),
                after_repeat=decision.repeated,
                looked_again=decision.looked_again,
            )
            if notes is not None:
                notes.reconciled += 1
            return found(candidates[0])
        if verdict is Verdict.UNCHECKABLE:
            _logging.request_failed(
                failure,
                **_logging.error_fields(failure),
                gave_up_because=MAY_HAVE_BEEN_APPLIED,
                check=described.check,
                checkable=False,
            )
            raise failure
        if verdict is Verdict.LOOK_AGAIN:
            assert settle is not None
            if settle.time_left() <= settle.seconds:
                raise _unknown(failure, described, not_yet=True)
            await settle.pause(0.0 if is_testing() else settle.seconds)
            continue
        if verdict is not Verdict.REPEAT:
            raise _unknown(failure, described, candidates=list(candidates or ()))
        _logging.logger.warning(
            WRITE_REPEATED, **_fields(described, failure), looked_again=decision.looked_again
        )
        if notes is not None:
            notes.repeated += 1
        try:
            return await repeat()
        except CanvasException as again:
            if not outcome_unknown(again):
                raise
            failure = again


async def raise_again(failure: CanvasException, left: float) -> NoReturn:
    """The outcome-unknown hook of a repeated write: its check follows in :func:`reconcile`.

    Given as the hook (rather than none), it keeps the retry engine from
    logging the repeat's failure as final: the second check decides.
    """
    raise failure


def _fields(described: Described, failure: CanvasException) -> dict[str, Any]:
    fields = described.fields()
    fields["method"] = fields["method"] or failure.method
    fields["url"] = fields["url"] or failure.url
    fields["cause"] = failure.reason
    return {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}


def _id_of(found: Any) -> Any:
    identifier = found.get("id") if isinstance(found, dict) else getattr(found, "id", None)
    return identifier if isinstance(identifier, int | str) else None


def _unknown(
    failure: CanvasException,
    described: Described,
    *,
    check_error: BaseException | None = None,
    candidates: list[Any] | None = None,
    not_yet: bool = False,
) -> OutcomeUnknown:
    what = described.what
    if check_error is not None:
        why = f"its check {described.check} failed ({type(check_error).__name__}: {check_error})"
        look = "Look the write up by hand before sending it again; the check's error is attached."
    elif candidates:
        ids = ", ".join(str(_id_of(c)) for c in candidates[:5])
        why = f"its check {described.check} found {len(candidates)} candidates (ids {ids})"
        look = (
            "Look at the candidates (error.candidates): at most one of them is this write; "
            "remove the extra one if the write was made twice."
        )
    elif not_yet:
        why = (
            f"its check {described.check} did not find it, but Canvas may still be working "
            "on it and the deadline leaves no time to look again"
        )
        look = "Look it up again in a minute, before sending it again."
    else:
        why = f"its check {described.check} did not find it after it was repeated once"
        look = (
            "It was sent twice and found neither time: Canvas may still be processing one of "
            "them. Look it up again later before sending it a third time."
        )
    error = OutcomeUnknown(
        f"{what} may or may not have been applied: it failed with {failure.reason} "
        f"({failure}), and {why}. {look}",
        write_error=failure,
        check_error=check_error,
        candidates=candidates or (),
        look_at=look,
        method=failure.method or described.method,
        url=failure.url or described.url,
    )
    _logging.request_failed(
        error,
        **_logging.error_fields(error),
        gave_up_because="outcome_unknown",
        cause=failure.reason,
        check=described.check,
    )
    return error
