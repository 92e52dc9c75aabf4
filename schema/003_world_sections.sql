-- The shared world model (§6.6): one row per reported 16x16x16 section, its 512-byte solid
-- bitset. Written in batches once per tick (latest per section wins), read whole at start-up.
CREATE TABLE world_sections (
    dim        text COLLATE "C" NOT NULL,
    cx         integer NOT NULL,
    cy         integer NOT NULL,
    cz         integer NOT NULL,
    solid      bytea NOT NULL CHECK (octet_length(solid) = 512),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dim, cx, cy, cz)
);
