-- 0007 rollup fold: recording inserts raw rows only; closed half hours are folded into the rollups
-- afterwards (db/rollup-fold.ts), and this one-row table says how far. Every half hour before
-- folded_until is in quickbooks_health_rollup_halfhour (and its day in quickbooks_health_rollup_day,
-- days counting only half hours before folded_until); from folded_until on, the dashboard reads the
-- raw rows. raw_pruned_before: raw rows older than it may have been deleted by the prune, so half
-- hours that begin before it are never folded again (their rollups stay as they are).
--
-- Starts at the beginning of the current UTC day: rollups written before this release by the
-- recording statement itself may hold part of today (and of the current half hour), which the
-- first fold replaces from the raw rows. raw_pruned_before starts at the oldest raw row (earlier
-- prunes did not record their cutoff). Idempotent: re-running it changes nothing already there.

CREATE TABLE IF NOT EXISTS quickbooks_health_rollup_fold (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);

ALTER TABLE quickbooks_health_rollup_fold
  ADD COLUMN IF NOT EXISTS folded_until      timestamptz NOT NULL DEFAULT to_timestamp(floor(extract(epoch FROM now()) / 86400) * 86400),
  ADD COLUMN IF NOT EXISTS raw_pruned_before timestamptz;

INSERT INTO quickbooks_health_rollup_fold (singleton, folded_until, raw_pruned_before)
VALUES (true, to_timestamp(floor(extract(epoch FROM now()) / 86400) * 86400), (SELECT min(checked_at) FROM quickbooks_connection_health))
ON CONFLICT (singleton) DO NOTHING;
