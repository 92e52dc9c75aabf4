"""Commands for an offline bot (§10): queued, delivered once on reconnect, expired, acked once."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.client import BotClient
from gateway.testing.redis_server import RedisServer
from tests.harness import Rest, RunningGateway, gateway_settings, running_gateway, token
from tests.wait import until

poll = functools.partial(until, interval_s=0.02)  # some checks are REST calls


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RunningGateway]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = gateway_settings(tmp_path, redis_url=url, command_queue_s=2)
    async with running_gateway(settings) as running:
        yield running


async def status_of(admin: Rest, command_id: str) -> str:
    status, record = await admin.call("GET", f"/api/commands/{command_id}")
    assert status == 200, record
    return str(record["status"])


async def register(admin: Rest, npc: str) -> None:
    status, body = await admin.call("POST", "/api/npcs", {"id": npc, "role": "miner"})
    assert status == 201, body


async def test_a_command_for_an_offline_bot_waits_and_arrives_once(
    gw: RunningGateway, admin: Rest
) -> None:
    await register(admin, "sleeper")
    ids = []
    for n in range(3):
        status, body = await admin.call(
            "POST", "/api/npcs/sleeper/commands", {"action": "dig", "args": {"n": n}}
        )
        assert status == 202 and body["delivered"] is False and body["queued"] is True
        ids.append(body["id"])
        assert await status_of(admin, body["id"]) == "queued"
    got: list[dict[str, Any]] = []
    async with BotClient(gw.ws, token("npc", "sleeper"), on_command=got.append) as bot:

        async def all_acked() -> bool:
            return all([await status_of(admin, cid) == "acked" for cid in ids])

        await poll(all_acked, "the three queued commands acked")
        assert [(c["id"], c["args"]["n"]) for c in got] == [(cid, n) for n, cid in enumerate(ids)]
        # Live commands still arrive directly, after the queued ones.
        status, body = await admin.call("POST", "/api/npcs/sleeper/commands", {"action": "stop"})
        assert status == 202 and body["delivered"] is True and body["queued"] is False
        await poll(lambda: asyncio.sleep(0, len(got) == 4), "the live command")
        assert bot.duplicate_commands == 0
    # Reconnecting does not bring them back: they were taken.
    again: list[dict[str, Any]] = []
    async with BotClient(gw.ws, token("npc", "sleeper"), on_command=again.append):
        status, body = await admin.call("POST", "/api/npcs/sleeper/commands", {"action": "fence"})
        await poll(lambda: asyncio.sleep(0, bool(again)), "the fence command")
        assert [c["action"] for c in again] == ["fence"]
    assert gw.node.commands.stats()["deliveredQueued"] == 3


async def test_a_queued_command_expires(gw: RunningGateway, admin: Rest) -> None:
    await register(admin, "late")
    status, body = await admin.call("POST", "/api/npcs/late/commands", {"action": "dig"})
    assert status == 202 and body["queued"] is True
    stale = body["id"]

    async def expired() -> bool:
        return await status_of(admin, stale) == "expired"

    await poll(expired, "the queued command to expire (2 s in this test)")
    got: list[dict[str, Any]] = []
    async with BotClient(gw.ws, token("npc", "late"), on_command=got.append):
        status, body = await admin.call("POST", "/api/npcs/late/commands", {"action": "fence"})
        assert body["delivered"] is True
        await poll(lambda: asyncio.sleep(0, bool(got)), "the fence command")
        assert [c["action"] for c in got] == ["fence"]  # the expired one never arrives
    assert await status_of(admin, stale) == "expired"


async def test_a_command_for_an_unknown_npc_is_404_and_queues_nothing(
    gw: RunningGateway, admin: Rest
) -> None:
    status, body = await admin.call("POST", "/api/npcs/nobody/commands", {"action": "dig"})
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert gw.node.commands.stats()["queued"] == 0


async def test_an_ack_is_idempotent(gw: RunningGateway, admin: Rest) -> None:
    bot = await gw.bot("acker")
    status, body = await admin.call("POST", "/api/npcs/acker/commands", {"action": "dig"})
    assert status == 202
    assert body["delivered"] is True
    command = await bot.recv_type("command")
    for _ in range(3):
        await bot.send({"type": "ack", "id": command["id"]})
    await bot.roundtrip()  # no error came before the pong: every ack was accepted

    async def acked() -> bool:
        return await status_of(admin, command["id"]) == "acked"

    await poll(acked, "the ack")
    _, first = await admin.call("GET", f"/api/commands/{command['id']}")
    await bot.send({"type": "ack", "id": command["id"]})
    await bot.roundtrip()
    _, later = await admin.call("GET", f"/api/commands/{command['id']}")
    assert later == first  # acking again changes nothing
    assert gw.node.commands.stats()["acked"] == 1


async def test_the_bot_sdk_runs_a_repeated_command_id_once(gw: RunningGateway) -> None:
    got: list[dict[str, Any]] = []
    async with BotClient(gw.ws, token("npc", "twice"), on_command=got.append) as bot:
        await poll(lambda: asyncio.sleep(0, "twice" in gw.node.hub.bots), "the session")
        command = {"type": "command", "id": "c-1", "action": "dig", "args": {}}
        session = gw.node.hub.bots["twice"]
        # Sent twice on the wire (as after a lost ack and a reconnect): handled once.
        assert session.send_message(command) and session.send_message(command)
        session.send_message({"type": "command", "id": "c-2", "action": "fence", "args": {}})
        await poll(lambda: asyncio.sleep(0, len(got) == 2), "both distinct commands")
        assert [c["id"] for c in got] == ["c-1", "c-2"]
        assert bot.duplicate_commands == 1


async def test_the_gateway_sends_an_id_at_most_once_per_connection(gw: RunningGateway) -> None:
    bot = await gw.bot("once")
    session = gw.node.hub.bots["once"]
    command = {"type": "command", "id": "c-1", "action": "dig", "args": {}}
    assert session.send_command(command) and session.send_command(command)
    session.send_command({"type": "command", "id": "c-2", "action": "fence", "args": {}})
    assert (await bot.recv_type("command"))["id"] == "c-1"
    assert (await bot.recv_type("command"))["id"] == "c-2"


@pytest.mark.redis
async def test_queueing_while_redis_is_down_is_503_and_queues_nothing(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    settings = gateway_settings(tmp_path, redis_url=redis_url)
    async with running_gateway(settings) as gw:
        admin = Rest(gw.http, token("admin", "ops"))
        try:
            await register(admin, "offline")
            redis_server.stop()
            status, body = await admin.call("POST", "/api/npcs/offline/commands", {"action": "a"})
            assert (status, body["error"]["code"]) == (503, "unavailable")
            redis_server.start()

            async def queued() -> bool:
                status, body = await admin.call(
                    "POST", "/api/npcs/offline/commands", {"action": "b"}
                )
                return status == 202 and body["queued"] is True

            await poll(queued, "queueing to work again once Redis is back")
            got: list[dict[str, Any]] = []
            async with BotClient(gw.ws, token("npc", "offline"), on_command=got.append):
                await poll(lambda: asyncio.sleep(0, bool(got)), "the queued command")
            assert [c["action"] for c in got] == ["b"]  # the refused one was never queued
        finally:
            await admin.close()
