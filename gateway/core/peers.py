"""Which bots the other replicas announced, and when each replica was last heard. Pure.

A replica that dies (SIGKILL, lost host) never says `left` for its bots; presence keys expire
for REST, and this is how viewers on the survivors learn it too: a replica silent for longer
than the presence TTL has its announced bots treated as gone.

The bus is at most once: while Redis is down, `joined` and `left` are lost, and a replica
taken for dead may come back. So a replica heard after a gap (or for the first time) is asked
for its whole list of bots, and `replace` turns that list into the `joined` / `left` that the
viewers missed (docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import KeysView, Sequence


class PeerWatch:
    __slots__ = ("_bots", "_last_heard", "gap_s", "silence_s")

    def __init__(self, silence_s: float, gap_s: float | None = None) -> None:
        self.silence_s = silence_s
        # Silent this long (heartbeats are more frequent): messages were probably lost.
        self.gap_s = silence_s / 2 if gap_s is None else gap_s
        self._last_heard: dict[str, float] = {}
        self._bots: dict[str, str] = {}  # npc → replica that announced it joined

    def heard(self, replica: str, now: float) -> bool:
        """Note a message from `replica`; True if it is new, was taken for dead, or was
        silent for `gap_s`: then its list of bots should be asked for."""
        last = self._last_heard.get(replica)
        self._last_heard[replica] = now
        return last is None or now - last >= self.gap_s

    def replace(self, replica: str, npcs: Sequence[str]) -> tuple[list[str], list[str]]:
        """`replica` holds exactly `npcs` now: (newly joined, gone) compared with what it
        had announced before."""
        now_held = set(npcs)
        gone = [n for n, r in self._bots.items() if r == replica and n not in now_held]
        for npc in gone:
            del self._bots[npc]
        joined = [n for n in npcs if self._bots.get(n) != replica]
        for npc in joined:
            self._bots[npc] = replica
        return joined, gone

    def announced(self) -> KeysView[str]:
        """The NPCs other replicas hold, as far as their `joined` / `left` have told us (a
        live view: no copy)."""
        return self._bots.keys()

    def last_heard_any(self) -> float:
        """When any other replica was last heard (0 if none ever was)."""
        return max(self._last_heard.values(), default=0.0)

    def joined(self, npc: str, replica: str) -> bool:
        """Note that `replica` holds `npc`; False if that was already known (viewers were told)."""
        if self._bots.get(npc) == replica:
            return False
        self._bots[npc] = replica
        return True

    def left(self, npc: str, replica: str) -> bool:
        """`replica` no longer holds `npc`; False if it was not known to hold it (viewers
        were told already, or another replica holds it now)."""
        if self._bots.get(npc) != replica:
            return False
        del self._bots[npc]
        return True

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
