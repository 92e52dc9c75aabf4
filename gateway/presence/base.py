"""The presence interface.

Guarantees: `claim` is atomic (two replicas claiming one NPC: the later claim wins and learns
the earlier holder); `release` only removes a claim the caller still holds; a claim not
refreshed by `refresh` within the backend's TTL disappears (a dead replica stops claiming).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class Presence(Protocol):
    async def claim(self, npc_id: str, replica: str) -> str | None:
        """Record that `replica` holds the bot; return the previous holder if another replica."""

    async def release(self, npc_id: str, replica: str) -> None: ...

    async def holder(self, npc_id: str) -> str | None: ...

    async def online(self, npc_ids: Collection[str] | None = None) -> set[str]:
        """Which of `npc_ids` (all when None) some replica holds."""

    async def refresh(self, replica: str, npc_ids: Collection[str]) -> None:
        """Heartbeat: extend the claims `replica` still holds."""

    async def close(self) -> None: ...
