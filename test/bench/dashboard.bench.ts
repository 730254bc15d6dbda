/**
 * dashboard_history (the whole answer of `GET /dashboard/data` for 20 realms × 90 days of one
 * probe a minute, ≈ 2.6 M raw rows, vs the same history computed from the raw rows),
 * rollup_recording_overhead (recording results vs the same INSERT as before rollups existed) and
 * rollup_fold_cost_per_result (what folding them into the rollups costs afterwards, per result),
 * each against a baseline from the same run, rounds alternating, judged on the median.
 *
 * dashboard_history: the raw rows are made by generate_series (every realm up 99 % of the time,
 * a third of the failures throttled, latencies spread over 80 ms to 2 s) and folded into the rollups
 * as the daemons fold them (`foldClosedPeriods`, from the first day to the last closed half hour:
 * the open one, 12 minutes, is read from the raw rows), then rebuilt by `rebuildRollups`, the code
 * behind `qbhealth rollup --rebuild` (both times reported). A quarter of the realms never fail in
 * the 90 days, so each one's last error is looked for through its whole history. Each round answers
 * the data READS_PER_ROUND times as the route does (the stored read, loadStoredDashboard, on a
 * StatusReader's snapshot: status with each realm's last error, history, incidents, silences; then
 * buildDashboardData and JSON.stringify; its p95 judged, ≤ 100 ms), times readDashboardHistory
 * alone as often (reported), and computes the same bars and percentiles once from the raw rows (the
 * baseline); the history is checked equal to the raw rows' (bars exactly, percentiles within the
 * sketch's 2 %) and the never-failing realms to have no last error before anything is timed.
 *
 * rollup_recording_overhead: the recording path, `insertProbeResults`, vs INSERT_RESULTS_ONLY_SQL
 * with the same parameters, the statement recording was before rollups. 20 realms probed once a
 * minute, results stamped from the present on, as the daemon records them: one at a time (a result
 * recorded as its probe ends; judged with the fold, below), and a cycle's 20 at once (reported);
 * and spool replays of 2,000 results of half hours already folded (reported: each replay re-folds them in its
 * transaction). Both write into the same table, alternating within each round (ours, bare, bare,
 * ours, …), so the table's growth favours neither. The single-result writes are measured again
 * (reported) on a server of PostgreSQL's default durability, where each commit waits for its WAL
 * flush as in production.
 *
 * rollup_fold_cost_per_result (reported): a day of 20 realms probed once a minute (28,800 results)
 * folded as the daemons fold it, one closed half hour at a time (each fold: the half hour's
 * aggregate over all realms, its day summed again from its half hours, the watermark), in µs per
 * result; rollup_recording_with_fold (judged, ≤ 1.10): recording one at a time plus that, over the
 * bare INSERT. The bare recording ratio (rollup_recording_overhead) is reported: since the fold
 * moved out of recording, both sides run the same statement for results in the present.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { DashboardHistory, RealmHistory, UptimeBar } from '../../src/dashboard-model.js';
import { readDashboardHistory } from '../../src/db/dashboard-queries.js';
import { loadStoredDashboard } from '../../src/db/dashboard-reads.js';
import { StatusReader } from '../../src/db/status.js';
import { HealthState } from '../../src/health/state.js';
import { buildDashboardData } from '../../src/http/dashboard-data.js';
import { INSERT_RESULTS_ONLY_SQL, insertProbeResults, resultColumns } from '../../src/db/health-queries.js';
import { migrate } from '../../src/db/migrate.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import { foldClosedPeriods } from '../../src/db/rollup-fold.js';
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
 * Results are stamped from `start` on: the present (recorded as they happen), or days back (late:
 * their half hours are folded already, as in a spool replay).
 */
function overheadMeter(pool: Pool, start: number): (size: number, total: number, rounds: number) => Promise<Required<Rounds>> {
  let clock = start;
  const next = (n: number): ProbeResult[] => {
    const out = results(clock, n);
    clock += Math.ceil(n / REALMS) * 60_000;
    return out;
  };
  const withRollups = (batch: readonly ProbeResult[]): Promise<number> => insertProbeResults(pool, batch);
  // Named like recording's own statement, so both are planned once per connection.
  const withoutRollups = async (batch: readonly ProbeResult[]): Promise<number> =>
    (await pool.query({ name: 'bench-insert-results-only', text: INSERT_RESULTS_ONLY_SQL, values: resultColumns(batch) })).rowCount ?? 0;
  const timeWrites = async (write: (b: readonly ProbeResult[]) => Promise<number>, size: number, total: number): Promise<number> => {
    const batches = Array.from({ length: total / size }, () => next(size));
    const started = performance.now();
    for (const b of batches) expect(await write(b)).toBe(size);
    return ((performance.now() - started) * 1000) / total;
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

const MINUTE_MS = 60_000;
/** The present, to the minute: results recorded as they happen. */
const presentClock = (): number => Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS;

/**
 * µs per result of folding a day of 20 realms probed once a minute, one closed half hour per
 * fold as the daemons' timers fold them, `rounds` times (each round re-folds the same day from
 * the watermark at its start: replace semantics, the same work).
 */
async function foldCostPerResult(db: { query: (text: string, params?: unknown[]) => Promise<unknown> }, pool: Pool, rounds: number): Promise<number[]> {
  const day = Math.floor(Date.now() / DAY_MS) * DAY_MS - 3 * DAY_MS;
  const perDay = REALMS * 24 * 60;
  const all = results(day, perDay);
  for (let i = 0; i < all.length; i += 2000) {
    const batch = all.slice(i, i + 2000);
    // Recorded as they happened (not late): raw rows only.
    expect(await insertProbeResults(pool, batch, (batch[0] as ProbeResult).checkedAt.getTime())).toBe(batch.length);
  }
  await db.query('VACUUM ANALYZE quickbooks_connection_health');
  const values: number[] = [];
  for (let round = 0; round < rounds; round++) {
    await db.query('UPDATE quickbooks_health_rollup_fold SET folded_until = $1', [new Date(day)]);
    const started = performance.now();
    let rows = 0;
    for (let h = 1; h <= 48; h++) {
      const folded = await foldClosedPeriods(pool, { graceMs: 120_000, now: new Date(day + h * HALF_HOUR_MS + 150_000), wait: true });
      rows += folded.halfHourRows;
    }
    values.push(((performance.now() - started) * 1000) / perDay);
    expect(rows).toBe(48 * REALMS);
  }
  return values;
}

const DAY_MS = 86_400_000;
const HALF_HOUR_MS = 1_800_000;

/**
 * 20 realms × 90 days, one probe a minute up to `now`: 1 % failing (a third of those throttled),
 * except every fourth realm, which never fails; latencies 80 ms to 2 s.
 */
const GENERATE_SQL = `
  INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, error, http_status, latency_ms, checked_at)
  SELECT gen_random_uuid(), r::text, code = 'ok', CASE code WHEN 'ok' THEN 'pass' WHEN 'throttled' THEN 'warn' ELSE 'fail' END, code,
         CASE WHEN code <> 'ok' THEN 'Intuit said ' || code END, CASE code WHEN 'ok' THEN 200 WHEN 'throttled' THEN 429 ELSE 503 END,
         80 + (g * 7919 + r) % 1920, at
    FROM (SELECT r, g, $1::timestamptz + g * interval '1 minute' AS at,
                 CASE WHEN r % 4 = 0 THEN 'ok' WHEN (g + r) % 300 = 0 THEN 'throttled' WHEN (g + r) % 150 = 0 THEN 'server_error' WHEN (g * 7 + r) % 1000 = 0 THEN 'timeout' ELSE 'ok' END AS code
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
    // Folded as the daemons fold: from the first day to the last closed half hour at `now` (15:00).
    await db.query('UPDATE quickbooks_health_rollup_fold SET folded_until = $1', [new Date(first)]);
    started = performance.now();
    const folded = await foldClosedPeriods(pool, { graceMs: 120_000, now: new Date(now), wait: true });
    const foldSeconds = (performance.now() - started) / 1000;
    expect(folded.foldedUntil).toEqual(new Date(Math.floor((now - 120_000) / HALF_HOUR_MS) * HALF_HOUR_MS));
    started = performance.now();
    const rebuilt = await rebuildRollups(pool, quiet);
    const rebuildSeconds = (performance.now() - started) / 1000;
    const foldedRows = Number((await db.query('SELECT count(*) AS n FROM quickbooks_connection_health WHERE checked_at < $1', [folded.foldedUntil])).rows[0].n);
    expect(rebuilt.realms.reduce((n, r) => n + r.rows, 0)).toBe(foldedRows);
    await db.query('VACUUM ANALYZE quickbooks_health_rollup_halfhour, quickbooks_health_rollup_day');

    const read = (): Promise<DashboardHistory> => readDashboardHistory(pool, { now: new Date(now) });
    expectSameHistory(await read(), await historyFromRaw(pool, now));

    // The route's answer: its stored read on the status reader's own pool, then assembled and serialised.
    const reader = new StatusReader(db.url, quiet);
    cleanups.push(() => reader.close());
    const state = new HealthState();
    const answer = async (): Promise<string> => {
      const data = await reader.read((c) => loadStoredDashboard(c, { now: new Date(now) }));
      return JSON.stringify(buildDashboardData(state, { data, error: undefined }, { version: 'bench', refreshTokenWarnDays: 14, now: new Date(now), trustedViewer: false }));
    };
    const firstAnswer = JSON.parse(await answer()) as { realms: Array<{ realmId: string; lastError: unknown }> };
    expect(firstAnswer.realms).toHaveLength(REALMS);
    const neverFailing = firstAnswer.realms.filter((r) => Number(r.realmId) % 4 === 0);
    expect(neverFailing).toHaveLength(REALMS / 4);
    expect(neverFailing.map((r) => r.lastError)).toEqual(neverFailing.map(() => null));
    expect(firstAnswer.realms.filter((r) => r.lastError !== null)).toHaveLength(REALMS - REALMS / 4);

    const p95s: number[] = [];
    const historyP95s: number[] = [];
    const raws: number[] = [];
    const p95Of = async (call: () => Promise<unknown>): Promise<number> => {
      const times: number[] = [];
      for (let i = 0; i < READS_PER_ROUND; i++) {
        const t = performance.now();
        await call();
        times.push(performance.now() - t);
      }
      return percentile(times.sort((a, b) => a - b), 95);
    };
    const readRound = async (): Promise<void> => {
      p95s.push(await p95Of(answer));
      historyP95s.push(await p95Of(read));
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
      reported('dashboard_history_read_only', 'ms (p95)', { values: historyP95s }),
      reported('rollup_rebuild_rate', 'rows/s', { values: [foldedRows / rebuildSeconds] }),
      reported('rollup_fold_rate', 'rows/s', { values: [foldedRows / foldSeconds] }),
    ];
    record(...measured);
    process.stdout.write(`dashboard_history: p95 ${median(p95s).toFixed(1)} ms the whole data answer (${median(historyP95s).toFixed(1)} ms its history read), ${median(raws).toFixed(0)} ms from the raw rows; fold ${foldSeconds.toFixed(1)} s, rebuild ${rebuildSeconds.toFixed(1)} s\n`);
    expectTargetsMet(measured);
  });

  it('rollup_recording_with_fold: recording plus folding the results afterwards vs the INSERT recording was before rollups', async () => {
    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool: Pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    const single = await overheadMeter(pool, presentClock())(1, 400, 15);
    const cycle = await overheadMeter(pool, presentClock())(REALMS, 2000, 9);
    // Late: days before the watermark (the start of today), so every replay re-folds what it inserted.
    const replay = await overheadMeter(pool, Math.floor(Date.now() / DAY_MS) * DAY_MS - 20 * DAY_MS)(2000, 20_000, 5);

    const foldDb = await migratedDatabase();
    cleanups.push(() => foldDb.drop());
    const foldPool: Pool = createPool({ databaseUrl: foldDb.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => foldPool.end());
    const fold = await foldCostPerResult(foldDb, foldPool, single.values.length);

    // The same single-result writes on a server with PostgreSQL's default durability (fsync and
    // synchronous_commit on), as production runs it: each commit waits for its WAL flush.
    const durableServer = await startEmbeddedPostgres({ settings: { timezone: 'America/St_Johns' } });
    cleanups.push(() => durableServer.stop());
    const durable = createPool({ databaseUrl: durableServer.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => durable.end());
    await migrate(durable, quiet);
    const durableSingle = await overheadMeter(durable, presentClock())(1, 400, 9);

    const rows = [
      reported('rollup_recording_overhead', 'µs/result', single),
      reported('rollup_recording_overhead_batch_20', 'µs/result', cycle),
      reported('rollup_recording_overhead_replay_2000', 'µs/result', replay),
      reported('rollup_recording_overhead_durable', 'µs/result', durableSingle),
      reported('rollup_fold_cost_per_result', 'µs/result', { values: fold }),
      ratioAtMost('rollup_recording_with_fold', 'µs/result', { values: single.values.map((v, i) => v + (fold[i] as number)), baselines: single.baselines }, 1.1),
    ];
    record(...rows);
    process.stdout.write(`rollup_fold_cost_per_result: ${median(fold).toFixed(1)} µs per result, recording one at a time ${median(single.values).toFixed(1)} µs (bare insert ${median(single.baselines).toFixed(1)} µs)\n`);
    expectTargetsMet(rows);
  });
});
