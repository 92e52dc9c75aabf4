"""Numbered SQL migrations from `schema/`, recorded in a `schema_migrations` table.

Files are named `NNN_description.sql`. `schema/NNN_x.sql` is the PostgreSQL text; a file of the
same name in `schema/sqlite/` replaces it for SQLite where the syntax differs. Each file runs in
its own transaction together with its `schema_migrations` row, so it is applied entirely or not
at all. On PostgreSQL an advisory lock serialises replicas that migrate at the same time; on
SQLite `BEGIN IMMEDIATE` does (one writer per file). `gateway.datafiles` says where `schema/` is
(a wheel carries a copy); finding no migration there is an error, never "none pending".
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.datafiles import schema_dir

if TYPE_CHECKING:
    import asyncpg

SCHEMA_DIR = schema_dir()
# Any constant works; it only has to be the same in every replica ("AICraft" in ASCII).
ADVISORY_LOCK_KEY = 0x41494372616674

_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_.-]+\.sql$")

Dialect = Literal["postgres", "sqlite"]


class MigrationsMissing(RuntimeError):
    """No migration files where they should be: a broken install. Running on would answer
    every database call with "no such table", so callers stop instead."""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # file stem, e.g. "001_init"
    sql: str


def discover(dialect: Dialect, schema_dir: Path = SCHEMA_DIR) -> list[Migration]:
    """The migrations for `dialect`, in numeric order."""
    files: dict[str, Path] = {}
    for path in schema_dir.glob("*.sql"):
        if _NAME.match(path.name):
            files[path.name] = path
    if dialect == "sqlite":
        for path in (schema_dir / "sqlite").glob("*.sql"):
            if _NAME.match(path.name):
                files[path.name] = path
    if not files:
        raise MigrationsMissing(f"no migrations (NNN_name.sql) in {schema_dir}: broken install?")
    ordered = sorted(files, key=lambda n: (int(_NAME.match(n).group(1)), n))  # type: ignore[union-attr]
    return [Migration(Path(n).stem, files[n].read_text(encoding="utf-8")) for n in ordered]


_PG_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def apply_postgres(conn: asyncpg.Connection, schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Apply pending migrations on one connection; return the names applied now."""
    applied_now: list[str] = []
    # Session-level lock taken before anything else: even the CREATE TABLE IF NOT EXISTS races
    # when two replicas run it at once.
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_PG_TABLE)
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for m in discover("postgres", schema_dir):
            if m.name in done:
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", m.name)
            applied_now.append(m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


def split_sqlite(sql: str) -> list[str]:
    """Split a script into statements (sqlite3.complete_statement copes with triggers)."""
    statements: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        statements.append(buf.strip())
    return statements


def apply_sqlite(conn: sqlite3.Connection, schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Apply pending migrations; `conn` must be in autocommit mode (isolation_level=None)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name TEXT PRIMARY KEY NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')))"
    )
    applied_now: list[str] = []
    for m in discover("sqlite", schema_dir):
        # executescript() would commit on its own; statements one by one keep DDL and the
        # bookkeeping row in one transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (m.name,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in split_sqlite(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (name) VALUES (?)", (m.name,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied_now.append(m.name)
    return applied_now
