"""In-process TTL cache with a size bound (oldest entries evicted first)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.cache.base import hit_stats


class MemoryCache:
    backend = "memory"

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._max = max_entries
        self._clock = clock
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._entries[key] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def incr(self, key: str) -> int:
        self._versions[key] = self._versions.get(key, 0) + 1
        return self._versions[key]

    async def version(self, key: str) -> int:
        return self._versions.get(key, 0)

    async def close(self) -> None:
        self._entries.clear()

    def stats(self) -> dict[str, Any]:
        return {
            **hit_stats(self.backend, self.hits, self.misses),
            "entries": len(self._entries),
        }
