"""The writers never lose accepted data while the store fails (a failing function stands in
for the database: this is the writers' own logic, tested without I/O)."""

from __future__ import annotations

import asyncio

from gateway.core.writers import MetricsBatcher, PositionWriter, StatusWriter
from gateway.store import StoreUnavailable
from gateway.types import MetricRow, PositionUpdate


def _pos(npc: str, x: float) -> PositionUpdate:
    return {"id": npc, "x": x, "y": 0.0, "z": 0.0, "yaw": 0.0, "pitch": 0.0, "dim": "overworld"}


class FlakyTable:
    """Fails while `down` is set; records what it accepted."""

    def __init__(self) -> None:
        self.down = True
        self.batches: list[list] = []
        self.written = asyncio.Event()

    async def write(self, rows: list) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.batches.append(list(rows))
        self.written.set()


async def test_positions_coalesce_while_down_and_are_written_when_back() -> None:
    table = FlakyTable()
    writer = PositionWriter(table.write)
    writer.start()
    try:
        writer.submit({"a": _pos("a", 1), "b": _pos("b", 1)})
        writer.submit({"a": _pos("a", 2)})
        assert await writer.flush_now(0.3) is False  # still down: kept, not lost
        assert writer.pending == 2
        table.down = False
        assert await writer.flush_now(5.0)
        written = {u["id"]: u["x"] for batch in table.batches for u in batch}
        assert written == {"a": 2, "b": 1}
    finally:
        await writer.stop()


async def test_status_latest_wins_while_down() -> None:
    written: list[tuple[str, str]] = []
    down = True

    async def write(npc: str, status: str) -> None:
        if down:
            raise StoreUnavailable("down")
        written.append((npc, status))

    writer = StatusWriter(write)
    writer.submit("a", "idle")
    writer.submit("a", "mining")
    assert await writer.flush_now(0.1) is False
    down = False
    assert await writer.flush_now(1.0)
    assert written == [("a", "mining")]


async def test_metrics_flush_at_batch_size_and_partial_on_shutdown() -> None:
    table = FlakyTable()
    table.down = False
    batcher = MetricsBatcher(table.write, batch=3, flush_ms=3_600_000)
    batcher.start()
    try:
        for i in range(7):
            batcher.add(MetricRow("a", "m", float(i), i))
        while batcher.items_processed < 6:
            table.written.clear()
            await asyncio.wait_for(table.written.wait(), 5)
        assert [len(b) for b in table.batches] == [3, 3] and batcher.pending == 1
        assert await batcher.flush_now(1.0)
        assert [len(b) for b in table.batches] == [3, 3, 1]
    finally:
        await batcher.stop()


async def test_metrics_spool_is_bounded_and_counts_drops() -> None:
    table = FlakyTable()
    batcher = MetricsBatcher(table.write, batch=10, flush_ms=3_600_000, spool_max=5)
    for i in range(8):
        batcher.add(MetricRow("a", "m", float(i), i))
    assert batcher.pending == 5 and batcher.dropped == 3


async def test_a_batch_the_database_refuses_is_dropped_not_retried_forever() -> None:
    written: list[list] = []
    calls = 0

    async def write(rows: list) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("value out of range")  # what a DataError would be
        written.append(rows)

    batcher = MetricsBatcher(write, batch=2, flush_ms=3_600_000)
    batcher.start()
    try:
        for i in range(4):
            batcher.add(MetricRow("a", "m", float(i), i))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while batcher.pending or batcher.rejected == 0:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        assert batcher.rejected == 2 and [r.value for b in written for r in b] == [2.0, 3.0]
    finally:
        await batcher.stop()


async def test_a_spool_overflow_during_a_write_drops_a_waiting_row_not_one_being_written() -> None:
    """The spool overflows while a batch is being written: the oldest row *waiting* goes (and
    is counted); every other row is written exactly once."""
    stored: list[float] = []
    writing, release = asyncio.Event(), asyncio.Event()

    async def write(rows: list[MetricRow]) -> None:
        writing.set()
        await release.wait()
        stored.extend(r.value for r in rows)

    batcher = MetricsBatcher(write, batch=3, flush_ms=3_600_000, spool_max=5)
    batcher.start()
    try:
        for i in range(3):  # a full batch: the write starts and is held
            batcher.add(MetricRow("a", "m", float(i), i))
        await asyncio.wait_for(writing.wait(), 5)
        for i in range(3, 6):  # 6 rows held, one over the spool: row 3 (waiting) goes
            batcher.add(MetricRow("a", "m", float(i), i))
        assert batcher.dropped == 1
        release.set()
        assert await batcher.flush_now(5)
        assert stored == [0.0, 1.0, 2.0, 4.0, 5.0]
        assert batcher.pending == 0
    finally:
        await batcher.stop()
