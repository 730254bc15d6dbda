/**
 * The daemon's schema watch (SCHEMA_WATCH_MANIFEST / SCHEMA_WATCH_QUERIES): the same check as
 * `qbhealth schema check`, at start and on SCHEMA_WATCH_SCHEDULE. Drift raises one `schema` alert
 * at once (critical: retrying cannot bring a dropped column back) naming every missing or changed
 * object, on a subject of its own (SystemSubject.schemaWatch) so the monitor's own schema alert
 * and this one never resolve each other; the first matching check resolves it. It reads catalogs
 * and prepares statements in a rolled-back transaction: it never changes the application's tables.
 * The manifest and the queries are read again at every check, so a deploy that ships a new
 * manifest is watched against it without a restart.
 */
import cron, { type ScheduledTask } from 'node-cron';
import { isDatabaseUnavailable, type Pool } from '../db/pool.js';
import { SystemSubject, type Escalator } from '../escalate/escalator.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { describeResult, driftObjects, loadWatchInputs, matches, runSchemaCheck, type WatchInputs, type WatchSources } from './check.js';

export interface SchemaWatchOptions extends WatchSources {
  readonly schedule: string;
}

/** What `/health` shows as `postgres:schemaWatch`. */
export interface SchemaWatchStatus {
  /** When the last check ended (a verdict or a failure to check). */
  readonly checkedAt: Date;
  /** Missing or changed objects (`table.column`, `table`, `query file`); empty when the schema matches. */
  readonly drift: readonly string[];
  /** Why the last check could not run (no verdict); undefined when it ran. */
  readonly error: string | undefined;
}

/** How many objects an alert summary names before "and N more" (all are in the log line). */
const MAX_NAMED = 100;

export class SchemaWatch {
  private task: ScheduledTask | undefined;
  private running: Promise<void> | undefined;
  private lastDrift = '';
  /** The objects the last verdict found drifted, kept through checks that could not run. */
  private drift: readonly string[] = [];
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly pool: Pool,
    private readonly escalator: Escalator,
    private readonly log: Logger,
    private readonly opts: SchemaWatchOptions,
    private readonly onStatus: (status: SchemaWatchStatus) => void,
  ) {}

  /** Reads and validates the manifest and the queries: a problem is an OperatorError with exit 78. */
  loadInputs(): Promise<WatchInputs> {
    return loadWatchInputs(this.opts);
  }

  /**
   * The first check, then the schedule. A query file PostgreSQL cannot parse stops the start
   * (exit 78) like a bad manifest; PostgreSQL unavailable is reported and checked again later.
   */
  async start(): Promise<void> {
    const inputs = await this.loadInputs();
    await this.checkOnce(inputs, { atStart: true });
    this.task = cron.schedule(this.opts.schedule, () => this.checkNow(), { name: 'schema-watch', noOverlap: true });
  }

  /** One check now (a running one is waited for instead); never throws: failures are logged and shown. */
  checkNow(): Promise<void> {
    this.running ??= this.loadInputs()
      .then((inputs) => this.checkOnce(inputs, { atStart: false }))
      .catch((err: unknown) => this.checkFailed(err))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  async stop(): Promise<void> {
    const task = this.task;
    this.task = undefined;
    if (task) await task.destroy();
    await this.running;
  }

  private async checkOnce(inputs: WatchInputs, { atStart }: { atStart: boolean }): Promise<void> {
    let result: Awaited<ReturnType<typeof runSchemaCheck>>;
    try {
      result = await runSchemaCheck(this.pool, inputs);
    } catch (err) {
      if (atStart && err instanceof OperatorError && err.exitCode === ExitCode.configInvalid) throw err;
      return this.checkFailed(err);
    }
    this.repeats.clear('check');
    const drift = driftObjects(result);
    this.drift = drift;
    this.onStatus({ checkedAt: new Date(), drift, error: undefined });
    const counts = { tables: result.tables, queries: result.queries, durationMs: result.durationMs };
    if (matches(result)) {
      if (this.lastDrift !== '') this.log.info({ event: LogEvent.schemaWatchRestored, ...counts }, 'schema watch: the application schema matches again');
      else this.log[atStart ? 'info' : 'debug']({ event: LogEvent.schemaWatchChecked, ...counts }, 'schema watch: the application schema matches');
      this.lastDrift = '';
      this.escalator.succeed(SystemSubject.schemaWatch, 'schema');
      await this.escalator.persist();
      return;
    }
    const lines = describeResult(result);
    const key = lines.join('\n');
    // Logged when what drifted changes, not at every check while it stays the same (the alert repeats).
    if (key !== this.lastDrift) this.log.error({ event: LogEvent.schemaWatchDrift, differences: lines, ...counts }, `schema watch: ${lines.length} difference(s) from what the application expects: ${lines.join('; ')}`);
    this.lastDrift = key;
    const named = drift.slice(0, MAX_NAMED).join(', ') + (drift.length > MAX_NAMED ? ` and ${drift.length - MAX_NAMED} more` : '');
    this.escalator.fail(SystemSubject.schemaWatch, 'schema', {
      severity: 'critical',
      immediate: true,
      subject: 'application schema (schema watch)',
      summary:
        `the application's schema drifted: ${named} missing or changed (${this.sourcesText()}); the application's queries on them fail. ` +
        'Restore them (run the application\'s migration), or, if the change was intended, write a new manifest with `qbhealth schema snapshot`',
      lastError: lines.slice(0, 20).join('; '),
    });
    await this.escalator.persist();
  }

  private sourcesText(): string {
    return [this.opts.manifestFile ? `SCHEMA_WATCH_MANIFEST ${this.opts.manifestFile}` : '', this.opts.queriesDir ? `SCHEMA_WATCH_QUERIES ${this.opts.queriesDir}` : '']
      .filter(Boolean)
      .join(', ');
  }

  /** No verdict: the alert stays as it was (PostgreSQL down is the database alert's to raise). */
  private checkFailed(thrown: unknown): void {
    const err = coerceError(thrown);
    const why = isDatabaseUnavailable(err) ? `PostgreSQL unavailable (${err.message})` : err.message;
    this.onStatus({ checkedAt: new Date(), drift: this.drift, error: why });
    const admitted = this.repeats.admit('check');
    if (admitted) this.log.warn({ event: LogEvent.schemaWatchCheckFailed, err, ...admitted }, `schema watch: the check could not run: ${why} (repeats are counted, not logged, for a minute)`);
  }
}
