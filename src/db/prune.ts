/**
 * Retention: deletes quickbooks_connection_health rows older than HISTORY_RETENTION_DAYS in
 * bounded batches, each its own short statement on the checked_at index, so pruning a large
 * backlog never holds long locks or one huge transaction.
 */
import { LogEvent, type Logger } from '../log.js';
import { pruneAlertHistory } from './incident-queries.js';
import type { Queryable } from './pool.js';
import { healthTable as H } from './schema.js';

export const PRUNE_BATCH = 5000;

const PRUNE_SQL = `DELETE FROM ${H.name} WHERE ${H.col('id')} IN (
  SELECT ${H.col('id')} FROM ${H.name} WHERE ${H.col('checked_at')} < $1 ORDER BY ${H.col('checked_at')} LIMIT $2
)`;

export interface PruneOutcome {
  readonly deleted: number;
  readonly batches: number;
  readonly cutoff: Date;
}

export async function pruneHistory(db: Queryable, retentionDays: number, log: Logger, opts: { batchSize?: number; now?: Date } = {}): Promise<PruneOutcome> {
  const batchSize = opts.batchSize ?? PRUNE_BATCH;
  const cutoff = new Date((opts.now ?? new Date()).getTime() - retentionDays * 86_400_000);
  let deleted = 0;
  let batches = 0;
  for (;;) {
    const result = await db.query(PRUNE_SQL, [cutoff, batchSize]);
    const n = result.rowCount ?? 0;
    deleted += n;
    batches++;
    if (n < batchSize) break;
  }
  // Alert history and silences are kept longer (incident-queries.ts), on the same schedule.
  await pruneAlertHistory(db, retentionDays, log, { now: opts.now, batchSize });
  log.info({ event: LogEvent.historyPruned, deleted, batches, cutoff, retentionDays }, `pruned ${deleted} health row(s) older than ${retentionDays} days`);
  return { deleted, batches, cutoff };
}
