"""The position window: latest per NPC wins. Pure: no clock, no I/O; the ticker cuts it."""

from __future__ import annotations

from gateway.types import PositionUpdate


class Coalescer:
    """Collects position updates between two cuts, keeping only each NPC's latest.

    Dict insertion order is kept across replacements, so a cut lists NPCs in the order each
    first moved in the window; every NPC appears in a cut at most once.
    """

    __slots__ = ("_window", "items_coalesced", "items_processed", "total_batches")

    def __init__(self) -> None:
        self._window: dict[str, PositionUpdate] = {}
        self.items_processed = 0  # updates accepted
        self.items_coalesced = 0  # updates a later one in the same window replaced
        self.total_batches = 0  # non-empty windows cut

    def add(self, update: PositionUpdate) -> None:
        window = self._window
        npc = update["id"]
        if npc in window:
            self.items_coalesced += 1
        window[npc] = update
        self.items_processed += 1

    def discard(self, npc_id: str) -> None:
        """Forget a pending update (the NPC was deleted)."""
        self._window.pop(npc_id, None)

    def cut(self) -> dict[str, PositionUpdate]:
        """Take the window (NPC id → latest update) and start an empty one."""
        window = self._window
        if not window:
            return {}  # never hand out the live window
        self._window = {}
        self.total_batches += 1
        return window

    @property
    def pending(self) -> int:
        return len(self._window)
