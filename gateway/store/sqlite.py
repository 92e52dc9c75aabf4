"""The embedded store: one SQLite file, stdlib sqlite3 on one dedicated thread.

Every call runs on a single worker thread (ThreadPoolExecutor(max_workers=1)), so the event loop
never blocks on disk and calls are serialised: a read-modify-write inside one call is atomic
within the process; `BEGIN IMMEDIATE` makes it atomic against other processes too.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.store import migrations
from gateway.store.base import NpcExists, StoreUnavailable
from gateway.store.common import (
    NPC_COLUMNS,
    UNKNOWN,
    CallStats,
    check_changes,
    check_profile,
    latest_positions,
    now_iso,
)
from gateway.store.listing import MetricsListing, MetricsQuery, NpcListing, NpcQuery
from gateway.store.retention import RETENTION_BATCH, RetentionReport
from gateway.types import MetricRow, NpcMap, PositionUpdate

T = TypeVar("T")

# -- the store ---------------------------------------------------------------------------------
_SELECT_NPC = f"SELECT {', '.join(NPC_COLUMNS)} FROM npcs"
_RETURNING = f"RETURNING {', '.join(NPC_COLUMNS)}"

# One prepared UPDATE stepped once per NPC inside one transaction: atomic, one commit per batch.
# scripts/bench_store.py found it ~3x faster than a single UPDATE … FROM json_each(?), which also
# spends loop time encoding JSON.
_WRITE_POSITIONS = """
UPDATE npcs SET x = ?, y = ?, z = ?, yaw = ?, pitch = ?, dim = ?, updated_at = ? WHERE id = ?
"""

# Rows of unknown (e.g. just deleted) NPCs are dropped, like positions, instead of failing the
# foreign key and with it the whole batch.
_INSERT_METRICS = """
INSERT INTO metrics (npc, name, value, ts)
SELECT u.value ->> 0, u.value ->> 1, u.value ->> 2, u.value ->> 3
FROM json_each(?) AS u
WHERE EXISTS (SELECT 1 FROM npcs WHERE npcs.id = u.value ->> 0)
"""

# Faults of the database file or its locks; IntegrityError and ProgrammingError are not here.
_UNAVAILABLE = (sqlite3.OperationalError, sqlite3.InternalError)


def _npc(row: Sequence[Any] | None) -> NpcMap | None:
    return None if row is None else dict(zip(NPC_COLUMNS, row, strict=True))


class SqliteStore(NpcListing, MetricsListing):
    """:class:`gateway.store.base.Store` on a SQLite file (WAL, synchronous=NORMAL)."""

    backend = "sqlite"

    def __init__(self, path: Path, *, auto_migrate: bool = True) -> None:
        self.path = Path(path)
        self.auto_migrate = auto_migrate
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread
        self._stats = CallStats()
        self._in_flight = 0

    # -- plumbing ---------------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        executor = self._executor
        if executor is None:
            raise StoreUnavailable("the SQLite store is not open")
        self._in_flight += 1
        try:
            with self._stats.timed():
                return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except _UNAVAILABLE as e:
            raise StoreUnavailable(f"SQLite: {e}") from e
        finally:
            self._in_flight -= 1

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "store used before open()"
        return self._conn

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where written out explicitly.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._conn = conn

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        cur = self._db.execute(sql, params)
        if cur.rowcount > 0:
            self._stats.writes += 1
        return cur

    # -- lifecycle --------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._call(self._connect)
            if self.auto_migrate:
                await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if self._conn is not None:
            # The worker runs queued calls first, so this is the last thing it does.
            await asyncio.get_running_loop().run_in_executor(executor, self._conn.close)
            self._conn = None
        executor.shutdown(wait=False)

    async def migrate(self) -> list[str]:
        applied = await self._call(migrations.apply_sqlite, self._db)
        self._stats.writes += len(applied)
        return applied

    # -- registry ---------------------------------------------------------------------------------
    def _ensure(self, npc_id: str) -> NpcMap:
        now = now_iso()
        self._write(
            "INSERT INTO npcs (id, name, role, status, updated_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (npc_id, npc_id, UNKNOWN, UNKNOWN, now, now),
        )
        npc = self._get(npc_id)
        assert npc is not None  # only this thread writes; nothing deleted it in between
        return npc

    async def ensure_npc(self, npc_id: str) -> NpcMap:
        return await self._call(self._ensure, npc_id)

    def _create(self, npc_id: str, name: str, role: str, status: str) -> NpcMap:
        now = now_iso()
        try:
            cur = self._db.execute(
                "INSERT INTO npcs (id, name, role, status, updated_at, created_at)"
                f" VALUES (?, ?, ?, ?, ?, ?) {_RETURNING}",
                (npc_id, name, role, status, now, now),
            )
            row = cur.fetchone()
        except sqlite3.IntegrityError:
            raise NpcExists(npc_id) from None
        self._stats.writes += 1
        npc = _npc(row)
        assert npc is not None
        return npc

    async def create_npc(self, npc_id: str, name: str, role: str, status: str) -> NpcMap:
        return await self._call(self._create, npc_id, name, role, status)

    def _get(self, npc_id: str) -> NpcMap | None:
        return _npc(self._db.execute(f"{_SELECT_NPC} WHERE id = ?", (npc_id,)).fetchone())

    async def get_npc(self, npc_id: str) -> NpcMap | None:
        return await self._call(self._get, npc_id)

    def _list(self, query: NpcQuery) -> list[NpcMap]:
        params: list[Any] = []

        def param(value: Any) -> str:
            # Id sets travel as one JSON array: no limit on the number of SQL variables.
            params.append(json.dumps(value) if isinstance(value, list) else value)
            return "?"

        where = query.where(
            param,
            "id IN (SELECT value FROM json_each({}))",
            "id NOT IN (SELECT value FROM json_each({}))",
        )
        sql = f"{_SELECT_NPC}{where} ORDER BY id LIMIT {param(query.limit)}"
        rows = self._db.execute(sql, params)
        return [dict(zip(NPC_COLUMNS, r, strict=True)) for r in rows]

    async def _list_npcs(self, query: NpcQuery) -> list[NpcMap]:
        return await self._call(self._list, query)

    def _update(self, npc_id: str, changes: dict[str, Any]) -> NpcMap | None:
        if not changes:
            return self._get(npc_id)
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur = self._db.execute(
            f"UPDATE npcs SET {sets}, updated_at = ? WHERE id = ? {_RETURNING}",
            (*changes.values(), now_iso(), npc_id),
        )
        npc = _npc(cur.fetchone())
        if npc is not None:
            self._stats.writes += 1
        return npc

    async def update_npc(self, npc_id: str, changes: dict[str, Any]) -> NpcMap | None:
        return await self._call(self._update, npc_id, check_changes(changes))

    def _delete(self, npc_id: str) -> bool:
        # Profile and metrics go with it through ON DELETE CASCADE, in the same statement.
        return self._write("DELETE FROM npcs WHERE id = ?", (npc_id,)).rowcount > 0

    async def delete_npc(self, npc_id: str) -> bool:
        return await self._call(self._delete, npc_id)

    def _set_status(self, npc_id: str, status: str) -> bool:
        cur = self._write(
            "UPDATE npcs SET status = ?, updated_at = ? WHERE id = ?", (status, now_iso(), npc_id)
        )
        return cur.rowcount > 0

    async def set_status(self, npc_id: str, status: str) -> bool:
        return await self._call(self._set_status, npc_id, status)

    def _write_positions(self, updates: list[PositionUpdate]) -> int:
        now = now_iso()
        rows = [
            (u["x"], u["y"], u["z"], u["yaw"], u["pitch"], u["dim"], now, u["id"])
            for u in latest_positions(updates)
        ]
        db = self._db
        db.execute("BEGIN")
        try:
            changed = db.executemany(_WRITE_POSITIONS, rows).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if changed > 0:
            self._stats.writes += 1
        return max(changed, 0)

    async def write_positions(self, updates: Sequence[PositionUpdate]) -> int:
        """The latest position of each NPC in the batch, in one transaction; unknown ids are
        ignored. The batch is shaped on the store's thread, off the event loop. Returns how
        many NPCs were written."""
        if not updates:
            return 0
        written: int = await self._call(self._write_positions, list(updates))
        return written

    # -- the world model --------------------------------------------------------------------------
    def _write_sections(self, rows: list[tuple[str, int, int, int, bytes]]) -> int:
        now = now_iso()
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO world_sections (dim, cx, cy, cz, solid, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dim, cx, cy, cz) DO UPDATE"
                " SET solid = excluded.solid, updated_at = excluded.updated_at",
                [(d, x, y, z, s, now) for d, x, y, z, s in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._stats.writes += 1
        return len(rows)

    async def write_sections(self, rows: Sequence[tuple[str, int, int, int, bytes]]) -> int:
        if not rows:
            return 0
        written: int = await self._call(self._write_sections, list(rows))
        return written

    def _load_sections(self) -> list[tuple[str, int, int, int, bytes]]:
        cur = self._db.execute("SELECT dim, cx, cy, cz, solid FROM world_sections")
        return [(d, x, y, z, bytes(s)) for d, x, y, z, s in cur]

    async def load_sections(self) -> list[tuple[str, int, int, int, bytes]]:
        rows: list[tuple[str, int, int, int, bytes]] = await self._call(self._load_sections)
        return rows

    # -- learning profiles ------------------------------------------------------------------------
    def _get_profile(self, npc_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT profile FROM learning_profiles WHERE npc_id = ?", (npc_id,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    async def get_profile(self, npc_id: str) -> dict[str, Any] | None:
        return await self._call(self._get_profile, npc_id)

    def _put_profile(self, npc_id: str, text: str) -> None:
        try:
            self._write(
                "INSERT INTO learning_profiles (npc_id, profile, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (npc_id) DO UPDATE"
                " SET profile = excluded.profile, updated_at = excluded.updated_at",
                (npc_id, text, now_iso()),
            )
        except sqlite3.IntegrityError:
            raise KeyError(npc_id) from None  # the foreign key: no such NPC

    async def put_profile(self, npc_id: str, profile: dict[str, Any]) -> dict[str, Any]:
        """Store the profile; raise KeyError if the NPC is unknown."""
        text = json.dumps(check_profile(profile), allow_nan=False)
        await self._call(self._put_profile, npc_id, text)
        return json.loads(text)

    def _update_profile(
        self, npc_id: str, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # the write lock: other processes wait for us
        try:
            if db.execute("SELECT 1 FROM npcs WHERE id = ?", (npc_id,)).fetchone() is None:
                raise KeyError(npc_id)
            current = self._get_profile(npc_id) or {}
            text = json.dumps(check_profile(fn(current)), allow_nan=False)
            self._put_profile(npc_id, text)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return json.loads(text)

    async def update_profile(
        self, npc_id: str, fn: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Replace the profile with `fn(current)` atomically (`current` is {} if none yet).

        `fn` runs on the store's thread and must be quick and pure; KeyError if the NPC is unknown.
        """
        return await self._call(self._update_profile, npc_id, fn)

    # -- metrics ----------------------------------------------------------------------------------
    def _insert_metrics(self, payload: str) -> int:
        return max(self._write(_INSERT_METRICS, (payload,)).rowcount, 0)

    async def insert_metrics(self, rows: Sequence[MetricRow]) -> int:
        """Insert all rows in one statement; rows of unknown NPCs are dropped. Returns how
        many rows were inserted."""
        if not rows:
            return 0
        payload = json.dumps([[r[0], r[1], float(r[2]), int(r[3])] for r in rows], allow_nan=False)
        inserted: int = await self._call(self._insert_metrics, payload)
        return inserted

    def _delete_expired(self, cutoff_ms: int) -> int:
        cur = self._write(
            "DELETE FROM metrics WHERE rowid IN (SELECT rowid FROM metrics WHERE ts < ? LIMIT ?)",
            (cutoff_ms, RETENTION_BATCH),
        )
        return max(cur.rowcount, 0)

    async def maintain_metrics(self, retention_ms: int, now_ms: int) -> RetentionReport:
        """Delete metrics older than `retention_ms`, a small batch per call on the store's
        thread, so other store calls run between batches instead of waiting for all of it."""
        report = RetentionReport()
        while True:
            deleted: int = await self._call(self._delete_expired, now_ms - retention_ms)
            report.rows_deleted += deleted
            if deleted < RETENTION_BATCH:
                return report

    def _metrics(self, query: MetricsQuery) -> list[MetricRow]:
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return "?"

        rows = self._db.execute(query.sql(param), params)
        return [MetricRow(r[0], r[1], r[2], r[3]) for r in rows]

    async def _select_metrics(self, query: MetricsQuery) -> list[MetricRow]:
        return await self._call(self._metrics, query)

    # -- figures ----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        active = 1 if self._in_flight else 0
        idle = 0 if active or self._executor is None else 1
        return {
            "backend": self.backend,
            "activeConnections": active,
            "idleConnections": idle,
            "queryTime": self._stats.percentiles(),
            "writes": self._stats.writes,
        }
