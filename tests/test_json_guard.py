"""Tests for Canvas's ``while(1);`` JSON guard: the simulator adds it, every parse strips it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from resilient_canvas import CanvasClient
from resilient_canvas import exceptions as exc
from resilient_canvas._http import strip_json_guard
from resilient_canvas.testing import CanvasSimulator, FakeClock, SimulatorSettings


@pytest.fixture
async def guarded() -> AsyncIterator[CanvasSimulator]:
    """A simulator that guards every JSON answer, whatever the request accepts."""
    clock = FakeClock()
    settings = SimulatorSettings.instant(json_guard="always")
    async with CanvasSimulator(settings, clock=clock, sleep=clock.sleep) as simulator:
        yield simulator


def test_strip_json_guard() -> None:
    """The guard and the whitespace before it go; a body without it is left alone."""
    assert b'{"a": 1}' == strip_json_guard(b' while(1);{"a": 1}')
    assert b'{"while(1);": 1}' == strip_json_guard(b'{"while(1);": 1}')


async def test_every_client_parse_strips_the_guard(guarded: CanvasSimulator) -> None:
    """get, paginate, post and request() all decode guarded JSON."""
    async with CanvasClient(guarded.base_url, guarded.token) as canvas:
        course = await canvas.get("courses/101")
        enrollments = [e async for e in canvas.paginate("courses/101/enrollments", per_page=5)]
        created = await canvas.post(
            "courses/101/assignments", data={"assignment": {"name": "Guarded"}}
        )
        raw = await canvas.request("GET", "courses/101")
    assert 101 == course["id"]
    assert len(enrollments) > 5
    assert "Guarded" == created["name"]
    assert (course, True) == (raw.data, raw.content.startswith(b"while(1);"))


async def test_guarded_error_body_is_classified(guarded: CanvasSimulator) -> None:
    """A guarded 404 still gives ResourceDoesNotExist with Canvas's message."""
    async with CanvasClient(guarded.base_url, guarded.token) as canvas:
        with pytest.raises(exc.ResourceDoesNotExist) as caught:
            await canvas.get("courses/999999")
    assert "The specified resource does not exist." in str(caught.value)


def test_classifier_strips_the_guard() -> None:
    """classify_response reads the Canvas errors behind the guard."""
    body = b'while(1);{"errors":[{"message":"Invalid access token."}]}'
    error = exc.classify_response(401, {"WWW-Authenticate": "Bearer"}, body)
    assert [{"message": "Invalid access token."}] == error.errors


@pytest.mark.parametrize(
    ("accept", "guarded"),
    [("text/html", True), ("application/json", False), ("*/*", False)],
)
async def test_simulator_guards_when_accept_lacks_json(accept: str, guarded: bool) -> None:
    """By default the guard is added only when Accept names neither JSON nor */*."""
    async with CanvasSimulator(SimulatorSettings.instant()) as sim:
        headers = {"Authorization": f"Bearer {sim.token}", "Accept": accept}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sim.base_url}/api/v1/courses/101", headers=headers) as response,
        ):
            body = await response.read()
    assert guarded == body.startswith(b"while(1);")
