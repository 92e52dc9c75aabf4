"""Connections that never finish a request head are closed (§5: 15 s)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config import Settings
from tests.harness import gateway_settings, running_gateway


async def _eof_within(reader: asyncio.StreamReader, deadline_s: float) -> bytes:
    """Everything the server sent until it closed the connection (fails past the deadline)."""
    return await asyncio.wait_for(reader.read(), deadline_s)


async def test_silent_and_half_head_connections_are_closed(tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(tmp_path, head_timeout_s=0.5)) as gw:
        bot = await gw.bot("patient")
        viewer, _ = await gw.viewer("msgpack")
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", gw.port)
        half_r, half_w = await asyncio.open_connection("127.0.0.1", gw.port)
        half_w.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # Both are closed by the server (reading returns at EOF); nothing was answered.
        assert await _eof_within(silent_r, 10) == b""
        assert await _eof_within(half_r, 10) == b""
        # Sockets past their head (bot on the direct-dispatch path, viewer on aiohttp's own)
        # outlive the head deadline.
        await bot.roundtrip()
        await viewer.send({"type": "ping", "ref": 9})
        assert (await viewer.recv_type("pong"))["ref"] == 9
        # A client that sends its head in time is served.
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await _eof_within(r, 10)).startswith(b"HTTP/1.1 200")
        for writer in (silent_w, half_w, w):
            writer.close()


def test_head_timeout_defaults_to_15_s() -> None:
    assert Settings.from_env({"GATEWAY_SECRET": "s" * 32}).head_timeout_s == 15.0
