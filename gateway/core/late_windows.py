"""Remote windows that arrive after their NPC's `left`: dropped. Pure.

On a Redis Cluster a replica's region channels live on other masters than its events
channel (docs/scaling.md), so its `left` for a bot may overtake the last window it published
with that bot; shown after the `left`, that window would bring the NPC back on the map. `Left`
carries the cut time of the sender's last window with the NPC; windows from that sender cut no
later are late. Times are compared per sender only (each replica's own clock). A bot that
rejoins is unaffected: its new windows are newer, or come from another sender.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

Row = TypeVar("Row", bound=Sequence[object])  # a window's row: the NPC's id first

KEEP_S = 30.0  # a late window trails its `left` by a network delay: generous margin
KEEP = 65_536  # leaves remembered; past it the oldest are forgotten


class LateWindows:
    __slots__ = ("_keep", "_keep_s", "_left")

    def __init__(self, keep_s: float = KEEP_S, keep: int = KEEP) -> None:
        # npc -> (sender, cut ts of its last window with the npc, when heard); oldest first
        self._left: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self._keep_s = keep_s
        self._keep = keep

    def __len__(self) -> int:
        return len(self._left)

    def left(self, npc: str, sender: str, ts: int, now: float) -> None:
        """`sender` said the NPC left after its window cut at `ts` (heard at monotonic `now`)."""
        self._left[npc] = (sender, ts, now)
        self._left.move_to_end(npc)
        self._expire(now)

    def late(self, npc: str, sender: str, ts: int, now: float) -> bool:
        """Whether `sender`'s window cut at `ts` comes after its `left` for the NPC."""
        entry = self._left.get(npc)
        if entry is None:
            return False
        by, left_ts, at = entry
        if now - at > self._keep_s:
            del self._left[npc]
            return False
        return by == sender and ts <= left_ts

    def on_time(self, sender: str, ts: int, rows: Sequence[Row], now: float) -> Sequence[Row]:
        """`rows` of `sender`'s window cut at `ts`, without those that trail their NPC's
        `left`. The hot path: without leaves remembered, `rows` as they are."""
        left = self._left
        if left:
            self._expire(now)
        if not left or not any(row[0] in left for row in rows):
            return rows
        return [row for row in rows if not self.late(str(row[0]), sender, ts, now)]

    def _expire(self, now: float) -> None:
        """Forget the oldest leaves past KEEP_S, or past `keep` in number."""
        left = self._left
        while left:
            _, (_, _, at) = next(iter(left.items()))
            if len(left) <= self._keep and now - at <= self._keep_s:
                return
            left.popitem(last=False)
