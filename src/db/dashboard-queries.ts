/**
 * The dashboard's history (dashboard-model.ts), read from the rollups only (db/rollups.ts), never
 * from the raw rows: 90 day bars, 48 half-hour bars, latency p50/p95 over 24 h and 7 days, and
 * uptime over the 90 days, per realm. One indexed query over at most a few thousand rows,
 * whatever the length of the raw history.
 *
 * Windows (UTC): the day bars run from 89 days before today to today (the last one partial); the
 * half-hour bars end with the current half hour; `latency24h` merges the half-hour bars' sketches
 * (23.5 to 24 h), `latency7d` the last 7 day bars' (today included, so 6 to 7 days). What counts
 * as up and as a failure is said in db/rollups.ts: up is pass or warn (throttled included), as in
 * `qbhealth status`; `failures` has every error_code but `ok`, throttled included.
 */
import type { DashboardHistory, LatencySummary, RealmHistory, UptimeBar } from '../dashboard-model.js';
import type { ErrorCode } from '../probe-result.js';
import type { Queryable } from './pool.js';
import { sketchPercentile } from './rollups.js';
import { dayRollupTable as D, halfHourRollupTable as HH } from './schema.js';

export const DAY_BARS = 90;
export const HALF_HOUR_BARS = 48;
export const LATENCY_WEEK_DAYS = 7;
const DAY_MS = 86_400_000;
const HALF_HOUR_MS = 1_800_000;

export interface DashboardHistoryOptions {
  readonly now?: Date;
  /** These realms, in this order (a realm without rollups gets empty bars); default every realm with history in the 90 days. */
  readonly realmIds?: readonly string[];
}

const REALM_FILTER = `($5::text[] IS NULL OR realm_id = ANY($5::text[]))`;

// One query: $1..$2 the day bars (their sketches only from $6, the latency week), $3..$4 the
// half-hour bars, $5 the realms (or NULL). Sketches come as text and instants as epoch
// milliseconds, which JavaScript reads several times faster than pg's array and date parsers,
// and are merged here: a few hundred small arrays add up faster than the server unnests them.
const HISTORY_SQL = `
  SELECT 'day' AS grain, realm_id, (extract(epoch FROM period_start) * 1000)::float8 AS start_ms, probes, up, throttled, failures,
         CASE WHEN period_start >= $6 THEN latency_buckets::text END AS latency_buckets,
         CASE WHEN period_start >= $6 THEN latency_counts::text END AS latency_counts
    FROM ${D.name} WHERE period_start >= $1 AND period_start < $2 AND ${REALM_FILTER}
  UNION ALL
  SELECT 'half_hour', realm_id, (extract(epoch FROM period_start) * 1000)::float8, probes, up, throttled, failures,
         latency_buckets::text, latency_counts::text
    FROM ${HH.name} WHERE period_start >= $3 AND period_start < $4 AND ${REALM_FILTER}`;

type Grain = 'day' | 'half_hour';

interface RollupRow {
  grain: Grain;
  realm_id: string;
  start_ms: number;
  probes: number;
  up: number;
  throttled: number;
  failures: Record<string, number>;
  /** `{1,2,3}`, or null outside the latency windows. */
  latency_buckets: string | null;
  latency_counts: string | null;
}

/** An integer[] in PostgreSQL's text form (`{135,140}`). */
const intArray = (text: string | null): number[] => (text === null || text === '{}' ? [] : text.slice(1, -1).split(',').map(Number));

function bars(start: number, stepMs: number, count: number, rows: readonly RollupRow[]): UptimeBar[] {
  const byStart = new Map(rows.map((r) => [r.start_ms, r]));
  return Array.from({ length: count }, (_, i) => {
    const from = start + i * stepMs;
    const r = byStart.get(from);
    const probes = r?.probes ?? 0;
    const up = r?.up ?? 0;
    return {
      from: new Date(from).toISOString(),
      to: new Date(from + stepMs).toISOString(),
      probes,
      up,
      throttled: r?.throttled ?? 0,
      failures: (r?.failures ?? {}) as Partial<Record<ErrorCode, number>>,
      uptime: probes === 0 ? null : up / probes,
    };
  });
}

/** p50 and p95 of the rows' sketches merged (buckets added up across rows). */
function latency(rows: readonly RollupRow[]): LatencySummary {
  const counts = new Map<number, number>();
  let probes = 0;
  for (const r of rows) {
    const buckets = intArray(r.latency_buckets);
    const ns = intArray(r.latency_counts);
    buckets.forEach((bucket, i) => {
      const n = ns[i] ?? 0;
      counts.set(bucket, (counts.get(bucket) ?? 0) + n);
      probes += n;
    });
  }
  return { p50: sketchPercentile(counts, 0.5), p95: sketchPercentile(counts, 0.95), probes };
}

function groupBy<T extends { realm_id: string; grain: Grain }>(rows: readonly T[]): Map<string, { day: T[]; half_hour: T[] }> {
  const by = new Map<string, { day: T[]; half_hour: T[] }>();
  for (const r of rows) {
    let realm = by.get(r.realm_id);
    if (!realm) by.set(r.realm_id, (realm = { day: [], half_hour: [] }));
    realm[r.grain].push(r);
  }
  return by;
}

export async function readDashboardHistory(db: Queryable, opts: DashboardHistoryOptions = {}): Promise<DashboardHistory> {
  const now = (opts.now ?? new Date()).getTime();
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const firstDay = today - (DAY_BARS - 1) * DAY_MS;
  const dayEnd = today + DAY_MS;
  const currentHalfHour = Math.floor(now / HALF_HOUR_MS) * HALF_HOUR_MS;
  const firstHalfHour = currentHalfHour - (HALF_HOUR_BARS - 1) * HALF_HOUR_MS;
  const halfHourEnd = currentHalfHour + HALF_HOUR_MS;
  const weekStart = today - (LATENCY_WEEK_DAYS - 1) * DAY_MS;
  const realms = opts.realmIds === undefined ? null : [...opts.realmIds];
  const rows = await db.query<RollupRow>(HISTORY_SQL, [
    new Date(firstDay),
    new Date(dayEnd),
    new Date(firstHalfHour),
    new Date(halfHourEnd),
    realms,
    new Date(weekStart),
  ]);
  const byRealm = groupBy(rows.rows);

  const realmIds = opts.realmIds ? [...new Set(opts.realmIds)] : [...byRealm.keys()].sort();
  const histories = realmIds.map((realmId): RealmHistory => {
    const c = byRealm.get(realmId);
    const days = bars(firstDay, DAY_MS, DAY_BARS, c?.day ?? []);
    const probes = days.reduce((sum, d) => sum + d.probes, 0);
    const up = days.reduce((sum, d) => sum + d.up, 0);
    return {
      realmId,
      days,
      halfHours: bars(firstHalfHour, HALF_HOUR_MS, HALF_HOUR_BARS, c?.half_hour ?? []),
      latency24h: latency(c?.half_hour ?? []),
      latency7d: latency((c?.day ?? []).filter((d) => d.start_ms >= weekStart)),
      uptime90d: probes === 0 ? null : up / probes,
    };
  });
  return { generatedAt: new Date(now).toISOString(), realms: histories };
}
