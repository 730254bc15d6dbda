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

/** A migrated database and a pool on it for the enclosing describe block, dropped after it. */
function migratedPerBlock(use: (db: TestDatabase, pool: Pool) => void): void {
  let db: TestDatabase | undefined;
  let pool: Pool | undefined;
  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, quiet);
    use(db, pool);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });
}

describe('recording', () => {
  let db: TestDatabase;
  let pool: Pool;
  migratedPerBlock((d, p) => {
    db = d;
    pool = p;
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

/** Rollup rows comparable across writers: the sketch as sorted [bucket, count] pairs. */
const normalized = async (db: TestDatabase): Promise<unknown[]> =>
  (await Promise.all((['halfhour', 'day'] as const).map((t) => rollups(db, t)))).flatMap((rows, i) =>
    rows.map(({ latency_buckets, latency_counts, ...r }) => ({
      table: i,
      ...r,
      period_start: r.period_start.toISOString(),
      sketch: [...sketch({ latency_buckets, latency_counts })].sort((a, b) => a[0] - b[0]),
    })),
  );

describe('rebuild, pruning and retention', () => {
  let db: TestDatabase;
  let pool: Pool;
  const START = Date.parse('2026-11-18T21:05:00Z');
  const NOW = new Date('2026-11-24T12:00:00Z');
  migratedPerBlock((d, p) => {
    db = d;
    pool = p;
  });
  beforeAll(async () => {
    // Three realms, three days and a half, a probe every 5 minutes, recorded as the daemon and
    // its spool write them: one at a time, in batches, some twice.
    const codes = ['ok', 'ok', 'ok', 'throttled', 'ok', 'server_error', 'ok', 'ok', 'timeout', 'ok', 'ok'] as const;
    const all: ProbeResult[] = [];
    for (let i = 0; i < 3 * 24 * 12 + 60; i++) {
      for (const realm of ['501', '502', '503']) {
        all.push(result(realm, new Date(START + i * 5 * MIN), codes[(i + Number(realm)) % codes.length] as keyof typeof OUTCOMES, 90 + ((i * 53) % 700)));
      }
    }
    let written = 0;
    for (let n = 0; written < all.length; n++) {
      const size = [1, 1, 3, 17, 1, 120][n % 6] as number;
      const batch = all.slice(written, written + size);
      await insertProbeResults(pool, batch);
      if (n % 5 === 0) await insertProbeResults(pool, [...batch, ...all.slice(0, 2)]); // replayed: nothing new
      written += size;
    }
  });

  it('rebuilding from the raw rows gives what recording added up, into empty rollups and over existing ones, in chunks', async () => {
    const recorded = await normalized(db);
    expect(recorded.length).toBeGreaterThan(3 * 4);
    await db.query('TRUNCATE quickbooks_health_rollup_halfhour, quickbooks_health_rollup_day');
    const capture = captureLog('info');
    const outcome = await rebuildRollups(pool, capture.log, { chunkDays: 1 });
    expect(outcome.realms.map((r) => [r.realmId, r.rows])).toEqual([
      ['501', 924],
      ['502', 924],
      ['503', 924],
    ]);
    expect(await normalized(db)).toEqual(recorded);
    expect(capture.byEvent('rollup.rebuilt')).toHaveLength(3);
    // Again, over rollups gone wrong (doubled, an extra period): put right, the others untouched.
    // (Not the first day: it begins before the oldest raw row, so a rebuild only fills it when empty.)
    await db.query(`UPDATE quickbooks_health_rollup_day SET probes = probes * 2, failures = '{}' WHERE realm_id = '502' AND period_start > '2026-11-18T00:00:00Z'`);
    await db.query(`INSERT INTO quickbooks_health_rollup_halfhour (realm_id, period_start, probes) VALUES ('502', '2026-11-19T10:00:00Z', 1) ON CONFLICT (realm_id, period_start) DO UPDATE SET probes = 1`);
    await rebuildRollups(pool, quiet, { realmIds: ['502'] });
    expect(await normalized(db)).toEqual(recorded);
  });

  it('pruning raw rows keeps the rollups, and a rebuild afterwards does not shrink the periods pruning cut into', async () => {
    const before = await normalized(db);
    // A cutoff in the middle of a half hour of the first day: 2026-11-19 01:12.
    const now = new Date(Date.parse('2026-11-19T01:12:00Z') + 90 * DAY);
    const outcome = await pruneHistory(db.client, 90, quiet, { now, batchSize: 100 });
    expect(outcome.deleted).toBe(3 * 50);
    expect(outcome.rollups.deleted).toBe(0);
    expect(await normalized(db)).toEqual(before);
    await rebuildRollups(pool, quiet);
    expect(await normalized(db)).toEqual(before);
  });

  it('prunes rollups of periods older than ROLLUP_RETENTION_DAYS, in batches, and only those', async () => {
    await db.query(
      `INSERT INTO quickbooks_health_rollup_day (realm_id, period_start, probes, up)
       SELECT '9' || g, $1::timestamptz - g * interval '1 day', 10, 9 FROM generate_series(399, 409) AS g`,
      [new Date(Date.parse('2026-11-24T00:00:00Z'))],
    );
    const capture = captureLog('info');
    const outcome = await pruneHistory(db.client, 90, capture.log, { now: NOW, batchSize: 4, rollupRetentionDays: 400 });
    // Days starting before 2026-11-24T12:00 - 400 days: 400 days ago and older (10 of the 11).
    expect(outcome.rollups).toEqual({ deleted: 10, cutoff: new Date(NOW.getTime() - 400 * DAY) });
    const left = await db.query<{ realm_id: string }>(`SELECT realm_id FROM quickbooks_health_rollup_day WHERE realm_id LIKE '9%' ORDER BY 1`);
    expect(left.rows.map((r) => r.realm_id)).toEqual(['9399']);
    expect(capture.byEvent('history.pruned')).toEqual([expect.objectContaining({ rollupsDeleted: 10, rollupRetentionDays: 400 })]);
    // The recent rollups are still there.
    expect((await rollups(db, 'day')).filter((r) => r.realm_id === '501')).toHaveLength(5);
  });
});

describe('schema, command and configuration', () => {
  let db: TestDatabase;
  let pool: Pool;
  migratedPerBlock((d, p) => {
    db = d;
    pool = p;
  });

  it('a missing rollup table is a schema gap: verifySchema names it, recording fails as one (run `qbhealth migrate`), migrate restores it', async () => {
    await db.query('DROP TABLE quickbooks_health_rollup_day');
    expect((await verifySchema(db.client)).map(describeProblem)).toEqual(['missing table quickbooks_health_rollup_day']);
    const check = await runQbhealth(['check-schema'], { DATABASE_URL: db.url });
    expect(check.code).toBe(65);
    expect(check.stdout).toContain('missing table quickbooks_health_rollup_day');
    const err = await insertProbeResults(pool, [result('601', new Date(T0), 'ok', 100)]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(describeDbFailure(err)).toMatchObject({ kind: 'schema', summary: expect.stringContaining('Run `qbhealth migrate`') });
    // Nothing half-written: the result is not in the raw table either (it waits in the spool).
    expect((await db.query(`SELECT 1 FROM quickbooks_connection_health WHERE realm_id = '601'`)).rowCount).toBe(0);

    await migrate(pool, quiet);
    expect(await verifySchema(db.client)).toEqual([]);
    expect(await insertProbeResults(pool, [result('601', new Date(T0), 'ok', 100)])).toBe(1);
  });

  it('`qbhealth rollup` says when raw history is missing from the rollups (exit 1), `--rebuild` fills them (one line per realm), then exit 0; the daemon check warns until then', async () => {
    // History from before the rollups existed: raw rows only, as an upgrade or an adoption leaves them.
    await db.query('TRUNCATE quickbooks_connection_health, quickbooks_health_rollup_halfhour, quickbooks_health_rollup_day');
    await db.query(
      `INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, latency_ms, checked_at)
       SELECT gen_random_uuid(), r::text, g % 10 <> 0, CASE WHEN g % 10 <> 0 THEN 'pass' ELSE 'fail' END,
              CASE WHEN g % 10 <> 0 THEN 'ok' ELSE 'network' END, 150, $1::timestamptz + g * interval '1 hour'
         FROM generate_series(0, 47) AS g, (VALUES (701), (702)) AS v(r)`,
      [new Date('2026-10-01T00:00:00Z')],
    );
    const env = { DATABASE_URL: db.url };
    const capture = captureLog('info');
    expect(await warnWhenRollupsIncomplete(pool, capture.log)).toMatchObject({ incomplete: true, rawFrom: new Date('2026-10-01T00:00:00Z') });
    expect(capture.byEvent('rollup.missing')).toEqual([expect.objectContaining({ level: 40, msg: expect.stringContaining('qbhealth rollup --rebuild') })]);

    const migrated = await runQbhealth(['migrate'], env);
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/^note: health history from 2026-10-01T00:00:00.000Z on is not in the rollups \(the rollups are empty\): .*`qbhealth rollup --rebuild`/m);

    const before = await runQbhealth(['rollup'], env);
    expect(before.code).toBe(1);
    expect(before.stdout).toContain('health history from 2026-10-01T00:00:00.000Z on is not in the rollups');

    const usage = await runQbhealth(['rollup', '--realm-id', '701'], env);
    expect(usage.code).toBe(2);

    const rebuilt = await runQbhealth(['rollup', '--rebuild'], env);
    expect(rebuilt.code).toBe(0);
    expect(rebuilt.stdout).toMatch(/^realm 701: 48 raw row\(s\) from 2026-10-01 to 2026-10-02 -> 2 day and 48 half-hour rollup\(s\) written$/m);
    expect(rebuilt.stdout).toMatch(/^realm 702: 48 raw row\(s\)/m);
    expect(rebuilt.stdout).toMatch(/^rebuilt the rollups of 2 realm\(s\) from 96 raw row\(s\)/m);
    const day = await db.query<RollupRow>(`SELECT * FROM quickbooks_health_rollup_day WHERE realm_id = '701' ORDER BY period_start`);
    expect(day.rows.map((r) => [r.probes, r.up, r.failures])).toEqual([
      [24, 21, { network: 3 }],
      [24, 22, { network: 2 }],
    ]);

    const after = await runQbhealth(['rollup'], env);
    expect(after.code).toBe(0);
    expect(after.stdout).toContain('the rollups cover the health history');
    const quietCapture = captureLog('info');
    expect(await warnWhenRollupsIncomplete(pool, quietCapture.log)).toMatchObject({ incomplete: false });
    expect(quietCapture.byEvent('rollup.missing')).toEqual([]);
  });

  it('ROLLUP_RETENTION_DAYS: 400 by default (the history\'s retention when longer), never shorter than the history, one clear line when wrong', () => {
    const base = { DATABASE_URL: 'postgres://qbhealth@db.internal:5432/clinic' };
    const parsed = (env: Record<string, string>) => parseConfig({ ...base, ...env }, 'database');
    expect(parsed({})).toMatchObject({ ok: true, config: { historyRetentionDays: 90, rollupRetentionDays: 400 } });
    expect(parsed({ HISTORY_RETENTION_DAYS: '500' })).toMatchObject({ ok: true, config: { rollupRetentionDays: 500 } });
    expect(parsed({ ROLLUP_RETENTION_DAYS: '730' })).toMatchObject({ ok: true, config: { rollupRetentionDays: 730 } });
    expect(parsed({ ROLLUP_RETENTION_DAYS: 'forever' })).toMatchObject({
      ok: false,
      problems: ['ROLLUP_RETENTION_DAYS: must be a whole number from 1 to 36500 (got "forever")'],
    });
    expect(parsed({ ROLLUP_RETENTION_DAYS: '30' })).toMatchObject({
      ok: false,
      problems: ['ROLLUP_RETENTION_DAYS: must be at least HISTORY_RETENTION_DAYS (90): the rollups summarise the history and are kept at least as long (got 30)'],
    });
  });
});
