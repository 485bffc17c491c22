"""Tests for the User-Agent we send and the three kinds of 403 Canvas answers."""

from __future__ import annotations

import platform
import re

import aiohttp
import pytest

from resilient_canvas import CanvasClient, RetryPolicy
from resilient_canvas import exceptions as exc
from resilient_canvas._agent import DEFAULT_USER_AGENT, build_user_agent
from resilient_canvas._version import PROJECT_URL, __version__
from resilient_canvas.testing import CanvasSimulator, FakeClock, SimulatorSettings

PERMISSION_BODY = (
    b'{"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}'
)
USER_AGENT_BODY = (
    b'{"error": "Forbidden", "message": "You are not authorized to access this site '
    b'because you have not provided a valid user agent."}'
)


def test_default_user_agent_names_us_and_the_stack() -> None:
    """Ours first (version, project URL), then aiohttp and Python with their versions."""
    expected = (
        f"resilient-canvas/{__version__} (+{PROJECT_URL}) "
        f"aiohttp/{aiohttp.__version__} Python/{platform.python_version()}"
    )
    assert expected == DEFAULT_USER_AGENT


def test_caller_product_goes_in_front() -> None:
    """user_agent= names the caller's product and contact before ours."""
    expected = f"gradesync/2.1 (it@school.edu) {DEFAULT_USER_AGENT}"
    assert expected == build_user_agent("  gradesync/2.1 (it@school.edu) ")


@pytest.mark.parametrize("bad", ["", "   ", "tool\r\nX-Injected: 1", "a\nb"])
def test_blank_or_multiline_user_agent_is_refused(bad: str) -> None:
    """A blank product or a line break (header injection) is a ValueError."""
    with pytest.raises(ValueError, match="user_agent must name your product"):
        build_user_agent(bad)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"403 Forbidden (Rate Limit Exceeded)\n", exc.RateLimitExceeded),
        (USER_AGENT_BODY, exc.UserAgentRejected),
        (PERMISSION_BODY, exc.Forbidden),
        (b"<html>Forbidden by the firewall</html>", exc.Forbidden),
        (b"", exc.Forbidden),
    ],
)
def test_three_kinds_of_403_are_told_apart(body: bytes, expected: type[Exception]) -> None:
    """Throttle, User-Agent and permission 403s get their classes; unknown bodies stay Forbidden."""
    assert expected is type(exc.classify_response(403, {}, body))


@pytest.mark.parametrize(
    ("body", "retried"),
    [
        (b"403 Forbidden (Rate Limit Exceeded)\n", True),
        (USER_AGENT_BODY, False),
        (PERMISSION_BODY, False),
        (b"nope", False),
    ],
)
def test_only_the_throttle_403_is_retried(body: bytes, retried: bool) -> None:
    """The default policy retries the legacy throttle 403 alone, even for a GET."""
    error = exc.classify_response(403, {}, body)
    assert retried == RetryPolicy().allows(error, method="GET", idempotent=None)


def test_user_agent_message_says_how_to_fix() -> None:
    """The message names the user_agent= option and the contact Instructure asks for."""
    error = exc.classify_response(403, {}, USER_AGENT_BODY, method="GET", url="https://c/x")
    assert 'user_agent="YourProduct/1.0 (you@example.edu)"' in str(error)


async def test_simulator_refuses_a_request_without_user_agent() -> None:
    """Like hosted Canvas, the simulator answers 403 to a request with no User-Agent."""
    async with CanvasSimulator(SimulatorSettings.instant()) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        async with (
            aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session,
            session.get(f"{sim.base_url}/api/v1/courses/101", headers=headers) as response,
        ):
            body = await response.read()
    assert (403, USER_AGENT_BODY) == (response.status, body)


async def test_our_client_passes_user_agent_enforcement() -> None:
    """The default User-Agent satisfies the simulator's enforcement (on by default)."""
    async with (
        CanvasSimulator(SimulatorSettings.instant()) as sim,
        CanvasClient(sim.base_url, sim.token) as canvas,
    ):
        assert 101 == (await canvas.get("courses/101"))["id"]


async def test_blocked_user_agent_raises_once_without_retrying() -> None:
    """A refused User-Agent raises UserAgentRejected after one request, the fix in its message."""
    clock = FakeClock()
    settings = SimulatorSettings.instant(blocked_user_agents=("badbot",))
    async with (
        CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as sim,
        CanvasClient(
            sim.base_url, sim.token, user_agent="BadBot/1", clock=clock, sleep=clock.sleep
        ) as canvas,
    ):
        with pytest.raises(exc.UserAgentRejected) as caught:
            await canvas.get("courses/101")
        assert 1 == sim.stats.requests
    assert "user_agent=" in str(caught.value)
    assert re.search(r"GET \S+/api/v1/courses/101 failed with 403", str(caught.value))
