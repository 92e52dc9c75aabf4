"""The bus interface.

Guarantees every backend gives:
- `publish` never blocks and never awaits the network: it enqueues, and the backend sends in
  order. When the backend is down, messages are dropped (counted), never queued without bound.
- Messages on one channel from one publisher are delivered in the order published.
- A replica never receives its own messages.
- Delivery is at most once; after a reconnect the backend re-subscribes by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# Channels every replica listens to; plus `command_channel(replica)` for its own commands.
POSITIONS = "aicraft:pos"
EVENTS = "aicraft:evt"


def command_channel(replica: str) -> str:
    return f"aicraft:cmd:{replica}"


BusHandler = Callable[[str, bytes], None]  # (channel, payload); called on the event loop


class Bus(Protocol):
    backend: str

    async def start(self, replica: str, handler: BusHandler) -> None:
        """Subscribe to the shared channels and this replica's command channel."""

    async def close(self) -> None: ...

    def publish(self, channel: str, payload: bytes) -> None: ...

    def stats(self) -> dict[str, Any]:
        """`backend`, `published`, `received`, `dropped`, `connected`."""
