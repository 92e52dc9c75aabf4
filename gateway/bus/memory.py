"""In-process bus: one broker per process; replicas in the same process see each other."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.bus.base import EVENTS, WORLD, BusHandler, command_channel
from gateway.regions import is_positions_channel


class MemoryBroker:
    """Routes messages between the :class:`MemoryBus` instances attached to it."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[MemoryBus]] = {}
        self._all_positions: list[MemoryBus] = []  # hear every region channel
        self.buses: set[MemoryBus] = set()  # started and not closed

    def attach(self, bus: MemoryBus, channels: list[str]) -> None:
        for channel in channels:
            subs = self._subscribers.setdefault(channel, [])
            if bus not in subs:
                subs.append(bus)

    def detach(self, bus: MemoryBus, channels: list[str] | None = None) -> None:
        for channel, subs in self._subscribers.items():
            if (channels is None or channel in channels) and bus in subs:
                subs.remove(bus)
        if channels is None:
            self.hear_all_positions(bus, False)

    def hear_all_positions(self, bus: MemoryBus, on: bool) -> None:
        if on and bus not in self._all_positions:
            self._all_positions.append(bus)
        elif not on and bus in self._all_positions:
            self._all_positions.remove(bus)

    def route(self, sender: MemoryBus, channel: str, payload: bytes) -> None:
        targets = list(self._subscribers.get(channel, ()))
        if is_positions_channel(channel):
            targets += [b for b in self._all_positions if b not in targets]
        for bus in targets:
            if bus is not sender:
                bus.deliver(channel, payload)


class MemoryBus:
    backend = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker or MemoryBroker()
        self._handler: BusHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._regions: set[str] = set()
        self.published = 0
        self.received = 0
        self.published_bytes = 0
        self.received_bytes = 0

    async def start(self, replica: str, handler: BusHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._broker.attach(self, [EVENTS, WORLD, command_channel(replica)])
        self._broker.buses.add(self)

    async def close(self) -> None:
        self._broker.detach(self)
        self._broker.buses.discard(self)
        self._handler = None

    def alone(self) -> bool:
        return self._broker.buses <= {self}

    def publish(self, channel: str, payload: bytes) -> None:
        self.published += 1
        self.published_bytes += len(payload)
        self._broker.route(self, channel, payload)

    def set_positions(self, channels: set[str] | None) -> None:
        self._broker.hear_all_positions(self, channels is None)
        wanted = set() if channels is None else channels
        self._broker.detach(self, list(self._regions - wanted))
        self._broker.attach(self, list(wanted - self._regions))
        self._regions = set(wanted)

    def deliver(self, channel: str, payload: bytes) -> None:
        # Delivered on a later loop iteration, as a network bus would: never re-entrantly.
        if self._loop is not None and self._handler is not None:
            self._loop.call_soon_threadsafe(self._dispatch, channel, payload)

    def _dispatch(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self.received += 1
            self.received_bytes += len(payload)
            self._handler(channel, payload)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "published": self.published,
            "received": self.received,
            "dropped": 0,
            "connected": True,
            "published_bytes": self.published_bytes,
            "received_bytes": self.received_bytes,
        }
