"""Windows heard twice on a Redis Cluster, on their region channel and as a copy: the second
is dropped. Pure.

A publisher copies a new region's first windows to NEW_REGIONS (gateway/bus/region_runs.py),
on another master than the region channel, so a replica hearing both gets either first. Each
is remembered for KEEP_S by its payload (its sender, cut time and rows): the other one, when
it comes, is dropped. Two originals (or two copies) alike are both delivered: only a copy and
its original are one window.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

KEEP_S = 5.0  # a copy and its original leave the publisher together: far more than the lag
KEEP = 100_000  # windows remembered; past it the oldest are forgotten (and could repeat)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


class Copies:
    __slots__ = ("_keep", "_keep_s", "_seen")

    def __init__(self, keep_s: float = KEEP_S, keep: int = KEEP) -> None:
        # (region, payload digest) -> (heard as a copy, when); oldest first
        self._seen: OrderedDict[tuple[str, bytes], tuple[bool, float]] = OrderedDict()
        self._keep_s = keep_s
        self._keep = keep

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, region: str, payload: bytes, *, copy: bool, now: float) -> bool:
        """Whether this window of `region` is new: False when its twin (the copy of an
        original, the original of a copy) was heard in the last KEEP_S."""
        self._expire(now)
        key = (region, _digest(payload))
        seen = self._seen.pop(key, None)
        if seen is not None and seen[0] != copy:
            return False  # its twin: both heard now, forget it
        self._seen[key] = (copy, now)
        if len(self._seen) > self._keep:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        seen = self._seen
        while seen:
            _, (_, at) = next(iter(seen.items()))
            if now - at <= self._keep_s:
                return
            seen.popitem(last=False)
