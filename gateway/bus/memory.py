"""In-process bus: one broker per process; replicas in the same process see each other."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.bus.base import EVENTS, POSITIONS, BusHandler, command_channel


class MemoryBroker:
    """Routes messages between the :class:`MemoryBus` instances attached to it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[MemoryBus]] = {}

    def attach(self, bus: MemoryBus, channels: list[str]) -> None:
        for channel in channels:
            self._subscribers.setdefault(channel, []).append(bus)

    def detach(self, bus: MemoryBus) -> None:
        for subs in self._subscribers.values():
            if bus in subs:
                subs.remove(bus)

    def route(self, sender: MemoryBus, channel: str, payload: bytes) -> None:
        for bus in self._subscribers.get(channel, ()):
            if bus is not sender:
                bus.deliver(channel, payload)


class MemoryBus:
    backend = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker or MemoryBroker()
        self._handler: BusHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.received = 0

    async def start(self, replica: str, handler: BusHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._broker.attach(self, [POSITIONS, EVENTS, command_channel(replica)])

    async def close(self) -> None:
        self._broker.detach(self)
        self._handler = None

    def publish(self, channel: str, payload: bytes) -> None:
        self.published += 1
        self._broker.route(self, channel, payload)

    def deliver(self, channel: str, payload: bytes) -> None:
        # Delivered on a later loop iteration, as a network bus would: never re-entrantly.
        if self._loop is not None and self._handler is not None:
            self._loop.call_soon_threadsafe(self._dispatch, channel, payload)

    def _dispatch(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self.received += 1
            self._handler(channel, payload)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "published": self.published,
            "received": self.received,
            "dropped": 0,
            "connected": True,
        }
