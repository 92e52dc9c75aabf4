"""What the two WebSocket endpoints share: socket options, encoding, flood replies.

The endpoints are thin adaptors — frames in → `protocol` → `Node`; the node's output leaves
through each connection's outbox (`gateway.outbox`). Auth and role checks happen before the
upgrade (`api.auth`). Bots: `gateway.bot_session`; viewers: `gateway.viewer_session`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSMsgType, web

from gateway.direct_ws import LingeringWebSocketResponse
from gateway.protocol import (
    MAX_FRAME_BYTES,
    SUBPROTOCOLS,
    Encoding,
    ErrorCode,
    error,
    negotiate,
)

HEARTBEAT_S = 30.0  # viewers: aiohttp pings a quiet viewer and drops a dead one

# compress=False: per-connection deflate costs ~95 KB and a third more CPU (design notes).
# Bots have no aiohttp heartbeat: it re-arms a timer on every received chunk (~8 % of the
# position path); the hub's idle sweep pings only bots that have gone quiet instead.
WEBSOCKET_OPTIONS: dict[str, Any] = {
    "protocols": SUBPROTOCOLS,
    "compress": False,
    # aiohttp refuses a frame whose length is >= max_msg_size; ours is inclusive (§5), and
    # the sessions check it again in case a future aiohttp changes that comparison.
    "max_msg_size": MAX_FRAME_BYTES + 1,
    "decode_text": False,
}


def websocket() -> LingeringWebSocketResponse:
    """A viewer's socket (bots get `bot_session`'s direct-dispatch subclass)."""
    return LingeringWebSocketResponse(heartbeat=HEARTBEAT_S, **WEBSOCKET_OPTIONS)


RATE_LIMITED = error(ErrorCode.RATE_LIMITED, "too many messages; dropped")


def encoding_of(ws: web.WebSocketResponse) -> Encoding:
    """aiohttp picked the first offered subprotocol we support; none offered means JSON."""
    return negotiate([ws.ws_protocol] if ws.ws_protocol else [])


def frame_type_of(encoding: Encoding) -> WSMsgType:
    """JSON travels in text frames, msgpack in binary ones."""
    return WSMsgType.TEXT if encoding is Encoding.JSON else WSMsgType.BINARY
