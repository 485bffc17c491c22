"""Peak memory of a CanvasClient stays bounded whatever the server sends.

Three scenarios, each in a fresh client process so that one cannot inflate
the next; the server runs in a process of its own so its memory is not
counted:

- ``errors``: 10,000 calls through ``map()``, each failing with a 404 whose
  body is 1 MiB. Every outcome (and so every exception) is kept.
- ``bomb``: one GET answered by a gzip body of ~1 MB that inflates to 1 GB.
- ``baseline``: 10,000 calls through ``map()`` that succeed with a small
  body: what holding 10,000 outcomes costs by itself.

Peak RSS growth is the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` once the client is warm) minus its resident set at
that moment, read from ``/proc`` (no psutil). Clients use their defaults
(``max_body_size`` 32 MiB, the 64 KiB error-body prefix) with ``throttle=None``:
the server sends no quota headers, and pacing is not what is measured.

Bound (issue 14): each of ``errors`` and ``bomb`` <= 64 MB of growth.

Run: ``python benchmarks/bench_memory.py`` (about a minute: 10 GB of error
bodies cross the loopback). Results: ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from resilient_canvas import CanvasClient, RetryPolicy

RESULTS = Path(__file__).parent / "results"
CALLS = 10_000
ERROR_BODY = b"x" * (1024 * 1024)
BOMB_SIZE = 1024**3
BOUND_MB = 64.0


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of *size* zero bytes, built in steps (it compresses ~1000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, compressor.flush()])


# ------------------------------------------------------------------- server


def serve() -> None:
    """Serve the hostile answers; print the port once listening."""
    bomb = gzip_bomb(BOMB_SIZE)

    async def error(request: web.Request) -> web.Response:
        return web.Response(status=404, body=ERROR_BODY, content_type="text/plain")

    async def bombed(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, headers=headers)

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["n"]), "name": "x" * 100})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v1/error/{n}", error)
        app.router.add_get("/api/v1/bomb", bombed)
        app.router.add_get("/api/v1/small/{n}", small)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], len(bomb), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------- client


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


async def measure(scenario: str, port: int) -> dict[str, Any]:
    """Run one scenario and return its peak RSS growth."""
    base = f"http://127.0.0.1:{port}"
    policy = RetryPolicy(attempts=1)
    async with CanvasClient(base, "bench-token", throttle=None, policy=policy) as canvas:
        await canvas.get("small/0")  # warm: session, connection, imports
        start_rss = _status_kib("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        if scenario == "bomb":
            try:
                await canvas.get("bomb")
                outcome = "returned"
            except Exception as error:
                outcome = type(error).__name__
            kept = 1
        else:
            route = "error" if scenario == "errors" else "small"
            result = await canvas.map(
                lambda n: canvas.get(f"{route}/{n}"), range(CALLS), concurrency=16
            )
            outcome = f"{len(result.failures)} of {len(result)} failed"
            kept = len(result)
        elapsed = time.perf_counter() - started
        peak = _status_kib("VmHWM")
    return {
        "scenario": scenario,
        "outcome": outcome,
        "outcomes_kept": kept,
        "growth_mb": round((peak - start_rss) / 1024, 1),
        "seconds": round(elapsed, 1),
    }


# ---------------------------------------------------------------------- run


def _run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, env=os.environ
    )


def main() -> None:
    server = _run("--serve")
    try:
        assert server.stdout is not None
        port, bomb_bytes = (int(word) for word in server.stdout.readline().split())
        rows = []
        for scenario in ("baseline", "errors", "bomb"):
            client = _run("--scenario", scenario, str(port))
            output, _ = client.communicate(timeout=900)
            rows.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait(timeout=10)

    by_name = {row["scenario"]: row for row in rows}
    baseline = max(by_name["baseline"]["growth_mb"], 0.1)
    print(f"gzip bomb: {bomb_bytes:,} bytes on the wire, {BOMB_SIZE:,} bytes inflated")
    print(f"{'scenario':<10}{'growth MB':>11}{'x baseline':>12}{'bound MB':>10}  outcome")
    for row in rows:
        bound = "" if row["scenario"] == "baseline" else f"{BOUND_MB:.0f}"
        ratio = row["growth_mb"] / baseline
        print(
            f"{row['scenario']:<10}{row['growth_mb']:>11.1f}{ratio:>12.2f}{bound:>10}  "
            f"{row['outcome']} ({row['seconds']} s)"
        )
    within = all(by_name[name]["growth_mb"] <= BOUND_MB for name in ("errors", "bomb"))
    print("within the bound" if within else "BOUND EXCEEDED")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(
        json.dumps(
            {
                "bound_mb": BOUND_MB,
                "calls": CALLS,
                "error_body_bytes": len(ERROR_BODY),
                "bomb_wire_bytes": bomb_bytes,
                "bomb_inflated_bytes": BOMB_SIZE,
                "scenarios": rows,
                "within_bound": within,
            },
            indent=2,
        )
        + "\n"
    )
    if not within:
        raise SystemExit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve()
    elif sys.argv[1:2] == ["--scenario"]:
        # 10,000 failure events are not what is measured.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
        print(json.dumps(asyncio.run(measure(sys.argv[2], int(sys.argv[3])))))
    else:
        main()
