/**
 * A member's own `database` and `schema` alerts: PostgreSQL unreachable, refusing writes, or
 * missing a table. These cannot travel through PostgreSQL (the state table and the outbox are in
 * the database that is failing), so each member keeps them in memory and sends them to
 * ALERT_WEBHOOK_URL directly, its instance named in the text, with the `dedupKey` every member
 * computes for the same alert, so that a receiver merges what several members sent.
 *
 * Database outcomes within one probe cycle (or one check between cycles) count once: the worst
 * one. A schema gap outweighs an unreachable database, and any failure outweighs a success.
 *
 * Silences of kind `database` (or `schema`) hold these back too, by the rules of silences.ts, but
 * from the silences this member last read while PostgreSQL answered (`silences`, kept by the outbox
 * deliverer's poll), each honoured until it ends. A member that could not read a silence (it
 * started while PostgreSQL was down, or the silence was created after its last read) sends.
 *
 * Each transition is also kept for the incident history (`history`), written once PostgreSQL
 * answers again (the daemon's recovery flushes it).
 */
import { randomUUID } from 'node:crypto';
import type { DbOutcome } from '../db/failure.js';
import { LogEvent, type Logger } from '../log.js';
import { PendingAlertHistory } from './database-alert-history.js';
import type { WebhookNotifier } from './notifier.js';
import { decide, logRecorded, type SilenceLookup } from './silences.js';
import { applyChange, notificationOf, SystemSubject, type AlertKind, type AlertState, type Change, type EscalatorOptions, type Transition } from './transition.js';

/** An alert's incident so far: what was notified, and whether its last transition waits for its silence to end. */
interface IncidentMemory {
  readonly since: number;
  readonly soFar: { notified: boolean; held: boolean };
  pending: boolean;
}

export class DatabaseAlerts {
  private readonly states = new Map<AlertKind, AlertState>();
  private outcome: DbOutcome | undefined;
  private readonly incidents = new Map<AlertKind, IncidentMemory>();
  /** Silences as last read from PostgreSQL (the daemon hands over the outbox deliverer's); none while unset. */
  silences: SilenceLookup | undefined;
  /** Transitions not yet in quickbooks_alert_events. */
  readonly history: PendingAlertHistory;

  constructor(
    private readonly notifier: WebhookNotifier,
    private readonly log: Logger,
    private readonly opts: EscalatorOptions & { readonly instanceId: string },
    private readonly now: () => Date = () => new Date(),
  ) {
    this.history = new PendingAlertHistory(log);
  }

  /** Notes a database outcome of the current cycle (applied by apply()). */
  note(outcome: DbOutcome): void {
    const current = this.outcome;
    if (!current || (!outcome.ok && (current.ok || outcome.kind === 'schema'))) this.outcome = outcome;
  }

  /** Escalates the worst outcome noted since the last call (once per cycle, or per check between cycles). */
  apply(): void {
    this.releaseEnded();
    const outcome = this.outcome;
    this.outcome = undefined;
    if (!outcome) return;
    if (outcome.ok) {
      this.change({ op: 'succeed', kind: 'database' });
      this.change({ op: 'succeed', kind: 'schema' });
      return;
    }
    if (outcome.kind === 'schema') {
      this.change({ op: 'fail', kind: 'schema', failure: { severity: 'critical', immediate: true, summary: outcome.summary, lastError: outcome.err.message } });
    } else {
      this.change({
        op: 'fail',
        kind: 'database',
        failure: { severity: 'critical', summary: `${outcome.summary}; failing for {count} consecutive cycle(s)`, lastError: outcome.err.message },
      });
    }
  }

  openAlerts(): AlertState[] {
    return [...this.states.values()].filter((s) => s.state === 'open');
  }

  private change(change: Change): void {
    const now = this.now();
    const { state, transition } = applyChange(this.states.get(change.kind), SystemSubject.monitor, change, now, this.opts);
    if (state) this.states.set(change.kind, state);
    if (!transition) return;
    const kind = transition.state.kind;
    const since = transition.state.since.getTime();
    let incident = this.incidents.get(kind);
    if (incident?.since !== since) this.incidents.set(kind, (incident = { since, soFar: { notified: false, held: false }, pending: false }));
    const d = decide(transition, incident.soFar, this.silences?.covering(SystemSubject.monitor, kind, now), true);
    incident.pending = d.held && transition.event !== LogEvent.alertResolved;
    if (transition.event === LogEvent.alertResolved) this.incidents.delete(kind);
    this.emit({ ...transition, event: d.event }, { held: d.held, silence: d.silence });
  }

  /** Open alerts a silence held back, notified once no silence covers them. */
  private releaseEnded(): void {
    const now = this.now();
    for (const [kind, incident] of this.incidents) {
      const s = this.states.get(kind);
      if (!incident.pending || s?.state !== 'open' || this.silences?.covering(SystemSubject.monitor, kind, now)) continue;
      s.lastNotifiedAt = now;
      incident.pending = false;
      const event = incident.soFar.notified ? 'alert.repeated' : 'alert.raised';
      incident.soFar.notified = true;
      this.emit({ state: { ...s }, event }, { held: false, silence: undefined, released: true });
    }
  }

  private emit(t: Transition, how: { held: boolean; silence: Parameters<typeof logRecorded>[1]['silence']; released?: boolean }): void {
    const notification = notificationOf(t, { notificationId: randomUUID(), instance: this.opts.instanceId, instanceInText: true });
    logRecorded(this.log, { notification, sent: !how.held, ...how });
    if (!how.held) this.notifier.send(notification);
    const s = t.state;
    this.history.add({
      realmId: s.realmId,
      kind: s.kind,
      event: notification.event,
      severity: s.severity,
      since: s.since,
      // The instant of the transition (a release is told at its own, not the alert's last change).
      at: this.now(),
      consecutiveFailures: s.consecutiveFailures,
      summary: s.summary,
      lastError: s.lastError ?? null,
      errorCode: notification.event === 'alert.resolved' ? null : (s.errorCode ?? null),
      intuitTid: s.intuitTid ?? null,
      reason: t.reason ?? null,
      notificationId: !how.held && this.notifier.configured ? notification.notificationId : null,
      silenced: how.held,
      silenceId: how.silence?.id ?? null,
      instance: this.opts.instanceId,
    });
  }
}
