"""A local RCON server for the tests, speaking the wire format the way vanilla Minecraft does.

Its packet code is written independently of gateway.bridge so a codec bug there is not
mirrored here. Like the vanilla server it:
- answers login with (id, type 2) or, for a wrong password, (-1, type 2);
- answers a command before login with (-1, type 2);
- splits a response body into packets of at most 4096 bytes, all with the command's id;
- answers an unknown packet type with "Unknown request <hex type>";
- drops the connection when one read holds more than one packet or a packet over 1460 bytes
  (vanilla reads each request with a single 1460-byte read).

Commands: `echo TEXT` → TEXT; `long N` → N bytes of numbered lines; `hang` → never answers;
`crash` → runs (is recorded) and drops the connection without answering, like a server dying
mid-command; anything else → "Unknown or incomplete command". With `answer_unknown=False` the
server ignores packets of unknown types (some servers and proxies do), instead of answering.
"""

from __future__ import annotations

import asyncio
import struct
from urllib.parse import quote

FRAGMENT = 4096
MAX_REQUEST = 1460


def pack(request_id: int, packet_type: int, body: bytes) -> bytes:
    rest = struct.pack("<ii", request_id, packet_type) + body + b"\x00\x00"
    return struct.pack("<i", len(rest)) + rest


def long_text(n: int) -> str:
    """N bytes of ASCII whose every line is numbered, so a lost or reordered packet shows."""
    lines = []
    size = 0
    i = 0
    while size < n:
        line = f"line {i:06d} of the long answer\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)[:n]


class _Session(asyncio.Protocol):
    def __init__(self, server: RconTestServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.authed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.sessions.add(self)
        self.server.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.sessions.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if len(self.buffer) < 4:
            return
        (length,) = struct.unpack_from("<i", self.buffer)
        if length < 10 or length + 4 > MAX_REQUEST or len(self.buffer) > length + 4:
            self.server.dropped += 1
            self.transport.close()
            return
        if len(self.buffer) < length + 4:
            return
        packet, self.buffer = self.buffer[4 : 4 + length], b""
        request_id, packet_type = struct.unpack_from("<ii", packet)
        body = packet[8:-2]
        self.handle(request_id, packet_type, body.decode("utf-8"))

    def handle(self, request_id: int, packet_type: int, body: str) -> None:
        assert self.transport is not None
        if packet_type == 3:
            self.authed = body == self.server.password
            self.server.logins += 1
            self.transport.write(pack(request_id if self.authed else -1, 2, b""))
        elif packet_type == 2:
            if not self.authed:
                self.transport.write(pack(-1, 2, b""))
                return
            self.server.commands.append(body)
            if body == "crash":
                self.transport.close()
                return
            answer = self.server.run(body)
            if answer is None:
                return  # `hang`
            data = answer.encode("utf-8")
            chunks = [data[i : i + FRAGMENT] for i in range(0, len(data), FRAGMENT)] or [b""]
            for chunk in chunks:
                self.transport.write(pack(request_id, 0, chunk))
        else:
            self.server.probes += 1
            if self.server.answer_unknown:
                self.transport.write(
                    pack(request_id, 0, f"Unknown request {packet_type:x}".encode())
                )


class RconTestServer:
    """Start with `await start()`; `stop()` closes the port and every connection, like a crash
    of the Minecraft server; `start()` again listens on the same port."""

    def __init__(self, password: str = "s3cret pass", host: str = "127.0.0.1") -> None:
        self.password = password
        self.host = host
        self.port = 0
        self.sessions: set[_Session] = set()
        self.connections = 0
        self.logins = 0
        self.dropped = 0
        self.probes = 0  # packets of unknown types received
        self.answer_unknown = True
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None

    def url(self, password: str | None = None) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return f"rcon://:{secret}@{self.host}:{self.port}"

    @staticmethod
    def run(command: str) -> str | None:
        name, _, arg = command.partition(" ")
        if name == "echo":
            return arg
        if name == "long":
            return long_text(int(arg))
        if name == "hang":
            return None
        return f"Unknown or incomplete command, see below for error: {command}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Session(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, abort: bool = False) -> None:
        """Stop listening and close every connection (`abort`: with a TCP reset)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self.drop_connections(abort)
        await server.wait_closed()

    def drop_connections(self, abort: bool = False) -> None:
        """Close every client connection but keep listening (`abort`: with a TCP reset)."""
        for session in list(self.sessions):
            if session.transport is None:
                continue
            if abort:
                session.transport.abort()
            else:
                session.transport.close()

    async def __aenter__(self) -> RconTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
