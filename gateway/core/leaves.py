"""Which NPCs viewers were told `left` since a given moment. Pure.

A snapshot reads the registry and presence with awaits in between; a `left` broadcast
meanwhile must not be undone by a presence answer read before it (the viewer would show the
NPC online until it next leaves). Snapshots take a `mark` before reading and ask `left_since`.
"""

from __future__ import annotations

from collections import OrderedDict

KEEP = 65_536  # NPCs remembered; a mark older than the oldest forgotten leave assumes one


class LeaveLog:
    __slots__ = ("_floor", "_keep", "_left_at", "serial")

    def __init__(self, keep: int = KEEP) -> None:
        self.serial = 0  # the mark: increases by one per `left`
        self._left_at: OrderedDict[str, int] = OrderedDict()
        self._floor = 0  # serial of the newest leave forgotten
        self._keep = keep

    def left(self, npc: str) -> None:
        self.serial += 1
        self._left_at[npc] = self.serial
        self._left_at.move_to_end(npc)
        if len(self._left_at) > self._keep:
            _, self._floor = self._left_at.popitem(last=False)

    def left_since(self, npc: str, mark: int) -> bool:
        at = self._left_at.get(npc)
        if at is not None:
            return at > mark
        return mark < self._floor  # forgotten: it may have left after the mark
