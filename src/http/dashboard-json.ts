/**
 * The JSON of `GET /dashboard/data`, what the page (web/dashboard.js) draws: the stored history of
 * src/dashboard-model.ts (rollups, incidents, silences) joined with what this member knows now
 * (HealthState) and each realm's stored facts (db/status.ts). Types only, so the page's script
 * can be checked against them (web/tsconfig.json). Times are ISO 8601 (UTC), durations ms.
 */
import type { Incident, RealmHistory, Silence } from '../dashboard-model.js';

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
