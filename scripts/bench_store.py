"""Benchmark of `write_positions`: how fast can one tick's batch of positions be written?

PostgreSQL candidates, each on one pooled connection:
  unnest       UPDATE npcs … FROM unnest($1::text[], …)  (one statement)
  copy         COPY into a temp staging table, then UPDATE … FROM it (one transaction; what
               PostgresStore uses)
  executemany  UPDATE … WHERE id = $1, once per NPC (asyncpg pipelines them, one transaction)
  store        PostgresStore.write_positions end to end (pool acquire, dedup/sort, timing)
SQLite candidates:
  json_each    UPDATE … FROM json_each(?): one statement, the batch as one JSON text
  executemany  UPDATE … WHERE id = ?, once per NPC, in one transaction (SqliteStore's way)

Prints the median ms per batch over --runs runs (after one warm-up run).
Without --dsn it starts a throwaway PostgreSQL (gateway/testing/).

    python scripts/bench_store.py [--dsn postgresql://…] [--sizes 1000 5000] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

from gateway.store.common import latest_positions, now_iso
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from gateway.types import PositionUpdate

DIMS = ("overworld", "nether", "the_end")


def batch(n: int) -> list[PositionUpdate]:
    return [
        {
            "id": f"bot{i:05d}",
            "x": random.uniform(-3e4, 3e4),
            "y": random.uniform(0, 256),
            "z": random.uniform(-3e4, 3e4),
            "yaw": random.uniform(-180, 180),
            "pitch": random.uniform(-90, 90),
            "dim": random.choice(DIMS),
        }
        for i in range(n)
    ]


def columns(updates: list[PositionUpdate]) -> list[list[object]]:
    keys = ("id", "x", "y", "z", "yaw", "pitch", "dim")
    return [[u[k] for u in updates] for k in keys]  # type: ignore[literal-required]


async def medians(
    candidates: dict[str, Callable[[list[PositionUpdate]], Awaitable[None]]],
    sizes: list[int],
    runs: int,
) -> dict[str, dict[int, float]]:
    """Median ms per batch. Candidates take turns within each run, so load from other processes
    on a shared machine falls on all of them alike instead of on whichever ran last."""
    times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in sizes} for name in candidates}
    for n in sizes:
        for run in range(runs + 1):
            for name, write in candidates.items():
                b = batch(n)
                start = time.perf_counter()
                await write(b)
                if run:  # run 0 warms plans, caches and the staging table
                    times[name][n].append((time.perf_counter() - start) * 1000.0)
    return {name: {n: statistics.median(t) for n, t in by.items()} for name, by in times.items()}


# -- PostgreSQL -----------------------------------------------------------------------------------
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS positions_stage (
    id text COLLATE "C", x float8, y float8, z float8, yaw float8, pitch float8, dim text
) ON COMMIT DELETE ROWS
"""
_FROM_STAGE = """
UPDATE npcs AS n SET x = s.x, y = s.y, z = s.z, yaw = s.yaw, pitch = s.pitch, dim = s.dim,
                     updated_at = now()
FROM positions_stage AS s WHERE n.id = s.id
"""
_UNNEST = """
UPDATE npcs AS n
SET x = u.x, y = u.y, z = u.z, yaw = u.yaw, pitch = u.pitch, dim = u.dim, updated_at = now()
FROM unnest($1::text[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
            $7::text[]) AS u (id, x, y, z, yaw, pitch, dim)
WHERE n.id = u.id
"""
_ONE = """
UPDATE npcs SET x = $2, y = $3, z = $4, yaw = $5, pitch = $6, dim = $7, updated_at = now()
WHERE id = $1
"""


async def bench_postgres(dsn: str, sizes: list[int], runs: int) -> dict[str, dict[int, float]]:
    store = PostgresStore(dsn, pool_max=4)
    await store.open()
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        ids = [f"bot{i:05d}" for i in range(max(sizes))]
        await conn.execute("DELETE FROM npcs")
        await conn.execute(
            "INSERT INTO npcs (id, name) SELECT i, i FROM unnest($1::text[]) AS i", ids
        )
        await conn.execute(_STAGE)
        await conn.execute("VACUUM ANALYZE npcs")

        async def unnest(b: list[PositionUpdate]) -> None:
            await conn.execute(_UNNEST, *columns(b))

        async def copy(b: list[PositionUpdate]) -> None:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "positions_stage",
                    records=[
                        (u["id"], u["x"], u["y"], u["z"], u["yaw"], u["pitch"], u["dim"]) for u in b
                    ],
                )
                await conn.execute(_FROM_STAGE)

        async def executemany(b: list[PositionUpdate]) -> None:
            await conn.executemany(
                _ONE, [(u["id"], u["x"], u["y"], u["z"], u["yaw"], u["pitch"], u["dim"]) for u in b]
            )

        candidates = {
            "unnest": unnest,
            "copy": copy,
            "executemany": executemany,
            "store": store.write_positions,
        }
        return await medians(candidates, sizes, runs)
    finally:
        await conn.close()
        await store.close()


# -- SQLite ---------------------------------------------------------------------------------------
_JSON_EACH = """
UPDATE npcs SET x = u.value ->> 1, y = u.value ->> 2, z = u.value ->> 3,
                yaw = u.value ->> 4, pitch = u.value ->> 5, dim = u.value ->> 6, updated_at = ?
FROM json_each(?) AS u
WHERE npcs.id = u.value ->> 0
"""


class _JsonEachSqlite(SqliteStore):
    """The same store, writing positions as one UPDATE … FROM json_each(?)."""

    def _write_json(self, payload: str) -> None:
        self._db.execute(_JSON_EACH, (now_iso(), payload))

    async def write_positions(self, updates: Sequence[PositionUpdate]) -> None:
        payload = json.dumps(
            [
                [u["id"], u["x"], u["y"], u["z"], u["yaw"], u["pitch"], u["dim"]]
                for u in latest_positions(updates)
            ]
        )
        await self._call(self._write_json, payload)


async def bench_sqlite(sizes: list[int], runs: int) -> dict[str, dict[int, float]]:
    with tempfile.TemporaryDirectory(prefix="aicraft-bench-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        store = SqliteStore(path)
        one = _JsonEachSqlite(path)
        await store.open()
        await one.open()
        try:
            for i in range(max(sizes)):
                await store.ensure_npc(f"bot{i:05d}")
            candidates = {"json_each": one.write_positions, "executemany": store.write_positions}
            return await medians(candidates, sizes, runs)
        finally:
            await one.close()
            await store.close()


def show(title: str, results: dict[str, dict[int, float]], sizes: list[int]) -> None:
    print(f"\n{title}: median ms per write_positions batch")
    print(f"  {'method':<14}" + "".join(f"{n:>12,} NPCs" for n in sizes))
    for name, by_size in results.items():
        print(f"  {name:<14}" + "".join(f"{by_size[n]:>17.2f}" for n in sizes))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    server = None
    dsn = args.dsn
    if dsn is None:
        from gateway.testing.postgres_server import PostgresServer

        server = PostgresServer()
        server.start()
        dsn = server.create_database("bench_store")
    try:
        show("PostgreSQL", await bench_postgres(dsn, args.sizes, args.runs), args.sizes)
    finally:
        if server is not None:
            server.close()
    show("SQLite", await bench_sqlite(args.sizes, args.runs), args.sizes)


if __name__ == "__main__":
    asyncio.run(main())
