"""The Minecraft bridge: commands over RCON (Source RCON as the Minecraft server speaks it).

Wire format (little-endian): int32 length of the rest, int32 request id, int32 type (3 login,
2 command, 0 response; the login reply also has type 2), body bytes, two NUL bytes. A failed
login is answered with request id -1.

Two vanilla-server quirks shape the client:
- the server reads one packet per socket read and drops the connection if a read holds more
  than that, so we never write a second packet before the first one is answered;
- long responses are split over several packets with the same id and no end marker: vanilla
  cuts the reply string into pieces of 4,096 UTF-16 code units and sends each as UTF-8, so a
  piece that was cut is at least 4,096 bytes long. Only when the first body is that long do we
  send a packet of an unknown type with a fresh id and collect fragments until the server's
  "Unknown request" reply to it comes back. Shorter replies are complete: no extra round trip,
  and no hang on servers that ignore unknown packet types.

A command is sent at most once. An idle connection the server closed is noticed before the
command is written (the socket is peeked) and replaced; a connection that breaks after the
command was written is an error, never a resend: the server may have run it (a `give` twice).

The packet codec below is pure; `MinecraftBridge` holds one lazily opened, authenticated
connection, serialises commands with a lock and runs each one through its circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote, urlsplit

from aiohttp import web

from gateway.breaker import MINECRAFT_BRIDGE_BREAKER, CircuitBreaker

log = logging.getLogger(__name__)

DEFAULT_PORT = 25575
# The vanilla server reads requests into a 1460-byte buffer: 1460 - 14 bytes of framing.
MAX_COMMAND_BYTES = 1446
MAX_FRAGMENT = 4096  # the server splits response bodies into pieces of this many bytes
MAX_PACKET_LENGTH = 1 << 20  # sanity bound: anything larger is not an RCON server talking
MAX_RESPONSE_BYTES = 8 << 20
PROBE_TYPE = 200  # any type the server does not know; it answers "Unknown request c8"
_HEADER = struct.Struct("<i")
_ID_TYPE = struct.Struct("<ii")
_MAX_ID = 2**31 - 1


class PacketType(IntEnum):
    RESPONSE = 0
    COMMAND = 2  # also the type of the server's login reply
    LOGIN = 3


class RconError(Exception):
    """The bridge could not run a command (the REST layer answers 502)."""


class RconAuthError(RconError):
    """The server refused the RCON password."""


class RconProtocolError(RconError):
    """The peer sent something that is not RCON as Minecraft speaks it."""


class RconConnectionError(RconError):
    """The server could not be reached, or the connection broke."""


@dataclass(frozen=True, slots=True)
class Packet:
    request_id: int
    type: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def encode_packet(request_id: int, packet_type: int, body: str | bytes = b"") -> bytes:
    """One packet on the wire, length prefix included."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if b"\x00" in data:
        raise ValueError("an RCON body cannot contain NUL bytes")
    payload = _ID_TYPE.pack(request_id, packet_type) + data + b"\x00\x00"
    return _HEADER.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    """The length field (4 bytes) of a packet: the size of what follows it."""
    if len(header) != 4:
        raise RconProtocolError(f"length field must be 4 bytes, got {len(header)}")
    (length,) = _HEADER.unpack(header)
    if not 10 <= length <= MAX_PACKET_LENGTH:
        raise RconProtocolError(f"packet length {length} is out of range")
    return length


def decode_payload(payload: bytes) -> Packet:
    """A packet from the `length` bytes that follow its length field."""
    if len(payload) < 10:
        raise RconProtocolError(f"packet of {len(payload)} bytes is too short")
    if not payload.endswith(b"\x00\x00"):
        raise RconProtocolError("packet does not end with two NUL bytes")
    request_id, packet_type = _ID_TYPE.unpack_from(payload)
    return Packet(request_id, packet_type, payload[8:-2])


def decode_packet(data: bytes) -> Packet:
    """A whole packet (length field included); the length must match exactly."""
    length = decode_length(data[:4])
    if len(data) - 4 != length:
        raise RconProtocolError(f"length field says {length} bytes, got {len(data) - 4}")
    return decode_payload(data[4:])


def validate_command(command: str) -> None:
    """Raise ValueError for a command the server would not take."""
    if not command:
        raise ValueError("command is empty")
    if "\x00" in command:
        raise ValueError("command contains a NUL character")
    if len(command.encode("utf-8")) > MAX_COMMAND_BYTES:
        raise ValueError(f"command is longer than {MAX_COMMAND_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class RconTarget:
    host: str
    port: int
    password: str

    def __repr__(self) -> str:
        return f"RconTarget(host={self.host!r}, port={self.port})"


def parse_rcon_url(url: str) -> RconTarget:
    """`rcon://:PASSWORD@HOST[:PORT]` (port 25575 by default; the password may be %-escaped)."""
    parts = urlsplit(url)
    if parts.scheme != "rcon":
        raise ValueError("RCON URL must start with rcon://")
    if not parts.hostname:
        raise ValueError("RCON URL has no host")
    if not parts.password:
        raise ValueError("RCON URL has no password; the form is rcon://:PASSWORD@HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("RCON URL has an invalid port") from None
    return RconTarget(parts.hostname, port, unquote(parts.password))


class _StaleConnection(RconConnectionError):
    """The connection was found closed before any reply byte arrived."""


class _Connection:
    """One authenticated RCON connection. Used under the bridge's lock only."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next_id = 0

    @classmethod
    async def open(cls, target: RconTarget) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        except OSError as exc:
            raise RconConnectionError(
                f"cannot reach the Minecraft server at {target.host}:{target.port}: {exc}"
            ) from exc
        conn = cls(reader, writer)
        try:
            await conn._login(target.password)
        except (OSError, asyncio.IncompleteReadError) as exc:
            conn.close()
            raise RconConnectionError(f"the RCON connection broke during login: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def usable(self) -> bool:
        return not (self._writer.is_closing() or self._reader.at_eof())

    def peer_closed(self) -> bool:
        """Has the server closed (or reset) this idle connection? Asks the kernel, so a close
        the event loop has not processed yet is seen too. Bytes waiting on an idle connection
        mean it is out of step: closed as well."""
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return False
        try:
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as peek:
                data = peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # nothing to read: alive
        except OSError:
            return True  # reset
        del data  # b"" is the server's FIN; anything else is out of step
        return True

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        try:
            await self._writer.wait_closed()
        except OSError:
            pass  # the peer already reset it; closed is closed

    def _new_id(self) -> int:
        self._next_id = self._next_id % _MAX_ID + 1  # positive; -1 means "auth failed"
        return self._next_id

    async def _login(self, password: str) -> None:
        login_id = self._new_id()
        await self._send(encode_packet(login_id, PacketType.LOGIN, password))
        while True:
            packet = await self._read()
            if packet.request_id == -1:
                raise RconAuthError("the Minecraft server refused the RCON password")
            if packet.request_id == login_id and packet.type == PacketType.COMMAND:
                return
            if packet.request_id == login_id and packet.type == PacketType.RESPONSE:
                continue  # Source servers send an empty response before the login reply
            raise RconProtocolError(f"unexpected login reply (id {packet.request_id})")

    async def execute(self, command: str) -> str:
        command_id = self._new_id()
        try:
            await self._send(encode_packet(command_id, PacketType.COMMAND, command))
            first = await self._read()
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise RconConnectionError("the RCON connection broke mid-reply") from exc
            raise _StaleConnection("the RCON connection was closed") from exc
        except ConnectionError as exc:
            raise _StaleConnection(f"the RCON connection was closed: {exc}") from exc
        except OSError as exc:
            raise RconConnectionError(f"the RCON connection failed: {exc}") from exc
        self._check_reply(first, command_id)
        try:
            return await self._rest_of_reply(command_id, first.body)
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RconConnectionError(f"the RCON connection broke mid-reply: {exc}") from exc

    async def _rest_of_reply(self, command_id: int, first: bytes) -> str:
        if len(first) < MAX_FRAGMENT:
            return first.decode("utf-8", errors="replace")  # never split: complete
        body = bytearray(first)
        # Only now that the server has answered may the probe go out (one packet per read).
        probe_id = self._new_id()
        await self._send(encode_packet(probe_id, PROBE_TYPE))
        while True:
            packet = await self._read()
            if packet.request_id == probe_id:
                return body.decode("utf-8", errors="replace")
            self._check_reply(packet, command_id)
            body += packet.body
            if len(body) > MAX_RESPONSE_BYTES:
                raise RconProtocolError(f"response is over {MAX_RESPONSE_BYTES} bytes")

    @staticmethod
    def _check_reply(packet: Packet, command_id: int) -> None:
        if packet.request_id == -1:
            raise RconAuthError("the Minecraft server says this connection is not logged in")
        if packet.request_id != command_id or packet.type != PacketType.RESPONSE:
            raise RconProtocolError(
                f"unexpected packet id {packet.request_id} type {packet.type} "
                f"while waiting for command {command_id}"
            )

    async def _send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _read(self) -> Packet:
        length = decode_length(await self._reader.readexactly(4))
        return decode_payload(await self._reader.readexactly(length))


class MinecraftBridge:
    """Runs commands on the Minecraft server over one persistent RCON connection.

    The connection is opened on first use and reopened after it breaks. Every command goes
    through the `MinecraftBridge` circuit breaker, whose timeout (5 s) covers waiting for the
    lock, connecting, logging in and the whole reply.
    """

    def __init__(self, url: str, breaker: CircuitBreaker | None = None) -> None:
        self.target = parse_rcon_url(url)
        self.breaker = breaker or CircuitBreaker(MINECRAFT_BRIDGE_BREAKER)
        self._lock = asyncio.Lock()
        self._conn: _Connection | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    async def command(self, command: str) -> str:
        """The server's reply text to `command`.

        Raises ValueError for an unacceptable command (not counted by the breaker),
        CircuitOpen while the breaker is open, TimeoutError after the breaker's timeout, and
        RconError (RconAuthError, RconConnectionError, RconProtocolError) for other failures.
        """
        validate_command(command)
        if self._closed:
            raise RconConnectionError("the Minecraft bridge is closed")
        return await self.breaker.call(self._run, command)

    async def close(self) -> None:
        """Close the connection. Not under the lock: a hung command must not delay shutdown."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()

    async def _run(self, command: str) -> str:
        async with self._lock:
            conn = self._conn
            if conn is not None and (not conn.usable or conn.peer_closed()):
                # Closed while idle (e.g. the server restarted): nothing was sent on it yet.
                log.info("RCON connection to %s was closed; reconnecting", self.target.host)
                self._drop()
            conn = await self._connection()
            try:
                return await conn.execute(command)
            except _StaleConnection as exc:
                self._drop()
                raise RconConnectionError(
                    f"{exc} after the command was written; it may have run, so it is not sent again"
                ) from exc
            except BaseException:
                # A half-read reply would desynchronise the next command: start afresh.
                self._drop()
                raise

    async def _connection(self) -> _Connection:
        if self._conn is None:
            self._conn = await _Connection.open(self.target)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __repr__(self) -> str:
        return f"<MinecraftBridge {self.target.host}:{self.target.port}>"


MINECRAFT_BRIDGE = web.AppKey("minecraft_bridge", MinecraftBridge | None)
