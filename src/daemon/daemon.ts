/**
 * The daemon's wiring and lifecycle: start-up in the contract's order (database, migrations,
 * schema, spool, alert state, fleet membership, health server, scheduler) and an orderly stop.
 * The work itself lives in its rooms: the probe cycle and its claims beside the prober (probe/),
 * the fleet's heartbeat and view (fleet/), the rules that turn results into alerts and the
 * outbox (escalate/), the database watchdog (db/). Every failure ends up somewhere a human sees
 * it: a log event, an alert, readiness, or the exit code.
 */
import cluster from 'node:cluster';
import { access, constants } from 'node:fs/promises';
import type { Config } from '../config.js';
import { connectionFailure, createPool, isDatabaseUnavailable, withClient, type Pool } from '../db/pool.js';
import { describeDbFailure } from '../db/failure.js';
import { migrate, migrationStatus } from '../db/migrate.js';
import { pruneHistory } from '../db/prune.js';
import { warnWhenRollupsIncomplete } from '../db/rollup-rebuild.js';
import { foldGraceMs } from '../db/rollup-fold.js';
import { pruneOutbox } from '../db/alert-queries.js';
import { StatusReader } from '../db/status.js';
import { describeProblem, verifySchema } from '../db/verify.js';
import { DatabaseWatchdog } from '../db/watchdog.js';
import { DatabaseAlerts } from '../escalate/database-alerts.js';
import { Escalator } from '../escalate/escalator.js';
import { WebhookNotifier } from '../escalate/notifier.js';
import { OutboxDeliverer } from '../escalate/outbox.js';
import { escalateOutcome, stalledSummary, tokenUnreadableSummary } from '../escalate/probe-escalation.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { DeadMansSwitch } from '../fleet/dead-mans-switch.js';
import { Membership, memberIdOf } from '../fleet/membership.js';
import { shareOf } from '../fleet/share.js';
import { FleetWatch } from '../fleet/watch.js';
import { HealthState } from '../health/state.js';
import { HealthServer } from '../http/server.js';
import { Metrics } from '../http/metrics.js';
import { LogEvent, type Logger, type SecretRegistry } from '../log.js';
import { ProbeCycle, type OfflineShare } from '../probe/cycle.js';
import { Prober } from '../probe/prober.js';
import { Scheduler, schedulePeriodMs } from '../probe/scheduler.js';
import { TokenCipher } from '../quickbooks/cipher.js';
import { IntuitOAuth } from '../quickbooks/oauth.js';
import { REFRESH_ANSWER_TIMEOUT_MS, TokenStore } from '../quickbooks/token-store.js';
import { FatalError, Recorder } from '../recorder/recorder.js';
import { RollupFolder } from '../recorder/rollup-folder.js';
import { instanceSpoolDir, Spool } from '../recorder/spool.js';
import { SchemaWatch } from '../schema-watch/watch.js';

export { PRUNE_SCHEDULE } from '../probe/scheduler.js';

const DB_CHECK_INTERVAL_MS = 5000;
const HEARTBEAT_MS = 1000;
/** Delivered notifications are kept this long in the outbox (the daily prune). */
const OUTBOX_RETENTION_DAYS = 7;
/**
 * A realm is due again once this share of the schedule period has passed since its probe: no two
 * probes of a realm closer than half a period, and a realm probed late in one cycle (up to half a
 * period after its tick) is still due at the next tick.
 */
const DUE_SHARE = 0.5;

export class Daemon {
  readonly state = new HealthState();
  readonly metrics = new Metrics(this.state);
  /** Called with a failure the daemon cannot carry on after (neither DB nor spool writable). */
  onFatal: (err: FatalError) => void = () => undefined;

  private readonly pool: Pool;
  private readonly spool: Spool;
  private readonly notifier: WebhookNotifier;
  private readonly escalator: Escalator;
  private readonly dbAlerts: DatabaseAlerts;
  private readonly outbox: OutboxDeliverer;
  private readonly recorder: Recorder;
  /** Folds closed half hours of the raw rows into the rollups (the dashboard's history). */
  private readonly folder: RollupFolder;
  private readonly store: TokenStore;
  private readonly prober: Prober;
  private readonly server: HealthServer;
  private readonly membership: Membership;
  private readonly fleetWatch: FleetWatch;
  private readonly cycleRunner: ProbeCycle;
  private readonly scheduler: Scheduler;
  private readonly watchdog: DatabaseWatchdog;
  private readonly deadMansSwitch: DeadMansSwitch;
  /** SCHEMA_WATCH_*: the application's tables and queries, watched on the daemon's pool (catalog reads only). */
  private readonly schemaWatch: SchemaWatch | undefined;
  private timers: NodeJS.Timeout[] = [];
  /** Realms the staleness check has raised `monitor_stalled` for. */
  private readonly stalled = new Set<string>();
  private cycle: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  address: { host: string; port: number } | undefined;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    secrets: SecretRegistry,
    private readonly version: string,
  ) {
    // The slot (FLEET_INSTANCE_ID) names this daemon to operators; the member is this process.
    const instanceId = config.instanceId;
    const memberId = memberIdOf(instanceId);
    // Every series says which member served it: under PM2 cluster mode one port answers from
    // several processes, and their counters must not be mistaken for one another's.
    this.metrics.registry.setDefaultLabels({ monitor_instance: instanceId });
    this.pool = createPool(
      { databaseUrl: config.databaseUrl, applicationName: 'qbo-health-monitor', max: config.probeConcurrency + 3, statementTimeoutMs: 30_000, connectionTimeoutMs: 5000 },
      log,
    );
    const spoolDir = instanceSpoolDir(config.spoolDir, instanceId);
    this.spool = new Spool(spoolDir, log, undefined, { root: config.spoolDir });
    this.notifier = new WebhookNotifier(config.alertWebhookUrl, log);
    const escalation = { alertAfterFailures: config.alertAfterFailures, alertRepeatMinutes: config.alertRepeatMinutes };
    this.escalator = new Escalator(this.pool, log, { ...escalation, instanceId: memberId, notify: this.notifier.configured });
    this.dbAlerts = new DatabaseAlerts(this.notifier, log, { ...escalation, instanceId });
    this.outbox = new OutboxDeliverer(this.pool, this.notifier, log, { instanceId: memberId });
    // The member's own database and schema alerts honour the silences the outbox last read.
    this.dbAlerts.silences = this.outbox.silences;
    this.escalator.onNotified = () => this.outbox.poke();
    this.recorder = new Recorder(
      this.pool,
      this.spool,
      log,
      (outcome) => this.noteDbOutcome(outcome),
      (replay) => this.metrics.replayed.inc(replay.replayed),
    );
    this.folder = new RollupFolder(this.pool, log, { graceMs: foldGraceMs(config.probeTimeoutMs) });
    const oauth = IntuitOAuth.fromConfig(config);
    this.store = new TokenStore(this.pool, TokenCipher.fromConfig(config), oauth, secrets, log);
    // Results are stamped on the database's clock (the offset the heartbeats measure), so a member
    // whose clock is off does not write a realm's history out of order.
    this.recorder.dbNow = () => Date.now() + this.membership.clockOffsetMs;
    this.prober = new Prober(this.store, { ...config, apiBaseUrl: config.qboApiBaseUrl }, log, secrets, () => new Date(Date.now() + this.membership.clockOffsetMs));
    this.server = new HealthServer(
      this.state,
      this.metrics,
      { healthToken: config.healthToken, refreshTokenWarnDays: config.refreshTokenWarnDays, version, status: new StatusReader(config.databaseUrl, log, { fleetMemberTtlMs: config.fleetMemberTtlMs }) },
      log,
    );
    this.state.openAlerts = () => [...this.escalator.openAlerts(), ...this.dbAlerts.openAlerts()];
    this.membership = new Membership(this.pool, log, { instanceId: memberId, version, heartbeatMs: config.fleetHeartbeatMs, ttlMs: config.fleetMemberTtlMs });
    this.fleetWatch = new FleetWatch(this.pool, this.membership, this.escalator, this.state, log, { heartbeatMs: config.fleetHeartbeatMs, ttlMs: config.fleetMemberTtlMs });
    this.fleetWatch.onGone = (realmId) => this.forgetRealm(realmId);
    this.state.viewMaxAgeMs = 3 * config.fleetHeartbeatMs;
    const periodMs = schedulePeriodMs(config.probeSchedule);
    const dueAfterMs = Math.round(periodMs * DUE_SHARE);
    this.cycleRunner = new ProbeCycle(
      this.pool,
      this.prober,
      {
        observe: (outcome) => {
          this.state.observe(outcome.result, memberId);
          this.metrics.observe(outcome.result);
          // A result, whatever it says, ends a stall.
          if (this.stalled.delete(outcome.result.realmId) || this.escalator.isOpen(outcome.result.realmId, 'monitor_stalled')) this.escalator.succeed(outcome.result.realmId, 'monitor_stalled');
          escalateOutcome(outcome, this.escalator, (o) => this.noteDbOutcome(o), config.refreshTokenWarnDays);
        },
        record: async (result) => {
          const where = await this.recorder.record(result);
          if (where === 'spool') this.metrics.spooled.inc();
          this.state.spoolPending = this.spool.pending;
        },
        forget: (realmId) => this.forgetRealm(realmId),
        offlineShare: () => this.offlineShare(memberId, dueAfterMs),
        databaseFailed: (err) => this.noteDbOutcome(describeDbFailure(err, 'read')),
        shuttingDown: () => this.state.shuttingDown,
      },
      log,
      { instanceId: memberId, batch: config.probeConcurrency, dueAfterMs, leaseMs: config.fleetMemberTtlMs },
    );
    this.membership.probing = () => this.cycleRunner.probing();
    this.scheduler = new Scheduler(config.probeSchedule, this.state, (outcome) => this.metrics.ticks.inc({ outcome }), log, {
      cycle: () => this.runTick(false),
      prune: () => this.prune(),
    });
    this.watchdog = new DatabaseWatchdog(
      this.pool,
      log,
      {
        reachable: (ok, error) => this.markDb(ok, error),
        recover: () => this.recoverDatabase(),
        after: async () => {
          // A running cycle applies its own outcome when it ends: applied here, a success later in
          // that cycle would reset the count of a failure that repeats every cycle.
          if (!this.cycle) this.dbAlerts.apply();
          await this.escalator.persist();
        },
      },
      DB_CHECK_INTERVAL_MS,
    );
    this.deadMansSwitch = new DeadMansSwitch(config.heartbeatUrl, log);
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
    // History older than the rollups (an upgrade, an adoption) is named once: `qbhealth rollup --rebuild`.
    await warnWhenRollupsIncomplete(this.pool, this.log);

    try {
      await this.spool.open();
      await access(this.spool.dir, constants.W_OK);
    } catch (err) {
      if (err instanceof OperatorError) throw err;
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
    await this.membership.join(`${this.address.host}:${this.address.port}`);
    await this.fleetWatch.tick();
    this.fleetWatch.start();
    this.outbox.start();
    this.scheduler.start(config.probeTimeoutMs);
    this.watchdog.start();
    this.folder.start();
    this.startTimers();
  }

  private startTimers(): void {
    let expected = Date.now() + HEARTBEAT_MS;
    const heartbeat = setInterval(() => {
      const now = Date.now();
      this.state.eventLoopLagMs = Math.max(0, now - expected);
      expected = now + HEARTBEAT_MS;
      this.checkStaleness(now);
    }, HEARTBEAT_MS);
    heartbeat.unref();
    this.timers = [heartbeat];
  }

  /** While PostgreSQL answers: the outage's database alerts written to the history, unsaved rotated tokens stored, the schema verified again, the spool replayed. */
  private async recoverDatabase(): Promise<void> {
    // First: the member's database alerts of the outage, for the incident history (never throws).
    await this.dbAlerts.history.flush(this.pool);
    // A spool left by a process that is gone (a crash; a reload's predecessor, once it exited; a
    // slot that does not run any more).
    await this.spool.adoptOrphans();
    this.state.spoolPending = this.spool.pending;
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
  }

  private markDb(reachable: boolean, error: string | undefined): void {
    const was = this.state.db.reachable;
    this.state.db = { reachable, checkedAt: new Date(), error };
    if (reachable && !was && this.scheduler.running) {
      const suppressed = this.watchdog.clearRepeats();
      this.log.info({ event: LogEvent.dbRecovered, suppressed }, 'PostgreSQL is reachable again');
    }
  }

  /** A database outcome (a write, a read, a claim): readiness now, the database alert once per cycle. */
  private noteDbOutcome(outcome: Parameters<DatabaseAlerts['note']>[0]): void {
    if (!outcome.ok) {
      if (outcome.kind === 'schema') this.state.schema = { verified: false, error: outcome.summary };
      if (isDatabaseUnavailable(outcome.err)) this.markDb(false, outcome.err.message);
    }
    this.dbAlerts.note(outcome);
  }

  /**
   * One probe cycle now, outside the schedule, exactly as a tick runs it (results recorded,
   * alerts escalated), claiming every free realm whether due or not; resolves when it is done.
   * A cycle already running is waited for instead.
   */
  probeNow(): Promise<void> {
    return this.cycle ?? this.runTick(true);
  }

  private runTick(force: boolean): Promise<void> {
    if (this.state.shuttingDown) return Promise.resolve();
    const cycle = this.runCycle(force)
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

  private async runCycle(force: boolean): Promise<void> {
    const started = performance.now();
    this.notifier.retryFailed();
    const summary = await this.cycleRunner.run(force);
    this.state.spoolPending = this.spool.pending;
    this.dbAlerts.apply();
    await this.escalator.persist();
    const durationMs = Math.round(performance.now() - started);
    this.log.info(
      {
        event: LogEvent.schedulerCycleCompleted,
        realms: summary.realms,
        pass: summary.pass,
        warn: summary.warn,
        fail: summary.fail,
        lost: summary.lost,
        uncoordinated: summary.uncoordinated,
        instance: this.config.instanceId,
        durationMs,
        spoolPending: this.spool.pending,
      },
      `probe cycle: ${summary.realms} realm(s), ${summary.pass} passed, ${summary.warn} throttled, ${summary.fail} failed, ${durationMs} ms${summary.uncoordinated ? ' (without coordination: PostgreSQL could not hand out work)' : ''}`,
    );
    this.deadMansSwitch.ping();
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

  /**
   * What this member probes while PostgreSQL hands out no work: its share of the realms it knows of,
   * divided among the members it last saw heartbeating (fleet/share.ts), less realms whose last
   * result is not due again. A member that had missed a heartbeat then is left out: it may have
   * died just before PostgreSQL went away, and nobody could take its realms over (better two
   * members probe its realms than none). Before it has read the members it takes every realm.
   */
  private offlineShare(memberId: string, dueAfterMs: number): OfflineShare {
    // The realms listed at start and in the fleet's view, and those it has results of.
    const known = [...new Set([...this.state.expected.keys(), ...this.state.realms.keys()])];
    const members = this.membership.status?.members;
    const beating = (members ?? []).filter((m) => m.live && m.heartbeatAgeMs <= 2 * this.config.fleetHeartbeatMs).map((m) => m.instanceId);
    const among = members === undefined ? [memberId] : [...new Set([...beating, memberId])];
    const share = shareOf(known, among, memberId);
    const dueBy = Date.now() - dueAfterMs;
    return { realms: share.filter((realmId) => (this.state.realms.get(realmId)?.observedAt ?? -Infinity) <= dueBy), known: known.length, members: among.length };
  }

  /** A realm deleted from the token table or disconnected: no probes, no metrics series, its alerts resolved. */
  private forgetRealm(realmId: string): void {
    const resolved = this.escalator.resolveRealm(realmId, 'realm disconnected by an operator');
    this.stalled.delete(realmId);
    this.metrics.forget(realmId);
    this.state.realms.delete(realmId);
    this.state.expected.delete(realmId);
    this.log.info({ event: LogEvent.realmForgotten, realmId, resolvedAlerts: resolved }, `realm ${realmId} is no longer monitored (disconnected or removed)`);
  }

  /**
   * Raises `monitor_stalled` for each realm without a recent result, once per stall (see
   * HealthState.stalledRealms). In a fleet the leader raises it, from the fleet's view.
   */
  private checkStaleness(now: number): void {
    if (this.state.shuttingDown || !this.scheduler.running || !this.membership.isLeader()) return;
    for (const s of this.state.stalledRealms(now)) {
      if (this.stalled.has(s.realmId)) continue;
      this.stalled.add(s.realmId);
      this.escalator.fail(s.realmId, 'monitor_stalled', { severity: 'critical', immediate: true, summary: stalledSummary(s) });
    }
    if (this.escalator.backlog > 0 && !this.cycle) void this.escalator.persist();
  }

  private async prune(): Promise<void> {
    try {
      await pruneHistory(this.pool, this.config.historyRetentionDays, this.log, { rollupRetentionDays: this.config.rollupRetentionDays });
      await pruneOutbox(this.pool, OUTBOX_RETENTION_DAYS);
    } catch (err) {
      this.log.error({ event: LogEvent.historyPruneFailed, err }, 'the daily history prune failed; it runs again tomorrow (or run `qbhealth prune`)');
    }
  }

  /** Realms that will be probed (for the start-up line). */
  realmCount(): number {
    return this.state.expected.size;
  }

  /** SIGINT/SIGTERM: readiness 503 at once, no new ticks, in-flight probes finish, leases handed back, everything flushed and closed. */
  stop(reason: string): Promise<void> {
    this.stopping ??= (async () => {
      this.state.shuttingDown = true;
      // Under PM2 cluster mode the other workers share the port: new polls go to them from now on.
      if (cluster.isWorker) this.server.stopAccepting();
      this.log.info({ event: LogEvent.daemonStopping, reason, inFlight: this.cycle !== undefined }, `stopping (${reason})`);
      await this.scheduler.stop();
      // In-flight probes end within PROBE_TIMEOUT_MS; realms not yet started are handed back.
      await this.cycle;
      await this.settleTokens();
      await this.recorder.flush();
      this.dbAlerts.apply();
      await this.escalator.persist();
      await this.fleetWatch.stop();
      await this.membership.leave();
      await Promise.all([this.notifier.drain(5000), this.outbox.stop(5000), this.deadMansSwitch.settle()]);
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

  private async release(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    this.watchdog.stop();
    await this.scheduler.stop();
    await this.fleetWatch.stop();
    await this.outbox.stop(0);
    await this.schemaWatch?.stop();
    await this.folder.stop();
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
