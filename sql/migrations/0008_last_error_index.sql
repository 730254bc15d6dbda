-- 0008 the last error's own index: `qbhealth status` and the dashboard read each realm's newest
-- probe that was not a pass (db/status.ts), newest first. On the (realm_id, checked_at) index that
-- read filters every pass on the way, so a realm that never failed in its 90 days of raw rows was
-- read end to end (~130k rows at one probe a minute) on every dashboard read, and the status
-- pool's statement timeout failed them. This index holds only the rows that are not a pass, so the
-- read stops at its first entry, or finds none at once, whatever the history's size.
--
-- The predicate is the status the queries compute (rows written before `status` existed read
-- `connected`), written exactly as they write it: PostgreSQL uses a partial index only when it can
-- prove the query's condition implies the index's.
--
-- Built inside the migration's transaction (CREATE INDEX CONCURRENTLY cannot be): recording waits
-- for the build (a quarter of a second for 2.6 M rows). Idempotent: created only if missing.

CREATE INDEX IF NOT EXISTS quickbooks_connection_health_last_error_idx ON quickbooks_connection_health (realm_id, checked_at, id)
  WHERE COALESCE(status, CASE WHEN connected THEN 'pass' ELSE 'fail' END) <> 'pass';
