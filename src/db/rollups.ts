/**
 * The rollups' SQL: how raw health rows become per-realm aggregates per half hour and per UTC day
 * (probes, up, throttled, failures by error_code, a latency sketch). One builder serves both
 * writers, so the two cannot count differently:
 *
 * - recording (db/health-queries.ts) aggregates the rows its INSERT actually inserted (RETURNING,
 *   so a replayed result that ON CONFLICT skipped is not counted again) and ADDS them to the
 *   rollups, in the same statement;
 * - `qbhealth rollup --rebuild` (db/rollup-rebuild.ts) aggregates raw rows and FILLS periods it
 *   has emptied.
 *
 * "Up" is what `qbhealth status` counts as up: status pass or warn (a throttled answer is a
 * connection that works). `failures` counts every probe whose error_code is not `ok` (throttled
 * included, so `throttled` is also `failures.throttled`); rows adopted without an error_code count
 * in probes and up only. The latency sketch covers every probe with a latency, as status's
 * percentiles do. Periods are UTC: epoch arithmetic, whatever the session's TimeZone.
 */
import { dayRollupTable, halfHourRollupTable, healthTable as H } from './schema.js';

/**
 * Ratio of the latency sketch's log-scale buckets: bucket b holds [γ^b, γ^(b+1)) ms, and a
 * percentile read as the bucket's geometric middle γ^(b+½) is within √γ − 1 ≈ 2 % of the truth.
 */
export const LATENCY_GAMMA = 1.04;

/** The raw columns the rollups are computed from (what the recording INSERT returns). */
export const ROLLUP_SOURCE_COLUMNS = H.columnList(['realm_id', 'checked_at', 'status', 'connected', 'error_code', 'latency_ms']);

export const HALF_HOUR_SECONDS = 1800;
export const DAY_SECONDS = 86_400;

interface Granularity {
  readonly key: 'half_hour' | 'day';
  readonly table: string;
}

export const GRANULARITIES: readonly Granularity[] = [
  { key: 'half_hour', table: halfHourRollupTable.name },
  { key: 'day', table: dayRollupTable.name },
];

const R = halfHourRollupTable; // both tables have the same columns
const ROLLUP_COLUMNS = R.columnList(['realm_id', 'period_start', 'probes', 'up', 'throttled', 'failures', 'latency_buckets', 'latency_counts']);

/** The start of the period (UTC: epoch arithmetic) a row's checked_at falls in. */
const periodStart = (seconds: number): string => `to_timestamp(floor(extract(epoch FROM checked_at) / ${seconds}) * ${seconds})`;
/** Up, as `qbhealth status` counts it; rows from before `status` existed read `connected`. */
const IS_UP = `COALESCE(status, CASE WHEN connected THEN 'pass' ELSE 'fail' END) IN ('pass', 'warn')`;
const BUCKET = `floor(ln(greatest(latency_ms, 1)) / ln(${LATENCY_GAMMA}))::int`;
const secondsOf = (g: Granularity): number => (g.key === 'day' ? DAY_SECONDS : HALF_HOUR_SECONDS);

/**
 * Adds the incoming row's counts to the stored ones. The sketch's buckets are distinct but kept in
 * no particular order: a single incoming bucket is incremented in place when stored, else appended.
 */
const POSITION = 'array_position(r.latency_buckets, EXCLUDED.latency_buckets[1])';
const ADD_COUNTS = `probes = r.probes + EXCLUDED.probes,
      up = r.up + EXCLUDED.up,
      throttled = r.throttled + EXCLUDED.throttled`;
const ADD_ONE_BUCKET = {
  buckets: `CASE WHEN ${POSITION} IS NULL THEN r.latency_buckets || EXCLUDED.latency_buckets ELSE r.latency_buckets END`,
  counts: `CASE WHEN ${POSITION} IS NULL THEN r.latency_counts || EXCLUDED.latency_counts
               ELSE r.latency_counts[:${POSITION} - 1] || (r.latency_counts[${POSITION}] + EXCLUDED.latency_counts[1]) || r.latency_counts[${POSITION} + 1:] END`,
};

/** ON CONFLICT … DO UPDATE for aggregates of any number of probes: failures merged key by key, sketches bucket by bucket. */
const ADD_ANY = `DO UPDATE SET
      ${ADD_COUNTS},
      failures = CASE
        WHEN EXCLUDED.failures = '{}'::jsonb THEN r.failures
        WHEN r.failures = '{}'::jsonb THEN EXCLUDED.failures
        ELSE (SELECT jsonb_object_agg(k, n) FROM (
                SELECT k, sum(v::bigint) AS n
                  FROM (SELECT * FROM jsonb_each_text(r.failures) UNION ALL SELECT * FROM jsonb_each_text(EXCLUDED.failures)) AS f(k, v)
                 GROUP BY k) AS m)
      END,
      latency_buckets = CASE
        WHEN cardinality(EXCLUDED.latency_buckets) = 0 THEN r.latency_buckets
        WHEN cardinality(EXCLUDED.latency_buckets) = 1 THEN ${ADD_ONE_BUCKET.buckets}
        ELSE (SELECT array_agg(DISTINCT b ORDER BY b) FROM unnest(r.latency_buckets || EXCLUDED.latency_buckets) AS b)
      END,
      latency_counts = CASE
        WHEN cardinality(EXCLUDED.latency_buckets) = 0 THEN r.latency_counts
        WHEN cardinality(EXCLUDED.latency_buckets) = 1 THEN ${ADD_ONE_BUCKET.counts}
        ELSE (SELECT array_agg(n ORDER BY b) FROM (
                SELECT b, sum(n)::int AS n
                  FROM (SELECT * FROM unnest(r.latency_buckets, r.latency_counts)
                        UNION ALL SELECT * FROM unnest(EXCLUDED.latency_buckets, EXCLUDED.latency_counts)) AS u(b, n)
                 GROUP BY b) AS m)
      END`;

/**
 * One rollup row per (realm, period) of `source`: the counts in one aggregation, the failure codes
 * and latency buckets gathered as arrays and turned into counts per code and per bucket.
 */
function periodRows(source: string, seconds: number): string {
  return `SELECT g.realm_id, g.period_start, g.probes, g.up, g.throttled,
         CASE WHEN cardinality(g.codes) = 0 THEN '{}'::jsonb
              WHEN cardinality(g.codes) = 1 THEN jsonb_build_object(g.codes[1], 1)
              ELSE (SELECT jsonb_object_agg(c, n) FROM (SELECT c, count(*) AS n FROM unnest(g.codes) AS c GROUP BY c) AS x) END,
         CASE WHEN cardinality(g.buckets) <= 1 THEN g.buckets
              ELSE (SELECT array_agg(DISTINCT b ORDER BY b) FROM unnest(g.buckets) AS b) END,
         CASE WHEN cardinality(g.buckets) <= 1 THEN array_fill(1, ARRAY[cardinality(g.buckets)])
              ELSE (SELECT array_agg(n ORDER BY b) FROM (SELECT b, count(*)::int AS n FROM unnest(g.buckets) AS b GROUP BY b) AS x) END
    FROM (SELECT realm_id, ${periodStart(seconds)} AS period_start,
                 count(*)::int AS probes,
                 count(*) FILTER (WHERE ${IS_UP})::int AS up,
                 count(*) FILTER (WHERE error_code = 'throttled')::int AS throttled,
                 coalesce(array_agg(error_code) FILTER (WHERE error_code <> 'ok'), '{}') AS codes,
                 coalesce(array_agg(${BUCKET}) FILTER (WHERE latency_ms IS NOT NULL), '{}') AS buckets
            FROM ${source}
           WHERE realm_id IS NOT NULL
           GROUP BY 1, 2) AS g
   -- Rows locked in one order by every writer: two batches sharing realms never deadlock.
   ORDER BY g.realm_id, g.period_start`;
}

function upsert(g: Granularity, rows: string, onConflict: string): string {
  return `rollup_${g.key} AS (
    INSERT INTO ${g.table} AS r (${ROLLUP_COLUMNS})
    ${rows}
    ON CONFLICT (realm_id, period_start) ${onConflict}
    RETURNING 1)`;
}

/**
 * The CTEs (to follow `WITH source AS (…),`) that aggregate `source` (a relation with the
 * ROLLUP_SOURCE_COLUMNS, any number of rows) into both rollup tables. `add`: added to what is
 * stored (recording); `fill`: only periods without a row are written (rebuild, after it deleted
 * what it replaces). The half-hour table comes first in every statement, so its lock is always
 * taken first. Afterwards `rollup_half_hour` and `rollup_day` hold one row per period written.
 */
export function rollupCtes(source: string, mode: 'add' | 'fill'): string {
  return GRANULARITIES.map((g) => upsert(g, periodRows(source, secondsOf(g)), mode === 'add' ? ADD_ANY : 'DO NOTHING')).join(',\n  ');
}

/**
 * The same as rollupCtes(source, 'add') for a `source` of at most one row, whose error_code is
 * also the statement's parameter `errorCode` (SQL): what recording writes most, one result as its
 * probe ends, done without aggregation or subqueries, which cost more than the row itself.
 */
export function singleRollupCtes(source: string, errorCode: string): string {
  const rows = `SELECT realm_id, $PERIOD, 1, (${IS_UP})::int, (error_code = 'throttled')::int,
           CASE WHEN error_code <> 'ok' THEN jsonb_build_object(error_code, 1) ELSE '{}'::jsonb END,
           CASE WHEN latency_ms IS NULL THEN '{}'::int[] ELSE ARRAY[${BUCKET}] END,
           CASE WHEN latency_ms IS NULL THEN '{}'::int[] ELSE ARRAY[1] END
      FROM ${source} WHERE realm_id IS NOT NULL`;
  const onConflict = `DO UPDATE SET
      ${ADD_COUNTS},
      failures = CASE WHEN EXCLUDED.failures = '{}'::jsonb THEN r.failures
                      ELSE r.failures || jsonb_build_object(${errorCode}, coalesce((r.failures ->> ${errorCode})::int, 0) + 1) END,
      latency_buckets = CASE WHEN cardinality(EXCLUDED.latency_buckets) = 0 THEN r.latency_buckets ELSE ${ADD_ONE_BUCKET.buckets} END,
      latency_counts = CASE WHEN cardinality(EXCLUDED.latency_buckets) = 0 THEN r.latency_counts ELSE ${ADD_ONE_BUCKET.counts} END`;
  return GRANULARITIES.map((g) => upsert(g, rows.replace('$PERIOD', periodStart(secondsOf(g))), onConflict)).join(',\n  ');
}

/** The latency a bucket stands for: its geometric middle, in whole milliseconds. */
export function bucketLatencyMs(bucket: number): number {
  return Math.round(LATENCY_GAMMA ** (bucket + 0.5));
}

/**
 * The q-quantile (0 < q ≤ 1, nearest rank) of a merged sketch given as bucket → count; null when
 * it holds no probe.
 */
export function sketchPercentile(counts: ReadonlyMap<number, number>, q: number): number | null {
  let total = 0;
  for (const n of counts.values()) total += n;
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (const bucket of [...counts.keys()].sort((a, b) => a - b)) {
    seen += counts.get(bucket) ?? 0;
    if (seen >= rank) return bucketLatencyMs(bucket);
  }
  throw new RangeError(`quantile ${q} beyond the sketch's ${total} probes`);
}
