/**
 * The at-a-glance report behind `qbhealth status` and `GET /status`: per realm, its state,
 * uptime over a window, latency percentiles, last error with its intuit_tid, refresh-token
 * days left (rolling and hard), open alerts and a timeline of pass/fail buckets; and the fleet
 * of daemons sharing the database (db/fleet-report.ts). Read-only, a handful of indexed
 * queries, and plain JSON so the CLI's `--json` and the endpoint serve the same document.
 *
 * Uptime counts `pass` and `warn` probes as up: `warn` is a throttled answer (429), where the
 * connection works and Intuit asked us to slow down. Rows adopted from before realm_id existed
 * are counted apart (`unattributedProbes`), since they cannot be assigned to a realm.
 *
 * Open alerts that an active silence covers are shown `silenced` (recorded, not notified), and
 * the active silences are listed.
 */
import type { Logger } from '../log.js';
import { alertsTable as A, HEALTH_STATUS_SQL, healthTable as H, tokensTable as T } from './schema.js';
import { isSystemSubject } from '../alert.js';
import type { Silence } from '../dashboard-model.js';
import { listSilences, silenceCovers } from './silence-queries.js';
import { DEFAULT_FLEET_MEMBER_TTL_MS, loadFleetReport, type FleetReport } from './fleet-report.js';
import { createPool, inTransaction, withClient, type Pool, type Queryable } from './pool.js';

export const TIMELINE_WIDTH = 48;

/** One timeline mark per bucket, chosen to be told apart without colour. */
export const TIMELINE_MARKS = {
  up: '+',
  warned: '~',
  mixed: '!',
  down: 'x',
  empty: '.',
} as const;

export const TIMELINE_LEGEND = `${TIMELINE_MARKS.up} all passed  ${TIMELINE_MARKS.warned} throttled  ${TIMELINE_MARKS.mixed} some failed  ${TIMELINE_MARKS.down} all failed  ${TIMELINE_MARKS.empty} no probe`;

export type RealmState = 'pass' | 'warn' | 'fail' | 'reconnect_required' | 'disconnected' | 'unknown';

export interface OpenAlert {
  readonly realmId: string | null;
  readonly kind: string;
  readonly severity: string;
  readonly since: string;
  readonly consecutiveFailures: number;
  readonly summary: string;
  readonly lastError: string | null;
  readonly intuitTid: string | null;
  /** A silence covers it: recorded and shown, not notified. */
  readonly silenced: boolean;
  /** The silence that covers it (the one ending last), when silenced. */
  readonly silenceId: string | null;
}

export interface Bucket {
  readonly start: string;
  readonly total: number;
  readonly up: number;
  readonly warned: number;
  readonly failed: number;
}

export interface RealmStatus {
  readonly realmId: string;
  readonly companyName: string | null;
  readonly environment: string | null;
  /** quickbooks_oauth_tokens.status; null when the realm has history but no token row. */
  readonly connection: string | null;
  readonly connectionReason: string | null;
  readonly state: RealmState;
  readonly lastProbe: { at: string; status: string; errorCode: string | null; latencyMs: number | null; httpStatus: number | null } | null;
  readonly probes: { total: number; up: number; warned: number; failed: number };
  /** Up probes / all probes in the window, in percent; null without probes. */
  readonly uptimePercent: number | null;
  readonly latencyMs: { p50: number; p95: number } | null;
  readonly lastError: { at: string; status: string; errorCode: string | null; error: string | null; httpStatus: number | null; intuitTid: string | null } | null;
  readonly refreshToken: {
    /** Intuit refused it (invalid_grant): the realm must be reconnected; no lifetime is shown. */
    revoked: boolean;
    rollingExpiresAt: string | null;
    rollingDaysLeft: number | null;
    hardExpiresAt: string | null;
    hardDaysLeft: number | null;
  };
  readonly alerts: OpenAlert[];
  readonly timeline: string;
  readonly buckets: Bucket[];
}

export interface StatusReport {
  readonly generatedAt: string;
  readonly since: string;
  readonly until: string;
  readonly bucketSeconds: number;
  readonly timelineLegend: string;
  readonly realms: RealmStatus[];
  /** Open alerts that concern the whole system (database, schema). */
  readonly systemAlerts: OpenAlert[];
  /** Silences (maintenance windows) active now, ending soonest first (`qbhealth silence --list`). */
  readonly silences: Silence[];
  readonly lastProbeAt: string | null;
  readonly unattributedProbes: number;
  /** The daemons sharing the database (`qbhealth fleet --json`), whatever realm the report is narrowed to. */
  readonly fleet: FleetReport;
}

export interface StatusQuery {
  readonly since: Date;
  readonly now?: Date;
  readonly realmId?: string | undefined;
  readonly width?: number;
  /** FLEET_MEMBER_TTL_MS: members whose heartbeat is older are reported down (default 15000). */
  readonly fleetMemberTtlMs?: number;
}

const DAY_MS = 86_400_000;

/** A status that also reads `connected` for rows written before `status` existed. */
const STATUS = HEALTH_STATUS_SQL;
const IN_WINDOW = `${H.col('checked_at')} >= $1 AND ${H.col('checked_at')} < $2`;

const TOKENS_SQL = `SELECT ${T.columnList(['realm_id', 'environment', 'status', 'status_reason', 'company_name', 'refresh_token_expires_at', 'refresh_token_hard_expires_at'])}
  FROM ${T.name} WHERE $1::text IS NULL OR ${T.col('realm_id')} = $1 ORDER BY ${T.col('realm_id')}`;

const WINDOW_SQL = `SELECT ${H.col('realm_id')},
    count(*)::int AS total,
    count(*) FILTER (WHERE ${STATUS} IN ('pass', 'warn'))::int AS up,
    count(*) FILTER (WHERE ${STATUS} = 'warn')::int AS warned,
    count(*) FILTER (WHERE ${STATUS} = 'fail')::int AS failed,
    round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ${H.col('latency_ms')}))::int AS p50,
    round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ${H.col('latency_ms')}))::int AS p95
  FROM ${H.name} WHERE ${IN_WINDOW} AND ($3::text IS NULL OR ${H.col('realm_id')} = $3)
  GROUP BY ${H.col('realm_id')}`;

// Per realm, one range of the (realm_id, checked_at) index: with `realm_id = ANY($3)` instead,
// PostgreSQL 17 walked the whole index (every realm's 90 days) to return a few minutes of rows.
const BUCKETS_SQL = `SELECT r.realm_id, b.bucket, b.total, b.up, b.warned, b.failed
  FROM unnest($3::text[]) AS r(realm_id)
  CROSS JOIN LATERAL (
    SELECT least(greatest(floor(extract(epoch FROM ${H.col('checked_at')} - $1::timestamptz) / $4::float8)::int, 0), $5::int - 1) AS bucket,
      count(*)::int AS total,
      count(*) FILTER (WHERE ${STATUS} IN ('pass', 'warn'))::int AS up,
      count(*) FILTER (WHERE ${STATUS} = 'warn')::int AS warned,
      count(*) FILTER (WHERE ${STATUS} = 'fail')::int AS failed
    FROM ${H.name} WHERE ${IN_WINDOW} AND ${H.col('realm_id')} = r.realm_id
    GROUP BY 1) b`;

// Per realm, newest first: the last probe on the (realm_id, checked_at) index, and the last probe
// that was not a pass, whenever it was (an old error still explains a current state), on the
// partial index of such rows (0008): its condition is that index's predicate, word for word, so
// a realm that never failed costs one index probe instead of a scan of all its passes.
export const LAST_SQL = `SELECT r.realm_id,
    p.checked_at AS probe_at, p.status AS probe_status, p.error_code AS probe_code, p.latency_ms AS probe_latency, p.http_status AS probe_http,
    e.checked_at AS error_at, e.status AS error_status, e.error_code AS error_code, e.error AS error_text, e.http_status AS error_http, e.intuit_tid AS error_tid
  FROM unnest($1::text[]) AS r(realm_id)
  LEFT JOIN LATERAL (
    SELECT ${H.col('checked_at')}, ${STATUS} AS status, ${H.col('error_code')}, ${H.col('latency_ms')}, ${H.col('http_status')}
      FROM ${H.name} WHERE ${H.col('realm_id')} = r.realm_id AND ${H.col('checked_at')} < $2
     ORDER BY ${H.col('checked_at')} DESC, ${H.col('id')} DESC LIMIT 1) p ON true
  LEFT JOIN LATERAL (
    SELECT ${H.col('checked_at')}, ${STATUS} AS status, ${H.col('error_code')}, ${H.col('error')}, ${H.col('http_status')}, ${H.col('intuit_tid')}
      FROM ${H.name} WHERE ${H.col('realm_id')} = r.realm_id AND ${H.col('checked_at')} < $2 AND ${STATUS} <> 'pass'
     ORDER BY ${H.col('checked_at')} DESC, ${H.col('id')} DESC LIMIT 1) e ON true`;

const ALERTS_SQL = `SELECT ${A.columnList(['realm_id', 'kind', 'severity', 'since', 'consecutive_failures', 'summary', 'last_error', 'intuit_tid'])}
  FROM ${A.name} WHERE ${A.col('state')} = 'open' ORDER BY ${A.col('since')}, ${A.col('kind')}`;

const NEWEST_SQL = `SELECT max(${H.col('checked_at')}) AS newest FROM ${H.name} WHERE ${H.col('checked_at')} < $1`;

interface TokenRow {
  realm_id: string;
  environment: string;
  status: string;
  status_reason: string | null;
  company_name: string | null;
  refresh_token_expires_at: Date | null;
  refresh_token_hard_expires_at: Date | null;
}

interface WindowRow {
  realm_id: string | null;
  total: number;
  up: number;
  warned: number;
  failed: number;
  p50: number | null;
  p95: number | null;
}

interface BucketRow {
  realm_id: string;
  bucket: number;
  total: number;
  up: number;
  warned: number;
  failed: number;
}

interface LastRow {
  realm_id: string;
  probe_at: Date | null;
  probe_status: string | null;
  probe_code: string | null;
  probe_latency: number | null;
  probe_http: number | null;
  error_at: Date | null;
  error_status: string | null;
  error_code: string | null;
  error_text: string | null;
  error_http: number | null;
  error_tid: string | null;
}

interface AlertRow {
  realm_id: string;
  kind: string;
  severity: string;
  since: Date;
  consecutive_failures: number;
  summary: string;
  last_error: string | null;
  intuit_tid: string | null;
}

const daysLeft = (at: Date | null, now: Date): number | null => (at ? Math.floor((at.getTime() - now.getTime()) / DAY_MS) : null);

/** Percent with at most two decimals, so 3 of 4 is 75 and 2 of 3 is 66.67. */
export const uptimePercent = (up: number, total: number): number | null => (total === 0 ? null : Math.round((up / total) * 10_000) / 100);

export function timelineMark(b: Pick<Bucket, 'total' | 'up' | 'warned' | 'failed'> | undefined): string {
  if (!b || b.total === 0) return TIMELINE_MARKS.empty;
  if (b.failed === b.total) return TIMELINE_MARKS.down;
  if (b.failed > 0) return TIMELINE_MARKS.mixed;
  return b.warned > 0 ? TIMELINE_MARKS.warned : TIMELINE_MARKS.up;
}

function stateOf(connection: string | null, lastStatus: string | null): RealmState {
  if (connection === 'disconnected' || connection === 'reconnect_required') return connection;
  if (lastStatus === 'pass' || lastStatus === 'warn' || lastStatus === 'fail') return lastStatus;
  return 'unknown';
}

const alertOf = (r: AlertRow, silences: readonly Silence[]): OpenAlert => {
  const silence = silences.filter((s) => silenceCovers(s, r.realm_id, r.kind)).sort((a, b) => b.endsAt.localeCompare(a.endsAt))[0];
  return {
    realmId: isSystemSubject(r.realm_id) ? null : r.realm_id,
    kind: r.kind,
    severity: r.severity,
    since: r.since.toISOString(),
    consecutiveFailures: r.consecutive_failures,
    summary: r.summary,
    lastError: r.last_error,
    intuitTid: r.intuit_tid,
    silenced: silence !== undefined,
    silenceId: silence?.id ?? null,
  };
};

export async function loadStatus(db: Queryable, q: StatusQuery): Promise<StatusReport> {
  const now = q.now ?? new Date();
  const width = q.width ?? TIMELINE_WIDTH;
  if (!(q.since.getTime() < now.getTime())) throw new RangeError('the status window must start in the past');
  const bucketSeconds = (now.getTime() - q.since.getTime()) / 1000 / width;
  const realmParam = q.realmId ?? null;

  // One statement at a time: `db` may be a single client (see loadStatusSnapshot).
  const tokens = await db.query<TokenRow>(TOKENS_SQL, [realmParam]);
  const windows = await db.query<WindowRow>(WINDOW_SQL, [q.since, now, realmParam]);
  const alerts = await db.query<AlertRow>(ALERTS_SQL);
  const silences = await listSilences(db, { now });
  const newest = await db.query<{ newest: Date | null }>(NEWEST_SQL, [now]);
  const fleet = await loadFleetReport(db, q.fleetMemberTtlMs ?? DEFAULT_FLEET_MEMBER_TTL_MS);

  const windowByRealm = new Map(windows.rows.filter((w) => w.realm_id !== null).map((w) => [w.realm_id as string, w]));
  const unattributed = windows.rows.find((w) => w.realm_id === null)?.total ?? 0;
  const tokenByRealm = new Map(tokens.rows.map((t) => [t.realm_id, t]));
  const realmIds = [...new Set([...tokenByRealm.keys(), ...windowByRealm.keys()])].sort();

  const buckets = await db.query<BucketRow>(BUCKETS_SQL, [q.since, now, realmIds, bucketSeconds, width]);
  const lasts = await db.query<LastRow>(LAST_SQL, [realmIds, now]);
  const bucketsByRealm = new Map<string, BucketRow[]>();
  for (const b of buckets.rows) bucketsByRealm.set(b.realm_id, [...(bucketsByRealm.get(b.realm_id) ?? []), b]);
  const lastByRealm = new Map(lasts.rows.map((l) => [l.realm_id, l]));
  const openAlerts = alerts.rows.map((r) => alertOf(r, silences));

  const realms = realmIds.map((realmId): RealmStatus => {
    const token = tokenByRealm.get(realmId);
    const w = windowByRealm.get(realmId);
    const last = lastByRealm.get(realmId);
    const rows = new Map((bucketsByRealm.get(realmId) ?? []).map((b) => [b.bucket, b]));
    const series: Bucket[] = Array.from({ length: width }, (_, i) => {
      const b = rows.get(i);
      return {
        start: new Date(q.since.getTime() + i * bucketSeconds * 1000).toISOString(),
        total: b?.total ?? 0,
        up: b?.up ?? 0,
        warned: b?.warned ?? 0,
        failed: b?.failed ?? 0,
      };
    });
    const probes = { total: w?.total ?? 0, up: w?.up ?? 0, warned: w?.warned ?? 0, failed: w?.failed ?? 0 };
    return {
      realmId,
      companyName: token?.company_name ?? null,
      environment: token?.environment ?? null,
      connection: token?.status ?? null,
      connectionReason: token?.status_reason ?? null,
      state: stateOf(token?.status ?? null, last?.probe_status ?? null),
      lastProbe:
        last?.probe_at && last.probe_status
          ? { at: last.probe_at.toISOString(), status: last.probe_status, errorCode: last.probe_code, latencyMs: last.probe_latency, httpStatus: last.probe_http }
          : null,
      probes,
      uptimePercent: uptimePercent(probes.up, probes.total),
      latencyMs: w && w.p50 !== null && w.p95 !== null ? { p50: w.p50, p95: w.p95 } : null,
      lastError:
        last?.error_at && last.error_status
          ? { at: last.error_at.toISOString(), status: last.error_status, errorCode: last.error_code, error: last.error_text, httpStatus: last.error_http, intuitTid: last.error_tid }
          : null,
      // A refused (revoked) refresh token has no lifetime left, whatever its stored expiry says.
      refreshToken:
        token?.status === 'reconnect_required'
          ? { revoked: true, rollingExpiresAt: null, rollingDaysLeft: null, hardExpiresAt: null, hardDaysLeft: null }
          : {
              revoked: false,
              rollingExpiresAt: token?.refresh_token_expires_at?.toISOString() ?? null,
              rollingDaysLeft: daysLeft(token?.refresh_token_expires_at ?? null, now),
              hardExpiresAt: token?.refresh_token_hard_expires_at?.toISOString() ?? null,
              hardDaysLeft: daysLeft(token?.refresh_token_hard_expires_at ?? null, now),
            },
      alerts: openAlerts.filter((a) => a.realmId === realmId),
      timeline: series.map(timelineMark).join(''),
      buckets: series,
    };
  });

  return {
    generatedAt: now.toISOString(),
    since: q.since.toISOString(),
    until: now.toISOString(),
    bucketSeconds,
    timelineLegend: TIMELINE_LEGEND,
    realms,
    systemAlerts: openAlerts.filter((a) => a.realmId === null),
    silences,
    lastProbeAt: newest.rows[0]?.newest?.toISOString() ?? null,
    unattributedProbes: unattributed,
    fleet,
  };
}

/** `reads` on one read-only snapshot, so the figures agree with each other while probes are written. */
export function readSnapshot<T>(pool: Pool, reads: (db: Queryable) => Promise<T>): Promise<T> {
  return withClient(pool, (client) =>
    inTransaction(client, async () => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
      return reads(client);
    }),
  );
}

/** loadStatus on one read-only snapshot. */
export function loadStatusSnapshot(pool: Pool, q: StatusQuery): Promise<StatusReport> {
  return readSnapshot(pool, (db) => loadStatus(db, q));
}

/** Where `GET /status` reads its reports from; closed with the health server. */
export interface StatusSource {
  load(q: StatusQuery): Promise<StatusReport>;
  /**
   * Runs other read-only reads (the dashboard's, db/dashboard-reads.ts) on the same bounded
   * connections and one snapshot; absent where a source has no database behind it.
   */
  read?<T>(reads: (db: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface StatusReaderOptions {
  /** Connections (2): at most this many report reads reach PostgreSQL at once. */
  readonly max?: number;
  /** Bound on each statement (5 s): a report read never holds a connection for long. */
  readonly statementTimeoutMs?: number;
  /** Bound on getting a connection (2 s), waiting behind other reads included. */
  readonly connectionTimeoutMs?: number;
  /** FLEET_MEMBER_TTL_MS the daemon runs with, so /status calls members down as the daemons do (default 15000). */
  readonly fleetMemberTtlMs?: number;
}

/** The pool's application_name, so these reads are told apart in pg_stat_activity. */
export const STATUS_APPLICATION_NAME = 'qbo-health-monitor/status';

/**
 * Reads status reports for the HTTP server on a small pool of its own. Requests arrive from
 * outside at any rate; on the probes' pool a flood of them would take the connections the
 * probes record with, and their timeouts would look like a database outage (spooled results,
 * a false `database` alert). Here they can only queue behind each other and fail on their own.
 */
export class StatusReader implements StatusSource {
  private readonly pool: Pool;
  private readonly fleetMemberTtlMs: number;
  private closing: Promise<void> | undefined;

  constructor(databaseUrl: string, log: Logger, opts: StatusReaderOptions = {}) {
    this.pool = createPool(
      {
        databaseUrl,
        applicationName: STATUS_APPLICATION_NAME,
        max: opts.max ?? 2,
        statementTimeoutMs: opts.statementTimeoutMs ?? 5000,
        connectionTimeoutMs: opts.connectionTimeoutMs ?? 2000,
      },
      log,
    );
    this.fleetMemberTtlMs = opts.fleetMemberTtlMs ?? DEFAULT_FLEET_MEMBER_TTL_MS;
  }

  load(q: StatusQuery): Promise<StatusReport> {
    return loadStatusSnapshot(this.pool, { ...q, fleetMemberTtlMs: q.fleetMemberTtlMs ?? this.fleetMemberTtlMs });
  }

  /** `reads` on one read-only snapshot of this reader's pool, so its figures agree and its load stays bounded. */
  read<T>(reads: (db: Queryable) => Promise<T>): Promise<T> {
    return readSnapshot(this.pool, reads);
  }

  /** Safe to call twice (a failed start and a stop both close the server). */
  close(): Promise<void> {
    this.closing ??= this.pool.end();
    return this.closing;
  }
}

/** Something an operator should act on: a realm failing or needing reconnection, or any open alert. */
export function needsAttention(report: StatusReport): boolean {
  return report.systemAlerts.length > 0 || report.realms.some((r) => r.alerts.length > 0 || r.state === 'fail' || r.state === 'reconnect_required');
}

const UNIT_MS = { m: 60_000, h: 3_600_000, d: DAY_MS, w: 7 * DAY_MS } as const;

/**
 * `--since` / `?since=`: a duration back from now (`90m`, `24h`, `7d`, `2w`) or an ISO 8601
 * instant. Throws a RangeError that says what is accepted.
 */
export function parseSince(text: string, now: Date = new Date()): Date {
  const duration = /^(\d{1,6})([mhdw])$/.exec(text.trim());
  let since: Date;
  if (duration) {
    since = new Date(now.getTime() - Number(duration[1]) * UNIT_MS[duration[2] as keyof typeof UNIT_MS]);
  } else if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}(:?\d{2})?)?)?$/.test(text.trim())) {
    since = new Date(text.trim());
  } else {
    since = new Date(Number.NaN);
  }
  if (Number.isNaN(since.getTime()) || since.getTime() >= now.getTime()) {
    throw new RangeError(`since "${text}" is not a window in the past: give a duration such as 90m, 24h, 7d or 2w, or an ISO instant such as 2026-11-01T00:00:00Z`);
  }
  return since;
}
