"""In-process presence: one replica, or several replicas in one test process."""

from __future__ import annotations

from collections.abc import Collection


class MemoryPresence:
    def __init__(self) -> None:
        self._holders: dict[str, str] = {}

    async def claim(self, npc_id: str, replica: str) -> str | None:
        previous = self._holders.get(npc_id)
        self._holders[npc_id] = replica
        return previous if previous != replica else None

    async def release(self, npc_id: str, replica: str) -> None:
        if self._holders.get(npc_id) == replica:
            del self._holders[npc_id]

    async def holder(self, npc_id: str) -> str | None:
        return self._holders.get(npc_id)

    async def online(self, npc_ids: Collection[str] | None = None) -> set[str]:
        if npc_ids is None:
            return set(self._holders)
        return {i for i in npc_ids if i in self._holders}

    async def refresh(self, replica: str, npc_ids: Collection[str]) -> None:
        return None  # nothing expires in-process

    async def close(self) -> None:
        self._holders.clear()
