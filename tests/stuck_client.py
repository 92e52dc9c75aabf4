"""A WebSocket client that completes its handshake, then never reads: the slow consumer the
gateway must bound and close."""

from __future__ import annotations

import asyncio
import socket

from tests.harness import token


async def stuck_client(
    port: int, role: str, name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to /ws/`role` as `name` over a tiny receive buffer, so the socket fills fast;
    the caller then never reads from the returned reader."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(
        (
            f"GET /ws/{role}?token={token(role, name)} HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer
