/**
 * Rollups (db/rollups.ts): counted by the recording statement, once per inserted row (a replay
 * counts nothing twice), equal to what `qbhealth rollup --rebuild` computes from the raw rows,
 * kept when raw rows are pruned and pruned after ROLLUP_RETENTION_DAYS, demanded by verifySchema.
 * Real PostgreSQL, each describe block its own migrated database.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { describeDbFailure } from '../src/db/failure.js';
import { insertProbeResults } from '../src/db/health-queries.js';
import { migrate } from '../src/db/migrate.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { pruneHistory } from '../src/db/prune.js';
import { rebuildRollups, rollupCoverage, warnWhenRollupsIncomplete } from '../src/db/rollup-rebuild.js';
import { bucketLatencyMs, LATENCY_GAMMA, sketchPercentile } from '../src/db/rollups.js';
import { describeProblem, verifySchema } from '../src/db/verify.js';
import type { ErrorCode, ProbeResult } from '../src/probe-result.js';
import { Spool } from '../src/recorder/spool.js';
import { runQbhealth } from './support/cli.js';
import type { TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';

const quiet = pino({ level: 'silent' });
const MIN = 60_000;
const DAY = 86_400_000;

const OUTCOMES: Record<string, Pick<ProbeResult, 'connected' | 'status' | 'errorCode' | 'httpStatus'>> = {
  ok: { connected: true, status: 'pass', errorCode: 'ok', httpStatus: 200 },
  throttled: { connected: false, status: 'warn', errorCode: 'throttled', httpStatus: 429 },
  server_error: { connected: false, status: 'fail', errorCode: 'server_error', httpStatus: 503 },
  timeout: { connected: false, status: 'fail', errorCode: 'timeout', httpStatus: undefined },
};

function result(realmId: string, at: Date, code: keyof typeof OUTCOMES, latencyMs: number): ProbeResult {
  const o = OUTCOMES[code] as (typeof OUTCOMES)[string];
  return {
    probeId: randomUUID(),
    realmId,
    checkedAt: at,
    ...o,
    errorCode: o.errorCode as ErrorCode,
    error: code === 'ok' ? undefined : `Intuit said ${code}`,
    latencyMs,
    intuitTid: undefined,
    refreshTokenExpiresAt: undefined,
    companyName: undefined,
  };
}

interface RollupRow {
  realm_id: string;
  period_start: Date;
  probes: number;
  up: number;
  throttled: number;
  failures: Record<string, number>;
  latency_buckets: number[];
  latency_counts: number[];
}

const rollups = async (db: TestDatabase, table: 'halfhour' | 'day'): Promise<RollupRow[]> =>
  (
    await db.query<RollupRow>(
      `SELECT realm_id, period_start, probes, up, throttled, failures, latency_buckets, latency_counts
         FROM quickbooks_health_rollup_${table} ORDER BY realm_id, period_start`,
    )
  ).rows;

/** A stored sketch as bucket -> count (its buckets are distinct, in no particular order). */
const sketch = (r: Pick<RollupRow, 'latency_buckets' | 'latency_counts'> | undefined): Map<number, number> =>
  new Map((r?.latency_buckets ?? []).map((b, i) => [b, r?.latency_counts[i] as number]));

const T0 = Date.parse('2026-11-20T23:40:00Z');

/** 2 realms, 40 minutes across midnight UTC (two days, two half hours), every outcome. */
function mixedResults(): ProbeResult[] {
  const codes = ['ok', 'ok', 'throttled', 'ok', 'server_error', 'ok', 'timeout', 'ok'] as const;
  const out: ProbeResult[] = [];
  for (let i = 0; i < 40; i++) {
    for (const realm of ['111', '222']) {
      out.push(result(realm, new Date(T0 + i * MIN), codes[i % codes.length] as keyof typeof OUTCOMES, 100 + ((i * 37) % 400) + (realm === '222' ? 1000 : 0)));
    }
  }
  return out;
}

describe('recording', () => {
  let db: TestDatabase;
  let pool: Pool;
  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, quiet);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('adds each recorded result to its realm\'s half hour and UTC day: probes, up, throttled, failures by error_code, latency buckets', async () => {
    const all = mixedResults();
    // In batches of several sizes, as group commit and replays write them.
    for (const size of [1, 7, 30]) {
      const batch = all.splice(0, size);
      expect(await insertProbeResults(pool, batch)).toBe(size);
    }
    expect(await insertProbeResults(pool, all)).toBe(all.length);

    const days = await rollups(db, 'day');
    // 111 on 2026-11-20: minutes 0..19 (23:40..23:59), codes cycling ok ok throttled ok server_error ok timeout ok.
    const firstDay = days.find((d) => d.realm_id === '111' && d.period_start.toISOString() === '2026-11-20T00:00:00.000Z');
    expect(firstDay).toMatchObject({ probes: 20, up: 16, throttled: 3, failures: { throttled: 3, server_error: 2, timeout: 2 } });
    expect(days.map((d) => `${d.realm_id} ${d.period_start.toISOString()} ${d.probes}`)).toEqual([
      '111 2026-11-20T00:00:00.000Z 20',
      '111 2026-11-21T00:00:00.000Z 20',
      '222 2026-11-20T00:00:00.000Z 20',
      '222 2026-11-21T00:00:00.000Z 20',
    ]);
    const halfHours = await rollups(db, 'halfhour');
    expect(halfHours.filter((h) => h.realm_id === '111').map((h) => [h.period_start.toISOString(), h.probes])).toEqual([
      ['2026-11-20T23:30:00.000Z', 20],
      ['2026-11-21T00:00:00.000Z', 20],
    ]);
    // Each latency lands in bucket floor(log_1.04(ms)); buckets distinct, counts summing to the probes.
    for (const r of [...days, ...halfHours]) {
      expect(new Set(r.latency_buckets).size).toBe(r.latency_buckets.length);
      expect(r.latency_counts.reduce((a, b) => a + b, 0)).toBe(r.probes);
    }
    const expected = new Map<number, number>();
    for (let i = 0; i < 20; i++) {
      const b = Math.floor(Math.log(100 + ((i * 37) % 400)) / Math.log(LATENCY_GAMMA));
      expected.set(b, (expected.get(b) ?? 0) + 1);
    }
    expect(sketch(firstDay)).toEqual(expected);
  });

  it('counts a replayed result once: the same results again, and through a spool replay, change nothing', async () => {
    const batch = Array.from({ length: 10 }, (_, i) => result('333', new Date(T0 + i * MIN), i % 2 === 0 ? 'ok' : 'server_error', 200));
    expect(await insertProbeResults(pool, batch)).toBe(10);
    const before = (await rollups(db, 'day')).filter((r) => r.realm_id === '333');
    expect(before).toMatchObject([{ probes: 10, up: 5, failures: { server_error: 5 } }]);

    expect(await insertProbeResults(pool, batch)).toBe(0);
    // A replay after a crash: half the batch already in, the other half new.
    const spool = new Spool(mkdtempSync(path.join(os.tmpdir(), 'qbhm-rollup-spool-')), quiet, 4);
    await spool.open();
    const fresh = Array.from({ length: 5 }, (_, i) => result('333', new Date(T0 + (10 + i) * MIN), 'ok', 200));
    await spool.append([...batch.slice(5), ...fresh]);
    expect(await spool.replay((b) => insertProbeResults(pool, b))).toEqual({ replayed: 10, inserted: 5, skipped: 0 });
    await spool.close();

    expect((await rollups(db, 'day')).filter((r) => r.realm_id === '333')).toMatchObject([{ probes: 15, up: 10, failures: { server_error: 5 } }]);
    const raw = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id = '333'`);
    expect(raw.rows[0]?.n).toBe(15);
  });
});

describe('the latency sketch', () => {
  it('reads percentiles within 2 % of the exact nearest-rank ones, from buckets merged in any order', () => {
    const latencies = Array.from({ length: 5000 }, (_, i) => Math.round(30 + 2000 * ((i * 7919) % 5000) ** 2 / 25_000_000));
    const sorted = [...latencies].sort((a, b) => a - b);
    const counts = new Map<number, number>();
    for (const ms of latencies) {
      const b = Math.floor(Math.log(Math.max(ms, 1)) / Math.log(LATENCY_GAMMA));
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    for (const q of [0.5, 0.95, 0.99]) {
      const exact = sorted[Math.ceil(q * sorted.length) - 1] as number;
      const read = sketchPercentile(counts, q) as number;
      expect(Math.abs(read - exact) / exact).toBeLessThanOrEqual(0.02);
    }
    expect(sketchPercentile(new Map(), 0.5)).toBeNull();
    expect(bucketLatencyMs(0)).toBe(1);
  });
});
