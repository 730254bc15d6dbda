/**
 * The database watchdog: every few seconds a `SELECT 1` says whether PostgreSQL answers (readiness,
 * the database alert between cycles), and while it does, the recovery work the caller registered
 * runs (rotated tokens only this process holds stored, the schema verified again, the spool
 * replayed). Repeated failures are logged once a minute with a count; the first answer after an
 * outage is logged as `db.recovered`.
 */
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { coerceError } from '../errors.js';
import { isDatabaseUnavailable, withClient, type Pool } from './pool.js';

export interface WatchdogHooks {
  /** PostgreSQL answered (or not: `error`). */
  reachable(ok: boolean, error: string | undefined): void;
  /** Recovery work while PostgreSQL answers; a throw counts as the database failing only when it says PostgreSQL is unavailable. */
  recover(): Promise<void>;
  /** After each check, whatever it found (escalation of the outcome, persisting state). */
  after(): Promise<void>;
}

export class DatabaseWatchdog {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly hooks: WatchdogHooks,
    private readonly intervalMs = 5000,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Lines suppressed since the last `db.recovered` (named in it). */
  clearRepeats(): number {
    return this.repeats.clear('db-check');
  }

  async check(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await withClient(this.pool, (c) => c.query('SELECT 1'));
      this.hooks.reachable(true, undefined);
      try {
        await this.hooks.recover();
        this.repeats.clear('recover');
      } catch (err) {
        // PostgreSQL going away meanwhile is the database failing; anything else (a spool
        // directory it may not read, a replay refused) is that, named, and PostgreSQL stays reachable.
        if (isDatabaseUnavailable(err)) throw err;
        const admitted = this.repeats.admit('recover');
        if (admitted) {
          this.log.warn(
            { event: LogEvent.dbRecoveryFailed, err, ...admitted },
            'PostgreSQL answers, but catching up after it (adopting spools of processes that are gone, replaying the spool, storing rotated tokens, checking the schema) failed; tried again at the next check (repeats are counted, not logged, for a minute)',
          );
        }
      }
    } catch (err) {
      this.hooks.reachable(false, coerceError(err).message);
      const admitted = this.repeats.admit('db-check');
      if (admitted) this.log.warn({ event: LogEvent.dbConnectionError, err, ...admitted }, 'PostgreSQL health check failed (repeats are counted, not logged, for a minute)');
    } finally {
      this.running = false;
    }
    await this.hooks.after();
  }
}
