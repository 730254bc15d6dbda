/**
 * dashboard_history (the dashboard's history read from the rollups for 20 realms × 90 days of one
 * probe a minute, ≈ 2.6 M raw rows, vs the same figures computed from the raw rows) and
 * rollup_recording_overhead (recording results with their rollups vs the same INSERT without
 * them), each against a baseline from the same run, rounds alternating, judged on the median.
 *
 * dashboard_history: the raw rows are made by generate_series (every realm up 99 % of the time,
 * a third of the failures throttled, latencies spread over 80 ms to 2 s) and rolled up by
 * `rebuildRollups`, the code behind `qbhealth rollup --rebuild` (its time is reported). Each round
 * calls readDashboardHistory READS_PER_ROUND times (its p95 judged, ≤ 100 ms) and computes the same
 * bars and percentiles once from the raw rows (the baseline); the two are checked equal (bars
 * exactly, percentiles within the sketch's 2 %) before anything is timed.
 *
 * rollup_recording_overhead: the recording path, `insertProbeResults` (one statement: the INSERT,
 * then the rollups of what it inserted), vs INSERT_RESULTS_ONLY_SQL with the same parameters, the
 * statement recording was before rollups. 20 realms probed once a minute, results written as the
 * daemon writes them: one at a time (a result recorded as its probe ends; judged), and a cycle's
 * 20 at once and spool replays of 2,000 (reported). Both write into the same table, alternating
 * within each round (ours, bare, bare, ours, …), so the table's growth favours neither. The
 * single-result writes are measured again (reported) on a server of PostgreSQL's default
 * durability, where each commit waits for its WAL flush as in production; the suite's server runs
 * with fsync off, so there the rollups' two row updates weigh against a bare insert and a round trip.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { DashboardHistory, RealmHistory, UptimeBar } from '../../src/dashboard-model.js';
import { readDashboardHistory } from '../../src/db/dashboard-queries.js';
import { INSERT_RESULTS_ONLY_SQL, insertProbeResults, resultColumns } from '../../src/db/health-queries.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { rebuildRollups } from '../../src/db/rollup-rebuild.js';
import { startEmbeddedPostgres } from '../../src/dev/embedded-postgres.js';
import type { ProbeResult } from '../../src/probe-result.js';
import { migratedDatabase } from '../support/qbo.js';
import { percentile, quiet } from '../support/realms.js';
import { atMost, failed, median, ratioAtMost, record, reported, type BenchResult, type Rounds } from './results.js';

const REALMS = 20;

function expectTargetsMet(rows: readonly BenchResult[]): void {
  expect(failed(rows), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
}

/** Results of 20 realms probed once a minute from `start`: the n-th is realm n % 20, a minute per 20. */
function results(start: number, n: number): ProbeResult[] {
  return Array.from({ length: n }, (_, i) => {
    const failing = i % 97 === 0;
    const throttled = i % 301 === 0;
    return {
      probeId: randomUUID(),
      realmId: String(9_130_000_000 + (i % REALMS)),
      checkedAt: new Date(start + Math.floor(i / REALMS) * 60_000 + (i % REALMS) * 1000),
      connected: !failing && !throttled,
      status: throttled ? 'warn' : failing ? 'fail' : 'pass',
      errorCode: throttled ? 'throttled' : failing ? 'server_error' : 'ok',
      error: failing ? 'Intuit HTTP 503 (text/html, 58 bytes)' : undefined,
      httpStatus: throttled ? 429 : failing ? 503 : 200,
      latencyMs: 80 + ((i * 7919) % 900),
      intuitTid: `1-${i.toString(16)}-abcdef`,
      refreshTokenExpiresAt: new Date(start + 100 * 86_400_000),
      companyName: undefined,
    };
  });
}

/**
 * Times recording on `pool`: `measure(size, total, rounds)` writes `total` results in batches of
 * `size` per round with rollups and without, alternating (ours, bare, bare, ours, …), after one
 * warm-up of each; µs per result. Both write into the same table, so its growth favours neither.
 */
function overheadMeter(pool: Pool): (size: number, total: number, rounds: number) => Promise<Required<Rounds>> {
  let clock = Date.parse('2026-11-01T00:00:00Z');
  const next = (n: number): ProbeResult[] => {
    const out = results(clock, n);
    clock += Math.ceil(n / REALMS) * 60_000;
    return out;
  };
  const withRollups = (batch: readonly ProbeResult[]): Promise<number> => insertProbeResults(pool, batch);
  // Named like recording's own statements, so both are planned once per connection.
  const withoutRollups = async (batch: readonly ProbeResult[]): Promise<number> =>
    (await pool.query({ name: 'bench-insert-results-only', text: INSERT_RESULTS_ONLY_SQL, values: resultColumns(batch) })).rowCount ?? 0;
  const timeWrites = async (write: (b: readonly ProbeResult[]) => Promise<number>, size: number, total: number): Promise<number> => {
    const batches = Array.from({ length: total / size }, () => next(size));
    const start = performance.now();
    for (const b of batches) expect(await write(b)).toBe(size);
    return ((performance.now() - start) * 1000) / total;
  };
  return async (size, total, rounds) => {
    await timeWrites(withRollups, size, total);
    await timeWrites(withoutRollups, size, total);
    const values: number[] = [];
    const baselines: number[] = [];
    for (let round = 0; round < rounds; round++) {
      if (round % 2 === 0) {
        values.push(await timeWrites(withRollups, size, total));
        baselines.push(await timeWrites(withoutRollups, size, total));
      } else {
        baselines.push(await timeWrites(withoutRollups, size, total));
        values.push(await timeWrites(withRollups, size, total));
      }
    }
    return { values, baselines };
  };
}

const DAY_MS = 86_400_000;
const HALF_HOUR_MS = 1_800_000;

/** 20 realms × 90 days, one probe a minute up to `now`: 1 % failing (a third of those throttled), latencies 80 ms to 2 s. */
const GENERATE_SQL = `
  INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, error, http_status, latency_ms, checked_at)
  SELECT gen_random_uuid(), r::text, code = 'ok', CASE code WHEN 'ok' THEN 'pass' WHEN 'throttled' THEN 'warn' ELSE 'fail' END, code,
         CASE WHEN code <> 'ok' THEN 'Intuit said ' || code END, CASE code WHEN 'ok' THEN 200 WHEN 'throttled' THEN 429 ELSE 503 END,
         80 + (g * 7919 + r) % 1920, at
    FROM (SELECT r, g, $1::timestamptz + g * interval '1 minute' AS at,
                 CASE WHEN (g + r) % 300 = 0 THEN 'throttled' WHEN (g + r) % 150 = 0 THEN 'server_error' WHEN (g * 7 + r) % 1000 = 0 THEN 'timeout' ELSE 'ok' END AS code
            FROM generate_series(9130000000, 9130000000 + $3::int - 1) AS r,
                 generate_series(0, floor(extract(epoch FROM $2::timestamptz - $1::timestamptz) / 60)::int) AS g) AS p`;

// The same figures from the raw rows: what the dashboard would cost without rollups.
const RAW_BARS_SQL = `
  SELECT realm_id, to_timestamp(floor(extract(epoch FROM checked_at) / $3) * $3) AS period_start, status, error_code, count(*)::int AS n
    FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2 GROUP BY 1, 2, 3, 4`;
const RAW_PERCENTILES_SQL = `
  SELECT realm_id, percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95, count(*)::int AS n
    FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2 GROUP BY realm_id`;

interface RawBars {
  readonly days: Map<string, Map<number, Pick<UptimeBar, 'probes' | 'up' | 'throttled' | 'failures'>>>;
  readonly halfHours: Map<string, Map<number, Pick<UptimeBar, 'probes' | 'up' | 'throttled' | 'failures'>>>;
  readonly latency24h: Map<string, { p50: number; p95: number; n: number }>;
  readonly latency7d: Map<string, { p50: number; p95: number; n: number }>;
}

async function historyFromRaw(pool: Pool, now: number): Promise<RawBars> {
  const today = Math.floor(now / DAY_MS) * DAY_MS;
  const halfHour = Math.floor(now / HALF_HOUR_MS) * HALF_HOUR_MS;
  const bars = async (from: number, to: number, seconds: number): Promise<RawBars['days']> => {
    const out: RawBars['days'] = new Map();
    const rows = await pool.query<{ realm_id: string; period_start: Date; status: string; error_code: string; n: number }>(RAW_BARS_SQL, [new Date(from), new Date(to), seconds]);
    for (const r of rows.rows) {
      let realm = out.get(r.realm_id);
      if (!realm) out.set(r.realm_id, (realm = new Map()));
      const at = r.period_start.getTime();
      const bar = realm.get(at) ?? { probes: 0, up: 0, throttled: 0, failures: {} };
      const failures: Record<string, number> = { ...bar.failures };
      if (r.error_code !== 'ok') failures[r.error_code] = (failures[r.error_code] ?? 0) + r.n;
      realm.set(at, {
        probes: bar.probes + r.n,
        up: bar.up + (r.status === 'pass' || r.status === 'warn' ? r.n : 0),
        throttled: bar.throttled + (r.error_code === 'throttled' ? r.n : 0),
        failures,
      });
    }
    return out;
  };
  const percentiles = async (from: number, to: number): Promise<RawBars['latency24h']> =>
    new Map((await pool.query<{ realm_id: string; p50: number; p95: number; n: number }>(RAW_PERCENTILES_SQL, [new Date(from), new Date(to)])).rows.map((r) => [r.realm_id, r]));
  return {
    days: await bars(today - 89 * DAY_MS, today + DAY_MS, 86_400),
    halfHours: await bars(halfHour - 47 * HALF_HOUR_MS, halfHour + HALF_HOUR_MS, 1800),
    latency24h: await percentiles(halfHour - 47 * HALF_HOUR_MS, halfHour + HALF_HOUR_MS),
    latency7d: await percentiles(today - 6 * DAY_MS, today + DAY_MS),
  };
}

/** The rollups' answer is the raw rows' answer: bars exactly, percentiles within the sketch's 2 %. */
function expectSameHistory(history: DashboardHistory, raw: RawBars): void {
  expect(history.realms).toHaveLength(REALMS);
  const counts = (b: UptimeBar) => ({ probes: b.probes, up: b.up, throttled: b.throttled, failures: b.failures });
  const zero = { probes: 0, up: 0, throttled: 0, failures: {} };
  const within = (read: number | null, exact: number | undefined): boolean => read !== null && exact !== undefined && Math.abs(read - exact) / exact <= 0.02;
  for (const realm of history.realms as RealmHistory[]) {
    for (const [bars, expected] of [
      [realm.days, raw.days.get(realm.realmId)],
      [realm.halfHours, raw.halfHours.get(realm.realmId)],
    ] as const) {
      for (const bar of bars) expect(counts(bar), `${realm.realmId} ${bar.from}`).toEqual(expected?.get(Date.parse(bar.from)) ?? zero);
    }
    for (const key of ['latency24h', 'latency7d'] as const) {
      const exact = raw[key].get(realm.realmId);
      expect(realm[key].probes).toBe(exact?.n);
      expect(within(realm[key].p50, exact?.p50) && within(realm[key].p95, exact?.p95), `${realm.realmId} ${key}: ${JSON.stringify(realm[key])} vs ${JSON.stringify(exact)}`).toBe(true);
    }
  }
}

describe('dashboard history and rollups', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('dashboard_history: 20 realms × 90 days of one probe a minute, from the rollups vs from the raw rows', async () => {
    const READS_PER_ROUND = 40;
    const ROUNDS = 5;
    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    const now = Date.parse('2026-11-24T15:12:00Z');
    const first = Math.floor(now / DAY_MS) * DAY_MS - 89 * DAY_MS;

    let started = performance.now();
    const inserted = await db.query(GENERATE_SQL, [new Date(first), new Date(now), REALMS]);
    await db.query('VACUUM ANALYZE quickbooks_connection_health');
    const rows = inserted.rowCount ?? 0;
    expect(rows).toBeGreaterThan(2_550_000);
    process.stdout.write(`dashboard_history: ${rows} raw rows generated in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    started = performance.now();
    const rebuilt = await rebuildRollups(pool, quiet);
    const rebuildSeconds = (performance.now() - started) / 1000;
    expect(rebuilt.realms.reduce((n, r) => n + r.rows, 0)).toBe(rows);
    await db.query('VACUUM ANALYZE quickbooks_health_rollup_halfhour, quickbooks_health_rollup_day');

    const read = (): Promise<DashboardHistory> => readDashboardHistory(pool, { now: new Date(now) });
    expectSameHistory(await read(), await historyFromRaw(pool, now));

    const p95s: number[] = [];
    const raws: number[] = [];
    const readRound = async (): Promise<void> => {
      const times: number[] = [];
      for (let i = 0; i < READS_PER_ROUND; i++) {
        const t = performance.now();
        await read();
        times.push(performance.now() - t);
      }
      p95s.push(percentile(times.sort((a, b) => a - b), 95));
    };
    const rawRound = async (): Promise<void> => {
      const t = performance.now();
      await historyFromRaw(pool, now);
      raws.push(performance.now() - t);
    };
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0) {
        await readRound();
        await rawRound();
      } else {
        await rawRound();
        await readRound();
      }
    }
    const measured = [
      atMost('dashboard_history', 'ms (p95)', { values: p95s }, 100),
      reported('dashboard_history_vs_raw', 'ms', { values: p95s, baselines: raws }),
      reported('rollup_rebuild_rate', 'rows/s', { values: [rows / rebuildSeconds] }),
    ];
    record(...measured);
    process.stdout.write(`dashboard_history: p95 ${median(p95s).toFixed(1)} ms from the rollups, ${median(raws).toFixed(0)} ms from the raw rows; rebuild ${rebuildSeconds.toFixed(1)} s\n`);
    expectTargetsMet(measured);
  });

  it('rollup_recording_overhead: recording with rollups vs the same INSERT without them', async () => {
    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool: Pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    const measure = overheadMeter(pool);
    const single = await measure(1, 400, 15);
    const cycle = await measure(REALMS, 2000, 9);
    const replay = await measure(2000, 20_000, 5);

    // The same single-result writes on a server with PostgreSQL's default durability (fsync and
    // synchronous_commit on), as production runs it: each commit waits for its WAL flush.
    const durableServer = await startEmbeddedPostgres({ settings: { timezone: 'America/St_Johns' } });
    cleanups.push(() => durableServer.stop());
    const durable = createPool({ databaseUrl: durableServer.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => durable.end());
    await migrate(durable, quiet);
    const durableSingle = await overheadMeter(durable)(1, 400, 9);

    const rows = [
      ratioAtMost('rollup_recording_overhead', 'µs/result', single, 1.1),
      reported('rollup_recording_overhead_batch_20', 'µs/result', cycle),
      reported('rollup_recording_overhead_replay_2000', 'µs/result', replay),
      reported('rollup_recording_overhead_durable', 'µs/result', durableSingle),
    ];
    record(...rows);
    expectTargetsMet(rows);
  });
});
