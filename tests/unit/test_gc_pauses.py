"""The collector's pauses as /api/performance reports them (process.gc.pauses)."""

from __future__ import annotations

import gc

from gateway import gc_pauses


def test_every_collection_is_counted_with_its_generation() -> None:
    pauses = gc_pauses.install()
    assert gc_pauses.install() is pauses  # one recorder per process
    before = pauses.stats()
    gc.collect(0)
    gc.collect(2)
    after = pauses.stats()
    # At least: the collector may also have run by itself in between.
    assert after["gen0"]["collections"] >= before["gen0"]["collections"] + 1
    assert after["gen2"]["collections"] >= before["gen2"]["collections"] + 1
    assert after["gen2"]["totalMs"] > before["gen2"]["totalMs"]
    assert after["gen2"]["maxMs"] > 0


def test_a_pause_of_a_big_heap_counts_as_slow() -> None:
    pauses = gc_pauses.install()
    slow = pauses.stats()["slow"]
    heap = [[i] for i in range(1_500_000)]  # tracked containers: a full scan takes a while
    gc.collect()
    del heap
    assert pauses.stats()["slow"] > slow
    assert pauses.stats()["gen2"]["maxMs"] >= gc_pauses.SLOW_MS
