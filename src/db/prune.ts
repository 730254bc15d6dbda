/**
 * Retention: deletes quickbooks_connection_health rows older than HISTORY_RETENTION_DAYS, then
 * rollups older than ROLLUP_RETENTION_DAYS (kept longer: deleting raw rows never touches them), in
 * bounded batches, each its own short statement on the checked_at (period_start) index, so pruning
 * a large backlog never holds long locks or one huge transaction. The raw cutoff is recorded for
 * the fold (db/rollup-fold.ts), which never folds again a half hour the prune may have cut into.
 */
import { DEFAULT_ROLLUP_RETENTION_DAYS } from '../config.js';
import { LogEvent, type Logger } from '../log.js';
import { pruneAlertHistory } from './incident-queries.js';
import type { Queryable } from './pool.js';
import { RECORD_PRUNE_SQL } from './rollup-fold.js';
import { GRANULARITIES } from './rollups.js';
import { healthTable as H } from './schema.js';

export const PRUNE_BATCH = 5000;

const PRUNE_SQL = `DELETE FROM ${H.name} WHERE ${H.col('id')} IN (
  SELECT ${H.col('id')} FROM ${H.name} WHERE ${H.col('checked_at')} < $1 ORDER BY ${H.col('checked_at')} LIMIT $2
)`;

const PRUNE_ROLLUPS_SQL = (table: string): string => `DELETE FROM ${table} WHERE (realm_id, period_start) IN (
  SELECT realm_id, period_start FROM ${table} WHERE period_start < $1 ORDER BY period_start LIMIT $2
)`;

export interface PruneOutcome {
  readonly deleted: number;
  readonly batches: number;
  readonly cutoff: Date;
  /** Rollup rows (half hours and days) deleted, older than `cutoff` of their own. */
  readonly rollups: { readonly deleted: number; readonly cutoff: Date };
}

export interface PruneOptions {
  batchSize?: number;
  now?: Date;
  /** ROLLUP_RETENTION_DAYS. */
  rollupRetentionDays?: number;
}

/** Deletes with `sql` ($1 cutoff, $2 batch size) until a batch comes back short. */
async function deleteInBatches(db: Queryable, sql: string, cutoff: Date, batchSize: number): Promise<{ deleted: number; batches: number }> {
  let deleted = 0;
  let batches = 0;
  for (;;) {
    const result = await db.query(sql, [cutoff, batchSize]);
    const n = result.rowCount ?? 0;
    deleted += n;
    batches++;
    if (n < batchSize) return { deleted, batches };
  }
}

export async function pruneHistory(db: Queryable, retentionDays: number, log: Logger, opts: PruneOptions = {}): Promise<PruneOutcome> {
  const batchSize = opts.batchSize ?? PRUNE_BATCH;
  const now = (opts.now ?? new Date()).getTime();
  const cutoff = new Date(now - retentionDays * 86_400_000);
  // Said first: from now on no fold re-reads a half hour whose raw rows this prune may cut into.
  await db.query(RECORD_PRUNE_SQL, [cutoff]);
  const { deleted, batches } = await deleteInBatches(db, PRUNE_SQL, cutoff, batchSize);
  const rollupRetentionDays = opts.rollupRetentionDays ?? DEFAULT_ROLLUP_RETENTION_DAYS;
  const rollupCutoff = new Date(now - rollupRetentionDays * 86_400_000);
  let rollupsDeleted = 0;
  for (const g of GRANULARITIES) rollupsDeleted += (await deleteInBatches(db, PRUNE_ROLLUPS_SQL(g.table), rollupCutoff, batchSize)).deleted;
  // Alert history and silences are kept longer (incident-queries.ts), on the same schedule.
  await pruneAlertHistory(db, retentionDays, log, { now: opts.now, batchSize });
  log.info(
    { event: LogEvent.historyPruned, deleted, batches, cutoff, retentionDays, rollupsDeleted, rollupCutoff, rollupRetentionDays },
    `pruned ${deleted} health row(s) older than ${retentionDays} days and ${rollupsDeleted} rollup row(s) older than ${rollupRetentionDays} days`,
  );
  return { deleted, batches, cutoff, rollups: { deleted: rollupsDeleted, cutoff: rollupCutoff } };
}
