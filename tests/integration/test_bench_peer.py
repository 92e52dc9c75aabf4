"""The benchmark's Node.js peer (scripts/bench-peer/) speaks the part of the contract the load
generator relies on: welcome, snapshot, one coalesced `positions` frame per tick, errors."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from tests.harness import REPO, SECRET, free_port, token

PEER = REPO / "scripts" / "bench-peer"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js")


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        "server.js",
        "--port",
        str(port),
        cwd=PEER,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "GATEWAY_SECRET": SECRET,
            "GATEWAY_TICK_MS": "100",
        },
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    assert ready["event"] == "ready" and ready["port"] == port
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def _open(url: str, path: str, tok: str, protocol: str = "json") -> ClientConnection:
    return await connect(
        url + path,
        additional_headers={"Authorization": f"Bearer {tok}"},
        subprotocols=[Subprotocol(f"aicraft.v1.{protocol}")],
    )


async def _next(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        data = await asyncio.wait_for(ws.recv(), 10)
        msg = msgpack.unpackb(data) if isinstance(data, bytes) else json.loads(data)
        if msg["type"] == kind:
            return msg


async def test_latest_position_per_tick_reaches_viewers(peer: str) -> None:
    viewer = await _open(peer, "/ws/viewer", token("viewer", "v"))
    assert (await _next(viewer, "welcome"))["tick_ms"] == 100
    assert (await _next(viewer, "snapshot"))["npcs"] == []
    bot = await _open(peer, "/ws/npc", token("npc", "b1"))
    assert (await _next(bot, "welcome"))["npc"] == "b1"
    assert (await _next(viewer, "joined"))["id"] == "b1"
    for z in range(5):
        await bot.send(json.dumps({"type": "pos", "x": 1, "y": 64, "z": z}))
    await bot.send(json.dumps({"type": "ping", "ref": 7}))
    assert (await _next(bot, "pong"))["ref"] == 7  # every pos was read before the ping
    last: dict[str, Any] = {}
    while last.get("z") != 4:  # the five updates arrive coalesced; the last one wins
        frame = await _next(viewer, "positions")
        (last,) = [u for u in frame["updates"] if u["id"] == "b1"]
    await bot.send(json.dumps({"type": "pos", "x": "east", "y": 64, "z": 0}))
    assert (await _next(bot, "error"))["code"] == "bad_message"
    await bot.close()
    assert (await _next(viewer, "left"))["id"] == "b1"
    await viewer.close()


async def test_a_bad_token_or_role_is_refused(peer: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await _open(peer, "/ws/npc", "not-a-token")
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as wrong_role:
        await _open(peer, "/ws/npc", token("viewer", "v"))
    assert wrong_role.value.response.status_code == 403


async def test_msgpack_clients_get_binary_frames_beside_json_ones(peer: str) -> None:
    """`make bench --encoding msgpack` compares the gateway and the peer on msgpack viewers."""
    packed = await _open(peer, "/ws/viewer", token("viewer", "v1"), "msgpack")
    plain = await _open(peer, "/ws/viewer", token("viewer", "v2"))
    assert (await _next(packed, "welcome"))["tick_ms"] == 100
    bot = await _open(peer, "/ws/npc", token("npc", "b2"), "msgpack")
    assert (await _next(bot, "welcome"))["npc"] == "b2"
    await bot.send(msgpack.packb({"type": "pos", "x": 1.5, "y": 64, "z": 7}))
    for viewer in (packed, plain):
        while True:
            data = await asyncio.wait_for(viewer.recv(), 10)
            msg = msgpack.unpackb(data) if viewer is packed else json.loads(data)
            if msg["type"] == "positions":
                break
        assert isinstance(data, bytes if viewer is packed else str)
        assert msg["updates"][0] == {
            "id": "b2",
            "x": 1.5,
            "y": 64,
            "z": 7,
            "yaw": 0,
            "pitch": 0,
            "dim": "overworld",
        }
    await bot.send(json.dumps({"type": "pos", "x": 1, "y": 64, "z": 8}))  # text on msgpack
    assert (await _next(bot, "error"))["code"] == "bad_encoding"
    for ws in (bot, packed, plain):
        await ws.close()
