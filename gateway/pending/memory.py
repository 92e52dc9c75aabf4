"""Embedded pending commands: a list per NPC in process memory."""

from __future__ import annotations

from typing import Any

from gateway.per_owner import PerOwner


class MemoryPendingCommands:
    backend = "memory"

    def __init__(self) -> None:
        self._queues: dict[str, list[tuple[int, dict[str, Any]]]] = {}

    async def push(self, npc_id: str, message: dict[str, Any], expires_ms: int) -> None:
        self._queues.setdefault(npc_id, []).append((expires_ms, message))

    async def take(self, npc_id: str, now_ms: int) -> list[tuple[int, dict[str, Any]]]:
        queued = self._queues.pop(npc_id, [])
        return [(expires, message) for expires, message in queued if expires > now_ms]

    async def close(self) -> None:
        self._queues.clear()


# One queue per owner (the in-process bus broker replicas share).
shared_pending = PerOwner(MemoryPendingCommands)
