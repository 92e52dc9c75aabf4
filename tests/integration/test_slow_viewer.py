"""A viewer that stops reading never makes the gateway wait or grow, and is closed (§3.3)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.api.system import performance_figures
from tests.harness import gateway_settings, running_gateway, token

NPCS = 2000


async def _stuck_viewer(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Complete a WebSocket handshake over a tiny receive buffer, then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        (
            f"GET /ws/viewer?token={token('viewer', 'stuck')} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_stuck_viewer_is_bounded_and_closed_while_others_flow(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, tick_ms=20, viewer_stall_s=1.5)
    async with running_gateway(settings) as gw:
        node = gw.node
        healthy, _ = await gw.viewer("msgpack")
        _, stuck_writer = await _stuck_viewer(gw.port)
        stuck = next(v for v in node.hub.viewers if v.encoding.name == "JSON")
        dim = "d" * 64  # fatter frames fill the socket buffers sooner

        async def feed() -> None:
            step = 0
            while True:
                step += 1
                for i in range(NPCS):
                    node.accept_position(
                        {
                            "id": f"npc{i}",
                            "x": float(step),
                            "y": 1.0,
                            "z": float(i),
                            "yaw": 0.0,
                            "pitch": 0.0,
                            "dim": dim,
                        }
                    )
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed())
        try:
            biggest_outbox = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not stuck.closed:
                assert loop.time() < deadline, "the stuck viewer was never closed"
                biggest_outbox = max(biggest_outbox, len(stuck._updates or ()))
                frame = await healthy.recv_type("positions")  # the healthy one keeps flowing
                assert len(frame["updates"]) == NPCS
            figures = performance_figures(node)["viewers"]
            assert stuck.closed and figures["closedSlow"] == 1
            assert figures["framesMerged"] > 0  # ticks merged into its one pending frame
            assert biggest_outbox <= NPCS  # bounded by the number of NPCs, not by time
            before = (await healthy.recv_type("positions"))["updates"][0]["x"]
            after = (await healthy.recv_type("positions"))["updates"][0]["x"]
            assert after > before
        finally:
            feeder.cancel()
            stuck_writer.close()
