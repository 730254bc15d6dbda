/**
 * The escalation state machine, per (subject, kind), as pure functions: consecutive failures are
 * counted; at ALERT_AFTER_FAILURES an alert is raised; while it stays open a reminder is due every
 * ALERT_REPEAT_MINUTES; the first success resolves it. Failures retrying cannot fix raise at once
 * (`immediate`). Where the state lives (PostgreSQL for the fleet's alerts, memory for a member's
 * own database alerts) and how notifications travel is the callers' business (escalator.ts,
 * database-alerts.ts); what a transition is, and the words of its notification, are decided here.
 */
import { dedupKey, isSystemSubject, type AlertEvent, type AlertKind, type AlertNotification, type AlertState, type Severity } from '../alert.js';

export { dedupKey, instanceOfSubject, isSystemSubject, SystemSubject, type AlertEvent, type AlertKind, type AlertState, type Severity } from '../alert.js';

export interface Failure {
  readonly severity: Severity;
  /** What is wrong and what to do; `{count}` is replaced by the consecutive-failure count. */
  readonly summary: string;
  readonly lastError?: string | undefined;
  readonly intuitTid?: string | undefined;
  /** The probe's error_code, kept in the alert's history (the incident's cause). */
  readonly errorCode?: string | undefined;
  /** Who it is about, named in a resolution's text (the summary names it in the others). */
  readonly subject?: string | undefined;
  /** Raise at the first failure instead of at the threshold. */
  readonly immediate?: boolean;
}

export interface EscalatorOptions {
  readonly alertAfterFailures: number;
  readonly alertRepeatMinutes: number;
}

/** One thing that happened to a subject: a failure of a kind, a success of a kind, or the end of every alert it has. */
export type Change =
  | { readonly op: 'fail'; readonly kind: AlertKind; readonly failure: Failure }
  | { readonly op: 'succeed'; readonly kind: AlertKind }
  | { readonly op: 'resolve'; readonly kind: AlertKind; readonly reason: string };

/** A transition that must be told: the state after it, and the event. */
export interface Transition {
  readonly state: AlertState;
  readonly event: AlertEvent;
  readonly reason?: string | undefined;
}

export function isQuiet(s: AlertState | undefined): boolean {
  return s === undefined || (s.state === 'resolved' && s.consecutiveFailures === 0);
}

/**
 * Applies `change` to `current` (undefined: no state yet) at `at`. Returns the new state (or
 * undefined when nothing changes) and the transition to notify, if any. `current` is not modified.
 */
export function applyChange(
  current: AlertState | undefined,
  subject: string,
  change: Change,
  at: Date,
  opts: EscalatorOptions,
): { state: AlertState | undefined; transition: Transition | undefined } {
  if (change.op !== 'fail') {
    if (isQuiet(current) || current === undefined) return { state: undefined, transition: undefined };
    const s: AlertState = { ...current };
    const wasOpen = s.state === 'open';
    s.state = 'resolved';
    s.resolvedAt = at;
    let transition: Transition | undefined;
    if (wasOpen) {
      s.lastNotifiedAt = at;
      // The count stays in the notification ("recovered after N failures") and is then reset.
      transition = { state: { ...s }, event: 'alert.resolved', reason: change.op === 'resolve' ? change.reason : undefined };
    }
    s.consecutiveFailures = 0;
    return { state: s, transition };
  }
  const { failure } = change;
  const s: AlertState = isQuiet(current)
    ? {
        realmId: subject,
        kind: change.kind,
        severity: failure.severity,
        state: 'resolved',
        consecutiveFailures: 0,
        since: at,
        lastNotifiedAt: undefined,
        resolvedAt: undefined,
        summary: '',
        lastError: undefined,
        intuitTid: undefined,
      }
    : { ...(current as AlertState) };
  s.consecutiveFailures++;
  s.lastError = failure.lastError;
  s.intuitTid = failure.intuitTid;
  s.errorCode = failure.errorCode;
  if (failure.subject) s.subject = failure.subject;
  s.summary = failure.summary.replaceAll('{count}', String(s.consecutiveFailures));
  if (s.state === 'open') {
    // A warning that became critical is told now, not at the next reminder.
    const escalated = failure.severity === 'critical' && s.severity !== 'critical';
    if (failure.severity === 'critical') s.severity = 'critical';
    const due = (s.lastNotifiedAt?.getTime() ?? 0) + opts.alertRepeatMinutes * 60_000;
    if (at.getTime() < due && !escalated) return { state: s, transition: undefined };
    s.lastNotifiedAt = at;
    return { state: s, transition: { state: { ...s }, event: 'alert.repeated' } };
  }
  if (failure.immediate || s.consecutiveFailures >= opts.alertAfterFailures) {
    s.state = 'open';
    s.severity = failure.severity;
    s.resolvedAt = undefined;
    s.lastNotifiedAt = at;
    return { state: s, transition: { state: { ...s }, event: 'alert.raised' } };
  }
  return { state: s, transition: undefined };
}

/** Who sent a notification, and its identity for receivers. */
export interface NotificationMeta {
  readonly notificationId: string;
  readonly instance: string;
  /** Named in the text: a member's own alert (its database) says which member saw it. */
  readonly instanceInText?: boolean;
}

/** The contract's webhook body for a transition, with the Slack-compatible `text`. */
export function notificationOf(t: Transition, meta: NotificationMeta): AlertNotification {
  const s = t.state;
  const { event, reason } = t;
  const system = isSystemSubject(s.realmId);
  const about = system ? (s.subject ? ` ${s.subject}` : '') : ` ${s.subject ?? `realm ${s.realmId}`}`;
  const since = s.since.toISOString();
  const icon = event === 'alert.resolved' ? ':white_check_mark:' : s.severity === 'critical' ? ':rotating_light:' : ':warning:';
  const verb = event === 'alert.resolved' ? 'RESOLVED' : event === 'alert.repeated' ? 'STILL FAILING' : s.severity.toUpperCase();
  const resolution = reason ? `resolved: ${reason}` : `recovered after ${s.consecutiveFailures} failure(s) since ${since}`;
  const where = meta.instanceInText ? ` (instance ${meta.instance})` : '';
  // The summary names the realm (and company) itself; a resolution says who recovered.
  const text = event === 'alert.resolved' ? `${icon} [${verb}] ${s.kind}${about}${where}: ${resolution}` : `${icon} [${verb}] ${s.kind}${where}: ${s.summary}`;
  return {
    event,
    severity: s.severity,
    kind: s.kind,
    realmId: system ? null : s.realmId,
    summary: s.summary,
    consecutiveFailures: s.consecutiveFailures,
    since,
    lastError: s.lastError ?? null,
    intuitTid: s.intuitTid ?? null,
    ...(reason ? { reason } : {}),
    notificationId: meta.notificationId,
    dedupKey: dedupKey(s.realmId, s.kind),
    instance: meta.instance,
    text,
  };
}
