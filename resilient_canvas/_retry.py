"""The retry engine on tenacity, and the ``@resilient`` decorator built on it.

One call = one ``tenacity.AsyncRetrying`` object, so attempt state is never
shared between concurrent calls (tenacity #93). Our callbacks decide:

- ``retry``: classify the failure; only our exceptions allowed by the policy
  for this method are retried. BaseExceptions (cancellation) never are.
- ``wait``: Retry-After from the server, else the Canvas bucket model for a
  throttle, else exponential backoff with full jitter.
- ``stop``: attempts exhausted, deadline or wait cap crossed by the coming
  wait, or retry budget empty. The last real exception is re-raised
  (``reraise=True``), never ``tenacity.RetryError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, overload

import aiohttp
import tenacity

from resilient_canvas import _circuit, _logging, _telemetry
from resilient_canvas._breaker import (
    ADMITTED,
    Admission,
    Circuit,
    CircuitState,
    Outcome,
    outcome_of,
)
from resilient_canvas._classify import classify_response
from resilient_canvas._config import is_testing, testing_attempts
from resilient_canvas._errors import (
    CanvasException,
    CircuitOpen,
    RateLimitExceeded,
    ThrottleTimeout,
)
from resilient_canvas._history import Attempt, AttemptHistory
from resilient_canvas._policy import RetryBudget, RetryPolicy, seconds
from resilient_canvas._reconcile import (
    MAY_HAVE_BEEN_APPLIED,
    Described,
    Settle,
    outcome_unknown,
    raise_again,
)
from resilient_canvas._reconcile import reconcile as reconcile_write
from resilient_canvas._throttle import Observation, Permit, Throttle
from resilient_canvas._timeouts import within
from resilient_canvas._translate import from_aiohttp_error, seal

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Spare units of quota a model-based wait aims for above one reservation.
_MODEL_MARGIN = 5.0
#: Canvas's open-source defaults, used for a model wait when no throttle is attached.
_PRIOR_UP_FRONT_COST = 50.0
_PRIOR_OUTFLOW = 10.0

DEFAULT_POLICY = RetryPolicy()
#: Looked up once: reading a member through its enum class costs ~0.1 us on
#: Python 3.11 (the metaclass's __getattr__), and every attempt reads these.
_SUCCESS, _IGNORED = Outcome.SUCCESS, Outcome.IGNORED
#: One generator for every call's jitter: seeding one per call costs more than the call.
_JITTER = random.Random()


@dataclass(slots=True)
class CallInfo:
    """What is known about the request a call makes, for decisions and logs.

    Built for every request, so not frozen: a frozen dataclass's __init__ costs
    five times as much, which shows on the per-request overhead.

    Attributes:
        method: The HTTP method, when known.
        url: The URL without credentials, when known.
        route: The route template, for the throttle's cost estimate.
        idempotent: Overrides the method's idempotency when not None.
        label: What is being called (a function name) for logs.
        token: A token fingerprint for logs, never the token.
    """

    method: str | None = None
    url: str | None = None
    route: str | None = None
    idempotent: bool | None = None
    label: str | None = None
    token: str | None = None


@dataclass(slots=True)
class _CallState:
    """The state of one call across its attempts (never shared between calls)."""

    policy: RetryPolicy
    info: CallInfo
    throttle: Throttle | None
    budget: RetryBudget
    clock: Clock
    sleep_fn: Sleep
    started: float
    breaker: Circuit | None = None
    rng: random.Random = field(default_factory=lambda: _JITTER)
    history: AttemptHistory = field(default_factory=AttemptHistory)
    spent: float = 0.0
    pending_wait: tuple[float, str] = (0.0, "backoff")
    #: Attempts Canvas throttled while the throttle paced the call.
    paced_throttles: int = 0
    #: A check will reconcile a write given up as possibly applied: it logs the outcome.
    reconciles: bool = False

    # ---------------------------------------------------------- tenacity hooks

    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        error = outcome.exception()
        if not isinstance(error, CanvasException):
            # Unrelated errors and every BaseException (cancellation) pass through.
            return False
        method = error.method or self.info.method
        if self.policy.allows(error, method=method, idempotent=self.info.idempotent):
            return True
        reason = (
            MAY_HAVE_BEEN_APPLIED
            if error.retryable and isinstance(error, self.policy.retry_on)
            else "not_retryable"
        )
        if isinstance(error, CircuitOpen):
            reason = "circuit_open"
        quiet = self.reconciles and reason == MAY_HAVE_BEEN_APPLIED
        self._give_up(error, state.attempt_number, reason, log=not quiet)
        return False

    def wait(self, state: tenacity.RetryCallState) -> float:
        error = _failure(state)
        self.pending_wait = self._wait_for(error, state.attempt_number)
        return self.pending_wait[0]

    def stop(self, state: tenacity.RetryCallState) -> bool:
        error = _failure(state)
        wait, _ = self.pending_wait
        if self.throttle is not None and isinstance(error, RateLimitExceeded):
            # Paced: it did no work and waits for room; counted on its own.
            self.paced_throttles += 1
        reason = None
        if self._attempts_exhausted(state.attempt_number):
            reason = "attempts_exhausted"
        elif wait > seconds(self.policy.max_wait):
            reason = "wait_exceeds_cap"
        elif wait >= self.deadline_left():
            reason = "wait_exceeds_deadline"
        elif not self.budget.try_spend(self._retry_cost(error)):
            reason = "retry_budget_exhausted"
        if reason is None:
            self.spent += self._retry_cost(error)
            return False
        if reason in ("wait_exceeds_cap", "wait_exceeds_deadline"):
            error.wait_hint = round(wait, 3)
        self._give_up(error, state.attempt_number, reason)
        return True

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = _failure(state)
        wait, source = self.pending_wait
        self.history.attempts.append(
            Attempt(
                state.attempt_number, error.reason, error.response_status, round(wait, 3), source
            )
        )
        _logging.retry_scheduled(
            **self._fields(error, state.attempt_number),
            wait_s=round(wait, 3),
            wait_source=source,
            deadline_left_s=round(max(0.0, self.deadline_left()), 3),
        )
        hooks = _telemetry.hooks
        if hooks is not None and hooks.active():
            hooks.retry_scheduled(error.reason, self.info.method, self.info.route)

    async def sleep(self, wait: float) -> None:
        await self.sleep_fn(0.0 if is_testing() else wait)

    # -------------------------------------------------------------- decisions

    def _attempts_exhausted(self, attempt_number: int) -> bool:
        capped = testing_attempts()
        if self.policy.attempts == 1 or (capped and attempt_number >= capped):
            return True  # retries disabled, or capped for tests (throttles included)
        if self.paced_throttles >= self.policy.throttled_attempts:
            return True
        return attempt_number - self.paced_throttles >= self.policy.attempts

    def deadline_left(self) -> float:
        return seconds(self.policy.deadline) - (self.clock() - self.started)

    def _retry_cost(self, error: CanvasException) -> float:
        # While the circuit is open a retry is held, not sent: the breaker, not
        # the budget, keeps the outage from becoming a retry storm.
        breaker = self.breaker
        if (
            breaker is not None
            and breaker.state is not CircuitState.CLOSED
            and outcome_of(error) is Outcome.FAILURE
        ):
            return 0.0
        return self.budget.cost_of(error)

    def _wait_for(self, error: CanvasException, attempt_number: int) -> tuple[float, str]:
        if error.retry_after is not None:
            return error.retry_after, "server"
        if isinstance(error, RateLimitExceeded):
            model_wait = self._model_wait(error)
            if model_wait is not None:
                return model_wait, "model"
        ceiling = min(
            seconds(self.policy.backoff_cap),
            seconds(self.policy.backoff_base) * 2 ** (attempt_number - 1),
        )
        return self.rng.uniform(0.0, ceiling), "backoff"

    def _model_wait(self, error: RateLimitExceeded) -> float | None:
        if self.throttle is not None and self.throttle.estimate().headers_seen:
            # The throttle has already scheduled one shared pause for everyone.
            return self.throttle.pause_remaining()
        remaining = error.rate_limit_remaining
        if remaining is None:
            return None
        deficit = _PRIOR_UP_FRONT_COST + _MODEL_MARGIN - remaining
        # A little jitter keeps independent clients from returning in lockstep.
        return max(0.0, deficit / _PRIOR_OUTFLOW) + self.rng.uniform(0.0, 0.25)

    def _give_up(
        self, error: CanvasException, attempt_number: int, reason: str, *, log: bool = True
    ) -> None:
        self.history.attempts.append(Attempt(attempt_number, error.reason, error.response_status))
        self.history.gave_up_because = reason
        error.attempts = self.history
        if not log:
            return
        _logging.request_failed(
            error,
            **self._fields(error, attempt_number),
            gave_up_because=reason,
            total_wait_s=self.history.total_wait_s,
            wait_hint_s=error.wait_hint,
        )

    def _fields(self, error: CanvasException, attempt_number: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"attempt": attempt_number, **_logging.error_fields(error)}
        fields["method"] = fields["method"] or self.info.method
        fields["url"] = fields["url"] or self.info.url
        if self.info.label:
            fields["callable"] = self.info.label
        if self.info.token:
            fields["token"] = self.info.token
        return fields


def _failure(state: tenacity.RetryCallState) -> CanvasException:
    assert state.outcome is not None
    error = state.outcome.exception()
    assert isinstance(error, CanvasException)
    return error


def translate(error: BaseException, info: CallInfo) -> CanvasException | None:
    """Classify an exception raised by an attempt; None for unrelated ones."""
    if isinstance(error, CanvasException):
        return error
    method, url = info.method, info.url
    if isinstance(error, aiohttp.ClientResponseError) and error.request_info is not None:
        method = method or error.request_info.method
        url = url or str(error.request_info.url)
    return from_aiohttp_error(error, method=method, url=url)


def observation_of(error: CanvasException) -> Observation:
    """What a failed response tells the throttle."""
    return Observation(
        remaining=error.rate_limit_remaining,
        cost=error.request_cost,
        throttled=isinstance(error, RateLimitExceeded),
    )


def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy | None = None,
    throttle: Throttle | None = None,
    budget: RetryBudget | None = None,
    info: CallInfo | None = None,
    observe: Callable[[T], Observation | None] | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    breaker: Circuit | None = None,
    on_outcome_unknown: Callable[[CanvasException, float], Awaitable[T]] | None = None,
) -> Awaitable[T]:
    """Run *attempt* until it succeeds or the policy gives up (await the result).

    Not a coroutine function itself: it returns the call's coroutine, so that
    a call has one coroutine layer fewer to create and to pass through each
    time it resumes (a per-request cost).

    Args:
        attempt: Makes one attempt; it is called again for each retry.
        policy: What to retry and how long to wait.
        throttle: Paces attempts and provides model waits; None for no pacing.
        budget: Retry budget; the throttle's, else a fresh one.
        info: What the request is, for decisions and logs.
        observe: Extracts quota headers from a successful result for the throttle.
        clock: Time source for the deadline.
        sleep: How waits pass.
        breaker: The Canvas origin's circuit: holds attempts while it is open.
        on_outcome_unknown: Called, instead of raising, with the failure and
            the seconds left of the deadline when retrying gave up because
            the write may have been applied (see ``_reconcile``).

    Returns:
        What the first successful attempt returned, or *on_outcome_unknown*'s answer.

    Raises:
        CanvasException: The last classified failure, with ``attempts`` set.
        CircuitOpen: Canvas is down and the deadline ends before the next probe.
        BaseException: Anything unrelated to HTTP, unchanged and never retried.
    """
    hooks = _telemetry.hooks
    args = (attempt, policy, throttle, budget, info, observe, clock, sleep, breaker)
    if hooks is None or not hooks.active():
        # No span to open: no closure either (the common case, on every call).
        return _call_with_retries(*args, on_outcome_unknown, None)
    # Telemetry wraps the call in its span (created in it) and each attempt in a client span.
    run = functools.partial(_call_with_retries, *args, on_outcome_unknown, hooks)
    info = info or CallInfo()
    return hooks.run_call(run, info.method, info.route)


async def _call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy | None,
    throttle: Throttle | None,
    budget: RetryBudget | None,
    info: CallInfo | None,
    observe: Callable[[T], Observation | None] | None,
    clock: Clock,
    sleep: Sleep,
    breaker: Circuit | None,
    on_outcome_unknown: Callable[[CanvasException, float], Awaitable[T]] | None,
    hooks: _telemetry.Hooks | None,
) -> T:
    resolved = policy or DEFAULT_POLICY
    call_info = info or CallInfo()
    shared_budget = budget or RetryBudget(resolved.budget)
    started = clock()
    total = seconds(resolved.deadline)
    per_attempt = seconds(resolved.attempt_timeout)
    sent = 0

    async def one_attempt() -> T:
        nonlocal sent
        entered = clock() if hooks is not None else 0.0
        admission = breaker.admit() if breaker is not None else None
        # Most attempts pass a closed circuit and find a free place: no waiting, inline.
        fast = admission is None or admission is ADMITTED
        permit = throttle.try_acquire(call_info.route) if throttle is not None and fast else None
        if permit is None and (throttle is not None or not fast):
            admission, permit = await _enter(
                breaker, admission, throttle, call_info, lambda: total - (clock() - started), sleep
            )
        observation: Observation | None = None
        outcome = _IGNORED
        try:
            # min(per_attempt, max(0.001, left)), in comparisons: once per attempt
            left = total - (clock() - started)
            if not left > 0.001:
                left = 0.001
            limit = left if left < per_attempt else per_attempt
            if hooks is None:
                with within(limit):
                    result = await attempt()
            else:
                sent += 1
                result = await hooks.run_attempt(
                    functools.partial(_timed, attempt, limit),
                    method=call_info.method,
                    route=call_info.route,
                    url=call_info.url,
                    resend_count=sent - 1,
                    throttle_wait_s=clock() - entered,
                )
            outcome = _SUCCESS
            # Only a place taken in the throttle learns from the answer.
            observation = observe(result) if observe and permit is not None else None
            return result
        except Exception as exc:
            failure = translate(exc, call_info)
            if failure is None:
                raise
            outcome = outcome_of(failure)
            observation = observation_of(failure)
        finally:
            if permit is not None and throttle is not None:
                throttle.release(permit, observation)
            if admission is not None and breaker is not None:
                _circuit.finish(breaker, admission, outcome)
        # Raised here, outside the handler, so that the original exception is not
        # chained as __context__; seal() drops the frames whose locals hold the
        # request, the response and its body.
        raise seal(failure)

    # Most calls succeed at once: the first attempt runs without building the
    # retry machinery, which costs more than a loopback request.
    try:
        result = await one_attempt()
    except CanvasException as first_failure:
        try:
            retried, spent = await _retry_after(
                first_failure,
                one_attempt,
                _CallState(
                    policy=resolved,
                    info=call_info,
                    throttle=throttle,
                    budget=shared_budget,
                    clock=clock,
                    sleep_fn=sleep,
                    started=started,
                    reconciles=on_outcome_unknown is not None,
                    breaker=breaker,
                ),
            )
        except CanvasException as failure:
            if on_outcome_unknown is None or not outcome_unknown(failure):
                raise
            unknown = failure
        else:
            shared_budget.record_success(spent)
            return retried
        # Outside the handler, so that the check's own errors do not chain the write's.
        return await on_outcome_unknown(unknown, total - (clock() - started))
    shared_budget.record_success(0.0)
    return result


async def _timed(attempt: Callable[[], Awaitable[T]], limit: float) -> T:
    with within(limit):
        return await attempt()


async def _enter(
    breaker: Circuit | None,
    admission: Admission | None,
    throttle: Throttle | None,
    info: CallInfo,
    deadline_left: Callable[[], float],
    sleep: Sleep,
) -> tuple[Admission | None, Permit | None]:
    """Pass the circuit breaker, then take a throttle place, never past the deadline.

    A call is held by the breaker before it takes a place, so held calls do
    not occupy the throttle; one that waited for a place while Canvas went
    down gives it back and is held too.
    """
    while True:
        if breaker is not None and admission is not None and admission is not ADMITTED:
            admission = await _circuit.hold(
                breaker,
                admission,
                deadline_left=deadline_left,
                sleep=sleep,
                method=info.method,
                url=info.url,
            )
        # A free place is taken inline; only a wait needs the deadline-bounded path.
        permit = throttle.try_acquire(info.route) if throttle else None
        if permit is None and throttle is not None:
            try:
                permit = await _place(throttle, info, deadline_left())
            except BaseException:
                if breaker is not None and admission is not None:
                    # Never sent: a probe admission must not hold the circuit
                    # half-open until the probe timeout frees it.
                    _circuit.finish(breaker, admission, Outcome.IGNORED)
                raise
            if (
                breaker is not None
                and admission is ADMITTED
                and breaker.state is not CircuitState.CLOSED
            ):
                throttle.release(permit)
                admission = breaker.admit()
                continue
        return admission, permit


async def _place(throttle: Throttle, info: CallInfo, left: float) -> Permit:
    """Wait for the throttle, but never past the call's deadline."""
    try:
        async with asyncio.timeout(max(0.001, left)):
            return await throttle.acquire(info.route)
    except TimeoutError:
        where = f"{info.method} {info.url}" if info.method and info.url else "The request"
        error = ThrottleTimeout(
            f"{where} was not sent: the deadline passed while it waited for the client-side "
            "throttle. Raise the policy's deadline, or send fewer calls at once."
        )
        error.method, error.url, error.request_sent = info.method, info.url, False
        raise error from None


async def _retry_after(
    first_failure: CanvasException,
    one_attempt: Callable[[], Awaitable[T]],
    state: _CallState,
) -> tuple[T, float]:
    """Hand a failed first attempt to tenacity, which decides everything from there.

    Tenacity's first "attempt" replays the failure already seen, so its
    retry, wait, stop and logging logic applies to it like to any other.
    Returns the result and the budget the retries spent.
    """
    replay = [first_failure]

    async def attempt_or_replay() -> T:
        if replay:
            raise replay.pop()
        return await one_attempt()

    retrying = tenacity.AsyncRetrying(
        retry=state.retry,
        wait=state.wait,
        stop=state.stop,
        before_sleep=state.before_sleep,
        sleep=state.sleep,
        reraise=True,
    )
    result: T = await retrying(attempt_or_replay)
    return result, state.spent


@overload
def resilient(func: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]: ...


@overload
def resilient(
    *,
    policy: RetryPolicy | None = None,
    throttle: Throttle | None = None,
    idempotent: bool | None = None,
    budget: RetryBudget | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    reconcile: None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...


@overload
def resilient(
    *,
    policy: RetryPolicy | None = None,
    throttle: Throttle | None = None,
    idempotent: bool | None = None,
    budget: RetryBudget | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    reconcile: Callable[P, Awaitable[Sequence[T] | None]],
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...


def resilient(
    func: Callable[P, Awaitable[T]] | None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    throttle: Throttle | None = None,
    idempotent: bool | None = None,
    budget: RetryBudget | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    reconcile: Callable[P, Awaitable[Sequence[T] | None]] | None = None,
) -> Callable[P, Awaitable[T]] | Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Retry a coroutine function on transient Canvas failures.

    Works bare (``@resilient``) or configured (``@resilient(policy=...)``).
    Failures are classified into :mod:`resilient_canvas.exceptions`; only
    those the policy allows for the request's method are retried. Since a
    decorated function's method is not always known, failures that may have
    been applied (timeouts, dropped connections, 502, 504) are retried only
    when the failure names an idempotent method or ``idempotent=True``.

    Args:
        policy: What to retry and how long to wait.
        throttle: Paces every attempt and shares its retry budget.
        idempotent: Declares whether the wrapped call may safely be repeated.
        budget: A retry budget shared by every call of the function; the
            throttle's when one is given, else one per decorated function.
        clock: Time source for the deadline.
        sleep: How waits pass (inject a recorder in tests).
        reconcile: A check for a write whose outcome is unknown, called with
            the wrapped function's arguments: it returns what the call would
            have created (``[]`` for nothing, None when it cannot tell). Found:
            the call returns it; not found: the call is repeated, once; two
            candidates or a failing check: ``OutcomeUnknown``
            (docs/write-safety.md).

    Raises:
        TypeError: If the decorated object is not a coroutine function.
    """

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@resilient needs a coroutine function, not {fn!r}.")
        shared_budget = budget or (RetryBudget((policy or DEFAULT_POLICY).budget))
        info = CallInfo(idempotent=idempotent, label=getattr(fn, "__qualname__", repr(fn)))

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            def run(
                target: Callable[[], Awaitable[R]],
                call_policy: RetryPolicy | None = policy,
                call_info: CallInfo = info,
                on_unknown: Callable[[CanvasException, float], Awaitable[R]] | None = None,
            ) -> Awaitable[R]:
                return call_with_retries(
                    target,
                    policy=call_policy,
                    throttle=throttle,
                    budget=shared_budget,
                    info=call_info,
                    clock=clock,
                    sleep=sleep,
                    on_outcome_unknown=on_unknown,
                )

            if reconcile is None:
                return await run(lambda: fn(*args, **kwargs))
            check = reconcile

            async def on_unknown(failure: CanvasException, left: float) -> T:
                # The check and the repeat share what is left of the call's deadline.
                until = clock() + left

                def remaining() -> RetryPolicy:
                    left_now = max(0.001, until - clock())
                    return dataclasses.replace(policy or DEFAULT_POLICY, deadline=left_now)

                check_info = CallInfo(idempotent=True, label=_name_of(check))
                waits = seconds((policy or DEFAULT_POLICY).attempt_timeout)
                settle = Settle(waits, sleep, lambda: until - clock())
                return await reconcile_write(
                    failure,
                    check=lambda: run(lambda: check(*args, **kwargs), remaining(), check_info),
                    repeat=lambda: run(lambda: fn(*args, **kwargs), remaining(), info, raise_again),
                    found=_same,
                    described=Described(None, None, _name_of(check), label=info.label),
                    settle=settle,
                )

            return await run(lambda: fn(*args, **kwargs), on_unknown=on_unknown)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _same(value: T) -> T:
    return value


def _name_of(check: object) -> str:
    return str(getattr(check, "__qualname__", None) or type(check).__name__)


async def raise_for_canvas_status(response: aiohttp.ClientResponse) -> None:
    """Raise the right :mod:`~resilient_canvas.exceptions` class for an error response.

    For hand-written aiohttp code: unlike ``raise_for_status()``, it reads the
    body first, so the legacy-403 throttle text and Canvas's error messages
    are seen, and it releases the connection before raising.

    Raises:
        HTTPException: A subclass matching the status, headers and body.
        InvalidResponse: If the body could not be read.
    """
    if response.status < 400:
        return
    failure: CanvasException | None = None
    try:
        body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        failure = from_aiohttp_error(exc, method=response.method, url=response.url)
    finally:
        response.release()
    if failure is not None:
        # Outside the handler: the aiohttp exception holds the request's headers.
        raise failure
    raise classify_response(
        response.status, response.headers, body, method=response.method, url=response.url
    )
