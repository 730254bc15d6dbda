/**
 * The escalation state machine, per (realm, kind): consecutive failures are counted; at
 * ALERT_AFTER_FAILURES an alert is raised (error log + webhook); while it stays open a reminder
 * goes out every ALERT_REPEAT_MINUTES; the first success resolves it. Failures retrying cannot
 * fix (an invalid_grant, a missing table or column, a refresh token about to expire) raise at
 * once. State lives in quickbooks_alert_state so a restart neither re-pages nor forgets an open
 * alert; while PostgreSQL is down, changes wait in memory and are written when it is back.
 */
import { alertsTable as A } from '../db/schema.js';
import { inTransaction, withClient, type Pool } from '../db/pool.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import type { AlertNotification, WebhookNotifier } from './notifier.js';

export type AlertKind = AlertNotification['kind'];
export type Severity = AlertNotification['severity'];

/**
 * Alert subjects that are no realm. '' is the monitor's own database and schema. The schema watch
 * of the application that shares the database has a subject of its own, so that its `schema`
 * alert and the monitor's never resolve each other (a successful write of ours says nothing about
 * the application's tables). QuickBooks realm ids are digits: a `system:` id is never a realm's.
 * Either goes out with `realmId: null`.
 */
export const SystemSubject = { monitor: '', schemaWatch: 'system:schema-watch' } as const;

export function isSystemSubject(realmId: string): boolean {
  return realmId === SystemSubject.monitor || realmId.startsWith('system:');
}

/** `realmId` '' is the whole system (database, schema); see SystemSubject. */
export interface AlertState {
  readonly realmId: string;
  readonly kind: AlertKind;
  severity: Severity;
  state: 'open' | 'resolved';
  consecutiveFailures: number;
  since: Date;
  lastNotifiedAt: Date | undefined;
  resolvedAt: Date | undefined;
  summary: string;
  lastError: string | undefined;
  intuitTid: string | undefined;
  /** Who the alert is about, e.g. "realm 9130357766 (Acme Ltd)" (memory only; the realm id otherwise). */
  subject?: string | undefined;
}

export interface Failure {
  readonly severity: Severity;
  /** What is wrong and what to do; `{count}` is replaced by the consecutive-failure count. */
  readonly summary: string;
  readonly lastError?: string | undefined;
  readonly intuitTid?: string | undefined;
  /** Who it is about, named in a resolution's text (the summary names it in the others). */
  readonly subject?: string | undefined;
  /** Raise at the first failure instead of at the threshold. */
  readonly immediate?: boolean;
}

export interface EscalatorOptions {
  readonly alertAfterFailures: number;
  readonly alertRepeatMinutes: number;
}

const key = (realmId: string, kind: AlertKind): string => `${realmId}\u0000${kind}`;

const COLUMNS = [
  'realm_id',
  'kind',
  'severity',
  'state',
  'consecutive_failures',
  'since',
  'last_notified_at',
  'resolved_at',
  'summary',
  'last_error',
  'intuit_tid',
  'updated_at',
] as const;

interface AlertRow {
  realm_id: string;
  kind: AlertKind;
  severity: Severity;
  state: 'open' | 'resolved';
  consecutive_failures: number;
  since: Date;
  last_notified_at: Date | null;
  resolved_at: Date | null;
  summary: string;
  last_error: string | null;
  intuit_tid: string | null;
}

const UPSERT_SQL = `${A.insert(COLUMNS)} ON CONFLICT (realm_id, kind) DO UPDATE SET ${COLUMNS.filter((c) => c !== 'realm_id' && c !== 'kind')
  .map((c) => `${c} = EXCLUDED.${c}`)
  .join(', ')}`;

export class Escalator {
  private readonly states = new Map<string, AlertState>();
  private readonly dirty = new Set<string>();
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly pool: Pool,
    private readonly notifier: WebhookNotifier,
    private readonly log: Logger,
    private readonly opts: EscalatorOptions,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Reads open alerts and running failure counts left by an earlier run. */
  async load(): Promise<number> {
    const { rows } = await this.pool.query<AlertRow>(
      `SELECT ${A.columnList(COLUMNS.filter((c) => c !== 'updated_at'))} FROM ${A.name} WHERE state = 'open' OR consecutive_failures > 0`,
    );
    for (const r of rows) {
      this.states.set(key(r.realm_id, r.kind), {
        realmId: r.realm_id,
        kind: r.kind,
        severity: r.severity,
        state: r.state,
        consecutiveFailures: r.consecutive_failures,
        since: r.since,
        lastNotifiedAt: r.last_notified_at ?? undefined,
        resolvedAt: r.resolved_at ?? undefined,
        summary: r.summary,
        lastError: r.last_error ?? undefined,
        intuitTid: r.intuit_tid ?? undefined,
      });
    }
    return rows.filter((r) => r.state === 'open').length;
  }

  openAlerts(): AlertState[] {
    return [...this.states.values()].filter((s) => s.state === 'open');
  }

  isOpen(realmId: string, kind: AlertKind): boolean {
    return this.states.get(key(realmId, kind))?.state === 'open';
  }

  fail(realmId: string, kind: AlertKind, failure: Failure): void {
    const k = key(realmId, kind);
    const at = this.now();
    let s = this.states.get(k);
    if (!s || (s.state === 'resolved' && s.consecutiveFailures === 0)) {
      s = {
        realmId,
        kind,
        severity: failure.severity,
        state: 'resolved',
        consecutiveFailures: 0,
        since: at,
        lastNotifiedAt: undefined,
        resolvedAt: undefined,
        summary: '',
        lastError: undefined,
        intuitTid: undefined,
      };
      this.states.set(k, s);
    }
    s.consecutiveFailures++;
    s.lastError = failure.lastError;
    s.intuitTid = failure.intuitTid;
    if (failure.subject) s.subject = failure.subject;
    s.summary = failure.summary.replaceAll('{count}', String(s.consecutiveFailures));
    this.dirty.add(k);
    if (s.state === 'open') {
      if (failure.severity === 'critical') s.severity = 'critical';
      const due = (s.lastNotifiedAt?.getTime() ?? 0) + this.opts.alertRepeatMinutes * 60_000;
      if (at.getTime() >= due) this.notify(s, LogEvent.alertRepeated, at);
      return;
    }
    if (failure.immediate || s.consecutiveFailures >= this.opts.alertAfterFailures) {
      s.state = 'open';
      s.severity = failure.severity;
      s.resolvedAt = undefined;
      this.notify(s, LogEvent.alertRaised, at);
    }
  }

  succeed(realmId: string, kind: AlertKind): void {
    const k = key(realmId, kind);
    const s = this.states.get(k);
    if (!s || (s.state === 'resolved' && s.consecutiveFailures === 0)) return;
    const wasOpen = s.state === 'open';
    const at = this.now();
    s.state = 'resolved';
    s.resolvedAt = at;
    if (wasOpen) this.notify(s, LogEvent.alertResolved, at);
    s.consecutiveFailures = 0;
    this.dirty.add(k);
  }

  /**
   * A realm no longer monitored (removed from the token table, or disconnected): its open alerts
   * resolve with `reason` (not "recovered"), and its running failure counts end.
   */
  resolveRealm(realmId: string, reason: string): number {
    let resolved = 0;
    const at = this.now();
    for (const [k, s] of this.states) {
      if (s.realmId !== realmId || (s.state === 'resolved' && s.consecutiveFailures === 0)) continue;
      if (s.state === 'open') {
        s.state = 'resolved';
        s.resolvedAt = at;
        this.notify(s, LogEvent.alertResolved, at, reason);
        resolved++;
      }
      s.consecutiveFailures = 0;
      this.dirty.add(k);
    }
    return resolved;
  }

  /** Realms with an open alert or a running failure count. */
  realmsWithState(): Set<string> {
    const realms = new Set<string>();
    for (const s of this.states.values()) if (!isSystemSubject(s.realmId) && (s.state === 'open' || s.consecutiveFailures > 0)) realms.add(s.realmId);
    return realms;
  }

  /** Writes changed states; on failure they stay pending for the next call. */
  async persist(): Promise<boolean> {
    if (this.dirty.size === 0) return true;
    const keys = [...this.dirty];
    try {
      await withClient(this.pool, (client) =>
        inTransaction(client, async () => {
          for (const k of keys) {
            const s = this.states.get(k);
            if (!s) continue;
            await client.query(UPSERT_SQL, [
              s.realmId,
              s.kind,
              s.severity,
              s.state,
              s.consecutiveFailures,
              s.since,
              s.lastNotifiedAt ?? null,
              s.resolvedAt ?? null,
              s.summary,
              s.lastError ?? null,
              s.intuitTid ?? null,
              this.now(),
            ]);
          }
        }),
      );
    } catch (err) {
      const admitted = this.repeats.admit('persist');
      if (admitted) this.log.warn({ event: LogEvent.dbWriteFailed, what: 'alert state', pending: keys.length, err, ...admitted }, 'alert state not saved yet; kept in memory (repeats are counted, not logged, for a minute)');
      return false;
    }
    this.repeats.clear('persist');
    for (const k of keys) this.dirty.delete(k);
    return true;
  }

  private notify(s: AlertState, event: AlertNotification['event'], at: Date, reason?: string): void {
    s.lastNotifiedAt = at;
    const system = isSystemSubject(s.realmId);
    const about = system ? (s.subject ? ` ${s.subject}` : '') : ` ${s.subject ?? `realm ${s.realmId}`}`;
    const fields = {
      event,
      severity: s.severity,
      kind: s.kind,
      realmId: system ? null : s.realmId,
      summary: s.summary,
      consecutiveFailures: s.consecutiveFailures,
      since: s.since.toISOString(),
      lastError: s.lastError ?? null,
      intuitTid: s.intuitTid ?? null,
      ...(reason ? { reason } : {}),
    };
    const icon = event === LogEvent.alertResolved ? ':white_check_mark:' : s.severity === 'critical' ? ':rotating_light:' : ':warning:';
    const verb = event === LogEvent.alertResolved ? 'RESOLVED' : event === LogEvent.alertRepeated ? 'STILL FAILING' : s.severity.toUpperCase();
    const resolution = reason ? `resolved: ${reason}` : `recovered after ${s.consecutiveFailures} failure(s) since ${fields.since}`;
    // The summary names the realm (and company) itself; a resolution says who recovered.
    const text = event === LogEvent.alertResolved ? `${icon} [${verb}] ${s.kind}${about}: ${resolution}` : `${icon} [${verb}] ${s.kind}: ${s.summary}`;
    if (event === LogEvent.alertResolved) this.log.info({ ...fields, event }, text);
    else this.log.error({ ...fields, event }, text);
    this.notifier.send({ ...fields, text });
  }
}
