-- SQLite variant of ../001_init.sql: timestamps are ISO 8601 UTC text (written by the store),
-- profiles are JSON text, BINARY collation orders ids byte-wise like "C" on PostgreSQL.

CREATE TABLE npcs (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL DEFAULT 'unknown',
    status     TEXT NOT NULL DEFAULT 'unknown',
    x          REAL,
    y          REAL,
    z          REAL,
    yaw        REAL,
    pitch      REAL,
    dim        TEXT,
    updated_at TEXT NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX npcs_status_idx ON npcs (status);
CREATE INDEX npcs_role_idx ON npcs (role);

CREATE TABLE learning_profiles (
    npc_id     TEXT PRIMARY KEY NOT NULL REFERENCES npcs (id) ON DELETE CASCADE,
    profile    TEXT NOT NULL DEFAULT '{}',
    updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE metrics (
    npc   TEXT NOT NULL REFERENCES npcs (id) ON DELETE CASCADE,
    name  TEXT NOT NULL,
    value REAL NOT NULL,
    ts    INTEGER NOT NULL
);

CREATE INDEX metrics_ts_idx ON metrics (ts);
CREATE INDEX metrics_npc_ts_idx ON metrics (npc, ts DESC);
