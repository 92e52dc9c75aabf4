"""Fan-out between replicas: the :class:`Bus` interface, in-process and Redis backends."""

from gateway.bus.base import Bus, BusHandler
from gateway.bus.memory import MemoryBroker, MemoryBus

__all__ = ["Bus", "BusHandler", "MemoryBroker", "MemoryBus"]
