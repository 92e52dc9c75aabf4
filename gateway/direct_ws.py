"""A WebSocket response that hands data frames to a callback as soon as they are parsed.

aiohttp queues every message and wakes the reading task for each one: a future, a task step
and `receive()`'s bookkeeping per message, which for bots streaming positions is the largest
cost of the hot path. Here the parser's queue is replaced by one that passes TEXT and BINARY
frames straight to `on_frame` (synchronously, from `data_received`); control frames (close,
ping, errors such as a frame over the size limit) still go through the queue, so `receive()`
and aiohttp's close handshake work as usual.

This leans on aiohttp internals (`WebSocketResponse._post_start`, which `_post_start` below
mirrors, the reader's queue and parser classes, and the writer's `transport` for
`write_now`). aiohttp is pinned below its next minor, and `shape_problem()` checks at start-up
that each is what this module was written against (signatures, and the mirrored method's
source). `configure()` turns both shortcuts on only if they are and GATEWAY_DIRECT_DISPATCH is
not 0; otherwise bots use the ordinary receive loop, every frame goes through aiohttp's public
send methods, and one log line says why. The test suite runs both ways.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

FrameHandler = Callable[[WSMsgType, bytes], None]

# sha256 (first 16 hex digits) of aiohttp 3.14's `WebSocketResponse._post_start`, dedented.
MIRRORED_POST_START = "5b76705e72648958"

try:
    from aiohttp._websocket import reader_py
    from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
    from aiohttp._websocket.writer import WebSocketWriter
    from aiohttp.web_ws import DEFAULT_CHUNK_SIZE

    _IMPORT_PROBLEM: str | None = None
except ImportError as exc:  # a future aiohttp moved them
    _IMPORT_PROBLEM = f"cannot import {exc.name or exc}"


def _parameters(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


def shape_problem() -> str | None:
    """Why aiohttp's internals are not what this module expects; None when they are."""
    if _IMPORT_PROBLEM is not None:
        return _IMPORT_PROBLEM
    # The C-accelerated classes hide their signatures; their pure-Python twins have the same.
    expected = {
        "WebSocketDataQueue.__init__": (
            reader_py.WebSocketDataQueue.__init__,
            ["self", "protocol", "limit", "loop"],
        ),
        "WebSocketDataQueue.feed_data": (
            reader_py.WebSocketDataQueue.feed_data,
            ["self", "data", "size"],
        ),
        "WebSocketReader.__init__": (
            reader_py.WebSocketReader.__init__,
            ["self", "queue", "max_msg_size", "compress", "decode_text"],
        ),
        "WebSocketWriter.__init__": (  # write_now writes to its `transport`
            WebSocketWriter.__init__,
            [
                "self",
                "protocol",
                "transport",
                "use_mask",
                "limit",
                "random",
                "compress",
                "notakeover",
            ],
        ),
        "WebSocketResponse._post_start": (
            getattr(web.WebSocketResponse, "_post_start", None),
            ["self", "request", "protocol", "writer"],
        ),
    }
    for name, (func, params) in expected.items():
        if func is None:
            return f"{name} is gone"
        try:
            if _parameters(func) != params:
                return f"{name} takes {_parameters(func)}, not {params}"
        except (TypeError, ValueError):
            return f"{name} has no readable signature"
    for name in ("_reset_heartbeat", "_on_data_received"):
        if not callable(getattr(web.WebSocketResponse, name, None)):
            return f"WebSocketResponse.{name} is gone"
    try:
        source = inspect.cleandoc(inspect.getsource(web.WebSocketResponse._post_start))
    except (OSError, TypeError):
        return "the source of WebSocketResponse._post_start is not available"
    if hashlib.sha256(source.encode()).hexdigest()[:16] != MIRRORED_POST_START:
        return "WebSocketResponse._post_start changed (this module mirrors it)"
    return None


class _Switch:
    enabled = False  # until configure(): the ordinary, public paths


def configure(wanted: bool) -> bool:
    """Turn direct dispatch (and `write_now`) on if `wanted` and aiohttp's internals allow;
    logs one line saying which, and why when it is off."""
    problem = shape_problem() if wanted else None
    _Switch.enabled = wanted and problem is None
    if _Switch.enabled:
        log.info("direct dispatch on")
    elif not wanted:
        log.info("direct dispatch off (GATEWAY_DIRECT_DISPATCH=0)")
    else:
        log.warning("direct dispatch off: aiohttp %s: %s", aiohttp.__version__, problem)
    return _Switch.enabled


def dispatch_enabled() -> bool:
    return _Switch.enabled


if _IMPORT_PROBLEM is None:

    class _DirectQueue(WebSocketDataQueue):  # type: ignore[misc, valid-type]
        __slots__ = ("_on_frame",)  # one per bot connection: no per-instance dict

        def __init__(self, protocol: Any, limit: int, *, loop: Any, on_frame: FrameHandler):
            super().__init__(protocol, limit, loop=loop)
            self._on_frame = on_frame

        def feed_data(self, data: Any, size: int) -> None:
            kind = data.type
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                try:
                    self._on_frame(kind, data.data)
                except Exception:  # never let a handler bug break the parser
                    log.exception("frame handler failed")
                return
            if kind is WSMsgType.PONG:
                self._on_frame(kind, b"")  # a sign of life (see sessions' idle sweep)
            super().feed_data(data, size)


LINGER_S = 2.0  # after a protocol error: how long the peer gets to read our close frame


class LingeringWebSocketResponse(web.WebSocketResponse):
    """A WebSocketResponse that, after a protocol error (a frame over the size limit), lets the
    peer read the close frame before the connection goes.

    aiohttp closes the transport at once when the parser failed, with the rest of the peer's
    oversized frame still unread; closing a socket with unread input sends RST, and a peer that
    gets RST may drop our close frame unread (1006 instead of 1009, about 1 in 10 under
    uvloop). Here the transport is only half-closed (FIN after the close frame) and the session
    calls :meth:`linger`, reading and dropping input until the peer closes too.
    """

    def _close_transport(self) -> None:  # aiohttp internal; harmless if it goes away
        req = self._req
        transport = None if req is None else req.transport
        if self.exception() is not None and transport is not None and transport.can_write_eof():
            if not transport.is_closing():
                transport.write_eof()
            return
        super()._close_transport()

    async def linger(self, request: web.Request, deadline_s: float = LINGER_S) -> None:
        """After a protocol error: wait (≤ `deadline_s`) for the peer to close its side."""
        transport = request.transport
        if self.exception() is None or transport is None:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        # A poll: the transport offers no close event, and this path is rare.
        while not transport.is_closing() and loop.time() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class DirectWebSocketResponse(LingeringWebSocketResponse):
    """`WebSocketResponse` whose data frames go to `on_frame` instead of `receive()`."""

    def __init__(self, on_frame: FrameHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_frame = on_frame

    def _post_start(self, request: Any, protocol: str | None, writer: Any) -> None:
        # Mirrors aiohttp's own _post_start, with our queue in place of its queue.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        loop = self._loop
        assert loop is not None
        self._reader = _DirectQueue(
            request._protocol, DEFAULT_CHUNK_SIZE, loop=loop, on_frame=self._on_frame
        )
        self._parser = WebSocketReader(
            self._reader,
            self._max_msg_size,
            compress=bool(self._compress),
            decode_text=self._decode_text,
        )
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)


WRITE_NOW_LIMIT = 64 * 1024  # bytes already waiting in the transport: beyond, queue instead

_HEADER_SHORT = struct.Struct("!BB").pack  # RFC 6455 §5.2: payload length < 126
_HEADER_16 = struct.Struct("!BBH").pack  # < 65,536: 126, then 16 bits
_HEADER_64 = struct.Struct("!BBQ").pack  # otherwise: 127, then 64 bits


def frame_header(opcode: int, length: int) -> bytes:
    """The header of an unmasked, final, uncompressed frame (a server's): RFC 6455 §5.2."""
    first = 0x80 | opcode
    if length < 126:
        return _HEADER_SHORT(first, length)
    if length < 65536:
        return _HEADER_16(first, 126, length)
    return _HEADER_64(first, 127, length)


def write_now(ws: web.WebSocketResponse, payload: bytes, opcode: WSMsgType) -> bool:
    """Write one frame synchronously if the socket is keeping up; False means the caller
    must queue it (something is already waiting, or the socket is closing).

    Saves a task switch per message for the common case of a peer that reads promptly;
    back-pressure (awaiting drain) stays with the caller's writer task. Header and payload
    go out in one `writev` (aiohttp writes a large frame's header on its own: one more
    syscall, and one more TCP segment that wakes the reader for ten bytes).
    """
    if not _Switch.enabled:
        return False
    writer = getattr(ws, "_writer", None)
    if writer is None or ws.closed:
        return False
    transport = writer.transport
    if transport is None or transport.is_closing():
        return False
    if transport.get_write_buffer_size() > WRITE_NOW_LIMIT:
        return False
    transport.writelines((frame_header(opcode, len(payload)), payload))
    return True
