/**
 * Every daemon folds the closed half hours into the rollups (db/rollup-fold.ts) on a timer: once
 * at start, then every FOLD_INTERVAL_MS. Any number of members may: a fold another one is running
 * is left to it, and folding twice gives the same rows. A failed fold is logged
 * (`rollup.fold_failed`) and caught up by the next one: nothing is lost, the raw rows remain and
 * the dashboard reads them until then.
 */
import { foldClosedPeriods, type FoldOutcome } from '../db/rollup-fold.js';
import type { Queryable } from '../db/pool.js';
import { LogEvent, type Logger } from '../log.js';

export const FOLD_INTERVAL_MS = 60_000;

export interface RollupFolderOptions {
  /** foldGraceMs(PROBE_TIMEOUT_MS). */
  readonly graceMs: number;
  readonly intervalMs?: number;
}

export class RollupFolder {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<FoldOutcome | undefined> | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly log: Logger,
    private readonly opts: RollupFolderOptions,
  ) {}

  /** Folds now, then on the timer. Safe to call twice. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.foldNow(), this.opts.intervalMs ?? FOLD_INTERVAL_MS);
    this.timer.unref();
    void this.foldNow();
  }

  /**
   * One fold (the one in progress, if any); resolves with its outcome, or undefined when it failed
   * (logged at warn: the next one catches up).
   */
  foldNow(): Promise<FoldOutcome | undefined> {
    this.running ??= foldClosedPeriods(this.db, { graceMs: this.opts.graceMs })
      .catch((err: unknown) => {
        this.log.warn({ event: LogEvent.rollupFoldFailed, err }, 'folding closed half hours into the rollups failed; the next fold catches up (the dashboard reads the raw rows meanwhile)');
        return undefined;
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  /** Stops the timer and waits for a fold in progress. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
