"""Metrics at scale on PostgreSQL: insert cost and /api/metrics query time with 10+ million
rows in daily partitions, and what the retention's partition drop costs concurrent writers.

    python scripts/bench_retention.py                 # 10 million rows over 10 days
    python scripts/bench_retention.py --rows 2000000  # smaller

A throwaway PostgreSQL server (gateway/testing/) holds the data; it is removed at the end.
Figures are printed; nothing is asserted (speed is not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from gateway.store.postgres import PostgresStore, _ensure_partition
from gateway.store.retention import DAY_MS
from gateway.testing.postgres_server import PostgresServer
from gateway.types import MetricRow

NPCS = 1000
DAYS = 10
CHUNK = 1_000_000


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


def line(label: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"  {label:52} median {ms(statistics.median(samples))} ms   p99 {ms(p99)} ms")


async def bench(rows: int) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("bench_retention")
        store = PostgresStore(url, pool_max=4)
        await store.open()
        now = int(time.time() * 1000)
        today = now // DAY_MS
        pool = store._pool
        assert pool is not None
        async with pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO npcs (id, name) VALUES ($1, $1)", [(f"npc-{i}",) for i in range(NPCS)]
            )
            for day in range(today - DAYS + 1, today + 3):
                await _ensure_partition(conn, day)
            print(f"filling {rows:,} rows over {DAYS} days ({NPCS} NPCs) ...", flush=True)
            started = time.perf_counter()
            span = DAYS * DAY_MS - 1
            for first in range(0, rows, CHUNK):
                last = min(rows, first + CHUNK)
                await conn.execute(
                    "INSERT INTO metrics (npc, name, value, ts)"
                    " SELECT 'npc-' || (i % $1), CASE WHEN i % 10 = 0 THEN 'hp' ELSE 'ore' END,"
                    " i, $2 - (i::bigint * 7919) % $3 FROM generate_series($4::bigint, $5) AS i",
                    NPCS,
                    now,
                    span,
                    first,
                    last - 1,
                )
            await conn.execute("ANALYZE metrics")
            count = await conn.fetchval("SELECT count(*) FROM metrics")
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            )
        print(f"  filled {count:,} rows in {time.perf_counter() - started:.0f} s; database {size}")

        print("\ninsert (one metrics batch of 200 rows, as the batcher writes it):")
        batch = [MetricRow(f"npc-{i % NPCS}", "ore", float(i), now) for i in range(200)]
        line("insert_metrics(200 rows)", await timed(lambda: store.insert_metrics(batch), 200))

        print("\n/api/metrics queries (store.query_metrics, limit 100):")
        hour_ago = now - 3_600_000
        queries: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("newest of all", lambda: store.query_metrics(limit=100)),
            ("one NPC, newest", lambda: store.query_metrics(npc="npc-42", limit=100)),
            ("one NPC and name", lambda: store.query_metrics(npc="npc-42", name="hp", limit=100)),
            ("since an hour ago", lambda: store.query_metrics(since_ms=hour_ago, limit=100)),
            ("one name, newest", lambda: store.query_metrics(name="hp", limit=100)),
        ]
        for label, query in queries:
            line(label, await timed(query, 50))

        print("\nretention 7 days (drops the days wholly past the cutoff) while a writer inserts:")
        latencies: list[float] = []
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await store.insert_metrics(batch)
                latencies.append(time.perf_counter() - started)

        task = asyncio.create_task(writer())
        await asyncio.sleep(1.0)
        before = len(latencies)
        started = time.perf_counter()
        report = await store.maintain_metrics(7 * DAY_MS, now)
        took = time.perf_counter() - started
        await asyncio.sleep(0.5)
        stop.set()
        await task
        during = latencies[before:]
        async with pool.acquire() as conn:
            left = await conn.fetchval("SELECT count(*) FROM metrics")
        print(
            f"  maintain_metrics: {report.partitions_dropped} partitions dropped in "
            f"{took * 1000:.0f} ms; {left:,} rows left"
        )
        line("concurrent insert_metrics(200) during and after", during)
        print(f"  slowest concurrent insert: {max(during) * 1000:.1f} ms")
        await store.close()
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    asyncio.run(bench(args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
