"""A bot that stops reading is bounded in bytes and closed with 1008 (§5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.bot_session import BOT_OUTBOX_BYTES
from tests.harness import Rest, gateway_settings, running_gateway, token
from tests.stuck_client import stuck_client


async def test_stuck_bot_is_bounded_in_bytes_then_closed(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, bot_stall_s=1.0, rest_write_burst=2000)
    async with running_gateway(settings) as gw:
        node = gw.node
        viewer, _ = await gw.viewer()
        _, stuck_writer = await stuck_client(gw.port, "npc", "stuck")
        healthy = await gw.bot("healthy")
        rest = Rest(gw.http, token("admin", "ops"))
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + 20
            while "stuck" not in node.hub.bots:
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            session = node.hub.bots["stuck"]
            args = {"blob": "b" * 15_000}  # ~15 KB per command; 256 of them were 3.8 MB
            busy, biggest = None, 0
            for _ in range(1000):  # the kernel's socket buffers take a few MB first
                status, body = await rest.call(
                    "POST", "/api/npcs/stuck/commands", {"action": "load", "args": args}
                )
                biggest = max(biggest, session.outbox.queued_bytes)  # with the one in flight
                if status != 202:
                    busy = (status, body["error"]["code"])
                    break
            assert busy == (503, "busy")
            assert BOT_OUTBOX_BYTES - 20_000 < biggest <= BOT_OUTBOX_BYTES
            # The healthy bot is unaffected; the stuck one is closed once it made no
            # progress for bot_stall_s, and viewers hear it left.
            await healthy.send({"type": "ping", "ref": 1})
            assert (await healthy.recv_type("pong"))["ref"] == 1
            left = await viewer.recv_until(
                lambda m: m.get("type") == "left" and m.get("id") == "stuck", timeout=15
            )
            assert left["id"] == "stuck"
            assert "stuck" not in node.hub.bots and "healthy" in node.hub.bots
            assert node.hub.bots_closed_slow == 1
        finally:
            await rest.close()
            stuck_writer.close()


def test_bots_stall_limit_defaults_to_10_s() -> None:
    from gateway.config import Settings

    assert Settings.from_env({"GATEWAY_SECRET": "s" * 32}).bot_stall_s == 10.0
    assert BOT_OUTBOX_BYTES == 1 << 20
