"""The Python SDK (gateway.client) against a real in-process gateway on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from websockets.exceptions import InvalidStatus

from gateway.app import create_app, make_runner
from gateway.client import BotClient, GatewayError, NotConnected, ViewerClient
from gateway.config import Settings
from tests.harness import RunningGateway, free_port, gateway_settings, running_gateway, token


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path)) as running:
        yield running


@contextlib.asynccontextmanager
async def serving(settings: Settings, port: int) -> AsyncIterator[None]:
    """A gateway on a fixed port, so a test can stop it and bring it back on the same address."""
    runner = make_runner(create_app(settings), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
async def test_bot_and_viewer_share_live_state(gw: RunningGateway, encoding: str) -> None:
    async with (
        ViewerClient(gw.ws, token("viewer", "v"), encoding=encoding) as viewer,
        BotClient(gw.ws, token("npc", "miner-1"), encoding=encoding) as bot,
    ):
        assert bot.welcome is not None and bot.welcome["npc"] == "miner-1"
        assert viewer.welcome is not None and viewer.welcome["protocol"] == 1
        assert await bot.ping() > 0
        await bot.send_status("mining")
        await bot.send_position(10.5, 64, -3, yaw=90, pitch=-10)
        npc = await viewer.wait_for_npc("miner-1", x=10.5, status="mining", online=True)
        assert (npc["y"], npc["z"], npc["yaw"], npc["pitch"], npc["dim"]) == (
            64,
            -3,
            90,
            -10,
            "overworld",
        )
        await bot.close()
        await viewer.wait_for_npc("miner-1", online=False)


async def test_viewer_iterates_messages_and_subscribes(gw: RunningGateway) -> None:
    async with (
        ViewerClient(gw.ws, token("viewer", "v")) as viewer,
        BotClient(gw.ws, token("npc", "far")) as far,
        BotClient(gw.ws, token("npc", "near")) as near,
    ):
        seen: list[str] = []

        async def collect() -> None:
            async for msg in viewer:
                seen.append(msg["type"])
                if msg["type"] == "positions":
                    return

        collector = asyncio.create_task(collect())
        await far.send_position(5000, 64, 5000)
        await near.send_position(1, 64, 1)
        await viewer.wait_for(lambda npcs: {"far", "near"} <= {i for i in npcs if "x" in npcs[i]})
        await asyncio.wait_for(collector, 5)
        assert "positions" in seen

        await viewer.subscribe(area=[-100, -100, 100, 100])
        await viewer.wait_for_message(lambda m: m["type"] == "snapshot")
        assert set(viewer.npcs) == {"near"}
        await far.send_position(5001, 64, 5000)
        await near.send_position(2, 64, 1)
        await viewer.wait_for_npc("near", x=2)
        assert "far" not in viewer.npcs


async def test_bot_reconnects_and_resends_latest_state(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path)
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    fast = {"backoff_initial": 0.05, "backoff_max": 0.2}
    bot = BotClient(url, token("npc", "walker"), **fast)
    viewer = ViewerClient(url, token("viewer", "v"), **fast)
    try:
        async with serving(settings, port):
            await bot.start()
            await viewer.start()
            await bot.send_status("walking")
            await bot.send_position(1, 64, 1)
            await viewer.wait_for_npc("walker", x=1)
        # The gateway is gone: sends neither raise nor get lost.
        await bot.wait_disconnected(5)
        assert await bot.send_position(2, 65, 2) is False
        assert await bot.send_status("waiting") is False
        with pytest.raises(NotConnected):
            await bot.ping()
        async with serving(settings, port):
            await bot.wait_connected(10)
            await viewer.wait_connected(10)
            npc = await viewer.wait_for_npc("walker", x=2, y=65, status="waiting", online=True)
            assert npc["z"] == 2
            assert bot.reconnects == 1 and viewer.reconnects == 1
    finally:
        await bot.close()
        await viewer.close()


async def test_replaced_bot_stops_with_4409(gw: RunningGateway) -> None:
    first = BotClient(gw.ws, token("npc", "twin"), backoff_initial=0.05)
    await first.start()
    async with BotClient(gw.ws, token("npc", "twin")) as second:
        assert await asyncio.wait_for(first.wait_closed(), 5) == 4409
        assert first.stopped and second.connected
        await asyncio.sleep(0.3)  # longer than the backoff: the first must not come back
        assert second.connected and await second.ping() > 0


async def test_rejected_token_raises_at_start(gw: RunningGateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        await BotClient(gw.ws, "not-a-token").start()
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        await BotClient(gw.ws, token("viewer", "v")).start()
    assert info.value.response.status_code == 403


async def test_request_path(gw: RunningGateway) -> None:
    floor = [[x, 63, z] for x in range(5) for z in range(2)]
    async with BotClient(gw.ws, token("npc", "pathy")) as bot:
        try:
            result = await bot.request_path([0, 64, 0], [4, 64, 0], {"solid": floor}, timeout=20)
        except GatewayError as exc:
            pytest.skip(f"pathfinding not available here: {exc}")
        assert result["type"] == "path_result" and result["ok"] is True
        assert result["path"][0] == [0, 64, 0] and result["path"][-1] == [4, 64, 0]
        assert result["cost"] == 4
