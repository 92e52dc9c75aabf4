"""The pending-commands interface.

Guarantees every backend gives:
- `take` is atomic: of two replicas taking for one NPC at once, each queued command goes to
  exactly one of them. It returns (expiry ms, command) in the order pushed, expired ones left out.
- A command is kept until it is taken or its expiry passes (then it is gone for good).
- Any method may raise when the backend is down; callers decide what that means.
"""

from __future__ import annotations

from typing import Any, Protocol

QUEUE_TTL_S = 60.0  # how long a command waits for its bot (§10)


class PendingCommands(Protocol):
    backend: str

    async def push(self, npc_id: str, message: dict[str, Any], expires_ms: int) -> None: ...

    async def take(self, npc_id: str, now_ms: int) -> list[tuple[int, dict[str, Any]]]: ...

    async def close(self) -> None: ...
