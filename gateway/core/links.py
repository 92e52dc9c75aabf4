"""What the core needs of a bot or a viewer connection: small link protocols, no sockets.

The sessions (`gateway.bot_session`, `gateway.viewer`) implement them on aiohttp WebSockets;
the hub and the node hold links and never see the web framework.
"""

from __future__ import annotations

from typing import Any, Protocol

from gateway.history import Entry
from gateway.protocol import Area, Encoding
from gateway.types import PositionUpdate


class QueuedEvent:
    """An encoded history event; its place in the history tells how far a viewer has got.
    One object per encoding is shared by every viewer it is offered to."""

    __slots__ = ("epoch", "payload", "seq")

    def __init__(self, epoch: str, seq: int, payload: bytes) -> None:
        self.epoch = epoch
        self.seq = seq
        self.payload = payload


class BotLink(Protocol):
    """What the hub needs of a bot session: a way to reach and to close it."""

    npc_id: str
    last_seen: float  # monotonic time of its last frame or pong
    replaced: bool  # closed because a newer connection took over: no `left`
    announce_left: bool  # whether closing it should tell viewers `left`

    def send_message(self, message: dict[str, Any]) -> bool: ...

    def send_command(self, message: dict[str, Any]) -> bool: ...

    def stalled_for(self, now: float) -> float: ...

    async def close(self, code: int, message: str) -> None: ...

    def ping(self) -> None: ...


class ViewerLink(Protocol):
    """What the hub needs of a viewer connection: its filter and encoding, and ways to offer
    it encoded output (never awaiting: the connection queues what its socket cannot take)."""

    encoding: Encoding
    dim: str | None
    area: Area | None

    def offer_positions(self, frame: bytes, updates: dict[str, PositionUpdate]) -> None: ...

    def offer_message(self, payload: bytes) -> None: ...

    def offer_event(self, event: QueuedEvent) -> None: ...

    def wants(self, entry: Entry) -> bool: ...

    def stalled_for(self, now: float) -> float: ...

    async def close(self, code: int, message: str) -> None: ...
