"""The SDK's token provider (§2) against a real in-process gateway: a client given a
callable refreshes in place before `exp` and fetches a fresh token for every reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.client import BotClient, ViewerClient
from gateway.protocol import CloseCode
from tests.harness import RunningGateway, gateway_settings, running_gateway, token

TTL_S = 2  # every token the providers below hand out lives this long


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path)) as running:
        yield running


class Provider:
    """Hands out short-lived tokens, like an identity service would; counts the calls."""

    def __init__(self, role: str, sub: str) -> None:
        self.role, self.sub = role, sub
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return token(self.role, self.sub, TTL_S)


async def outlive(seconds: float) -> None:
    """Let wall-clock time pass (the thing under test is what happens over time)."""
    await asyncio.sleep(seconds)


async def test_bot_refreshes_before_exp_and_never_drops(gw: RunningGateway) -> None:
    provider = Provider("npc", "long-runner")
    async with BotClient(gw.ws, provider) as bot:
        await outlive(3 * TTL_S)  # three token lifetimes
        assert await bot.ping() > 0
        assert bot.connected and bot.reconnects == 0 and bot.close_code is None
        assert provider.calls >= 3  # the first connect, then refreshes in place


async def test_viewer_refreshes_before_exp_and_never_drops(gw: RunningGateway) -> None:
    provider = Provider("viewer", "long-watcher")
    async with ViewerClient(gw.ws, provider) as viewer:
        await outlive(3 * TTL_S)
        assert await viewer.ping() > 0
        assert viewer.connected and viewer.reconnects == 0 and viewer.close_code is None
        assert provider.calls >= 3


async def test_reconnect_after_exp_fetches_a_fresh_token(gw: RunningGateway) -> None:
    provider = Provider("npc", "comeback")
    async with BotClient(gw.ws, provider, backoff_initial=0.05) as bot:
        await outlive(TTL_S + 1)  # the token the connection opened with has expired
        calls_before = provider.calls
        session = gw.node.hub.bots["comeback"]
        await session.close(CloseCode.GOING_AWAY, "restart")  # e.g. a replica restarting
        await bot.wait_disconnected(10)
        await bot.wait_connected(10)
        assert bot.reconnects == 1 and not bot.stopped
        assert provider.calls > calls_before


def test_a_plain_string_token_still_works_as_before() -> None:
    bot = BotClient("ws://127.0.0.1:1", "a.b.c")
    assert bot.token == "a.b.c"
