"""Metrics retention (GATEWAY_METRICS_RETENTION) on real PostgreSQL and SQLite stores."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from gateway.store import Store
from gateway.store.postgres import PostgresStore
from gateway.store.retention import DAY_MS, partition_name
from gateway.store.sqlite import SqliteStore
from gateway.types import MetricRow

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
WEEK_MS = 7 * DAY_MS


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "gateway.sqlite3")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"), pool_max=4)
    await s.open()
    yield s
    await s.close()


async def test_metrics_older_than_the_retention_are_dropped(store: Store) -> None:
    now = int(time.time() * 1000)
    await store.create_npc("old-timer", "Old", "miner", "online")
    ages_days = [30, 10, 8, 6, 1, 0]
    rows = [MetricRow("old-timer", f"age{d}", float(d), now - d * DAY_MS) for d in ages_days]
    rows.append(MetricRow("old-timer", "future", 1.0, now + 400 * DAY_MS))  # a clock far off
    assert await store.insert_metrics(rows) == len(rows)

    await store.maintain_metrics(WEEK_MS, now)
    kept = {r.name for r in await store.query_metrics(npc="old-timer", limit=100)}
    # Whole days: a row lives at least the retention and at most one day longer.
    assert {"age30", "age10", "age8"}.isdisjoint(kept)
    assert {"age6", "age1", "age0", "future"} <= kept
    # Writes and reads go on as before.
    assert await store.insert_metrics([MetricRow("old-timer", "after", 2.0, now)]) == 1
    newest = await store.query_metrics(npc="old-timer", name="after")
    assert newest == [MetricRow("old-timer", "after", 2.0, now)]
    await store.maintain_metrics(WEEK_MS, now)  # again: nothing more to do, no error


@pytest.mark.postgres
async def test_postgres_keeps_one_partition_per_day_and_drops_whole_days(pg_url: str) -> None:
    store = PostgresStore(pg_url, pool_max=4)
    await store.open()
    try:
        now = int(time.time() * 1000)
        await store.create_npc("p", "P", "miner", "online")
        # Rows of a day without a partition yet land in the default partition...
        await store.insert_metrics([MetricRow("p", "m", 1.0, now - 3 * DAY_MS)])
        report = await store.maintain_metrics(WEEK_MS, now)
        assert report.partitions_created >= 3  # ...and move into their day's partition
        conn = await asyncpg.connect(pg_url)
        try:
            parts = {
                r["relname"]
                for r in await conn.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'metrics'::regclass"
                )
            }
            today = now // DAY_MS
            assert {partition_name(today), partition_name(today + 1)} <= parts
            assert partition_name(today - 3) in parts
            assert await conn.fetchval("SELECT count(*) FROM metrics_default") == 0
            # A week later that day is past the cutoff: its partition is dropped whole.
            later = now + 5 * DAY_MS
            report = await store.maintain_metrics(WEEK_MS, later)
            assert report.partitions_dropped >= 1
            assert await conn.fetchval("SELECT to_regclass($1)", partition_name(today - 3)) is None
        finally:
            await conn.close()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_migration_keeps_existing_metrics(pg_url: str, tmp_path: Path) -> None:
    """A database from before the partitioning keeps its rows through migration 002."""
    from gateway.store import migrations

    only_first = tmp_path / "schema"
    only_first.mkdir()
    (only_first / "001_init.sql").write_text((migrations.SCHEMA_DIR / "001_init.sql").read_text())
    conn = await asyncpg.connect(pg_url)
    try:
        await migrations.apply_postgres(conn, only_first)
        now = int(time.time() * 1000)
        await conn.execute("INSERT INTO npcs (id, name) VALUES ('v1', 'V1')")
        await conn.execute(
            "INSERT INTO metrics (npc, name, value, ts)"
            " VALUES ('v1', 'a', 1, $1), ('v1', 'b', 2, $2)",
            now,
            now - 2 * DAY_MS,
        )
        applied = await migrations.apply_postgres(conn)  # later migrations may follow it
        assert applied[0] == "002_metrics_by_day"
        assert await conn.fetchval("SELECT count(*) FROM metrics") == 2
        assert await conn.fetchval("SELECT count(*) FROM metrics_default") == 0
    finally:
        await conn.close()


async def test_a_starting_gateway_applies_the_retention(tmp_path: Path) -> None:
    """GATEWAY_METRICS_RETENTION end to end: expired rows are gone from /api/metrics soon
    after start (then hourly), recent ones stay."""
    import asyncio
    import dataclasses

    from tests.harness import Rest, gateway_settings, running_gateway, token

    settings = dataclasses.replace(gateway_settings(tmp_path), metrics_retention_s=3 * 86_400)
    seed = SqliteStore(settings.sqlite_path)
    await seed.open()
    now = int(time.time() * 1000)
    await seed.create_npc("vet", "Vet", "miner", "online")
    await seed.insert_metrics(
        [MetricRow("vet", "old", 1.0, now - 5 * DAY_MS), MetricRow("vet", "new", 2.0, now)]
    )
    await seed.close()
    async with running_gateway(settings) as gw:
        rest = Rest(gw.http, token("viewer", "v"))
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 20
            while True:
                _, body = await rest.call("GET", "/api/metrics?npc=vet&limit=10")
                names = {m["name"] for m in body["metrics"]}
                if names == {"new"}:
                    break
                assert loop.time() < end, names
                await asyncio.sleep(0.1)
        finally:
            await rest.close()


def test_retention_setting_parses_durations_and_refuses_nonsense() -> None:
    from gateway.config import ConfigError, Settings

    env = {"GATEWAY_SECRET": "s" * 40}
    assert Settings.from_env(env).metrics_retention_s == 7 * 86_400
    assert Settings.from_env({**env, "GATEWAY_METRICS_RETENTION": "36h"}).metrics_retention_s == (
        36 * 3600
    )
    assert Settings.from_env({**env, "GATEWAY_METRICS_RETENTION": "600"}).metrics_retention_s == 600
    for bad in ("7 days", "-1d", "0", "d"):
        with pytest.raises(ConfigError, match="GATEWAY_METRICS_RETENTION"):
            Settings.from_env({**env, "GATEWAY_METRICS_RETENTION": bad})
