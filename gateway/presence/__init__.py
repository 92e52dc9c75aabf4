"""Which replica holds which bot: the :class:`Presence` interface and its backends."""

from gateway.presence.base import Presence
from gateway.presence.memory import MemoryPresence

__all__ = ["MemoryPresence", "Presence"]
