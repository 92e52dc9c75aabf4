"""Which regions a publisher on a Redis Cluster must announce, and when. Pure.

Sharded pub/sub has no pattern subscription, so a replica that hears every region subscribes
to the regions in use, read from a registry that publishers keep (gateway/bus/cluster.py).
A region's first windows go out before anyone could have read it there: for its first NEW_S
a publisher also copies them onto a channel such replicas always hear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NOTE_EVERY_S = 10.0  # a publisher notes a region it keeps publishing to this often
IN_USE_S = 60.0  # a region noted this recently is in use (kept in the registry)
NEW_S = 3.0  # a run's first seconds, copied: longer than a reader's poll, with margin
# A pause this long starts a new run: by then readers may have forgotten the region
# (noted at most NOTE_EVERY_S before the pause, forgotten IN_USE_S after the note).
RUN_GAP_S = IN_USE_S - NOTE_EVERY_S - 2 * NEW_S
MAX_REGIONS = 4096  # remembered; past it, regions not published to lately are forgotten


@dataclass(slots=True)
class _Run:
    started: float
    last_sent: float
    noted: float


class RegionRuns:
    """One publisher's runs of publishing to each region channel."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def reset(self) -> None:
        """Forget every run: after a reconnect, every region is new and noted again (the
        registry may have been lost with a restarted master)."""
        self._runs.clear()

    def sent(self, channels: Iterable[str], now: float) -> tuple[set[str], set[str]]:
        """Note a batch published to `channels` at `now`: (the channels still new, whose
        windows are copied; the channels to note in the registry now)."""
        if len(self._runs) > MAX_REGIONS:
            self._runs = {c: r for c, r in self._runs.items() if now - r.last_sent < RUN_GAP_S}
        new: set[str] = set()
        due: set[str] = set()
        for channel in channels:
            run = self._runs.get(channel)
            if run is None or now - run.last_sent > RUN_GAP_S:
                run = self._runs[channel] = _Run(started=now, last_sent=now, noted=now)
                due.add(channel)
            elif now - run.noted >= NOTE_EVERY_S:
                run.noted = now
                due.add(channel)
            run.last_sent = now
            if now - run.started < NEW_S:
                new.add(channel)
        return new, due
