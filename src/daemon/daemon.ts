/**
 * The long-running monitor: start-up (database, migrations, schema, spool, alert state, health
 * server, scheduler), the probe cycle, and an orderly shutdown. Every failure ends up somewhere
 * a human sees it: a log event, an alert, readiness, or the exit code.
 */
import { access, constants } from 'node:fs/promises';
import cron, { type ScheduledTask } from 'node-cron';
import type { Config } from '../config.js';
import { connectionFailure, createPool, isDatabaseUnavailable, isSchemaGap, withClient, type Pool } from '../db/pool.js';
import { forEachLimited } from '../for-each-limited.js';
import { migrate, migrationStatus } from '../db/migrate.js';
import { pruneHistory } from '../db/prune.js';
import { StatusReader } from '../db/status.js';
import { describeProblem, verifySchema } from '../db/verify.js';
import { Escalator } from '../escalate/escalator.js';
import { escalateProbeResult, tokenUnreadableSummary } from '../escalate/probe-escalation.js';
import { WebhookNotifier } from '../escalate/notifier.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { HealthServer } from '../http/server.js';
import { Metrics } from '../http/metrics.js';
import { LogEvent, RepeatLimiter, type Logger, type SecretRegistry } from '../log.js';
import { Prober, type ProbeOutcome } from '../probe/prober.js';
import { TokenCipher } from '../quickbooks/cipher.js';
import { IntuitOAuth } from '../quickbooks/oauth.js';
import { ErrorCode } from '../quickbooks/outcome.js';
import { RealmDisconnectedError, REFRESH_ANSWER_TIMEOUT_MS, TokenStore } from '../quickbooks/token-store.js';
import { describeDbFailure, FatalError, Recorder, type DbOutcome } from '../recorder/recorder.js';
import { Spool } from '../recorder/spool.js';
import { HealthState } from '../health/state.js';
import { SchemaWatch } from '../schema-watch/watch.js';

/** The daily retention prune runs at 03:17 local time, away from the top of the hour. */
export const PRUNE_SCHEDULE = '17 3 * * *';
const DB_CHECK_INTERVAL_MS = 5000;
const HEARTBEAT_MS = 1000;

export class Daemon {
  readonly state = new HealthState();
  readonly metrics = new Metrics(this.state);
  /** Called with a failure the daemon cannot carry on after (neither DB nor spool writable). */
  onFatal: (err: FatalError) => void = () => undefined;

  private readonly pool: Pool;
  private readonly spool: Spool;
  private readonly notifier: WebhookNotifier;
  private readonly escalator: Escalator;
  private readonly recorder: Recorder;
  private readonly store: TokenStore;
  private readonly prober: Prober;
  private readonly server: HealthServer;
  /** SCHEMA_WATCH_*: the application's tables and queries, watched on the daemon's pool (catalog reads only). */
  private readonly schemaWatch: SchemaWatch | undefined;
  private tasks: ScheduledTask[] = [];
  private probeTask: ScheduledTask | undefined;
  private timers: NodeJS.Timeout[] = [];
  private knownRealms: string[] = [];
  /** Realms the staleness check has raised `monitor_stalled` for. */
  private readonly stalled = new Set<string>();
  /** Warnings an outage repeats every few seconds are written once a minute, with a count. */
  private readonly repeats = new RepeatLimiter();
  private cycle: Promise<void> | undefined;
  private cycleDbOutcome: DbOutcome | undefined;
  private dbCheckRunning = false;
  private stopping: Promise<void> | undefined;
  address: { host: string; port: number } | undefined;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    secrets: SecretRegistry,
    version: string,
  ) {
    this.pool = createPool(
      { databaseUrl: config.databaseUrl, applicationName: 'qbo-health-monitor', max: config.probeConcurrency + 3, statementTimeoutMs: 30_000, connectionTimeoutMs: 5000 },
      log,
    );
    this.spool = new Spool(config.spoolDir, log);
    this.notifier = new WebhookNotifier(config.alertWebhookUrl, log);
    this.escalator = new Escalator(this.pool, this.notifier, log, config);
    this.recorder = new Recorder(
      this.pool,
      this.spool,
      log,
      (outcome) => this.noteDbOutcome(outcome),
      (replay) => this.metrics.replayed.inc(replay.replayed),
    );
    const oauth = IntuitOAuth.fromConfig(config);
    this.store = new TokenStore(this.pool, TokenCipher.fromConfig(config), oauth, secrets, log);
    this.prober = new Prober(this.store, { ...config, apiBaseUrl: config.qboApiBaseUrl }, log, secrets);
    this.server = new HealthServer(
      this.state,
      this.metrics,
      { healthToken: config.healthToken, refreshTokenWarnDays: config.refreshTokenWarnDays, version, status: new StatusReader(config.databaseUrl, log) },
      log,
    );
    this.state.openAlerts = () => this.escalator.openAlerts();
    this.schemaWatch =
      config.schemaWatchManifest === undefined && config.schemaWatchQueries === undefined
        ? undefined
        : new SchemaWatch(
            this.pool,
            this.escalator,
            log,
            { manifestFile: config.schemaWatchManifest, queriesDir: config.schemaWatchQueries, schedule: config.schemaWatchSchedule },
            (status) => (this.state.schemaWatch = status),
          );
  }

  /** Start-up in the contract's order; any failure closes what was opened and throws an OperatorError. */
  static async start(config: Config, log: Logger, secrets: SecretRegistry, version: string): Promise<Daemon> {
    const daemon = new Daemon(config, log, secrets, version);
    try {
      await daemon.boot();
    } catch (err) {
      await daemon.release().catch((releaseErr: unknown) => {
        log.warn({ event: LogEvent.daemonCleanupFailed, err: releaseErr }, 'cleanup after a failed start failed');
      });
      // PostgreSQL going away after the first SELECT 1 (migrations, schema check, alert state) is
      // as temporary as it being away before it: 75, so PM2 retries, not 1.
      if (!(err instanceof OperatorError) && isDatabaseUnavailable(err)) throw connectionFailure(err);
      throw err;
    }
    return daemon;
  }

  private async boot(): Promise<void> {
    const { config, log } = this;
    // A manifest or queries directory that cannot be used is configuration (exit 78), found first.
    await this.schemaWatch?.loadInputs();
    await withClient(this.pool, (c) => c.query('SELECT 1'));
    this.markDb(true, undefined);
    if (config.migrateOnStart) await migrate(this.pool, log);
    else await refuseChangedMigrations(this.pool);
    const problems = await verifySchema(this.pool);
    if (problems.length > 0) {
      const lines = problems.map(describeProblem);
      throw new SchemaMismatchError(`the database schema does not match this release:\n  ${lines.join('\n  ')}\nRun \`qbhealth migrate\` (or start with MIGRATE_ON_START=true)`, lines);
    }
    this.state.schema = { verified: true, error: undefined };

    try {
      await this.spool.open();
      await access(config.spoolDir, constants.W_OK);
    } catch (err) {
      throw new OperatorError(`SPOOL_DIR ${config.spoolDir} is not a writable directory (${coerceError(err).message}); results could not be kept through a database outage. Fix its permissions or point SPOOL_DIR elsewhere`, ExitCode.configInvalid, { cause: err });
    }
    this.state.spoolPending = this.spool.pending;
    if (this.spool.pending > 0) {
      log.warn({ event: LogEvent.spoolFound, pending: this.spool.pending }, `${this.spool.pending} result(s) left in the spool by an earlier run; replaying`);
      await this.recorder.replaySpool();
      this.state.spoolPending = this.spool.pending;
    }
    const restored = await this.escalator.load();
    if (restored > 0) log.info({ event: LogEvent.alertsRestored, openAlerts: restored }, `${restored} open alert(s) restored; they will not be raised again`);
    await this.schemaWatch?.start();
    await this.checkTokensReadable();

    try {
      const bound = await this.server.listen(config.host, config.port);
      this.address = { host: bound.address, port: bound.port };
    } catch (err) {
      throw new OperatorError(`cannot listen on ${config.host}:${config.port} for the health endpoints (${coerceError(err).message}); free the port or set PORT`, ExitCode.temporaryFailure, { cause: err });
    }
    this.startScheduler();
    this.startTimers();
  }

  private startScheduler(): void {
    const { config, log } = this;
    cron.setLogger({
      info: (message) => log.debug({ component: 'node-cron' }, message),
      warn: (message) => log.warn({ event: LogEvent.schedulerMissed, component: 'node-cron' }, message),
      error: (message, err) => log.error({ event: LogEvent.schedulerTickFailed, component: 'node-cron', err: err ?? message }, String(message)),
      debug: (message) => log.debug({ component: 'node-cron' }, String(message)),
    });
    const probe = cron.schedule(config.probeSchedule, () => this.tick(), { name: 'probe-cycle', noOverlap: true, suppressMissedWarning: true });
    probe.on('execution:overlap', () => {
      // The scheduler is alive; the previous cycle is still running (slow realms, many realms).
      this.state.noteTick(new Date(), probe.getNextRun() ?? undefined);
      this.metrics.ticks.inc({ outcome: 'overlap' });
      log.warn({ event: LogEvent.schedulerOverlap }, 'a probe cycle is still running at the next tick; this tick is skipped');
    });
    probe.on('execution:missed', (ctx) => {
      this.metrics.ticks.inc({ outcome: 'missed' });
      log.warn({ event: LogEvent.schedulerMissed, scheduledFor: ctx.date }, 'a scheduled tick was missed (the event loop was busy or the clock jumped)');
    });
    const prune = cron.schedule(PRUNE_SCHEDULE, () => this.prune(), { name: 'history-prune', noOverlap: true });
    this.tasks = [probe, prune];
    const [a, b] = probe.getNextRuns(2);
    const periodMs = a && b ? b.getTime() - a.getTime() : 60_000;
    this.state.probeTimeoutMs = config.probeTimeoutMs;
    this.state.nextTickDueAt = probe.getNextRun() ?? undefined;
    this.probeTask = probe;
    this.state.maxTickGapMs = 3 * periodMs + 30_000;
  }

  private startTimers(): void {
    let expected = Date.now() + HEARTBEAT_MS;
    const heartbeat = setInterval(() => {
      const now = Date.now();
      this.state.eventLoopLagMs = Math.max(0, now - expected);
      expected = now + HEARTBEAT_MS;
      this.checkStaleness(now);
    }, HEARTBEAT_MS);
    const dbCheck = setInterval(() => void this.checkDatabase(), DB_CHECK_INTERVAL_MS);
    heartbeat.unref();
    dbCheck.unref();
    this.timers = [heartbeat, dbCheck];
  }

  /** Readiness and recovery: is PostgreSQL back, is the schema whole again, is there a spool to replay? */
  private async checkDatabase(): Promise<void> {
    if (this.dbCheckRunning || this.state.shuttingDown) return;
    this.dbCheckRunning = true;
    try {
      await withClient(this.pool, (c) => c.query('SELECT 1'));
      this.markDb(true, undefined);
      // Rotated tokens only this process holds are the one thing that cannot be re-created.
      if (this.store.unsavedRealms().length > 0) await this.storeUnsavedTokens();
      if (!this.state.schema.verified) {
        const problems = await verifySchema(this.pool);
        this.state.schema = problems.length === 0 ? { verified: true, error: undefined } : { verified: false, error: problems.map(describeProblem).join('; ') };
      }
      if (this.state.schema.verified && this.spool.pending > 0 && !this.cycle) {
        await this.recorder.replaySpool();
        this.state.spoolPending = this.spool.pending;
      }
    } catch (err) {
      this.markDb(false, coerceError(err).message);
      const admitted = this.repeats.admit('db-check');
      if (admitted) this.log.warn({ event: LogEvent.dbConnectionError, err, ...admitted }, 'PostgreSQL health check failed (repeats are counted, not logged, for a minute)');
    } finally {
      this.dbCheckRunning = false;
    }
    // A running cycle applies its own outcome when it ends: applied here, a success later in that
    // cycle would reset the count of a failure that repeats every cycle.
    if (!this.cycle) this.applyDbOutcome();
    await this.escalator.persist();
  }

  private markDb(reachable: boolean, error: string | undefined): void {
    const was = this.state.db.reachable;
    this.state.db = { reachable, checkedAt: new Date(), error };
    if (reachable && !was && this.tasks.length > 0) {
      const suppressed = this.repeats.clear('db-check') + this.repeats.clear('list-realms');
      this.log.info({ event: LogEvent.dbRecovered, suppressed }, 'PostgreSQL is reachable again');
    }
  }

  /** Database outcomes within one cycle (or check) count once: the worst one. */
  private noteDbOutcome(outcome: DbOutcome): void {
    if (!outcome.ok) {
      if (outcome.kind === 'schema') this.state.schema = { verified: false, error: outcome.summary };
      if (isDatabaseUnavailable(outcome.err)) this.markDb(false, outcome.err.message);
    }
    // A failure outweighs a success, and a schema gap outweighs an unreachable database.
    const current = this.cycleDbOutcome;
    if (!current || (!outcome.ok && (current.ok || outcome.kind === 'schema'))) this.cycleDbOutcome = outcome;
  }

  private applyDbOutcome(): void {
    const outcome = this.cycleDbOutcome;
    this.cycleDbOutcome = undefined;
    if (!outcome) return;
    if (outcome.ok) {
      this.escalator.succeed('', 'database');
      this.escalator.succeed('', 'schema');
      return;
    }
    if (outcome.kind === 'schema') {
      this.escalator.fail('', 'schema', { severity: 'critical', immediate: true, summary: outcome.summary, lastError: outcome.err.message });
    } else {
      this.escalator.fail('', 'database', {
        severity: 'critical',
        summary: `${outcome.summary}; {count} consecutive failed database write(s)`,
        lastError: outcome.err.message,
      });
    }
  }

  /**
   * One probe cycle now, outside the schedule, exactly as a tick runs it (results recorded,
   * alerts escalated); resolves when it is done. A cycle already running is waited for instead.
   */
  probeNow(): Promise<void> {
    return this.cycle ?? this.tick();
  }

  private tick(): Promise<void> {
    if (this.state.shuttingDown) return Promise.resolve();
    this.state.noteTick(new Date(), this.probeTask?.getNextRun() ?? undefined);
    const cycle = this.runCycle()
      .then(() => this.metrics.ticks.inc({ outcome: 'completed' }))
      .catch((err: unknown) => {
        this.metrics.ticks.inc({ outcome: 'failed' });
        if (err instanceof FatalError) {
          this.log.fatal({ event: LogEvent.daemonFatal, err }, err.message);
          this.onFatal(err);
          return;
        }
        this.log.error({ event: LogEvent.schedulerTickFailed, err }, 'probe cycle failed');
      })
      .finally(() => {
        this.cycle = undefined;
        this.state.lastTickFinishedAt = new Date();
      });
    this.cycle = cycle;
    return cycle;
  }

  private async listRealms(): Promise<string[]> {
    try {
      this.knownRealms = (await this.store.listRealms()).map((r) => r.realmId);
    } catch (err) {
      if (!isDatabaseUnavailable(err) && !isSchemaGap(err)) throw err;
      const admitted = this.repeats.admit('list-realms');
      if (admitted) this.log.warn({ event: LogEvent.dbReadFailed, err, realms: this.knownRealms.length, ...admitted }, 'cannot list realms from PostgreSQL; probing the realms known before (repeats are counted, not logged, for a minute)');
      this.noteDbOutcome(describeDbFailure(err, 'read'));
    }
    return this.knownRealms;
  }

  private async runCycle(): Promise<void> {
    const started = performance.now();
    this.notifier.retryFailed();
    const realms = await this.listRealms();
    const current = new Set(realms);
    for (const id of this.formerRealms(current)) this.forgetRealm(id);
    this.state.retainRealms(current);
    const outcomes = { pass: 0, warn: 0, fail: 0 };
    // A probe slot moves on to its next realm as soon as the result is handed to the recorder;
    // the cycle ends only when every result is in the database or the spool. The first failure
    // to record (fatal: neither could take it) stops the cycle and is rethrown below.
    const recording: Array<Promise<void>> = [];
    let recordFailure: { err: unknown } | undefined;
    await forEachLimited(realms, this.config.probeConcurrency, async (realmId) => {
      if (this.state.shuttingDown || recordFailure) return;
      let outcome: ProbeOutcome;
      try {
        outcome = await this.prober.probe(realmId);
      } catch (err) {
        // Every other failure is a result (Prober.probe); only a realm disconnected meanwhile is not.
        if (!(err instanceof RealmDisconnectedError)) throw err;
        this.forgetRealm(realmId);
        return;
      }
      const { result } = outcome;
      outcomes[result.status]++;
      this.state.observe(result);
      this.metrics.observe(result);
      this.escalateProbe(outcome);
      recording.push(
        this.recorder.record(result).then(
          (where) => {
            if (where === 'spool') this.metrics.spooled.inc();
            this.state.spoolPending = this.spool.pending;
          },
          (err: unknown) => {
            recordFailure ??= { err };
          },
        ),
      );
    });
    await Promise.all(recording);
    if (recordFailure) throw recordFailure.err;
    this.state.spoolPending = this.spool.pending;
    this.applyDbOutcome();
    await this.escalator.persist();
    const durationMs = Math.round(performance.now() - started);
    this.log.info(
      { event: LogEvent.schedulerCycleCompleted, realms: realms.length, ...outcomes, durationMs, spoolPending: this.spool.pending },
      `probe cycle: ${realms.length} realm(s), ${outcomes.pass} passed, ${outcomes.warn} throttled, ${outcomes.fail} failed, ${durationMs} ms`,
    );
  }

  private escalateProbe({ result: r, cause }: ProbeOutcome): void {
    const realm = r.realmId;
    // A result, whatever it says, ends a stall.
    if (this.stalled.delete(realm)) this.escalator.succeed(realm, 'monitor_stalled');
    if (r.errorCode === ErrorCode.databaseUnavailable && (isDatabaseUnavailable(cause) || isSchemaGap(cause))) {
      // PostgreSQL unreachable or missing a table: the whole system's, carried by the database
      // (or schema) alert, not the realm's.
      this.noteDbOutcome(describeDbFailure(cause, 'read'));
      return;
    }
    // A lock or statement timeout, a refused COMMIT on a reachable database: this realm's own,
    // escalated on the realm (probe-escalation.ts).
    escalateProbeResult(this.escalator, r, this.config.refreshTokenWarnDays);
  }

  /**
   * Start-up: every monitored realm's envelopes are opened once. Realms the key cannot open are
   * reported at once (one error line naming them and TOKEN_ENCRYPTION_KEY, and a critical alert
   * each); the daemon stays up, because exiting would silence the monitor while the key is wrong.
   */
  private async checkTokensReadable(): Promise<void> {
    let checked: Awaited<ReturnType<TokenStore['checkReadable']>>;
    try {
      checked = await this.store.checkReadable();
    } catch (err) {
      // Not fatal: each realm's probe reports the same failure as a result.
      this.log.warn({ event: LogEvent.dbReadFailed, what: 'token check at start', err }, 'cannot check at start that the stored tokens can be opened; the probes will report it');
      return;
    }
    const { realms, unreadable } = checked;
    this.knownRealms = realms;
    this.state.expectRealms(realms);
    if (unreadable.length === 0) return;
    this.log.error(
      { event: LogEvent.tokenUnreadable, realms: unreadable.map((u) => u.realmId), monitored: realms.length },
      `TOKEN_ENCRYPTION_KEY cannot open the stored tokens of ${unreadable.length} of ${realms.length} realm(s): ${unreadable.map((u) => u.realmId).join(', ')}. ` +
        'Set TOKEN_ENCRYPTION_KEY to the key they were stored with, or re-import them (`qbhealth import-tokens` / `qbhealth connect`); they are probed and fail meanwhile',
    );
    for (const u of unreadable) {
      this.escalator.fail(u.realmId, 'quickbooks_auth', { severity: 'critical', immediate: true, summary: tokenUnreadableSummary(u.realmId), lastError: u.error });
    }
    await this.escalator.persist();
  }

  /** Realms that were monitored (a result, an alert, a due result) and are no longer listed. */
  private formerRealms(current: ReadonlySet<string>): string[] {
    const seen = new Set([...this.state.realms.keys(), ...this.state.expected.keys(), ...this.escalator.realmsWithState()]);
    return [...seen].filter((id) => !current.has(id));
  }

  /** A realm deleted from the token table or disconnected: no probes, no metrics series, its alerts resolved. */
  private forgetRealm(realmId: string): void {
    const resolved = this.escalator.resolveRealm(realmId, 'realm disconnected by an operator');
    this.stalled.delete(realmId);
    this.metrics.forget(realmId);
    this.state.realms.delete(realmId);
    this.state.expected.delete(realmId);
    this.knownRealms = this.knownRealms.filter((id) => id !== realmId);
    this.log.info({ event: LogEvent.realmForgotten, realmId, resolvedAlerts: resolved }, `realm ${realmId} is no longer monitored (disconnected or removed)`);
  }

  /** Raises `monitor_stalled` for each realm without a recent result, once per stall (see HealthState.stalledRealms). */
  private checkStaleness(now: number): void {
    if (this.state.shuttingDown || this.tasks.length === 0) return;
    for (const s of this.state.stalledRealms(now)) {
      if (this.stalled.has(s.realmId)) continue;
      this.stalled.add(s.realmId);
      const seconds = Math.round(s.sinceMs / 1000);
      this.escalator.fail(s.realmId, 'monitor_stalled', {
        severity: 'critical',
        immediate: true,
        summary: s.lastResultAt
          ? `no probe result for realm ${s.realmId} in the last 3 scheduler ticks (${seconds} s; the last result at ${s.lastResultAt.toISOString()}): the scheduler runs but this realm is not being probed. Look for scheduler.tick_failed and scheduler.overlap lines`
          : `no probe result for realm ${s.realmId} in the 2 scheduler ticks since it became due (${seconds} s): the scheduler runs but this realm is not being probed. Look for scheduler.tick_failed and scheduler.overlap lines`,
      });
    }
  }

  private async prune(): Promise<void> {
    try {
      await pruneHistory(this.pool, this.config.historyRetentionDays, this.log);
    } catch (err) {
      this.log.error({ event: LogEvent.historyPruneFailed, err }, 'the daily history prune failed; it runs again tomorrow (or run `qbhealth prune`)');
    }
  }

  /** Realms that will be probed (for the start-up line); undefined when PostgreSQL cannot say. */
  realmCount(): number {
    return this.knownRealms.length;
  }

  /** SIGINT/SIGTERM: readiness 503 at once, no new ticks, in-flight probes finish, everything flushed and closed. */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.state.shuttingDown = true;
      this.log.info({ event: LogEvent.daemonStopping, reason, inFlight: this.cycle !== undefined }, `stopping (${reason})`);
      await this.stopScheduler();
      // In-flight probes end within PROBE_TIMEOUT_MS; realms not yet started are not started.
      await this.cycle;
      await this.settleTokens();
      await this.recorder.flush();
      await this.escalator.persist();
      await this.notifier.drain(5000);
      await this.release();
      this.log.info({ event: LogEvent.daemonStopped, reason, spoolPending: this.spool.pending }, 'stopped');
    })();
    return this.stopping;
  }

  /**
   * A refresh Intuit may still answer is awaited (its own bound), then rotated pairs only this
   * process holds get one more chance to be stored; whatever is still unsaved is named: those
   * realms' stored refresh tokens are spent, and they must be reconnected.
   */
  private async settleTokens(): Promise<void> {
    const running = await this.store.settle(REFRESH_ANSWER_TIMEOUT_MS + 5000);
    if (this.store.unsavedRealms().length > 0) await this.storeUnsavedTokens();
    const lost = [...new Set([...running, ...this.store.unsavedRealms()])];
    if (lost.length === 0) return;
    this.log.error(
      { event: LogEvent.tokenLost, realms: lost, unanswered: running },
      `stopping with rotated tokens PostgreSQL did not store for realm(s) ${lost.join(', ')}: they are lost, and those realms must be reconnected with \`qbhealth connect\``,
    );
  }

  /**
   * For an exit that cannot wait (a second signal, an uncaught exception): names the realms whose
   * rotated tokens are in flight or unsaved, which the exit loses. Synchronous on purpose.
   */
  reportTokensAtRisk(why: string): void {
    const realms = this.store.tokensAtRisk();
    if (realms.length === 0) return;
    this.log.error(
      { event: LogEvent.tokenLost, realms, why },
      `exiting (${why}) with a token refresh unanswered or unsaved for realm(s) ${realms.join(', ')}: their rotated tokens may be lost; if their next probe fails with auth_invalid_grant, reconnect them with \`qbhealth connect\``,
    );
  }

  /** Stores the rotated pairs only this process holds; a failure keeps them for the next try. */
  private async storeUnsavedTokens(): Promise<void> {
    try {
      await this.store.storeUnsaved();
    } catch (err) {
      this.log.error({ event: LogEvent.tokenUnsaved, realms: this.store.unsavedRealms(), err }, 'rotated tokens kept in memory could not be stored yet; tried again in a few seconds');
    }
  }

  private async stopScheduler(): Promise<void> {
    const tasks = this.tasks;
    this.tasks = [];
    for (const task of tasks) await task.destroy();
  }

  private async release(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    await this.stopScheduler();
    await this.schemaWatch?.stop();
    await this.spool.close();
    await this.server.close();
    await this.pool.end();
  }
}


/** The schema differs from what this release needs (exit 65); `problems` one line each. */
export class SchemaMismatchError extends OperatorError {
  constructor(
    message: string,
    readonly problems: readonly string[],
  ) {
    super(message, ExitCode.schemaMismatch);
    this.name = 'SchemaMismatchError';
  }
}

/**
 * With MIGRATE_ON_START=false the daemon still refuses an applied migration whose file changed on
 * disk, as `qbhealth migrate` does: the schema it would verify is not the one the files describe.
 */
async function refuseChangedMigrations(pool: Pool): Promise<void> {
  const { changed } = await migrationStatus(pool);
  if (changed.length === 0) return;
  const files = changed.map((m) => m.file);
  throw new SchemaMismatchError(
    `applied migration changed since it ran: ${files.join(', ')}. Restore the file(s) as released (the checksum in migrations_applied must match), then start again`,
    files.map((f) => `applied migration changed since it ran: ${f}`),
  );
}
