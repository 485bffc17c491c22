"""Writes whose outcome is unknown: duplicates, failures and wall time of a bulk enrollment.

The job: 2,000 ``POST /api/v1/courses/:id/enrollments`` (new enrollments, none
already there), all handed over at once, against the simulator in its own
process at Canvas's default throttle (hwm 600, outflow 10/s, up_front_cost
50, realistic service times and costs). Faults on the POSTs: 5% of responses
dropped after the write is applied, 1% of attempts hanging (10 s) past the
client's 2 s attempt timeout after the write is applied, 3% 503 maintenance
pages (never applied).

Measured per strategy: duplicate writes (the simulator counts a POST applied
twice with the same content), failed calls, reconciled and repeated writes,
the reads that checked outcomes (GET requests), and wall time divided by the
leaky-bucket lower bound of the 2,000 POSTs (the checks' requests are extra
work, so they count against us).

Strategies: resilient_canvas (built-in enrollment check); resilient_canvas
with the check turned off (behaviour before issue 18); and plain aiohttp at
concurrency 20 retrying network errors, 503s and throttles with tenacity
(``wait_random_exponential(1, 60)``), stamina (defaults) and aiohttp-retry
(``ExponentialRetry``), each with the same 2 s timeout.

Targets (issue 18): resilient_canvas has 0 duplicate writes, 0 failed calls
and wall <= 1.3x the bound.

Run: ``python benchmarks/bench_writes.py [--calls N] [--only NAME ...]``.
Writes ``benchmarks/results/writes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from _harness import control, simulator_process

from resilient_canvas import CanvasClient, RetryPolicy, Throttle
from resilient_canvas.testing import (
    DataSettings,
    Fault,
    FaultSettings,
    SimulatorSettings,
    settings_lower_bound,
)

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
ROUTE = "POST /api/v1/courses/:id/enrollments"
CONCURRENCY = 20
ATTEMPTS = 30
ATTEMPT_TIMEOUT = 2.0
HANG_SECONDS = 10.0


def settings(calls: int) -> SimulatorSettings:
    """Two courses of calls/2 students each: each student is enrolled in the other course."""
    faults = FaultSettings(
        rates={Fault.DROP_AFTER_WRITE: 0.05, Fault.HANG_AFTER_WRITE: 0.01, Fault.MAINTENANCE: 0.03},
        methods=frozenset({"POST"}),
        hang_seconds=HANG_SECONDS,
        seed=18,
    )
    data = DataSettings(courses=2, students_per_course=calls // 2, assignments_per_course=0)
    return SimulatorSettings(data=data, faults=faults, token=TOKEN, seed=18)


def work(calls: int) -> list[tuple[int, int]]:
    """(course, user) of every enrollment: course 101's students into 102 and back."""
    half = calls // 2
    first = [(102, 101 + index) for index in range(half)]
    second = [(101, 101 + half + index) for index in range(half)]
    # Interleaved, so both courses are written from the start.
    return [pair for pairs in zip(first, second, strict=True) for pair in pairs]


def bound(calls: int) -> float:
    requests = [("POST", "/api/v1/courses/101/enrollments")] * calls
    return settings_lower_bound(settings(calls), requests)


def _form(user_id: int) -> dict[str, str]:
    return {"enrollment[user_id]": str(user_id), "enrollment[type]": "StudentEnrollment"}


class Retryable(Exception):
    """A 503 or a throttled answer, for the retry libraries to catch."""


async def _post_once(session: aiohttp.ClientSession, base: str, course: int, user: int) -> Any:
    async with session.post(
        f"{base}/api/v1/courses/{course}/enrollments",
        data=_form(user),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT),
    ) as response:
        body = await response.read()
        if response.status == 503 or (response.status == 403 and b"Rate Limit" in body):
            raise Retryable(response.status)
        response.raise_for_status()
        return json.loads(body)


RETRY_ON = (aiohttp.ClientError, TimeoutError, Retryable)


async def _bounded(
    items: list[tuple[int, int]], one: Callable[[int, int], Awaitable[Any]]
) -> dict[str, int]:
    semaphore = asyncio.Semaphore(CONCURRENCY)
    failed = 0

    async def run(course: int, user: int) -> None:
        nonlocal failed
        async with semaphore:
            try:
                await one(course, user)
            except Exception:
                failed += 1

    await asyncio.gather(*(run(course, user) for course, user in items))
    return {"failed": failed, "reconciled": 0, "repeated": 0}


async def _resilient(base: str, items: list[tuple[int, int]], *, check: bool) -> dict[str, int]:
    policy = RetryPolicy(attempt_timeout=ATTEMPT_TIMEOUT)
    reconcilers = None if check else {ROUTE: None}
    async with CanvasClient(
        base, TOKEN, throttle=Throttle(), policy=policy, reconcilers=reconcilers
    ) as canvas:

        async def enroll(pair: tuple[int, int]) -> Any:
            course, user = pair
            return await canvas.post(f"courses/{course}/enrollments", data=_form(user))

        result = await canvas.map(enroll, items, concurrency=len(items))
    return {"failed": result.failed, "reconciled": result.reconciled, "repeated": result.repeated}


async def resilient_canvas(base: str, items: list[tuple[int, int]]) -> dict[str, int]:
    return await _resilient(base, items, check=True)


async def resilient_canvas_no_check(base: str, items: list[tuple[int, int]]) -> dict[str, int]:
    return await _resilient(base, items, check=False)


async def tenacity_retry(base: str, items: list[tuple[int, int]]) -> dict[str, int]:
    import tenacity

    async with aiohttp.ClientSession() as session:
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(RETRY_ON),
            wait=tenacity.wait_random_exponential(multiplier=1, max=60),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            reraise=True,
        )
        return await _bounded(
            items, lambda course, user: retrying.copy()(_post_once, session, base, course, user)
        )


async def stamina_retry(base: str, items: list[tuple[int, int]]) -> dict[str, int]:
    import stamina
    import stamina.instrumentation

    # stamina logs every retry to stdout by default: hundreds of lines here.
    stamina.instrumentation.set_on_retry_hooks([])
    async with aiohttp.ClientSession() as session:

        @stamina.retry(on=RETRY_ON, attempts=ATTEMPTS, timeout=None)
        async def one(course: int, user: int) -> Any:
            return await _post_once(session, base, course, user)

        return await _bounded(items, one)


async def aiohttp_retry(base: str, items: list[tuple[int, int]]) -> dict[str, int]:
    from aiohttp_retry import ExponentialRetry, RetryClient

    options = ExponentialRetry(
        attempts=ATTEMPTS,
        statuses={403, 503},
        exceptions={aiohttp.ClientError, asyncio.TimeoutError},
        retry_all_server_errors=False,
    )
    timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT)
    async with RetryClient(
        retry_options=options, raise_for_status=False, timeout=timeout
    ) as client:

        async def one(course: int, user: int) -> Any:
            async with client.post(
                f"{base}/api/v1/courses/{course}/enrollments",
                data=_form(user),
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as response:
                response.raise_for_status()
                return await response.read()

        return await _bounded(items, one)


STRATEGIES: dict[str, Callable[[str, list[tuple[int, int]]], Awaitable[dict[str, int]]]] = {
    "resilient_canvas": resilient_canvas,
    "resilient_canvas, no check": resilient_canvas_no_check,
    "tenacity": tenacity_retry,
    "stamina": stamina_retry,
    "aiohttp-retry": aiohttp_retry,
}


async def measure(base: str, items: list[tuple[int, int]], name: str) -> dict[str, Any]:
    await control(base, "reset")
    started = time.perf_counter()
    counts = await STRATEGIES[name](base, items)
    wall = time.perf_counter() - started
    stats = await control(base, "stats")
    return {
        "strategy": name,
        **counts,
        "duplicate_writes": stats["duplicate_writes"],
        "applied_writes": stats["applied_writes"],
        "requests": stats["requests"],
        "check_requests": stats["methods"].get("GET", 0),
        "faults": stats["faults"],
        "throttled": stats["throttled"],
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--only", choices=sorted(STRATEGIES), action="append")
    args = parser.parse_args()
    calls = args.calls - args.calls % 2
    items = work(calls)
    lower = bound(calls)
    rows = []
    with simulator_process(settings(calls)) as base:
        for name in args.only or list(STRATEGIES):
            row = asyncio.run(measure(base, items, name))
            row["ratio"] = round(row["wall_s"] / lower, 2)
            rows.append(row)
            print(
                f"{name:27} duplicates={row['duplicate_writes']:4} failed={row['failed']:4} "
                f"reconciled={row['reconciled']:4} repeated={row['repeated']:3} "
                f"checks={row['check_requests']:4} requests={row['requests']:5} "
                f"wall={row['wall_s']:6}s ratio={row['ratio']:5}x",
                flush=True,
            )
    report = {"calls": calls, "bound_s": round(lower, 2), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "writes.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"bound {lower:.2f} s (target for resilient_canvas: 0 duplicates, 0 failed, <= 1.3x)")


if __name__ == "__main__":
    main()
