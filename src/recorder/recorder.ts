/**
 * Makes every probe result durable: inserted into quickbooks_connection_health when PostgreSQL
 * takes it, otherwise appended to the spool, and replayed from the spool (in order, idempotent)
 * after the next successful write. Results that arrive while a write is in flight are written
 * together in the next statement (group commit). Only when neither the database nor the spool
 * can take a result does recording fail, with a FatalError the daemon turns into exit 75.
 */
import { insertProbeResults } from '../db/health-queries.js';
import { describeDbFailure, type DbOutcome } from '../db/failure.js';
import type { Pool } from '../db/pool.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import type { ProbeResult } from '../probe-result.js';
import type { ReplayOutcome, Spool } from './spool.js';

export class FatalError extends OperatorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.temporaryFailure, options);
    this.name = 'FatalError';
  }
}

interface Pending {
  readonly result: ProbeResult;
  resolve(where: 'database' | 'spool'): void;
  reject(err: unknown): void;
}

const MAX_BATCH = 500;

export class Recorder {
  private queue: Pending[] = [];
  /** A write failing every cycle is logged once a minute, with a count; the spool and the alert say the rest. */
  private readonly repeats = new RepeatLimiter();
  private draining: Promise<void> | undefined;
  /**
   * Now on the database's clock (results are stamped on it): whether a result's half hour may be
   * folded already is judged against it, so a host clock off PostgreSQL's does not miss a re-fold.
   */
  dbNow: () => number = () => Date.now();

  constructor(
    private readonly pool: Pool,
    private readonly spool: Spool,
    private readonly log: Logger,
    private readonly onOutcome: (outcome: DbOutcome) => void,
    /** Told what each completed replay took out of the spool (`qbhealth_spool_replayed_total`). */
    private readonly onReplayed: (outcome: ReplayOutcome) => void = () => undefined,
  ) {}

  /** Resolves once the result is in the database or fsynced in the spool. */
  record(result: ProbeResult): Promise<'database' | 'spool'> {
    return new Promise((resolve, reject) => {
      this.queue.push({ result, resolve, reject });
      this.draining ??= this.drain().finally(() => {
        this.draining = undefined;
      });
    });
  }

  /** Waits until everything handed to record() is durable. */
  async flush(): Promise<void> {
    while (this.draining) await this.draining;
  }

  /** Replays the spool now if it holds anything (also run after every successful write). */
  async replaySpool(): Promise<boolean> {
    if (this.spool.pending === 0) return true;
    try {
      const outcome = await this.spool.replay((batch) => insertProbeResults(this.pool, batch, this.dbNow()));
      this.onReplayed(outcome);
      return true;
    } catch (err) {
      const failure = describeDbFailure(err);
      const admitted = this.repeats.admit(`replay:${failure.kind}`);
      if (admitted) this.log.error({ event: LogEvent.dbWriteFailed, kind: failure.kind, pending: this.spool.pending, err, ...admitted }, `spool replay stopped: ${failure.summary}`);
      this.onOutcome(failure);
      return false;
    }
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_BATCH);
      try {
        const where = await this.write(batch.map((p) => p.result));
        for (const p of batch) p.resolve(where);
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
  }

  private async write(results: ProbeResult[]): Promise<'database' | 'spool'> {
    // Spooled results go first, so the table's order follows the probes' order.
    if (!(await this.replaySpool())) return this.toSpool(results);
    try {
      await insertProbeResults(this.pool, results, this.dbNow());
    } catch (err) {
      const failure = describeDbFailure(err);
      const admitted = this.repeats.admit(`write:${failure.kind}`);
      if (admitted) this.log.error({ event: LogEvent.dbWriteFailed, kind: failure.kind, count: results.length, err, ...admitted }, failure.summary);
      this.onOutcome(failure);
      return this.toSpool(results);
    }
    this.onOutcome({ ok: true });
    for (const key of ['write:database', 'write:schema', 'replay:database', 'replay:schema']) this.repeats.clear(key);
    return 'database';
  }

  private async toSpool(results: ProbeResult[]): Promise<'spool'> {
    try {
      await this.spool.append(results);
    } catch (err) {
      throw new FatalError(
        `neither PostgreSQL nor the spool (${this.spool.dir}) can take probe results: ${coerceError(err).message}. Make SPOOL_DIR writable or bring PostgreSQL back`,
        { cause: err },
      );
    }
    return 'spool';
  }
}
