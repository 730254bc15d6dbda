/**
 * The alert vocabulary shared by the rooms that raise, store, deliver and show alerts: the webhook
 * body (the contract's, with notificationId, dedupKey and instance), an alert's state, and its
 * subjects (a realm, or the system: the monitor's database, the schema watch, a fleet member).
 */

export interface AlertNotification {
  readonly event: 'alert.raised' | 'alert.repeated' | 'alert.resolved';
  readonly severity: 'warning' | 'critical';
  readonly kind:
    | 'quickbooks_api'
    | 'quickbooks_auth'
    | 'database'
    | 'schema'
    | 'refresh_token_expiry'
    | 'quickbooks_throttled'
    | 'monitor_stalled'
    | 'monitor_instance_down';
  readonly realmId: string | null;
  readonly summary: string;
  readonly consecutiveFailures: number;
  readonly since: string;
  readonly lastError: string | null;
  readonly intuitTid: string | null;
  /** Why an alert resolved without a success (e.g. the realm was disconnected by an operator). */
  readonly reason?: string;
  /** Stable per notification (a retry carries the same one): receivers drop what they have seen. */
  readonly notificationId: string;
  /** Stable per alert (subject and kind), the same from every fleet member. */
  readonly dedupKey: string;
  /** The fleet member that recorded the transition. */
  readonly instance: string;
  readonly text: string;
}

export type AlertKind = AlertNotification['kind'];

/** Every alert kind, in the order the contract lists them (what `qbhealth silence --kind` accepts). */
export const ALERT_KINDS = [
  'quickbooks_api',
  'quickbooks_auth',
  'database',
  'schema',
  'refresh_token_expiry',
  'quickbooks_throttled',
  'monitor_stalled',
  'monitor_instance_down',
] as const satisfies readonly AlertKind[];

// A kind added to AlertNotification and not to ALERT_KINDS fails to compile here.
const everyKindListed: Exclude<AlertKind, (typeof ALERT_KINDS)[number]> extends never ? true : never = true;
void everyKindListed;

export function isAlertKind(text: string): text is AlertKind {
  return (ALERT_KINDS as readonly string[]).includes(text);
}
export type Severity = AlertNotification['severity'];
export type AlertEvent = AlertNotification['event'];

/**
 * Alert subjects that are no realm. '' is the monitor's own database and schema. The schema watch
 * of the application that shares the database has a subject of its own, so that its `schema`
 * alert and the monitor's never resolve each other. A fleet member that stopped heartbeating is
 * `system:instance:<id>`. QuickBooks realm ids are digits: a `system:` id is never a realm's.
 * These go out with `realmId: null`.
 */
export const SystemSubject = {
  monitor: '',
  schemaWatch: 'system:schema-watch',
  instance: (instanceId: string): string => `system:instance:${instanceId}`,
} as const;

export function isSystemSubject(subject: string): boolean {
  return subject === SystemSubject.monitor || subject.startsWith('system:');
}

/** The instance a `system:instance:<id>` subject names, else undefined. */
export function instanceOfSubject(subject: string): string | undefined {
  return subject.startsWith('system:instance:') ? subject.slice('system:instance:'.length) : undefined;
}

/**
 * Stable per alert (subject and kind): every member computes the same key for the same alert, so a
 * receiver can merge what several members sent, and PagerDuty-style receivers group by it.
 */
export function dedupKey(subject: string, kind: AlertKind): string {
  return `qbo-health-monitor:${kind}:${subject === SystemSubject.monitor ? 'monitor' : subject}`;
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
  /** The error_code of the last failure, where the failure had one (memory only; kept in the alert's history). */
  errorCode?: string | undefined;
}

