"""The bus interface.

Guarantees every backend gives:
- `publish` never blocks and never awaits the network: it enqueues, and the backend sends in
  order. When the backend is down, messages are dropped (counted), never queued without bound.
- Messages on one channel from one publisher are delivered in the order published.
- A replica never receives its own messages: payloads are `gateway.bus.messages` envelopes,
  which name their sender up front (a backend that hears its own drops them by that).
- Delivery is at most once; after a reconnect the backend re-subscribes by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# The channel every replica listens to; plus `command_channel(replica)` for its own commands,
# and the region channels of positions its viewers need (gateway.regions, `set_positions`).
EVENTS = "aicraft:evt"
POSITIONS_PATTERN = "aicraft:pos:*"  # every region channel
WORLD = "aicraft:world"  # changed world sections, one message per tick (§9)


def command_channel(replica: str) -> str:
    return f"aicraft:cmd:{replica}"


BusHandler = Callable[[str, bytes], None]  # (channel, payload); called on the event loop


class Bus(Protocol):
    backend: str

    async def start(self, replica: str, handler: BusHandler) -> None:
        """Subscribe to the shared channels and this replica's command channel."""

    async def close(self) -> None: ...

    def publish(self, channel: str, payload: bytes) -> None: ...

    def alone(self) -> bool:
        """True when no other replica can hear this bus now (an in-process bus with nobody
        else attached): the node then skips publishing its positions, the bulk of its traffic."""

    def set_positions(self, channels: set[str] | None) -> None:
        """Hear these region channels from now on (None: every region). Never awaits; the
        backend changes its subscriptions in the background and keeps them across reconnects."""

    def stats(self) -> dict[str, Any]:
        """`backend`, `published`, `received`, `dropped`, `connected`, `published_bytes`,
        `received_bytes` (payload bytes, as sent on the wire for Redis)."""
