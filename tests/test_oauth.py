"""Tests for OAuth2 tokens that expire: one refresh for every waiting call, same throttle."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from resilient_canvas import CanvasClient, RefreshToken
from resilient_canvas import exceptions as exc
from resilient_canvas.testing import CanvasSimulator, FakeClock


@pytest.fixture
async def expired(sim: CanvasSimulator) -> tuple[RefreshToken, str]:
    """A refresh configuration whose current access token Canvas has expired."""
    access, refresh, client_id, secret = sim.oauth.authorize()
    sim.oauth.expire(access)
    return RefreshToken(refresh, client_id, secret, access_token=access), access


async def test_expired_token_is_refreshed_and_the_call_repeated(
    sim: CanvasSimulator, expired: tuple[RefreshToken, str]
) -> None:
    """A 401 "Expired access token." refreshes through /login/oauth2/token and succeeds."""
    config, _ = expired
    async with CanvasClient(sim.base_url, config) as canvas:
        course = await canvas.get("courses/101")
    assert (101, 1) == (course["id"], sim.oauth.grants)


async def test_concurrent_calls_share_one_refresh(
    sim: CanvasSimulator, expired: tuple[RefreshToken, str]
) -> None:
    """Twenty calls meeting the expiry at once cause exactly one refresh; all succeed."""
    config, _ = expired
    async with CanvasClient(sim.base_url, config) as canvas:
        courses = await asyncio.gather(*(canvas.get("courses/101") for _ in range(20)))
    assert (20, 1) == (len(courses), sim.oauth.grants)


async def test_throttle_and_fingerprint_survive_a_refresh(
    sim: CanvasSimulator, expired: tuple[RefreshToken, str]
) -> None:
    """The client keeps its throttle and fingerprint; the simulator its bucket (the record)."""
    config, access = expired
    async with CanvasClient(sim.base_url, config) as canvas:
        throttle, fingerprint = canvas.throttle, canvas.fingerprint
        await canvas.get("courses/101")
        assert (throttle, fingerprint) == (canvas.throttle, canvas.fingerprint)
    assert 1 == len([key for key in sim._canvas.buckets if key.startswith("token:")])
    assert sim.bucket(access) is sim._canvas.buckets[next(iter(sim._canvas.buckets))]


async def test_refresh_failure_is_invalid_access_token(
    sim: CanvasSimulator, expired: tuple[RefreshToken, str]
) -> None:
    """A refused grant raises InvalidAccessToken, saying what to check; no secret in it."""
    config, access = expired
    wrong = RefreshToken("refresh-unknown-123456", config.client_id, config.client_secret, access)
    clock = FakeClock()
    with capture_logs() as events:
        async with CanvasClient(sim.base_url, wrong, clock=clock, sleep=clock.sleep) as canvas:
            with pytest.raises(exc.InvalidAccessToken, match="Could not refresh") as caught:
                await canvas.get("courses/101")
    shown = str(caught.value) + repr(caught.value) + repr(events)
    assert "Check the developer key" in str(caught.value)
    for secret in (access, config.client_secret, "refresh-unknown-123456"):
        assert secret not in shown
    assert (0, 1) == (sim.oauth.grants, sim.oauth.refused_grants)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_token_function_is_called_first_and_on_expiry(
    sim: CanvasSimulator, kind: str
) -> None:
    """A token function gives the first token, and a new one once after the expiry."""
    issued: list[str] = []

    def fresh() -> str:
        token = sim.oauth.authorize()[0]
        issued.append(token)
        return token

    async def fresh_async() -> str:
        return fresh()

    async with CanvasClient(sim.base_url, fresh if kind == "sync" else fresh_async) as canvas:
        await canvas.get("courses/101")
        sim.oauth.expire(issued[0])
        await asyncio.gather(*(canvas.get("courses/101") for _ in range(5)))
    assert 2 == len(issued)


async def test_static_expired_token_is_not_refreshed(sim: CanvasSimulator) -> None:
    """A plain token that expires raises InvalidAccessToken at once, as before."""
    access = sim.oauth.authorize()[0]
    sim.oauth.expire(access)
    async with CanvasClient(sim.base_url, access) as canvas:
        with pytest.raises(exc.InvalidAccessToken, match="Expired access token"):
            await canvas.get("courses/101")
    assert 0 == sim.oauth.grants


def test_refresh_token_repr_hides_secrets() -> None:
    """Neither the refresh token nor the client secret shows in a repr."""
    config = RefreshToken("refresh-very-secret", "170000000000001", "client-very-secret")
    assert "RefreshToken(client_id='170000000000001', refresh_token=<redacted>)" == repr(config)


async def test_failing_token_function_is_invalid_access_token(sim: CanvasSimulator) -> None:
    """A token function that raises gives InvalidAccessToken naming the failure."""

    def broken() -> str:
        raise RuntimeError("vault unreachable")

    async with CanvasClient(sim.base_url, broken) as canvas:
        with pytest.raises(exc.InvalidAccessToken, match="RuntimeError: vault unreachable"):
            await canvas.get("courses/101")
    assert 0 == sim.stats.requests
