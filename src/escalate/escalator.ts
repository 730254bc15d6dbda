/**
 * The fleet's escalation: alert state per (subject, kind) lives in quickbooks_alert_state and is
 * changed only by a transaction holding the subject's rows FOR UPDATE, on the database's clock;
 * every transition it makes (raised, repeated, resolved) is written to the alert history and, unless
 * a silence holds it back (silences.ts), to the outbox in that same transaction, and delivered by
 * any live member (outbox.ts). Whichever member recorded the probe
 * escalates it, so three members and one Intuit outage make one `alert.raised` per realm, and a
 * restart neither re-pages nor forgets an open alert.
 *
 * fail()/succeed()/resolveRealm() only queue the change and return; changes are applied in order
 * per subject, in batches: one read decides which subjects change at all (a success on a quiet
 * realm, by far the commonest, costs nothing more), and only those take the lock. While
 * PostgreSQL cannot take them, changes wait in memory (bounded) and are applied when it is back.
 * A member's own database and schema alerts cannot travel this way: see database-alerts.ts.
 */
import { ALERT_KINDS } from '../alert.js';
import { lockAlertStates, openAlertStates, readAlertStates, writeAlertState } from '../db/alert-queries.js';
import { inTransaction, withClient, type Pool } from '../db/pool.js';
import { forEachLimited } from '../for-each-limited.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { logRecorded, recordTransitions } from './silences.js';
import {
  applyChange,
  isSystemSubject,
  type AlertKind,
  type AlertState,
  type Change,
  type EscalatorOptions,
  type Failure,
  type Transition,
} from './transition.js';

export { isSystemSubject, SystemSubject, type AlertKind, type AlertState, type Failure, type Severity } from './transition.js';

/** Changes kept while PostgreSQL cannot take them; beyond this the oldest are dropped (logged). */
const MAX_PENDING_CHANGES = 20_000;
/** How long changes gather before they are applied together. */
const GROUP_MS = 20;
/** Subjects read in one statement. */
const BATCH = 500;

const key = (subject: string, kind: AlertKind): string => `${subject}\u0000${kind}`;

export interface FleetEscalatorOptions extends EscalatorOptions {
  /** This member (the webhook body's `instance`). */
  readonly instanceId: string;
  /** Whether notifications are written to the outbox at all (ALERT_WEBHOOK_URL set). */
  readonly notify: boolean;
}

export class Escalator {
  /** Changes not yet applied, in order per subject. */
  private pending = new Map<string, Change[]>();
  private pendingCount = 0;
  /** Open alerts fleet-wide, as last read or changed here (what /health, /metrics and the rules read). */
  private readonly open = new Map<string, AlertState>();
  private draining: Promise<boolean> | undefined;
  private soon: NodeJS.Timeout | undefined;
  private readonly repeats = new RepeatLimiter();
  /** Who each subject is, as the last failure named it. */
  private readonly labels = new Map<string, string>();
  /** Told after a commit that wrote notifications (the outbox deliverer wakes up). */
  onNotified: () => void = () => undefined;

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly opts: FleetEscalatorOptions,
  ) {}

  /** Reads the fleet's open alerts (at start, and on every fleet refresh). */
  async load(): Promise<number> {
    const states = await openAlertStates(this.pool);
    this.open.clear();
    for (const s of states) this.open.set(key(s.realmId, s.kind), s);
    return states.length;
  }

  openAlerts(): AlertState[] {
    return [...this.open.values()];
  }

  isOpen(subject: string, kind: AlertKind): boolean {
    return this.open.has(key(subject, kind));
  }

  /** Realms (not system subjects) with an open alert. */
  realmsWithState(): Set<string> {
    return new Set([...this.open.values()].filter((s) => !isSystemSubject(s.realmId)).map((s) => s.realmId));
  }

  fail(subject: string, kind: AlertKind, failure: Failure): void {
    this.enqueue(subject, { op: 'fail', kind, failure });
  }

  succeed(subject: string, kind: AlertKind): void {
    this.enqueue(subject, { op: 'succeed', kind });
  }

  /**
   * A realm no longer monitored (removed from the token table, or disconnected): its open alerts
   * resolve with `reason` (not "recovered"), and its running failure counts end. Returns how many
   * alerts were open as far as this member knows.
   */
  resolveRealm(subject: string, reason: string): number {
    for (const kind of ALERT_KINDS) this.enqueue(subject, { op: 'resolve', kind, reason });
    return [...this.open.values()].filter((s) => s.realmId === subject).length;
  }

  /** Changes waiting to be applied. */
  get backlog(): number {
    return this.pendingCount;
  }

  /**
   * Applies every queued change; false when PostgreSQL could not take them (they stay queued, in
   * order, for the next call).
   */
  async persist(): Promise<boolean> {
    while (this.draining) await this.draining;
    if (this.pendingCount === 0) return true;
    this.draining = this.drain().finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  private enqueue(subject: string, change: Change): void {
    if (change.op === 'fail' && change.failure.subject) this.labels.set(subject, change.failure.subject);
    const list = this.pending.get(subject);
    if (list) list.push(change);
    else this.pending.set(subject, [change]);
    this.pendingCount++;
    if (this.pendingCount > MAX_PENDING_CHANGES) this.dropOldest();
    // Changes queued together are applied together, a moment later (group commit).
    this.soon ??= setTimeout(() => {
      this.soon = undefined;
      void this.persist();
    }, GROUP_MS);
  }

  private dropOldest(): void {
    const [subject, changes] = this.pending.entries().next().value as [string, Change[]];
    this.pending.delete(subject);
    this.pendingCount -= changes.length;
    this.log.error(
      { event: LogEvent.dbWriteFailed, what: 'alert state', realmId: subject, dropped: changes.length, pending: this.pendingCount },
      `alert state changes for ${subject || 'the monitor'} dropped: more than ${MAX_PENDING_CHANGES} are waiting for PostgreSQL`,
    );
  }

  private async drain(): Promise<boolean> {
    while (this.pending.size > 0) {
      const batch = [...this.pending.entries()].slice(0, BATCH);
      for (const [subject] of batch) this.pending.delete(subject);
      for (const [, changes] of batch) this.pendingCount -= changes.length;
      let failed: unknown;
      const left: Array<[string, Change[]]> = [];
      try {
        const { now, states } = await readAlertStates(
          this.pool,
          batch.map(([s]) => s),
        );
        const changing = batch.filter(([subject, changes]) => simulate(states.filter((s) => s.realmId === subject), subject, changes, now, this.opts).changed);
        await forEachLimited(changing, 2, async ([subject, changes]) => {
          if (failed !== undefined) {
            left.push([subject, changes]);
            return;
          }
          try {
            await this.applyLocked(subject, changes);
          } catch (err) {
            failed ??= err;
            left.push([subject, changes]);
          }
        });
      } catch (err) {
        failed = err;
        left.push(...batch);
      }
      if (failed !== undefined) {
        this.requeue(left);
        const admitted = this.repeats.admit('persist');
        if (admitted) this.log.warn({ event: LogEvent.dbWriteFailed, what: 'alert state', pending: this.pendingCount, err: failed, ...admitted }, 'alert state changes not applied yet; kept in memory, in order (repeats are counted, not logged, for a minute)');
        return false;
      }
    }
    this.repeats.clear('persist');
    return true;
  }

  /** Puts changes that could not be applied back in front of anything queued since. */
  private requeue(left: Array<[string, Change[]]>): void {
    const rest = this.pending;
    this.pending = new Map();
    for (const [subject, changes] of left) this.pending.set(subject, [...changes]);
    for (const [subject, changes] of rest) {
      const list = this.pending.get(subject);
      if (list) list.push(...changes);
      else this.pending.set(subject, changes);
    }
    this.pendingCount = [...this.pending.values()].reduce((n, c) => n + c.length, 0);
  }

  /**
   * One subject's changes under its row locks; in the same transaction, each transition's history
   * row and, unless a silence holds it back, its notification in the outbox (silences.ts).
   */
  private async applyLocked(subject: string, changes: readonly Change[]): Promise<void> {
    const kinds = [...new Set(changes.map((c) => c.kind))];
    const create = [...new Set(changes.filter((c) => c.op === 'fail').map((c) => c.kind))];
    const after: AlertState[] = [];
    const recorded = await withClient(this.pool, (client) =>
      inTransaction(client, async () => {
        const { now, states } = await lockAlertStates(client, subject, kinds, create);
        // Who the alert is about ("realm 9130357766 (Acme Ltd)") is not stored: named from memory.
        const label = this.labels.get(subject);
        for (const s of states) s.subject ??= label;
        const result = simulate(states, subject, changes, now, this.opts);
        for (const s of result.written) await writeAlertState(client, s, now);
        after.push(...result.written);
        return recordTransitions(client, subject, result.transitions, now, this.opts);
      }),
    );
    for (const s of after) {
      if (s.state === 'open') this.open.set(key(s.realmId, s.kind), s);
      else this.open.delete(key(s.realmId, s.kind));
    }
    for (const r of recorded) logRecorded(this.log, r);
    if (recorded.some((r) => r.sent)) this.onNotified();
  }
}

/**
 * Runs `changes` over `states` (the subject's current rows) at `now`: the states to write (those
 * that changed) and the transitions to notify, in order.
 */
function simulate(
  states: readonly AlertState[],
  subject: string,
  changes: readonly Change[],
  now: Date,
  opts: EscalatorOptions,
): { changed: boolean; written: AlertState[]; transitions: Transition[] } {
  const byKind = new Map<AlertKind, AlertState>(states.map((s) => [s.kind, s]));
  const touched = new Set<AlertKind>();
  const transitions: Transition[] = [];
  for (const change of changes) {
    const { state, transition } = applyChange(byKind.get(change.kind), subject, change, now, opts);
    if (state === undefined) continue;
    byKind.set(change.kind, state);
    touched.add(change.kind);
    if (transition) transitions.push(transition);
  }
  const written = [...touched].map((k) => byKind.get(k) as AlertState);
  return { changed: written.length > 0, written, transitions };
}
