"""Commands waiting for an offline bot (§10): queued up to 60 s, taken once on reconnect."""

from gateway.pending.base import QUEUE_TTL_S, PendingCommands
from gateway.pending.memory import MemoryPendingCommands

__all__ = ["QUEUE_TTL_S", "MemoryPendingCommands", "PendingCommands"]
