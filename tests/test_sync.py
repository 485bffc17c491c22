"""Tests for the blocking client: real sockets, threads, a running loop, Ctrl-C, exit and fork."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from resilient_canvas import CanvasClient as AsyncCanvasClient
from resilient_canvas import (
    ClientState,
    RetryPolicy,
    ThrottleConfig,
    clear_throttles,
    throttle_for,
)
from resilient_canvas import exceptions as exc
from resilient_canvas._config import set_testing
from resilient_canvas._loop_thread import LOOP, THREAD_NAME
from resilient_canvas.sync import CanvasClient
from resilient_canvas.testing import (
    Distribution,
    Fault,
    FaultSettings,
    RouteProfile,
    SimulatorSettings,
    ThrottleSettings,
)
from tests._interrupt import CAN_INTERRUPT, ctrl_c_when
from tests._simulator_thread import ThreadedSimulator, simulator_thread

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim() -> Iterator[ThreadedSimulator]:
    """An instant simulator served from its own thread (a blocking call holds the test's)."""
    with simulator_thread() as served:
        yield served


@pytest.fixture
def canvas(sim: ThreadedSimulator) -> Iterator[CanvasClient]:
    """A blocking client of the simulator, closed after the test."""
    with CanvasClient(sim.base_url, sim.token) as client:
        yield client


def _schedule(sim: ThreadedSimulator, faults: dict[int, Fault]) -> None:
    """Force *faults* on the given request numbers of a fresh simulator."""

    def apply() -> None:
        canvas_app = sim.simulator._canvas
        canvas_app.settings = SimulatorSettings.instant(faults=FaultSettings(schedule=faults))
        canvas_app.reset()

    sim.call(apply)


# ----------------------------------------------------------------- the verbs


def test_get_returns_the_decoded_json(canvas: CanvasClient) -> None:
    """A blocking GET returns what the async client would: the decoded body."""
    course = canvas.get("courses/101")

    assert (101, "BIOL100") == (course["id"], course["course_code"])


def test_writes_apply_once(canvas: CanvasClient, sim: ThreadedSimulator) -> None:
    """POST, PUT and DELETE reach Canvas once each, with Canvas's nested encoding."""
    user_id = sim.call(lambda: sim.simulator.data.enrollments[102][0]["user_id"])
    student = sim.call(lambda: next(iter(sim.simulator.data.submissions[(101, 101001)])))

    created = canvas.post(
        "courses/101/enrollments",
        data={"enrollment": {"user_id": user_id, "enrollment_state": "active"}},
    )
    graded = canvas.put(
        f"courses/101/assignments/101001/submissions/{student}",
        data={"submission": {"posted_grade": "7"}},
    )
    ended = canvas.delete(f"courses/101/enrollments/{created['id']}", params={"task": "delete"})

    assert (user_id, "7", "deleted") == (
        created["user_id"],
        graded["posted_grade"],
        ended["enrollment_state"],
    )
    assert (3, 0) == (sim.simulator.stats.applied_writes, sim.simulator.stats.duplicate_writes)


def test_request_returns_the_response(canvas: CanvasClient) -> None:
    """request() returns the CanvasResponse, headers and links included."""
    response = canvas.request("GET", "courses", params={"per_page": 1})

    assert (200, 1) == (response.status, len(response.data))
    assert response.next_url is not None


def test_failures_are_the_classified_tree(canvas: CanvasClient) -> None:
    """A 404 raises our ResourceDoesNotExist, with the request it was about."""
    with pytest.raises(exc.ResourceDoesNotExist) as raised:
        canvas.get("courses/999999")

    assert ("GET", 404) == (raised.value.method, raised.value.status_code)


def test_retries_log_the_async_clients_events(sim: ThreadedSimulator) -> None:
    """A retried call logs the very events the async client logs for the same call."""
    set_testing(True)  # retry waits pass at once

    def run_sync() -> None:
        with CanvasClient(sim.base_url, sim.token) as client:
            client.get("courses/101")

    async def run_async() -> None:
        async with AsyncCanvasClient(sim.base_url, sim.token) as client:
            await client.get("courses/101")

    _schedule(sim, {1: Fault.MAINTENANCE})
    with capture_logs() as sync_logs:
        run_sync()
    _schedule(sim, {1: Fault.MAINTENANCE})
    clear_throttles()
    with capture_logs() as async_logs:
        asyncio.run(run_async())

    # The backoff is drawn at random (full jitter): its values differ, not its fields.
    def steady(logs: list[dict[str, object]]) -> list[dict[str, object]]:
        return [
            {k: v for k, v in e.items() if k not in ("wait_s", "deadline_left_s")} for e in logs
        ]

    assert ["canvas.retry_scheduled"] == [entry["event"] for entry in sync_logs]
    assert [set(entry) for entry in async_logs] == [set(entry) for entry in sync_logs]
    assert steady(async_logs) == steady(sync_logs)


# --------------------------------------------------------------- pagination


def test_paginate_reads_pages_on_demand(canvas: CanvasClient, sim: ThreadedSimulator) -> None:
    """The first item arrives after one page request; the rest follow page by page."""
    listing = canvas.paginate("courses/101/enrollments", per_page=7)

    first = next(listing)
    requests_after_first = sim.simulator.stats.requests
    rest = list(listing)

    expected = sim.call(lambda: [e["id"] for e in sim.simulator.data.enrollments[101]])
    assert 1 == requests_after_first
    assert expected == [first["id"]] + [item["id"] for item in rest]
    assert -(-len(expected) // 7) == sim.simulator.stats.requests


def test_paginate_stopped_early_leaves_the_client_usable(
    canvas: CanvasClient, sim: ThreadedSimulator
) -> None:
    """Breaking out of a listing reads no further page; the client keeps working."""
    for _ in canvas.paginate("courses/101/enrollments", per_page=5):
        break

    assert 1 == sim.simulator.stats.requests
    assert 101 == canvas.get("courses/101")["id"]


def test_paginate_hands_over_items_read_before_a_failure(canvas: CanvasClient) -> None:
    """Items of the pages read are yielded before the error that stopped the listing."""
    listing = canvas.paginate("courses/101/enrollments", per_page=10, max_pages=1)
    seen = [next(listing) for _ in range(10)]

    with pytest.raises(exc.InvalidResponse, match="max_pages=1"):
        next(listing)
    assert 10 == len({item["id"] for item in seen})


# ---------------------------------------------------------------- bulk, progress


def test_map_runs_blocking_calls_in_threads_and_keeps_outcomes(canvas: CanvasClient) -> None:
    """map() calls the blocking function per item in threads; outcomes keep input order."""
    result = canvas.map(lambda course: canvas.get(f"courses/{course}")["id"], [101, 999, 102])

    assert [101, None, 102] == result.results
    assert [exc.ResourceDoesNotExist] == [type(o.error) for o in result.failures]


def test_a_callback_calling_the_client_fails_instead_of_deadlocking(canvas: CanvasClient) -> None:
    """on_progress runs on the loop thread: a blocking call there raises, it does not hang."""
    result = canvas.map(
        lambda course: canvas.get(f"courses/{course}")["id"],
        [101],
        on_progress=lambda _: canvas.get("courses/101"),
    )

    assert [101] == result.results
    assert isinstance(result.progress_error, RuntimeError)


def test_wait_for_progress_polls_to_completion(
    canvas: CanvasClient, sim: ThreadedSimulator
) -> None:
    """update_grades then wait_for_progress: the job completes and the grade is applied."""
    progress = canvas.post(
        "courses/101/assignments/101001/submissions/update_grades",
        data={"grade_data": {"101": {"posted_grade": "5"}}},
    )

    final = canvas.wait_for_progress(progress, poll_every=0.01)

    assert "completed" == final["workflow_state"]
    assert 5.0 == sim.call(lambda: sim.simulator.data.submissions[(101, 101001)][101]["score"])


# ------------------------------------------------------------ threads, loops


def _costly_settings() -> SimulatorSettings:
    """A small bucket that 16 unpaced threads overflow: 3 requests of 25 fit under hwm 100."""
    return SimulatorSettings(
        throttle=ThrottleSettings(hwm=100.0, maximum=200.0, up_front_cost=25.0),
        default_route=RouteProfile(Distribution.constant(0.01), cost_rate=20.0, base_cost=0.0),
    )


def _sixteen_threads(base_url: str, token: str, calls: int, *, paced: bool) -> list[BaseException]:
    """16 threads, each with its own blocking client of one token, *calls* GETs each."""
    errors: list[BaseException] = []
    policy = RetryPolicy() if paced else RetryPolicy(attempts=1)

    def work() -> None:
        with CanvasClient(
            base_url, token, policy=policy, throttle="shared" if paced else None
        ) as client:
            for _ in range(calls):
                try:
                    client.get("courses/101")
                except exc.CanvasException as error:
                    errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_sixteen_threads_pace_through_one_throttle() -> None:
    """16 threads' clients share the token's throttle: none throttled, where unpaced ones are."""
    with simulator_thread(_costly_settings()) as sim:
        # Before its first quota headers the throttle admits a fixed number of
        # requests (8 by default), more than this small bucket holds.
        config = ThrottleConfig(hwm=100.0, up_front_cost=25.0, headerless_in_flight=1)
        throttle_for(sim.base_url, sim.token, config=config)
        paced_errors = _sixteen_threads(sim.base_url, sim.token, 4, paced=True)
        paced = (sim.simulator.stats.requests, sim.simulator.stats.throttled)
        sim.call(sim.simulator.reset)
        unpaced_errors = _sixteen_threads(sim.base_url, sim.token, 4, paced=False)

    requests, throttled = paced
    assert [] == paced_errors
    # Paced: at most one throttled request (retried unseen) on a loaded machine.
    assert throttled <= 1
    assert 64 + throttled == requests
    # The control: without the shared throttle the same load is refused.
    assert sim.simulator.stats.throttled > 0
    assert {exc.RateLimitExceeded} == {type(error) for error in unpaced_errors}


def test_clients_of_one_token_share_its_throttle(sim: ThreadedSimulator) -> None:
    """Two blocking clients of a token, and an async one, pace with the same throttle."""
    with (
        CanvasClient(sim.base_url, sim.token) as first,
        CanvasClient(sim.base_url, sim.token) as second,
    ):
        assert first.throttle is second.throttle
        assert first.throttle is AsyncCanvasClient(sim.base_url, sim.token).throttle


def test_works_inside_a_running_event_loop(canvas: CanvasClient) -> None:
    """Called in a coroutine (Jupyter, a FastAPI handler), it blocks and answers: no loop error."""

    async def handler() -> int:
        course = canvas.get("courses/101")
        return int(course["id"])

    assert 101 == asyncio.run(handler())


@pytest.mark.skipif(not CAN_INTERRUPT, reason="needs POSIX signals")
def test_ctrl_c_interrupts_a_call_and_leaves_the_client_usable(sim: ThreadedSimulator) -> None:
    """SIGINT during a hanging call raises KeyboardInterrupt; the next call succeeds."""
    _schedule(sim, {1: Fault.HANG})

    with CanvasClient(sim.base_url, sim.token) as client:
        # Fired once the request is inside the simulator: the main thread is blocked in the call.
        with (
            ctrl_c_when(lambda: sim.simulator.stats.in_flight > 0),
            pytest.raises(KeyboardInterrupt),
        ):
            client.get("courses/101")

        assert 101 == client.get("courses/101")["id"]
        assert ClientState.OPENED == client.state


# --------------------------------------------------------------- life cycle


def test_a_closed_client_refuses_calls(sim: ThreadedSimulator) -> None:
    """After close() (twice is fine) calls raise RuntimeError; a used client cannot reopen."""
    client = CanvasClient(sim.base_url, sim.token)
    client.get("courses/101")
    client.close()
    client.close()

    with pytest.raises(RuntimeError, match="closed"):
        client.get("courses/101")
    with pytest.raises(RuntimeError, match="opened twice"):
        client.__enter__()
    assert ClientState.CLOSED == client.state


def test_a_client_collected_while_open_warns(sim: ThreadedSimulator) -> None:
    """An open client that is garbage-collected warns with a ResourceWarning."""
    clients = [CanvasClient(sim.base_url, sim.token)]
    clients[0].get("courses/101")

    with pytest.warns(ResourceWarning, match="never closed"):
        clients.clear()


def test_the_token_stays_out_of_the_repr(sim: ThreadedSimulator) -> None:
    """repr() names the base URL and a fingerprint, never the token."""
    with CanvasClient(sim.base_url, sim.token) as client:
        text = repr(client) + repr(client._factory)

    assert sim.token not in text
    assert text.startswith("sync.CanvasClient(")


def test_one_loop_thread_serves_every_client(sim: ThreadedSimulator) -> None:
    """However many clients, the process has one loop thread, the same one."""
    with CanvasClient(sim.base_url, sim.token) as first:
        first.get("courses/101")
        with CanvasClient(sim.base_url, sim.token) as second:
            second.get("courses/102")
            loops = [t for t in threading.enumerate() if t.name == THREAD_NAME]

    assert 1 == len(loops)
    assert LOOP.running


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )


def test_nothing_is_left_behind_at_exit() -> None:
    """A script that never closes its client exits with one thread and no ResourceWarning."""
    result = _run_script(
        """
        import atexit, gc, threading
        # Registered first, so it runs after the library's exit handler.
        atexit.register(lambda: (gc.collect(), print([t.name for t in threading.enumerate()])))
        from tests._simulator_thread import simulator_thread
        from resilient_canvas.sync import CanvasClient
        sim_context = simulator_thread()
        sim = sim_context.__enter__()
        canvas = CanvasClient(sim.base_url, sim.token)   # never closed
        items = canvas.paginate("courses/101/enrollments", per_page=5)
        next(items)                                      # a listing left half-read
        print(canvas.get("courses/101")["id"])
        atexit.register(sim_context.__exit__, None, None, None)
        """
    )

    assert ("", "101\n['MainThread']\n") == (result.stderr, result.stdout)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_loop_and_connections() -> None:
    """After fork the child's calls work through a fresh loop; the parent's keep working."""
    result = _run_script(
        """
        import os, warnings
        warnings.filterwarnings("ignore", "This process .* multi-threaded", DeprecationWarning)
        from tests._simulator_thread import simulator_thread
        from resilient_canvas.sync import CanvasClient
        with simulator_thread() as sim:
            canvas = CanvasClient(sim.base_url, sim.token)
            canvas.get("courses/101")
            pid = os.fork()
            if pid == 0:
                code = 0 if canvas.get("courses/102")["id"] == 102 else 1
                canvas.close()
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status), canvas.get("courses/103")["id"])
            canvas.close()
        """
    )

    assert ("", "0 103\n") == (result.stderr, result.stdout)


def test_paginate_reads_one_page_per_step_with_per_page_in_the_path(
    canvas: CanvasClient, sim: ThreadedSimulator
) -> None:
    """A per_page in the path sets how much is read per step, as per_page= does."""
    listing = canvas.paginate("courses/101/enrollments?per_page=4")

    first_four = [next(listing) for _ in range(4)]

    assert (4, 1) == (len(first_four), sim.simulator.stats.requests)


# ---------------------------------------------------------------- workflows

_ROSTER = """
query Roster($course: ID!, $first: Int, $after: String) {
  course(id: $course) {
    enrollmentsConnection(first: $first, after: $after) {
      nodes { _id }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


def test_blocking_upload_and_download_round_trip(canvas: CanvasClient, tmp_path: Path) -> None:
    """The blocking client uploads in three steps and downloads the same bytes back."""
    created = canvas.upload(b"grades,1\n", to="courses/101/files", name="g.csv")
    written = canvas.download(created, tmp_path / "g.csv")

    assert ("g.csv", b"grades,1\n") == (created["display_name"], written.read_bytes())


def test_blocking_graphql_and_its_nodes(canvas: CanvasClient, sim: ThreadedSimulator) -> None:
    """GraphQL queries and connection pages work blocking, in REST's order."""
    data = canvas.graphql('{ course(id: "101") { _id } }')
    nodes = list(
        canvas.graphql_nodes(
            _ROSTER,
            connection="course.enrollmentsConnection",
            variables={"course": "101"},
            page_size=7,
        )
    )
    expected = sim.call(lambda: [str(e["id"]) for e in sim.simulator.data.enrollments[101]])

    assert "101" == data["course"]["_id"]
    assert expected == [node["_id"] for node in nodes]


def test_blocking_sis_import_runs_to_its_end(canvas: CanvasClient) -> None:
    """An SIS import is started from bytes and waited for, blocking."""
    users = b"user_id,login_id,full_name,status\nu1,ada,Ada L,active\n"
    started = canvas.start_sis_import(1, users)
    result = canvas.wait_for_sis_import(1, started, poll_every=0.01)

    assert "imported" == result.workflow_state
