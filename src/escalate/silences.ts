/**
 * Silences (maintenance windows) in the escalation, and the history every transition leaves.
 *
 * A transition of an alert that an active silence matches is recorded like any other (the alert
 * state, a row in quickbooks_alert_events marked `silenced`) but makes no outbox row: nothing is
 * queued to be let out later, so a silence that ends leaves no backlog of stale reminders. Then:
 *  - when no silence covers an alert that is still open and whose last transition was held back,
 *    it is notified once: as `alert.raised` if nothing of the incident was ever notified, else as
 *    `alert.repeated` (an escalation held back is told this way). releaseHeldAlerts() does it under
 *    the alert state's row lock, rows claimed with SKIP LOCKED, so one member of a fleet does it
 *    once; the outbox deliverer runs it as it polls;
 *  - the first notification of an incident whose raise was held back is always `alert.raised`;
 *  - a resolution is notified unless the incident's raise was held back and nothing of it was
 *    ever notified (a receiver never hears of an alert only as resolved). A resolution of an
 *    alert the receiver was told of is notified even during a silence: a silence stops paging, and
 *    must not leave an incident open at the receiver.
 */
import { randomUUID } from 'node:crypto';
import type { AlertEvent, AlertKind, AlertNotification } from '../alert.js';
import { insertNotification, lockOpenAlertStatesSkipLocked, writeAlertState } from '../db/alert-queries.js';
import { heldOpenAlerts, incidentKey, incidentsSoFar, insertAlertEvent, type IncidentSoFar } from '../db/incident-queries.js';
import { inTransaction, withClient, type Pool, type Queryable } from '../db/pool.js';
import { activeSilences, silenceCovers, type ActiveSilence } from '../db/silence-queries.js';
import { LogEvent, type Logger } from '../log.js';
import { notificationOf, type Transition } from './transition.js';

export type { ActiveSilence } from '../db/silence-queries.js';

/** Of `silences` (those active, as PostgreSQL read them), one that covers the alert: the one that lasts longest. */
export function coveringSilence(silences: readonly ActiveSilence[], subject: string, kind: AlertKind): ActiveSilence | undefined {
  return silences.filter((s) => silenceCovers(s, subject, kind)).sort((a, b) => b.endsAt.getTime() - a.endsAt.getTime())[0];
}

export interface SilenceLookup {
  covering(subject: string, kind: AlertKind, at: Date): ActiveSilence | undefined;
}

/**
 * The silences last read from PostgreSQL, for the alerts a member sends directly (its own
 * database alerts, database-alerts.ts), which must go out when PostgreSQL does not answer. Each
 * silence read is honoured until it ends: while PostgreSQL is away no silence can be created or
 * removed either. A member that has not read them (started during the outage, or the silence was
 * created after its last read) knows of none, and its alerts go out.
 */
export class SilenceCache implements SilenceLookup {
  private silences: readonly ActiveSilence[] = [];

  update(silences: readonly ActiveSilence[]): void {
    this.silences = silences;
  }

  covering(subject: string, kind: AlertKind, at: Date): ActiveSilence | undefined {
    // Every silence read had started by the database's clock (this host's may lag it a little): each lasts until it ends.
    return coveringSilence(
      this.silences.filter((s) => at.getTime() < s.endsAt.getTime()),
      subject,
      kind,
    );
  }
}

/** What becomes of a transition: notified (as `event`) or held back. */
export interface Decision {
  readonly event: AlertEvent;
  readonly notify: boolean;
  /** Held back because of a silence: `silence` when one covers it now, none for a resolution of an incident never notified. */
  readonly held: boolean;
  readonly silence: ActiveSilence | undefined;
}

/** The rules at the top of this file, for one transition; updates `soFar` as if it were carried out. */
export function decide(t: Transition, soFar: IncidentSoFar, silence: ActiveSilence | undefined, notifying: boolean): Decision {
  const neverTold = soFar.held && !soFar.notified;
  let decision: Decision;
  if (t.event === 'alert.resolved') decision = { event: t.event, notify: !neverTold, held: neverTold, silence: undefined };
  else if (silence) decision = { event: t.event, notify: false, held: true, silence };
  else decision = { event: neverTold ? 'alert.raised' : t.event, notify: true, held: false, silence: undefined };
  if (decision.held) soFar.held = true;
  if (decision.notify && notifying) soFar.notified = true;
  return decision;
}

/** A transition as carried out: its body (written to the outbox when `sent`, always logged). */
export interface Recorded {
  readonly notification: AlertNotification;
  readonly sent: boolean;
  readonly held: boolean;
  readonly silence: ActiveSilence | undefined;
  /** Notified because the silence that held it back ended. */
  readonly released?: boolean;
}

export interface RecordOptions {
  readonly instanceId: string;
  /** Whether notifications are written to the outbox at all (ALERT_WEBHOOK_URL set). */
  readonly notify: boolean;
}

/**
 * Inside the transaction that changed `subject`'s alert states (holding their rows): decides each
 * transition against the silences active at `now`, writes the outbox rows of those notified and one
 * history row for each. Returns them, in order, for the log.
 */
export async function recordTransitions(tx: Queryable, subject: string, transitions: readonly Transition[], now: Date, opts: RecordOptions): Promise<Recorded[]> {
  if (transitions.length === 0) return [];
  // now() is the transaction's start, the instant `now` was read at (to the microsecond, which `now` is not).
  const silences = await activeSilences(tx);
  const soFar = await incidentsSoFar(
    tx,
    subject,
    transitions.map((t) => ({ kind: t.state.kind, since: t.state.since })),
  );
  const recorded: Recorded[] = [];
  for (const t of transitions) {
    const key = incidentKey(t.state.kind, t.state.since);
    const incident = soFar.get(key) ?? { notified: false, held: false };
    soFar.set(key, incident);
    const d = decide(t, incident, coveringSilence(silences, subject, t.state.kind), opts.notify);
    const notification = notificationOf({ ...t, event: d.event }, { notificationId: randomUUID(), instance: opts.instanceId });
    const sent = d.notify && opts.notify;
    if (sent) await insertNotification(tx, notification);
    await insertAlertEvent(tx, eventRecord(notification, t, now, { sent, held: d.held, silence: d.silence, instance: opts.instanceId }));
    recorded.push({ notification, sent, held: d.held, silence: d.silence });
  }
  return recorded;
}

function eventRecord(n: AlertNotification, t: Transition, at: Date, o: { sent: boolean; held: boolean; silence: ActiveSilence | undefined; instance: string }): Parameters<typeof insertAlertEvent>[1] {
  const s = t.state;
  return {
    realmId: s.realmId,
    kind: s.kind,
    event: n.event,
    severity: s.severity,
    since: s.since,
    at,
    consecutiveFailures: s.consecutiveFailures,
    summary: s.summary,
    lastError: s.lastError ?? null,
    // A resolution carries no failure of its own.
    errorCode: n.event === 'alert.resolved' ? null : (s.errorCode ?? null),
    intuitTid: s.intuitTid ?? null,
    reason: t.reason ?? null,
    notificationId: o.sent ? n.notificationId : null,
    silenced: o.held,
    silenceId: o.silence?.id ?? null,
    instance: o.instance,
  };
}

/** Logs a transition as carried out: the notification's event, or `alert.silenced` for one held back. */
export function logRecorded(log: Logger, r: Recorded): void {
  const { text, ...fields } = r.notification;
  if (r.held) {
    const { notificationId: _unsent, ...rest } = fields;
    log.warn(
      { ...rest, event: LogEvent.alertSilenced, alert: fields.event, silenceId: r.silence?.id ?? null, silenceEndsAt: r.silence?.endsAt ?? null },
      r.silence ? `silenced (silence ${r.silence.id} until ${r.silence.endsAt.toISOString()}): ${text}` : `not notified (its raise was silenced and never notified): ${text}`,
    );
  } else if (fields.event === 'alert.resolved') log.info(r.released ? { ...fields, silenceEnded: true } : fields, text);
  else log.error(r.released ? { ...fields, silenceEnded: true } : fields, text);
}

/** At most this many held alerts are released by one transaction; the rest at the next poll. */
const RELEASE_BATCH = 50;

export interface ReleaseOptions {
  readonly instanceId: string;
  /** Filled with the silences active now, for this member's own database alerts. */
  readonly cache?: SilenceCache;
}

/**
 * Notifies, once fleet-wide, the open alerts whose last transition a silence held back and that no
 * silence covers now (see the top of this file). Reads the active silences into `cache` on the
 * way. Returns the notifications written to the outbox.
 */
export async function releaseHeldAlerts(pool: Pool, log: Logger, opts: ReleaseOptions): Promise<AlertNotification[]> {
  const released = await withClient(pool, (client) => inTransaction(client, () => releaseHeldAlertsIn(client, opts)));
  for (const r of released) logRecorded(log, r);
  return released.map((r) => r.notification);
}

/** releaseHeldAlerts' work inside the caller's transaction (READ COMMITTED: each statement sees what committed before it). */
export async function releaseHeldAlertsIn(tx: Queryable, opts: ReleaseOptions): Promise<Recorded[]> {
  const { rows } = await tx.query<{ now: Date }>('SELECT now() AS now');
  const now = rows[0]?.now ?? new Date();
  const silences = await activeSilences(tx);
  opts.cache?.update(silences);
  const free = (held: Awaited<ReturnType<typeof heldOpenAlerts>>): typeof held => held.filter((h) => !coveringSilence(silences, h.realmId, h.kind));
  const candidates = free(await heldOpenAlerts(tx)).slice(0, RELEASE_BATCH);
  if (candidates.length === 0) return [];
  const locked = await lockOpenAlertStatesSkipLocked(tx, candidates);
  if (locked.length === 0) return [];
  // Re-read now that the rows are ours: another member may have released them after the read above.
  const still = free(await heldOpenAlerts(tx, locked));
  const made: Recorded[] = [];
  for (const h of still) {
    const state = locked.find((s) => s.realmId === h.realmId && s.kind === h.kind && s.since.getTime() === h.since.getTime());
    if (!state) continue;
    state.lastNotifiedAt = now;
    const t: Transition = { state: { ...state }, event: h.notifiedBefore ? 'alert.repeated' : 'alert.raised' };
    const notification = notificationOf(t, { notificationId: randomUUID(), instance: opts.instanceId });
    await writeAlertState(tx, state, now);
    await insertNotification(tx, notification);
    await insertAlertEvent(tx, eventRecord(notification, t, now, { sent: true, held: false, silence: undefined, instance: opts.instanceId }));
    made.push({ notification, sent: true, held: false, silence: undefined, released: true });
  }
  return made;
}
