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
import functools
import inspect
import random
import time
from collections.abc import Awaitable, Callable
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
from resilient_canvas._throttle import Observation, Permit, Throttle
from resilient_canvas._translate import from_aiohttp_error, seal

P = ParamSpec("P")
T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Spare units of quota a model-based wait aims for above one reservation.
_MODEL_MARGIN = 5.0
#: Canvas's open-source defaults, used for a model wait when no throttle is attached.
_PRIOR_UP_FRONT_COST = 50.0
_PRIOR_OUTFLOW = 10.0

DEFAULT_POLICY = RetryPolicy()
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
            "may_have_been_applied"
            if error.retryable and isinstance(error, self.policy.retry_on)
            else "not_retryable"
        )
        if isinstance(error, CircuitOpen):
            reason = "circuit_open"
        self._give_up(error, state.attempt_number, reason)
        return False

    def wait(self, state: tenacity.RetryCallState) -> float:
        error = _failure(state)
        self.pending_wait = self._wait_for(error, state.attempt_number)
        return self.pending_wait[0]

    def stop(self, state: tenacity.RetryCallState) -> bool:
        error = _failure(state)
        wait, _ = self.pending_wait
        attempts = min(self.policy.attempts, testing_attempts() or self.policy.attempts)
        reason = None
        if state.attempt_number >= attempts:
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

    def _give_up(self, error: CanvasException, attempt_number: int, reason: str) -> None:
        self.history.attempts.append(Attempt(attempt_number, error.reason, error.response_status))
        self.history.gave_up_because = reason
        error.attempts = self.history
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


async def call_with_retries(
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
) -> T:
    """Run *attempt* until it succeeds or the policy gives up.

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

    Returns:
        What the first successful attempt returned.

    Raises:
        CanvasException: The last classified failure, with ``attempts`` set.
        CircuitOpen: Canvas is down and the deadline ends before the next probe.
        BaseException: Anything unrelated to HTTP, unchanged and never retried.
    """
    hooks = _telemetry.hooks
    if hooks is not None and hooks.active():
        # Telemetry wraps the call in its span and each attempt in a client span.
        info = info or CallInfo()
        return await hooks.run_call(
            lambda: _call_with_retries(
                attempt, policy, throttle, budget, info, observe, clock, sleep, breaker, hooks
            ),
            info.method,
            info.route,
        )
    return await _call_with_retries(
        attempt, policy, throttle, budget, info, observe, clock, sleep, breaker, None
    )


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
        admission, permit = await _enter(
            breaker, throttle, call_info, lambda: total - (clock() - started), sleep
        )
        observation: Observation | None = None
        outcome = Outcome.IGNORED
        try:
            limit = min(per_attempt, max(0.001, total - (clock() - started)))
            if hooks is None:
                async with asyncio.timeout(limit):
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
            outcome = Outcome.SUCCESS
            observation = observe(result) if observe else None
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
                breaker=breaker,
            ),
        )
        shared_budget.record_success(spent)
        return retried
    shared_budget.record_success(0.0)
    return result


async def _timed(attempt: Callable[[], Awaitable[T]], limit: float) -> T:
    async with asyncio.timeout(limit):
        return await attempt()


async def _enter(
    breaker: Circuit | None,
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
        admission = breaker.admit() if breaker is not None else None
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
            permit = await _place(throttle, info, deadline_left())
            if (
                breaker is not None
                and admission is ADMITTED
                and breaker.state is not CircuitState.CLOSED
            ):
                throttle.release(permit)
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
            return await call_with_retries(
                lambda: fn(*args, **kwargs),
                policy=policy,
                throttle=throttle,
                budget=shared_budget,
                info=info,
                clock=clock,
                sleep=sleep,
            )

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


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
