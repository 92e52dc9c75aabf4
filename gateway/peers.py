"""Which bots the other replicas announced, and when each replica was last heard. Pure.

A replica that dies (SIGKILL, lost host) never says `left` for its bots; presence keys expire
for REST, and this is how viewers on the survivors learn it too: a replica silent for longer
than the presence TTL has its announced bots treated as gone.
"""

from __future__ import annotations


class PeerWatch:
    __slots__ = ("_bots", "_last_heard", "silence_s")

    def __init__(self, silence_s: float) -> None:
        self.silence_s = silence_s
        self._last_heard: dict[str, float] = {}
        self._bots: dict[str, str] = {}  # npc → replica that announced it joined

    def heard(self, replica: str, now: float) -> None:
        self._last_heard[replica] = now

    def joined(self, npc: str, replica: str) -> None:
        self._bots[npc] = replica

    def left(self, npc: str) -> None:
        self._bots.pop(npc, None)

    def expire(self, now: float) -> list[str]:
        """Forget replicas silent for `silence_s`; the NPCs they had announced."""
        silent = {r for r, t in self._last_heard.items() if now - t >= self.silence_s}
        if not silent:
            return []
        for replica in silent:
            del self._last_heard[replica]
        gone = [npc for npc, replica in self._bots.items() if replica in silent]
        for npc in gone:
            del self._bots[npc]
        return gone
