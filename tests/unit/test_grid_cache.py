"""Each worker's cache of decoded worlds is bounded in bytes (issue #10 item 8)."""

from __future__ import annotations

import pytest

from gateway.workers import tasks
from gateway.workers.gridcache import ByteBoundedCache
from gateway.workers.world import encode_bitset


def test_least_recently_used_go_first_within_the_budget() -> None:
    cache: ByteBoundedCache[str, str] = ByteBoundedCache(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 40)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert cache.bytes == 80
    cache.put("huge", "H", 101)  # bigger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("exact", "E", 100)  # exactly the budget: kept alone
    assert cache.get("exact") == "E" and len(cache) == 1 and cache.bytes == 100
    cache.put("exact", "E2", 10)  # replacing an entry frees its old size
    assert cache.bytes == 10


def test_decoded_worlds_stay_within_the_workers_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: two entries kept whatever their size (a 16M-cell world is ~20 MB decoded)."""
    cache: ByteBoundedCache[tuple, object] = ByteBoundedCache(3 << 20)
    monkeypatch.setattr(tasks, "GRID_CACHE", cache)
    worlds = []
    for i in range(6):
        size = (256, 4, 1024)  # 1M cells: ~1.2 MB decoded with padding, ~170 KB of base64
        solid = encode_bitset((0, 0, 0), size, lambda x, y, z, i=i: (x + z + i) % 3 == 0)
        worlds.append({"origin": [0, 0, 0], "size": list(size), "solid": solid})
    grids = [tasks._decode(w) for w in worlds]
    assert cache.bytes <= 3 << 20 and 1 <= len(cache) < 6
    assert tasks._decode(worlds[-1]) is grids[-1]  # the latest is a hit
    assert tasks._decode(worlds[0]) is not grids[0]  # the oldest was evicted
