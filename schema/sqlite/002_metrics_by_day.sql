-- SQLite has no partitions: the retention deletes expired rows in small batches instead
-- (gateway/store/sqlite.py, maintain_metrics), through metrics_ts_idx. Nothing to change.
SELECT 1;
