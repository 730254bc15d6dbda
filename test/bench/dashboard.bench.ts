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
 * within each round (ours, bare, bare, ours, …), so the table's growth favours neither.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { INSERT_RESULTS_ONLY_SQL, insertProbeResults, resultColumns } from '../../src/db/health-queries.js';
import { createPool, type Pool } from '../../src/db/pool.js';
import type { ProbeResult } from '../../src/probe-result.js';
import { migratedDatabase } from '../support/qbo.js';
import { quiet } from '../support/realms.js';
import { failed, ratioAtMost, record, reported, type BenchResult } from './results.js';

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

describe('dashboard history and rollups', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('rollup_recording_overhead: recording with rollups vs the same INSERT without them', async () => {
    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool: Pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    let clock = Date.parse('2026-11-01T00:00:00Z');
    const next = (n: number): ProbeResult[] => {
      const out = results(clock, n);
      clock += Math.ceil(n / REALMS) * 60_000;
      return out;
    };
    const withRollups = (batch: readonly ProbeResult[]): Promise<number> => insertProbeResults(pool, batch);
    const withoutRollups = async (batch: readonly ProbeResult[]): Promise<number> => (await pool.query({ name: 'insert-results-only', text: INSERT_RESULTS_ONLY_SQL, values: resultColumns(batch) })).rowCount ?? 0;

    /** µs per result, writing `total` results in batches of `size`, one statement after the other. */
    const timeWrites = async (write: (b: readonly ProbeResult[]) => Promise<number>, size: number, total: number): Promise<number> => {
      const batches = Array.from({ length: total / size }, () => next(size));
      const start = performance.now();
      for (const b of batches) expect(await write(b)).toBe(size);
      return ((performance.now() - start) * 1000) / total;
    };

    const measure = async (size: number, total: number, rounds: number): Promise<{ values: number[]; baselines: number[] }> => {
      // Warm-up: connections, plans, the rollup rows of the current periods.
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

    const single = await measure(1, 400, 15);
    const cycle = await measure(REALMS, 2000, 9);
    const replay = await measure(2000, 20_000, 5);
    const rows = [
      ratioAtMost('rollup_recording_overhead', 'µs/result', single, 1.1),
      reported('rollup_recording_overhead_batch_20', 'µs/result', cycle),
      reported('rollup_recording_overhead_replay_2000', 'µs/result', replay),
    ];
    record(...rows);
    expectTargetsMet(rows);
  });
});
