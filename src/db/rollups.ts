/**
 * The rollups' SQL: how raw health rows become per-realm aggregates per half hour and per UTC day
 * (probes, up, throttled, failures by error_code, a latency sketch). Half hours are aggregated
 * from the raw rows, days from their half hours, so the two cannot count differently. Every write
 * replaces what is stored with what was computed (ON CONFLICT … DO UPDATE SET col = EXCLUDED.col):
 * folding a period twice, or by two members at once, leaves the same rows (db/rollup-fold.ts).
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

/** The raw columns the rollups are computed from. */
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

const HH = halfHourRollupTable;
const D = dayRollupTable;
const ROLLUP_COLUMNS = HH.columnList(['realm_id', 'period_start', 'probes', 'up', 'throttled', 'failures', 'latency_buckets', 'latency_counts']);

/** The start of the period (UTC: epoch arithmetic) an instant falls in. */
const periodStartOf = (column: string, seconds: number): string => `to_timestamp(floor(extract(epoch FROM ${column}) / ${seconds}) * ${seconds})`;
/** Up, as `qbhealth status` counts it; rows from before `status` existed read `connected`. */
const IS_UP = `COALESCE(status, CASE WHEN connected THEN 'pass' ELSE 'fail' END) IN ('pass', 'warn')`;
const BUCKET = `floor(ln(greatest(latency_ms, 1)) / ln(${LATENCY_GAMMA}))::int`;

/**
 * One rollup row per (realm, period) of `source` (a relation with the ROLLUP_SOURCE_COLUMNS): the
 * counts in one aggregation, the failure codes and latency buckets gathered as arrays and turned
 * into counts per code and per bucket (buckets ascending).
 */
export function periodRows(source: string, seconds: number): string {
  return `SELECT g.realm_id, g.period_start, g.probes, g.up, g.throttled,
         CASE WHEN cardinality(g.codes) = 0 THEN '{}'::jsonb
              WHEN cardinality(g.codes) = 1 THEN jsonb_build_object(g.codes[1], 1)
              ELSE (SELECT jsonb_object_agg(c, n) FROM (SELECT c, count(*) AS n FROM unnest(g.codes) AS c GROUP BY c) AS x) END AS failures,
         CASE WHEN cardinality(g.buckets) <= 1 THEN g.buckets
              ELSE (SELECT array_agg(DISTINCT b ORDER BY b) FROM unnest(g.buckets) AS b) END AS latency_buckets,
         CASE WHEN cardinality(g.buckets) <= 1 THEN array_fill(1, ARRAY[cardinality(g.buckets)])
              ELSE (SELECT array_agg(n ORDER BY b) FROM (SELECT b, count(*)::int AS n FROM unnest(g.buckets) AS b GROUP BY b) AS x) END AS latency_counts
    FROM (SELECT realm_id, ${periodStartOf('checked_at', seconds)} AS period_start,
                 count(*)::int AS probes,
                 count(*) FILTER (WHERE ${IS_UP})::int AS up,
                 count(*) FILTER (WHERE error_code = 'throttled')::int AS throttled,
                 coalesce(array_agg(error_code) FILTER (WHERE error_code <> 'ok'), '{}') AS codes,
                 coalesce(array_agg(${BUCKET}) FILTER (WHERE latency_ms IS NOT NULL), '{}') AS buckets
            FROM ${source}
           WHERE realm_id IS NOT NULL
           GROUP BY 1, 2) AS g
   -- Rows locked in one order by every writer.
   ORDER BY g.realm_id, g.period_start`;
}

/**
 * The raw rows of [$1, $2), of the realms $3 (NULL: every realm), as a relation for periodRows;
 * on the (checked_at) or (realm_id, checked_at) index.
 */
export const RAW_RANGE = `(SELECT ${ROLLUP_SOURCE_COLUMNS} FROM ${H.name}
     WHERE ${H.col('checked_at')} >= $1 AND ${H.col('checked_at')} < $2 AND ($3::text[] IS NULL OR ${H.col('realm_id')} = ANY($3::text[]))) AS raw`;

const REPLACE = `DO UPDATE SET probes = EXCLUDED.probes, up = EXCLUDED.up, throttled = EXCLUDED.throttled, failures = EXCLUDED.failures,
      latency_buckets = EXCLUDED.latency_buckets, latency_counts = EXCLUDED.latency_counts`;

/**
 * The half hours of [$1, $2) (half-hour boundaries) of the realms $3 (NULL: all), computed from the
 * raw rows: `replace` overwrites what is stored (a fold), `fill` only writes half hours without a
 * row (a rebuild, where raw rows may have been pruned). Returns the rows written.
 */
export function foldHalfHoursSql(mode: 'replace' | 'fill'): string {
  return `INSERT INTO ${HH.name} AS r (${ROLLUP_COLUMNS})
    ${periodRows(RAW_RANGE, HALF_HOUR_SECONDS)}
    ON CONFLICT (realm_id, period_start) ${mode === 'replace' ? REPLACE : 'DO NOTHING'}`;
}

/**
 * The days of [$1, $2) (day boundaries: complete days, all their half hours folded) of the realms
 * $3 (NULL: all), as the sum of their half hours: counts added, failures added code by code,
 * sketches bucket by bucket. Replaces what is stored.
 */
export const FOLD_DAYS_SQL = `WITH hh AS (
    SELECT realm_id, ${periodStartOf('period_start', DAY_SECONDS)} AS day, probes, up, throttled, failures, latency_buckets, latency_counts
      FROM ${HH.name}
     WHERE period_start >= $1 AND period_start < $2 AND ($3::text[] IS NULL OR realm_id = ANY($3::text[]))),
  counts AS (SELECT realm_id, day, sum(probes)::int AS probes, sum(up)::int AS up, sum(throttled)::int AS throttled FROM hh GROUP BY 1, 2),
  fails AS (SELECT realm_id, day, jsonb_object_agg(k, n) AS failures
              FROM (SELECT realm_id, day, f.k, sum(f.v::int)::int AS n FROM hh, jsonb_each_text(hh.failures) AS f(k, v) GROUP BY 1, 2, 3) AS x
             GROUP BY 1, 2),
  sketches AS (SELECT realm_id, day, array_agg(b ORDER BY b) AS buckets, array_agg(n ORDER BY b) AS counts
                 FROM (SELECT realm_id, day, u.b, sum(u.n)::int AS n FROM hh, unnest(hh.latency_buckets, hh.latency_counts) AS u(b, n) GROUP BY 1, 2, 3) AS x
                GROUP BY 1, 2)
  INSERT INTO ${D.name} AS r (${ROLLUP_COLUMNS})
  SELECT c.realm_id, c.day, c.probes, c.up, c.throttled, coalesce(f.failures, '{}'::jsonb), coalesce(s.buckets, '{}'::int[]), coalesce(s.counts, '{}'::int[])
    FROM counts c LEFT JOIN fails f USING (realm_id, day) LEFT JOIN sketches s USING (realm_id, day)
   ORDER BY c.realm_id, c.day
  ON CONFLICT (realm_id, period_start) ${REPLACE}`;

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
