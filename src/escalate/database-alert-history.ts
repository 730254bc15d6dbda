/**
 * The history rows of a member's own `database` and `schema` alerts. They are made while
 * PostgreSQL is failing, so they cannot be written when they happen: they wait here, in memory,
 * and are written to quickbooks_alert_events once PostgreSQL answers again (the watchdog's
 * recovery), so that the outage shows in the incident history like any other incident.
 *
 * Writing is idempotent: a row already there (same subject, kind, since, instance, event and
 * instant) is not written twice, so a flush whose COMMIT was lost on the wire can be retried.
 * Only this member writes rows under its instance for these kinds, and one flush runs at a time.
 */
import { insertAlertEventOnce, type AlertEventRecord } from '../db/incident-queries.js';
import { inTransaction, withClient, type Pool } from '../db/pool.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';

/** An outage of hours at one repeat per ALERT_REPEAT_MINUTES stays far below this. */
export const PENDING_HISTORY_LIMIT = 1000;

export class PendingAlertHistory {
  private pending: AlertEventRecord[] = [];
  private flushing: Promise<void> | undefined;
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly log: Logger,
    private readonly limit = PENDING_HISTORY_LIMIT,
  ) {}

  get size(): number {
    return this.pending.length;
  }

  add(record: AlertEventRecord): void {
    this.pending.push(record);
    const excess = this.pending.length - this.limit;
    if (excess <= 0) return;
    const dropped = this.pending.splice(0, excess);
    this.log.warn(
      { event: LogEvent.alertHistoryDropped, dropped: dropped.length, oldestAt: dropped[0]?.at.toISOString() },
      `${dropped.length} database alert transition(s) waiting for PostgreSQL were dropped from memory (the oldest first, over ${this.limit}); the incident history will miss them`,
    );
  }

  /**
   * Writes what waits, in one transaction. A failure is logged (once a minute, repeats counted)
   * and keeps the rows for the next call; it is not thrown, so the rest of the recovery runs.
   */
  flush(pool: Pool): Promise<void> {
    this.flushing ??= this.write(pool).finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async write(pool: Pool): Promise<void> {
    const batch = [...this.pending];
    if (batch.length === 0) return;
    try {
      await withClient(pool, (client) =>
        inTransaction(client, async () => {
          for (const record of batch) await insertAlertEventOnce(client, record);
        }),
      );
    } catch (err) {
      const admitted = this.repeats.admit('flush');
      if (admitted) {
        this.log.warn(
          { event: LogEvent.alertHistoryFlushFailed, err, pending: batch.length, ...admitted },
          `writing ${batch.length} database alert transition(s) to the incident history failed; kept in memory and tried again at the next database check (repeats are counted, not logged, for a minute)`,
        );
      }
      return;
    }
    this.repeats.clear('flush');
    // Rows added (or dropped) while the batch was written stay as they are.
    const written = new Set(batch);
    this.pending = this.pending.filter((r) => !written.has(r));
  }
}
