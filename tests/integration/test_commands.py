"""Operator commands on one replica: delivery, the bot's ack recorded, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.client import BotClient
from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_settings(tmp_path)) as running:
        yield running


async def test_command_reaches_the_bot_and_its_ack_is_recorded(gw: RunningGateway) -> None:
    received: asyncio.Queue[dict] = asyncio.Queue()
    rest = Rest(gw.http, token("admin", "ops"))
    async with BotClient(gw.ws, token("npc", "digger"), on_command=received.put_nowait) as bot:
        status, body = await rest.call(
            "POST", "/api/npcs/digger/commands", {"action": "goto", "args": {"x": 1, "y": 2}}
        )
        assert status == 202 and body["delivered"] is True
        command = await asyncio.wait_for(received.get(), 5)
        assert command["id"] == body["id"] and command["action"] == "goto"
        assert command["args"] == {"x": 1, "y": 2}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:  # the SDK acks by itself
            _, record = await rest.call("GET", f"/api/commands/{body['id']}")
            if record.get("status") == "acked":
                break
            assert loop.time() < deadline, record
            await asyncio.sleep(0.02)
        assert record["npc"] == "digger" and record["acked_at"] >= record["delivered_at"] > 0
        assert bot.connected  # an ack never costs the bot its connection
    await rest.close()


async def test_command_errors(gw: RunningGateway) -> None:
    rest = Rest(gw.http, token("admin", "ops"))
    try:
        status, body = await rest.call("POST", "/api/npcs/nobody/commands", {"action": "stop"})
        assert status == 404 and body["error"]["code"] == "not_found"  # never registered
        await gw.bot("someone")
        for bad in ({}, {"action": ""}, {"action": 5}, {"action": "go", "args": [1]}, [1]):
            status, body = await rest.call("POST", "/api/npcs/someone/commands", bad)
            assert status == 400 and body["error"]["code"] == "bad_message", bad
        viewer_rest = Rest(gw.http, token("viewer", "v"))
        status, _ = await viewer_rest.call("POST", "/api/npcs/someone/commands", {"action": "x"})
        assert status == 403
        await viewer_rest.close()
        assert (await rest.call("GET", "/api/commands/nope"))[0] == 404
    finally:
        await rest.close()
