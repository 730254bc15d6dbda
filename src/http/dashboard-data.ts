/**
 * Assembles `GET /dashboard/data` (its shape in src/dashboard-model.ts) from two sources: what this member
 * knows now (HealthState: the newest results, open alerts, PostgreSQL, the spool, the fleet),
 * which is always there, and the stored part (db/dashboard-reads.ts), which may be a few seconds
 * old or missing while PostgreSQL is away. A pure function: the caller reads, caches and logs.
 */
import { instanceOfSubject, isSystemSubject, SystemSubject, type AlertState } from '../alert.js';
import type { Silence } from '../dashboard-model.js';
import type { StoredDashboard } from '../db/dashboard-reads.js';
import { silenceCovers } from '../db/silence-queries.js';
import type { OpenAlert, RealmStatus } from '../db/status.js';
import type { HealthState, RealmHealth } from '../health/state.js';
import { ErrorCode } from '../probe-result.js';
import type { DashboardAlert, DashboardData, DashboardMember, DashboardRealm, RealmBadge } from '../dashboard-model.js';

export interface DashboardDataOptions {
  readonly version: string;
  readonly refreshTokenWarnDays: number;
  readonly now: Date;
  /**
   * The viewer holds HEALTH_TOKEN: PostgreSQL's own error words (hosts, users, databases) may be
   * shown. Without a token the page is public, and says only which check fails.
   */
  readonly trustedViewer: boolean;
}

export interface StoredPart {
  /** The newest stored read that succeeded, if any. */
  readonly data: StoredDashboard | undefined;
  /** Why the newest read failed (our words); undefined when it succeeded. */
  readonly error: string | undefined;
}

const inForce = (s: Silence, now: number): boolean => Date.parse(s.startsAt) <= now && now < Date.parse(s.endsAt);

/**
 * The silence in force, ending last, that covers an alert of one of `kinds` about `subject` (as the
 * escalation matches them), or the realm whole (a realm silence without a kind).
 */
function coveringSilence(silences: readonly Silence[], subject: string, kinds: readonly string[], now: number): Silence | undefined {
  let found: Silence | undefined;
  for (const s of silences) {
    if (!inForce(s, now)) continue;
    const covers = kinds.some((kind) => silenceCovers(s, subject, kind)) || (s.realmId === subject && s.kind === null);
    if (covers && (!found || Date.parse(s.endsAt) > Date.parse(found.endsAt))) found = s;
  }
  return found;
}

function realmState(stored: RealmStatus | undefined, live: RealmHealth | undefined, storedAt: number | undefined): Exclude<RealmBadge, 'silenced'> {
  const result = live?.last;
  if (result?.errorCode === ErrorCode.authInvalidGrant) return 'reconnect_required';
  const connection = stored?.connection;
  // A result newer than the stored read wins over the stored connection status (a reconnect).
  const resultIsNewer = result !== undefined && storedAt !== undefined && live !== undefined && live.observedAt > storedAt;
  if ((connection === 'reconnect_required' || connection === 'disconnected') && !resultIsNewer) return connection;
  if (result) return result.status;
  return stored?.state ?? 'unknown';
}

function lastProbe(stored: RealmStatus | undefined, live: RealmHealth | undefined): DashboardRealm['lastProbe'] {
  const result = live?.last;
  if (result && (!stored?.lastProbe || result.checkedAt.getTime() >= Date.parse(stored.lastProbe.at))) {
    return { at: result.checkedAt.toISOString(), status: result.status, errorCode: result.errorCode, latencyMs: result.latencyMs };
  }
  return stored?.lastProbe ? { at: stored.lastProbe.at, status: stored.lastProbe.status, errorCode: stored.lastProbe.errorCode, latencyMs: stored.lastProbe.latencyMs } : null;
}

function lastError(stored: RealmStatus | undefined, live: RealmHealth | undefined): DashboardRealm['lastError'] {
  const result = live?.last;
  if (result && result.status !== 'pass' && (!stored?.lastError || result.checkedAt.getTime() >= Date.parse(stored.lastError.at))) {
    return {
      at: result.checkedAt.toISOString(),
      errorCode: result.errorCode,
      error: result.error ?? null,
      httpStatus: result.httpStatus ?? null,
      intuitTid: result.intuitTid ?? null,
    };
  }
  const e = stored?.lastError;
  return e ? { at: e.at, errorCode: e.errorCode, error: e.error, httpStatus: e.httpStatus, intuitTid: e.intuitTid } : null;
}

function refreshToken(stored: RealmStatus | undefined, state: DashboardRealm['state']): DashboardRealm['refreshToken'] {
  if (state === 'reconnect_required') return { revoked: true, rollingExpiresAt: null, rollingDaysLeft: null, hardExpiresAt: null, hardDaysLeft: null };
  const t = stored?.refreshToken;
  return {
    revoked: t?.revoked ?? false,
    rollingExpiresAt: t?.rollingExpiresAt ?? null,
    rollingDaysLeft: t?.rollingDaysLeft ?? null,
    hardExpiresAt: t?.hardExpiresAt ?? null,
    hardDaysLeft: t?.hardDaysLeft ?? null,
  };
}

/** How an alert's subject is named on the page. */
function subjectWords(subject: string, companies: ReadonlyMap<string, string | null>): string {
  if (!isSystemSubject(subject)) return companies.get(subject) ?? `realm ${subject}`;
  if (subject === SystemSubject.schemaWatch) return 'the application schema (schema watch)';
  const instance = instanceOfSubject(subject);
  return instance === undefined ? "the monitor's database" : `member ${instance}`;
}

interface AlertLike {
  readonly subject: string;
  readonly kind: string;
  readonly severity: string;
  readonly since: string;
  readonly summary: string;
  /** As the stored alert state says; undefined for this member's own (matched against the silences here). */
  readonly silenced?: boolean;
}

const fromLive = (a: AlertState): AlertLike => ({ subject: a.realmId, kind: a.kind, severity: a.severity, since: a.since.toISOString(), summary: a.summary });
const fromStored = (a: OpenAlert): AlertLike => ({ subject: a.realmId ?? SystemSubject.monitor, kind: a.kind, severity: a.severity, since: a.since, summary: a.summary, silenced: a.silenced });

/**
 * Open alerts: this member's (its database alerts exist only in memory while PostgreSQL is away)
 * and the fleet's stored ones, each once, oldest first.
 */
function openAlerts(
  state: HealthState,
  stored: StoredDashboard | undefined,
  silences: readonly Silence[],
  companies: ReadonlyMap<string, string | null>,
  now: number,
): DashboardAlert[] {
  const byKey = new Map<string, AlertLike>();
  const key = (a: AlertLike): string => `${isSystemSubject(a.subject) ? '' : a.subject}\u0000${a.kind}\u0000${a.since}`;
  for (const a of state.openAlerts()) if (a.state === 'open') byKey.set(key(fromLive(a)), fromLive(a));
  if (stored) {
    const all = [...stored.status.systemAlerts, ...stored.status.realms.flatMap((r) => r.alerts)];
    for (const a of all.map(fromStored)) if (!byKey.has(key(a))) byKey.set(key(a), a);
  }
  return [...byKey.values()]
    .sort((a, b) => Date.parse(a.since) - Date.parse(b.since))
    .map((a) => {
      const realmId = isSystemSubject(a.subject) ? null : a.subject;
      return {
        realmId,
        subject: subjectWords(a.subject, companies),
        kind: a.kind,
        severity: a.severity,
        since: a.since,
        openForMs: Math.max(0, now - Date.parse(a.since)),
        summary: a.summary,
        silenced: a.silenced ?? coveringSilence(silences, a.subject, [a.kind], now) !== undefined,
      };
    });
}

function members(state: HealthState): DashboardMember[] {
  const fleet = state.fleet;
  if (!fleet || fleet.members.length < 2) return [];
  return fleet.members.map((m) => ({
    instanceId: m.instanceId,
    host: m.host,
    version: m.version,
    live: m.live,
    heartbeatAgeMs: m.heartbeatAgeMs,
    realmsHeld: m.realmsHeld,
    self: m.instanceId === fleet.self,
  }));
}

export function buildDashboardData(state: HealthState, part: StoredPart, opts: DashboardDataOptions): DashboardData {
  const now = opts.now.getTime();
  const stored = part.data;
  const storedAt = stored?.readAt.getTime();
  const silences = (stored?.silences ?? []).filter((s) => inForce(s, now));
  const storedRealms = new Map((stored?.status.realms ?? []).map((r) => [r.realmId, r]));
  const histories = new Map((stored?.history?.realms ?? []).map((h) => [h.realmId, h]));
  const ids = [...new Set([...storedRealms.keys(), ...state.realms.keys()])].sort();
  const companies = new Map(ids.map((id) => [id, storedRealms.get(id)?.companyName ?? state.realms.get(id)?.last.companyName ?? null]));
  const alerts = openAlerts(state, stored, silences, companies, now);

  const realms = ids.map((realmId): DashboardRealm => {
    const s = storedRealms.get(realmId);
    const live = state.realms.get(realmId);
    const current = realmState(s, live, storedAt);
    const kinds = alerts.filter((a) => a.realmId === realmId).map((a) => a.kind);
    const silence = coveringSilence(silences, realmId, kinds, now);
    return {
      realmId,
      companyName: companies.get(realmId) ?? null,
      environment: s?.environment ?? null,
      badge: silence && current !== 'pass' ? 'silenced' : current,
      state: current,
      silencedUntil: silence?.endsAt ?? null,
      lastProbe: lastProbe(s, live),
      lastError: lastError(s, live),
      refreshToken: refreshToken(s, current),
      history: histories.get(realmId) ?? null,
    };
  });

  const showWords = opts.trustedViewer;
  return {
    generatedAt: opts.now.toISOString(),
    refreshTokenWarnDays: opts.refreshTokenWarnDays,
    stored: { readAt: stored?.readAt.toISOString() ?? null, error: part.error ?? null },
    realms,
    alerts,
    incidents: [...(stored?.incidents ?? [])].sort((a, b) => Date.parse(b.raisedAt) - Date.parse(a.raisedAt)),
    silences,
    system: {
      postgres: {
        reachable: state.db.reachable,
        checkedAt: state.db.checkedAt?.toISOString() ?? null,
        error: state.db.reachable ? null : showWords && state.db.error ? state.db.error : state.db.checkedAt ? 'PostgreSQL unreachable' : 'PostgreSQL not reached yet',
      },
      schema: { verified: state.schema.verified, error: state.schema.verified ? null : showWords ? (state.schema.error ?? 'not verified yet') : 'schema not verified' },
      spoolPending: state.spoolPending,
      members: members(state),
      version: opts.version,
      shuttingDown: state.shuttingDown,
    },
  };
}

