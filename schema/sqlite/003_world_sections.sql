-- The shared world model (§6.6); see ../003_world_sections.sql.
CREATE TABLE world_sections (
    dim        TEXT NOT NULL,
    cx         INTEGER NOT NULL,
    cy         INTEGER NOT NULL,
    cz         INTEGER NOT NULL,
    solid      BLOB NOT NULL CHECK (length(solid) = 512),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (dim, cx, cy, cz)
) WITHOUT ROWID;
