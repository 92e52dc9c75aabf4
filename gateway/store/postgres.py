"""The PostgreSQL store: an asyncpg pool.

Connection-level failures (refused, reset, server shutting down or restarting, too many
connections, pool acquire timeout) become :class:`StoreUnavailable`. The pool replaces a closed
connection when it is next acquired, so after the server comes back the same store object works
again without help; a connection that dies during a call fails only that call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from gateway.store import migrations
from gateway.store.base import NpcExists, StoreUnavailable
from gateway.store.common import (
    NPC_COLUMNS,
    UNKNOWN,
    CallStats,
    check_changes,
    check_profile,
    iso,
    latest_positions,
)
from gateway.store.listing import MetricsListing, MetricsQuery, NpcListing, NpcQuery
from gateway.store.retention import (
    DAY_MS,
    PARTITIONS_AHEAD,
    RETENTION_BATCH,
    RetentionReport,
    partition_day,
    partition_name,
)
from gateway.types import MetricRow, NpcMap, PositionUpdate

_COLS = ", ".join(NPC_COLUMNS)
_SELECT_NPC = f"SELECT {_COLS} FROM npcs"

# The server cannot be reached or is going away. OSError covers refused/reset sockets and
# TimeoutError (connect and pool-acquire timeouts).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,  # the connection was closed under the call
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,  # terminated by a fast shutdown
    asyncpg.CrashShutdownError,
    # A pooled connection whose server vanished mid-protocol ("cannot switch to state …;
    # another operation is in progress"): the call may be retried on a fresh connection.
    asyncpg.InternalClientError,
)

# Positions go by COPY into a per-connection temp table, then ONE UPDATE joins it, in one
# transaction. scripts/bench_store.py measured it against `UPDATE … FROM unnest($1::text[], …)`
# and executemany: on par at 1,000 NPCs, ~1.8x faster than unnest at 2,000-5,000.
_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS positions_stage (
    id text COLLATE "C", x float8, y float8, z float8, yaw float8, pitch float8, dim text
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ("id", "x", "y", "z", "yaw", "pitch", "dim")
_WRITE_POSITIONS = """
UPDATE npcs AS n
SET x = s.x, y = s.y, z = s.z, yaw = s.yaw, pitch = s.pitch, dim = s.dim, updated_at = now()
FROM positions_stage AS s
WHERE n.id = s.id
"""

# Rows of unknown (e.g. just deleted) NPCs are dropped, like positions, instead of failing the
# foreign key and with it the whole batch.
_INSERT_METRICS = """
INSERT INTO metrics (npc, name, value, ts)
SELECT u.npc, u.name, u.value, u.ts
FROM unnest($1::text[], $2::text[], $3::float8[], $4::int8[]) AS u (npc, name, value, ts)
WHERE EXISTS (SELECT 1 FROM npcs WHERE npcs.id = u.npc)
"""

# -- retention: metrics partitioned by UTC day (schema/002_metrics_by_day.sql) -------------------
_RETENTION_LOCK = 0x41494372616675  # any constant, not the migrations' lock
DROP_LOCK_TIMEOUT_MS = 500
_LIST_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'metrics'::regclass
"""
_DELETE_EXPIRED_DEFAULT = f"""
DELETE FROM metrics_default WHERE ctid IN (
    SELECT ctid FROM metrics_default WHERE ts < $1 LIMIT {RETENTION_BATCH}
)
"""


async def _ensure_partition(conn: asyncpg.Connection, day: int) -> int:
    """Create the partition of `day` (days since the epoch) unless it exists; 1 if created.
    Rows of that day already in the default partition are moved into it, in one transaction."""
    name = partition_name(day)
    if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
        return 0
    low, high = day * DAY_MS, (day + 1) * DAY_MS
    try:
        return await _create_partition(conn, name, low, high)
    except asyncpg.LockNotAvailableError:
        return 0  # busy (e.g. an NPC being deleted): the next run creates it


async def _create_partition(conn: asyncpg.Connection, name: str, low: int, high: int) -> int:
    async with conn.transaction():
        # The partition's foreign key locks `npcs` too: never wait long enough for a deadlock
        # with a writer (deadlock_timeout is 1 s); give up and let the next run do it.
        await conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT_MS}ms'")
        try:
            async with conn.transaction():  # a savepoint: the fallback below runs after it
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF metrics FOR VALUES FROM ({low}) TO ({high})"
                )
                return 1
        except asyncpg.CheckViolationError:
            pass  # the default partition holds rows of that day: move them
        except asyncpg.DuplicateTableError:
            return 0  # created meanwhile
        await conn.execute(f"CREATE TABLE {name} (LIKE metrics INCLUDING DEFAULTS)")
        await conn.execute(
            f"WITH moved AS (DELETE FROM metrics_default WHERE ts >= {low} AND ts < {high}"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        await conn.execute(
            f"ALTER TABLE metrics ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
        )
    return 1


async def _drop_partition(conn: asyncpg.Connection, name: str) -> bool:
    """Detach and drop one partition; False if its lock was not free in time (next run).

    DETACH ... CONCURRENTLY is refused while a default partition exists, so the detach takes
    the parent's lock for a moment: a catalog change, no row is read or written. It waits at
    most DROP_LOCK_TIMEOUT for that lock, so writers queue behind it at most that long."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT_MS}ms'")
            await conn.execute(f"ALTER TABLE metrics DETACH PARTITION {name}")
    except asyncpg.LockNotAvailableError:
        return False
    await conn.execute(f"DROP TABLE IF EXISTS {name}")  # detached: locks only itself
    return True


# Registers the NPC or returns the existing row, in one round trip. `inserted` feeds `writes`.
_ENSURE = f"""
WITH ins AS (
    INSERT INTO npcs (id, name, role, status) VALUES ($1, $1, $2, $2)
    ON CONFLICT (id) DO NOTHING
    RETURNING {_COLS}
)
SELECT {_COLS}, true AS inserted FROM ins
UNION ALL
SELECT {_COLS}, false AS inserted FROM npcs WHERE id = $1
LIMIT 1
"""


def _npc(record: asyncpg.Record | None) -> NpcMap | None:
    if record is None:
        return None
    npc = {k: record[k] for k in NPC_COLUMNS}
    npc["updated_at"] = iso(npc["updated_at"])
    npc["created_at"] = iso(npc["created_at"])
    return npc


def _affected(status: str) -> int:
    """Row count from a command tag such as `UPDATE 3` or `INSERT 0 5`."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=orjson.loads, schema="pg_catalog", format="text"
    )
    await conn.execute(_STAGE)


_WRITE_SECTIONS = (
    "INSERT INTO world_sections (dim, cx, cy, cz, solid)"
    " SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::bytea[])"
    " ON CONFLICT (dim, cx, cy, cz) DO UPDATE SET solid = excluded.solid, updated_at = now()"
)


class PostgresStore(NpcListing, MetricsListing):
    """:class:`gateway.store.base.Store` on PostgreSQL through an asyncpg pool."""

    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        pool_max: int = 20,
        *,
        pool_min: int = 2,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        command_timeout: float = 30.0,
        auto_migrate: bool = True,
    ) -> None:
        self.dsn = dsn
        self.pool_max = max(1, pool_max)
        self.pool_min = max(0, min(pool_min, self.pool_max))
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.command_timeout = command_timeout
        self.auto_migrate = auto_migrate
        self._pool: asyncpg.Pool | None = None
        self._stats = CallStats()

    # -- plumbing ---------------------------------------------------------------------------------
    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one store call, timed, with failures mapped."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        with self._stats.timed():
            try:
                async with pool.acquire(timeout=self.acquire_timeout) as conn:
                    yield conn
            except asyncpg.DataError:
                raise  # bad input (a subclass of InterfaceError), never an outage
            except _UNAVAILABLE as e:
                raise StoreUnavailable(f"PostgreSQL: {type(e).__name__}: {e}") from e

    def _count(self, status: str) -> int:
        n = _affected(status)
        if n:
            self._stats.writes += 1
        return n

    # -- lifecycle --------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the pool and apply pending migrations; StoreUnavailable if the server is down."""
        if self._pool is not None:
            return
        pool = asyncpg.create_pool(
            self.dsn,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            init=_init_connection,
            max_inactive_connection_lifetime=60.0,
        )
        try:
            await pool
        except _UNAVAILABLE as e:
            pool.terminate()
            raise StoreUnavailable(f"PostgreSQL: {type(e).__name__}: {e}") from e
        self._pool = pool
        if self.auto_migrate:
            try:
                await self.migrate()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=10.0)
        except (TimeoutError, *_UNAVAILABLE):
            pool.terminate()  # a call still holds a connection, or the server is gone

    async def migrate(self) -> list[str]:
        async with self._conn() as conn:
            applied = await migrations.apply_postgres(conn)
        self._stats.writes += len(applied)
        return applied

    # -- registry ---------------------------------------------------------------------------------
    async def ensure_npc(self, npc_id: str) -> NpcMap:
        async with self._conn() as conn:
            while True:
                row = await conn.fetchrow(_ENSURE, npc_id, UNKNOWN)
                # No row: another replica inserted it after our snapshot was taken; look again.
                if row is not None:
                    break
        if row["inserted"]:
            self._stats.writes += 1
        npc = _npc(row)
        assert npc is not None
        return npc

    async def create_npc(self, npc_id: str, name: str, role: str, status: str) -> NpcMap:
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO npcs (id, name, role, status) VALUES ($1, $2, $3, $4)"
                    f" RETURNING {_COLS}",
                    npc_id,
                    name,
                    role,
                    status,
                )
            except asyncpg.UniqueViolationError:
                raise NpcExists(npc_id) from None
        self._stats.writes += 1
        npc = _npc(row)
        assert npc is not None
        return npc

    async def get_npc(self, npc_id: str) -> NpcMap | None:
        async with self._conn() as conn:
            return _npc(await conn.fetchrow(f"{_SELECT_NPC} WHERE id = $1", npc_id))

    async def _list_npcs(self, query: NpcQuery) -> list[NpcMap]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        where = query.where(param, "id = ANY({}::text[])", "id <> ALL({}::text[])")
        sql = f"{_SELECT_NPC}{where} ORDER BY id LIMIT {param(query.limit)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params)
        return [_npc(r) for r in rows]  # type: ignore[misc]

    async def update_npc(self, npc_id: str, changes: dict[str, Any]) -> NpcMap | None:
        changes = check_changes(changes)
        if not changes:
            return await self.get_npc(npc_id)
        sets = ", ".join(f"{k} = ${i}" for i, k in enumerate(changes, start=2))
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE npcs SET {sets}, updated_at = now() WHERE id = $1 RETURNING {_COLS}",
                npc_id,
                *changes.values(),
            )
        if row is not None:
            self._stats.writes += 1
        return _npc(row)

    async def delete_npc(self, npc_id: str) -> bool:
        # Profile and metrics go with it through ON DELETE CASCADE, in the same statement.
        async with self._conn() as conn:
            return self._count(await conn.execute("DELETE FROM npcs WHERE id = $1", npc_id)) > 0

    async def set_status(self, npc_id: str, status: str) -> bool:
        async with self._conn() as conn:
            tag = await conn.execute(
                "UPDATE npcs SET status = $2, updated_at = now() WHERE id = $1", npc_id, status
            )
        return self._count(tag) > 0

    async def write_positions(self, updates: Sequence[PositionUpdate]) -> int:
        """The latest position of each NPC in the batch: one UPDATE from a COPY-filled staging
        table, in one transaction. Unknown ids match no row and are ignored. Returns how many
        NPCs were written."""
        if not updates:
            return 0
        records = [
            (u["id"], u["x"], u["y"], u["z"], u["yaw"], u["pitch"], u["dim"])
            for u in latest_positions(updates)
        ]
        async with self._conn() as conn:
            for attempt in range(3):
                try:
                    async with conn.transaction():
                        await conn.copy_records_to_table(
                            "positions_stage", records=records, columns=_STAGE_COLUMNS
                        )
                        tag = await conn.execute(_WRITE_POSITIONS)
                    return self._count(tag)
                except asyncpg.DeadlockDetectedError:
                    # Two replicas touching the same rows (a bot moving between them); the
                    # transaction was rolled back, so run it again.
                    if attempt == 2:
                        raise
        return 0  # not reached: the last attempt returns or raises

    # -- the world model --------------------------------------------------------------------------
    async def write_sections(self, rows: Sequence[tuple[str, int, int, int, bytes]]) -> int:
        """One INSERT … ON CONFLICT over arrays: a batch is one statement, one round trip."""
        if not rows:
            return 0
        dims, xs, ys, zs, solids = (list(col) for col in zip(*rows, strict=True))
        async with self._conn() as conn:
            tag = await conn.execute(_WRITE_SECTIONS, dims, xs, ys, zs, solids)
        return self._count(tag)

    async def load_sections(self) -> list[tuple[str, int, int, int, bytes]]:
        async with self._conn() as conn:
            records = await conn.fetch("SELECT dim, cx, cy, cz, solid FROM world_sections")
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in records]

    # -- learning profiles ------------------------------------------------------------------------
    async def get_profile(self, npc_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            return await conn.fetchval(
                "SELECT profile FROM learning_profiles WHERE npc_id = $1", npc_id
            )

    async def put_profile(self, npc_id: str, profile: dict[str, Any]) -> dict[str, Any]:
        """Store the profile; raise KeyError if the NPC is unknown."""
        text = json.dumps(check_profile(profile), allow_nan=False)
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO learning_profiles (npc_id, profile) VALUES ($1, $2::text::jsonb)"
                    " ON CONFLICT (npc_id) DO UPDATE"
                    " SET profile = excluded.profile, updated_at = now()",
                    npc_id,
                    text,
                )
            except asyncpg.ForeignKeyViolationError:
                raise KeyError(npc_id) from None
        self._stats.writes += 1
        return orjson.loads(text)

    async def update_profile(
        self, npc_id: str, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Replace the profile with `fn(current)` atomically (`current` is {} if none yet).

        The row is locked (SELECT … FOR UPDATE) from read to write, so concurrent updates from
        several replicas apply one after the other; KeyError if the NPC is unknown.
        """
        async with self._conn() as conn, conn.transaction():
            try:
                # Make sure there is a row to lock; the FK check rejects an unknown NPC.
                await conn.execute(
                    "INSERT INTO learning_profiles (npc_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    npc_id,
                )
            except asyncpg.ForeignKeyViolationError:
                raise KeyError(npc_id) from None
            current = await conn.fetchval(
                "SELECT profile FROM learning_profiles WHERE npc_id = $1 FOR UPDATE", npc_id
            )
            text = json.dumps(check_profile(fn(current)), allow_nan=False)
            await conn.execute(
                "UPDATE learning_profiles SET profile = $2::text::jsonb, updated_at = now()"
                " WHERE npc_id = $1",
                npc_id,
                text,
            )
        self._stats.writes += 1
        return orjson.loads(text)

    # -- metrics ----------------------------------------------------------------------------------
    async def insert_metrics(self, rows: Sequence[MetricRow]) -> int:
        """Insert all rows in one statement; rows of unknown NPCs are dropped. Returns how
        many rows were inserted."""
        if not rows:
            return 0
        columns = [
            [r[0] for r in rows],
            [r[1] for r in rows],
            [float(r[2]) for r in rows],
            [int(r[3]) for r in rows],
        ]
        async with self._conn() as conn:
            for attempt in range(2):
                try:
                    return self._count(await conn.execute(_INSERT_METRICS, *columns))
                except asyncpg.ForeignKeyViolationError:
                    # An NPC was deleted between the EXISTS check and the insert; the statement
                    # wrote nothing, and the retry's EXISTS now drops that NPC's rows.
                    if attempt == 1:
                        raise
        return 0  # not reached

    async def maintain_metrics(self, retention_ms: int, now_ms: int) -> RetentionReport:
        """Keep `retention_ms` of metrics: create the next days' partitions, detach and drop
        partitions wholly older than the cutoff (writers wait at most DROP_LOCK_TIMEOUT_MS,
        once per day dropped), and delete expired rows of the default partition in small
        batches. One replica at a time (an advisory lock); the others skip."""
        report = RetentionReport()
        cutoff = now_ms - retention_ms
        async with self._conn() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RETENTION_LOCK):
                return report
            try:
                today = now_ms // DAY_MS
                # Today and the next days, and any recent day the default partition holds
                # rows of (written before its partition existed).
                days = set(range(today, today + PARTITIONS_AHEAD + 1))
                stray = await conn.fetch(
                    "SELECT DISTINCT ts / $1 AS day FROM metrics_default"
                    " WHERE ts >= $2 AND ts < $3",
                    DAY_MS,
                    cutoff,
                    (today + PARTITIONS_AHEAD + 1) * DAY_MS,
                )
                days.update(int(r["day"]) for r in stray)
                for day in sorted(days):
                    report.partitions_created += await _ensure_partition(conn, day)
                for name in await conn.fetch(_LIST_PARTITIONS):
                    day = partition_day(name["relname"])
                    if day is not None and (day + 1) * DAY_MS <= cutoff:
                        if await _drop_partition(conn, name["relname"]):
                            report.partitions_dropped += 1
                while True:
                    deleted = _affected(await conn.execute(_DELETE_EXPIRED_DEFAULT, cutoff))
                    report.rows_deleted += deleted
                    if deleted < RETENTION_BATCH:
                        break
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _RETENTION_LOCK)
        return report

    async def _select_metrics(self, query: MetricsQuery) -> list[MetricRow]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        sql = query.sql(param)
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *params)
        return [MetricRow(r[0], r[1], r[2], r[3]) for r in rows]

    # -- figures ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        pool = self._pool
        size = pool.get_size() if pool is not None else 0
        idle = pool.get_idle_size() if pool is not None else 0
        return {
            "backend": self.backend,
            "activeConnections": size - idle,
            "idleConnections": idle,
            "queryTime": self._stats.percentiles(),
            "writes": self._stats.writes,
        }
