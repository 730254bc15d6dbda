-- 0005 health rollups: per realm, per half hour and per UTC day, what the dashboard draws (probes,
-- up, throttled, failures by error_code, a latency sketch), so that 90 days of history are read
-- from a few thousand rows instead of millions. Written in the statement that inserts the results
-- (db/health-queries.ts), counting only rows actually inserted; rebuilt from the raw rows by
-- `qbhealth rollup --rebuild`; pruned after ROLLUP_RETENTION_DAYS, not with the raw rows.
--
-- The latency sketch is a sparse log-scale histogram: bucket b holds latencies in
-- [1.04^b, 1.04^(b+1)) ms, latency_buckets the buckets that have probes (distinct, in no
-- particular order) and latency_counts their counts, so sketches merge by adding counts per bucket
-- and a percentile read from merged buckets is within 2 % of the true one.
--
-- Idempotent, like 0001: tables created with their key only, every other column added
-- "IF NOT EXISTS", so re-running the file restores a dropped column.

CREATE TABLE IF NOT EXISTS quickbooks_health_rollup_halfhour (
  realm_id     text NOT NULL,
  period_start timestamptz NOT NULL,
  PRIMARY KEY (realm_id, period_start)
) WITH (fillfactor = 80);  -- room for HOT updates: each row is updated by every probe of its period

ALTER TABLE quickbooks_health_rollup_halfhour
  ADD COLUMN IF NOT EXISTS probes          integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS up              integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS throttled       integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS failures        jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS latency_buckets integer[] NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS latency_counts  integer[] NOT NULL DEFAULT '{}';

CREATE INDEX IF NOT EXISTS quickbooks_health_rollup_halfhour_period_idx ON quickbooks_health_rollup_halfhour (period_start);

CREATE TABLE IF NOT EXISTS quickbooks_health_rollup_day (
  realm_id     text NOT NULL,
  period_start timestamptz NOT NULL,
  PRIMARY KEY (realm_id, period_start)
) WITH (fillfactor = 80);

ALTER TABLE quickbooks_health_rollup_day
  ADD COLUMN IF NOT EXISTS probes          integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS up              integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS throttled       integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS failures        jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS latency_buckets integer[] NOT NULL DEFAULT '{}',
  ADD COLUMN IF NOT EXISTS latency_counts  integer[] NOT NULL DEFAULT '{}';

CREATE INDEX IF NOT EXISTS quickbooks_health_rollup_day_period_idx ON quickbooks_health_rollup_day (period_start);
