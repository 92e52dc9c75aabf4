-- NPC registry, learning profiles and metrics (PostgreSQL).
-- Ids use the "C" collation so ordering and cursor pagination are byte-wise, as in SQLite,
-- whatever locale the server was created with.

CREATE TABLE npcs (
    id         text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL DEFAULT 'unknown',
    status     text NOT NULL DEFAULT 'unknown',
    x          double precision,
    y          double precision,
    z          double precision,
    yaw        double precision,
    pitch      double precision,
    dim        text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);  -- room on each page so position updates stay HOT (no index writes)

CREATE INDEX npcs_status_idx ON npcs (status);
CREATE INDEX npcs_role_idx ON npcs (role);

CREATE TABLE learning_profiles (
    npc_id     text COLLATE "C" PRIMARY KEY REFERENCES npcs (id) ON DELETE CASCADE,
    profile    jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- ts is epoch milliseconds, as on the wire and in MetricRow: no conversion either way, exact
-- round trips, and `since` filters compare plain integers.
CREATE TABLE metrics (
    npc   text COLLATE "C" NOT NULL REFERENCES npcs (id) ON DELETE CASCADE,
    name  text NOT NULL,
    value double precision NOT NULL,
    ts    bigint NOT NULL
);

CREATE INDEX metrics_ts_idx ON metrics (ts);
-- Serves `WHERE npc = $1 ORDER BY ts DESC` and the cascade from npcs.
CREATE INDEX metrics_npc_ts_idx ON metrics (npc, ts DESC);
