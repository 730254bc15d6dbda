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
}
