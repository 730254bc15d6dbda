/**
 * The dashboard's history (dashboard-model.ts): 90 day bars, 48 half-hour bars, latency p50/p95
 * over 24 h and 7 days, and uptime over the 90 days, per realm. Read from the rollups up to the
 * fold's watermark (db/rollup-fold.ts: complete days from their rows, the open day summed from its
 * half hours), and from the raw rows after it (the open half hour and the
 * grace before a closed one is folded, a few minutes of rows; more only while folds fail), in one
 * query whose snapshot sees the watermark and the rollups it covers together: a result shows on
 * the page as soon as it is recorded, and is counted once. Never a scan of the raw history.
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
import { HALF_HOUR_SECONDS, periodRows, ROLLUP_SOURCE_COLUMNS, sketchPercentile } from './rollups.js';
import { dayRollupTable as D, halfHourRollupTable as HH, healthTable as H, rollupFoldTable as F } from './schema.js';

export const DAY_BARS = 90;
export const HALF_HOUR_BARS = 48;
export const LATENCY_WEEK_DAYS = 7;
const DAY_MS = 86_400_000;
const HALF_HOUR_MS = 1_800_000;

export interface DashboardHistoryOptions {
  readonly now?: Date;
  /** These realms, in this order (a realm without history gets empty bars); default every realm with history in the 90 days. */
  readonly realmIds?: readonly string[];
}

const REALM_FILTER = `($5::text[] IS NULL OR realm_id = ANY($5::text[]))`;
/** The watermark: rollups before it, raw rows from it on; without the state row, rollups only. */
const UNTIL = `(SELECT until FROM watermark)`;
/** The start of the watermark's day: days before it have their row, the open one is summed from its half hours. */
const OPEN_DAY = `(SELECT open_day FROM watermark)`;
/** The raw rows after the watermark, within the day bars' window. */
const TAIL = `(SELECT ${ROLLUP_SOURCE_COLUMNS} FROM ${H.name}
     WHERE ${H.col('checked_at')} >= greatest(${UNTIL}, $1) AND ${H.col('checked_at')} < $2 AND ${REALM_FILTER}) AS raw`;

// One query: $1..$2 the day bars (their sketches only from $6, the latency week), $3..$4 the
// half-hour bars, $5 the realms (or NULL). Complete days from the day rollups; half hours before
// the watermark from the half-hour rollups (those of the open day also make its day bar:
// `open_day`); the raw rows after the watermark aggregated per half hour ('tail', added to both
// kinds of bars here). Sketches come as text and instants as epoch milliseconds, which JavaScript
// reads several times faster than pg's array and date parsers, and are merged here: a few hundred
// small arrays add up faster than the server unnests them.
const HISTORY_SQL = `
  WITH folded AS (SELECT coalesce((SELECT ${F.col('folded_until')} FROM ${F.name} WHERE ${F.col('singleton')}), 'infinity'::timestamptz) AS until),
  watermark AS (SELECT until, date_trunc('day', until AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS open_day FROM folded)
  SELECT 'day' AS grain, false AS open_day, realm_id, (extract(epoch FROM period_start) * 1000)::float8 AS start_ms, probes, up, throttled, failures,
         CASE WHEN period_start >= $6 THEN latency_buckets::text END AS latency_buckets,
         CASE WHEN period_start >= $6 THEN latency_counts::text END AS latency_counts
    FROM ${D.name} WHERE period_start >= $1 AND period_start < $2 AND period_start < ${OPEN_DAY} AND ${REALM_FILTER}
  UNION ALL
  SELECT 'half_hour', period_start >= ${OPEN_DAY}, realm_id, (extract(epoch FROM period_start) * 1000)::float8, probes, up, throttled, failures,
         latency_buckets::text, latency_counts::text
    FROM ${HH.name} WHERE period_start >= least($3, greatest(${OPEN_DAY}, $1)) AND period_start < $4 AND period_start < ${UNTIL} AND ${REALM_FILTER}
  UNION ALL
  SELECT 'tail', true, realm_id, (extract(epoch FROM period_start) * 1000)::float8, probes, up, throttled, failures,
         latency_buckets::text, latency_counts::text
    FROM (${periodRows(TAIL, HALF_HOUR_SECONDS)}) AS tail`;

type Grain = 'day' | 'half_hour' | 'tail';

interface RollupRow {
  grain: Grain;
  /** A half hour after the complete days: it counts in its day's bar too. */
  open_day: boolean;
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

interface Counts {
  probes: number;
  up: number;
  throttled: number;
  failures: Record<string, number>;
}

/** One realm's bars and sketches, as rows are added. */
class RealmAccumulator {
  readonly days = new Map<number, Counts>();
  readonly halfHours = new Map<number, Counts>();
  readonly sketch24h = new Map<number, number>();
  readonly sketch7d = new Map<number, number>();

  static add(bars: Map<number, Counts>, start: number, r: RollupRow): void {
    const bar = bars.get(start);
    if (!bar) {
      bars.set(start, { probes: r.probes, up: r.up, throttled: r.throttled, failures: { ...r.failures } });
      return;
    }
    bar.probes += r.probes;
    bar.up += r.up;
    bar.throttled += r.throttled;
    for (const [code, n] of Object.entries(r.failures)) bar.failures[code] = (bar.failures[code] ?? 0) + n;
  }

  static merge(sketch: Map<number, number>, r: RollupRow): void {
    const buckets = intArray(r.latency_buckets);
    const ns = intArray(r.latency_counts);
    buckets.forEach((bucket, i) => sketch.set(bucket, (sketch.get(bucket) ?? 0) + (ns[i] ?? 0)));
  }
}

interface Windows {
  readonly firstDay: number;
  readonly dayEnd: number;
  readonly firstHalfHour: number;
  readonly halfHourEnd: number;
  readonly weekStart: number;
}

function accumulate(rows: readonly RollupRow[], w: Windows): Map<string, RealmAccumulator> {
  const by = new Map<string, RealmAccumulator>();
  for (const r of rows) {
    let realm = by.get(r.realm_id);
    if (!realm) by.set(r.realm_id, (realm = new RealmAccumulator()));
    if (r.grain === 'day') {
      RealmAccumulator.add(realm.days, r.start_ms, r);
      RealmAccumulator.merge(realm.sketch7d, r);
    } else {
      // A half hour: its bar (when in the last 24 h) and, after the complete days, its day's.
      if (r.start_ms >= w.firstHalfHour && r.start_ms < w.halfHourEnd) {
        RealmAccumulator.add(realm.halfHours, r.start_ms, r);
        RealmAccumulator.merge(realm.sketch24h, r);
      }
      if (!r.open_day) continue;
      const day = Math.floor(r.start_ms / DAY_MS) * DAY_MS;
      RealmAccumulator.add(realm.days, day, r);
      if (day >= w.weekStart) RealmAccumulator.merge(realm.sketch7d, r);
    }
  }
  return by;
}

function bars(start: number, stepMs: number, count: number, byStart: ReadonlyMap<number, Counts> | undefined): UptimeBar[] {
  return Array.from({ length: count }, (_, i) => {
    const from = start + i * stepMs;
    const r = byStart?.get(from);
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

/** p50 and p95 of a merged sketch. */
function latency(counts: ReadonlyMap<number, number> | undefined): LatencySummary {
  const sketch = counts ?? new Map<number, number>();
  let probes = 0;
  for (const n of sketch.values()) probes += n;
  return { p50: sketchPercentile(sketch, 0.5), p95: sketchPercentile(sketch, 0.95), probes };
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
  const byRealm = accumulate(rows.rows, { firstDay, dayEnd, firstHalfHour, halfHourEnd, weekStart });

  const realmIds = opts.realmIds ? [...new Set(opts.realmIds)] : [...byRealm.keys()].sort();
  const histories = realmIds.map((realmId): RealmHistory => {
    const c = byRealm.get(realmId);
    const days = bars(firstDay, DAY_MS, DAY_BARS, c?.days);
    const probes = days.reduce((sum, d) => sum + d.probes, 0);
    const up = days.reduce((sum, d) => sum + d.up, 0);
    return {
      realmId,
      days,
      halfHours: bars(firstHalfHour, HALF_HOUR_MS, HALF_HOUR_BARS, c?.halfHours),
      latency24h: latency(c?.sketch24h),
      latency7d: latency(c?.sketch7d),
      uptime90d: probes === 0 ? null : up / probes,
    };
  });
  return { generatedAt: new Date(now).toISOString(), realms: histories };
}
