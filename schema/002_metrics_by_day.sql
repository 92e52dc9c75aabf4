-- Metrics partitioned by day (ts, epoch ms, UTC days), so a retention drops whole partitions
-- (DETACH, then DROP: a catalog change, no row is touched) instead of deleting millions of rows
-- under the writers' feet.
-- Partitions are named metrics_pYYYYMMDD; the gateway creates them ahead of time and drops
-- expired ones (gateway/store/postgres.py, maintain_metrics). metrics_default catches rows
-- whose day has no partition yet (a bot's clock far off); the gateway moves them out when it
-- creates that day's partition and deletes expired ones in small batches.

ALTER TABLE metrics RENAME TO metrics_unpartitioned;
ALTER INDEX metrics_ts_idx RENAME TO metrics_unpartitioned_ts_idx;
ALTER INDEX metrics_npc_ts_idx RENAME TO metrics_unpartitioned_npc_ts_idx;

CREATE TABLE metrics (
    npc   text COLLATE "C" NOT NULL REFERENCES npcs (id) ON DELETE CASCADE,
    name  text NOT NULL,
    value double precision NOT NULL,
    ts    bigint NOT NULL
) PARTITION BY RANGE (ts);

CREATE INDEX metrics_ts_idx ON metrics (ts);
-- Serves `WHERE npc = $1 ORDER BY ts DESC` and the cascade from npcs.
CREATE INDEX metrics_npc_ts_idx ON metrics (npc, ts DESC);

CREATE TABLE metrics_default PARTITION OF metrics DEFAULT;

-- One partition per day that already holds rows (capped: a bot's clock far off must not
-- create thousands; such rows go to the default partition).
DO $$
DECLARE
    day_ms constant bigint := 86400000;
    first_day bigint;
    last_day bigint;
    d bigint;
BEGIN
    SELECT min(ts) / day_ms, max(ts) / day_ms INTO first_day, last_day
    FROM metrics_unpartitioned
    WHERE ts >= (extract(epoch FROM now())::bigint * 1000) - 400 * day_ms
      AND ts < (extract(epoch FROM now())::bigint * 1000) + 3 * day_ms;
    IF first_day IS NOT NULL THEN
        FOR d IN first_day .. last_day LOOP
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF metrics FOR VALUES FROM (%s) TO (%s)',
                'metrics_p' || to_char(to_timestamp(d * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD'),
                d * day_ms, (d + 1) * day_ms);
        END LOOP;
    END IF;
END $$;

INSERT INTO metrics (npc, name, value, ts)
SELECT npc, name, value, ts FROM metrics_unpartitioned;
DROP TABLE metrics_unpartitioned;
