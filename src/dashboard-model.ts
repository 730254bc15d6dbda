/**
 * What the dashboard (`GET /`) shows, as data: the page's JSON (`GET /dashboard/data`) has this
 * shape. Three sources fill it: history from the rollups (db/dashboard-queries.ts), alerts,
 * incidents and silences from the alert tables (db/alert-queries.ts), and the live state of this
 * member (health/state.ts). Times are ISO 8601 strings (UTC); durations are milliseconds.
 */
import type { ErrorCode } from './probe-result.js';

/** One bar: a day (90 of them) or half an hour (48 of them, the last 24 h). */
export interface UptimeBar {
  /** Start of the bar's interval. */
  readonly from: string;
  /** End of the bar's interval (exclusive). */
  readonly to: string;
  readonly probes: number;
  /** Probes that found the connection up. */
  readonly up: number;
  /** Of the failures, those that were throttling (HTTP 429). */
  readonly throttled: number;
  /** Failures by error_code. */
  readonly failures: Readonly<Partial<Record<ErrorCode, number>>>;
  /** up / probes, 0..1; null when there were no probes. */
  readonly uptime: number | null;
}

export interface LatencySummary {
  /** Milliseconds; null without a probe in the window. */
  readonly p50: number | null;
  readonly p95: number | null;
  readonly probes: number;
}

/** One realm's history, from the rollups (never raw rows). */
export interface RealmHistory {
  readonly realmId: string;
  /** Oldest first, 90 bars, the last one today (UTC days). */
  readonly days: readonly UptimeBar[];
  /** Oldest first, 48 bars, the last one the current half hour. */
  readonly halfHours: readonly UptimeBar[];
  readonly latency24h: LatencySummary;
  readonly latency7d: LatencySummary;
  /** Uptime over the 90 days, 0..1, null without probes. */
  readonly uptime90d: number | null;
}

export interface DashboardHistory {
  /** The instant the bars end at. */
  readonly generatedAt: string;
  readonly realms: readonly RealmHistory[];
}

/** A silence (maintenance window): matching alerts are recorded and shown, not notified. */
export interface Silence {
  readonly id: string;
  /** The realm it silences, or null for every realm (then `kind` is set). */
  readonly realmId: string | null;
  /** The alert kind it silences, or null for every kind of that realm. */
  readonly kind: string | null;
  readonly startsAt: string;
  readonly endsAt: string;
  readonly reason: string;
  /** The OS user who created it. */
  readonly createdBy: string;
}

/** An incident: an alert from raised to resolved (or still open). */
export interface Incident {
  readonly realmId: string | null;
  readonly kind: string;
  readonly severity: 'warning' | 'critical';
  readonly raisedAt: string;
  /** null while open. */
  readonly resolvedAt: string | null;
  /** resolvedAt (or now, while open) minus raisedAt. */
  readonly durationMs: number;
  /** The alert's summary, and the error_code that caused it where there is one. */
  readonly cause: string;
  readonly errorCode: string | null;
  /** Notifications sent for it (raised, repeats, resolved), silenced ones not counted. */
  readonly notifications: number;
  /** A silence covered it (some or all of its notifications were held back). */
  readonly silenced: boolean;
  /** The fleet member whose own alert it was (its `database` and `schema` alerts: one incident per member). */
  readonly instance?: string;
}

// The JSON of `GET /dashboard/data`, what the page (web/dashboard.js) draws: the stored history
// above joined with what this member knows now (HealthState) and each realm's stored facts
// (db/status.ts). Types only, so the page's script can be checked against them (web/tsconfig.json).


/**
 * The realm's badge: its probe status, or what stops probing it (reconnect_required,
 * disconnected), or `silenced` when a silence covers it while it is not passing; `unknown`
 * before its first probe.
 */
export type RealmBadge = 'pass' | 'warn' | 'fail' | 'reconnect_required' | 'disconnected' | 'silenced' | 'unknown';

export interface DashboardRealm {
  readonly realmId: string;
  readonly companyName: string | null;
  readonly environment: string | null;
  readonly badge: RealmBadge;
  /** The state under a `silenced` badge (the same as `badge` otherwise). */
  readonly state: Exclude<RealmBadge, 'silenced'>;
  /** When the silence covering it ends; null when none does. */
  readonly silencedUntil: string | null;
  readonly lastProbe: { readonly at: string; readonly status: string; readonly errorCode: string | null; readonly latencyMs: number | null } | null;
  /** The newest probe that did not pass, whenever it was; our own scrubbed words, never Intuit's body. */
  readonly lastError: {
    readonly at: string;
    readonly errorCode: string | null;
    readonly error: string | null;
    readonly httpStatus: number | null;
    readonly intuitTid: string | null;
  } | null;
  readonly refreshToken: {
    /** Intuit refused it: no lifetime left, reconnect. */
    readonly revoked: boolean;
    readonly rollingExpiresAt: string | null;
    readonly rollingDaysLeft: number | null;
    readonly hardExpiresAt: string | null;
    readonly hardDaysLeft: number | null;
  };
  /** From the rollups; null while they cannot be read. */
  readonly history: RealmHistory | null;
}

export interface DashboardAlert {
  /** null for the system (database, schema, a fleet member). */
  readonly realmId: string | null;
  /** What it concerns, in words: the realm's company, or the system part. */
  readonly subject: string;
  readonly kind: string;
  readonly severity: string;
  readonly since: string;
  readonly openForMs: number;
  readonly summary: string;
  readonly silenced: boolean;
}

export interface DashboardMember {
  readonly instanceId: string;
  readonly host: string;
  readonly version: string;
  readonly live: boolean;
  readonly heartbeatAgeMs: number;
  readonly realmsHeld: number;
  readonly self: boolean;
}

export interface DashboardSystem {
  readonly postgres: { readonly reachable: boolean; readonly checkedAt: string | null; readonly error: string | null };
  readonly schema: { readonly verified: boolean; readonly error: string | null };
  readonly spoolPending: number;
  /** Every registered member when several daemons share the database; empty for a lone one. */
  readonly members: readonly DashboardMember[];
  readonly version: string;
  readonly shuttingDown: boolean;
}

export interface DashboardData {
  readonly generatedAt: string;
  readonly refreshTokenWarnDays: number;
  /**
   * The part read from PostgreSQL (history, incidents, silences, company names): when it was
   * read, and why it is missing or old (`error`); the live part never waits for it.
   */
  readonly stored: { readonly readAt: string | null; readonly error: string | null };
  readonly realms: readonly DashboardRealm[];
  readonly alerts: readonly DashboardAlert[];
  /** The last 90 days, newest first. */
  readonly incidents: readonly Incident[];
  /** Silences in force now. */
  readonly silences: readonly Silence[];
  readonly system: DashboardSystem;
}

/** The answer of `/dashboard/data` when it cannot answer at all (never with PostgreSQL's words). */
export interface DashboardError {
  readonly error: string;
}
