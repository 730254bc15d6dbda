/**
 * Rollups (db/rollups.ts, db/rollup-fold.ts): recording writes raw rows only; a closed half hour is
 * folded from them (equal to the aggregate of its raw rows, the same however often and by however
 * many folders at once), a late result (a spool replay) re-folded and counted once; a failed fold
 * is logged and caught up; equal to what `qbhealth rollup --rebuild` computes from the raw rows,
 * kept when raw rows are pruned (and never re-folded from what pruning left) and pruned after
 * ROLLUP_RETENTION_DAYS, demanded by verifySchema. Real PostgreSQL, each describe block its own
 * migrated database.
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
import { FOLD_LOCK_SQL, foldClosedPeriods } from '../src/db/rollup-fold.js';
import { rebuildRollups, rollupCoverage, warnWhenRollupsIncomplete } from '../src/db/rollup-rebuild.js';
import { bucketLatencyMs, LATENCY_GAMMA, sketchPercentile } from '../src/db/rollups.js';
import { describeProblem, verifySchema } from '../src/db/verify.js';
import type { ErrorCode, ProbeResult } from '../src/probe-result.js';
import { RollupFolder } from '../src/recorder/rollup-folder.js';
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
/** 2026-11-22 00:05: both days of mixedResults complete. */
const DAY_AFTER = Date.parse('2026-11-22T00:05:00Z');

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

const GRACE = 120_000;
/** Sets the fold's watermark (tests start it where their history starts). */
const foldFrom = (db: TestDatabase, at: number) => db.query('UPDATE quickbooks_health_rollup_fold SET folded_until = $1', [new Date(at)]);
const fold = (pool: Pool, now: number) => foldClosedPeriods(pool, { graceMs: GRACE, now: new Date(now), wait: true });

/** The rollups computed by the test's own SQL from the raw rows (half hours; days by summing them). */
const ORACLE_SQL = `SELECT realm_id, to_timestamp(floor(extract(epoch FROM checked_at) / $1) * $1) AS period_start, count(*)::int AS probes,
         count(*) FILTER (WHERE status IN ('pass', 'warn'))::int AS up, count(*) FILTER (WHERE error_code = 'throttled')::int AS throttled,
         (SELECT coalesce(jsonb_object_agg(c, n), '{}') FROM (SELECT e AS c, count(*) AS n FROM unnest(array_agg(error_code)) AS e WHERE e <> 'ok' GROUP BY e) AS x) AS failures
    FROM quickbooks_connection_health GROUP BY 1, 2 ORDER BY 1, 2`;

describe('recording and folding', () => {
  let db: TestDatabase;
  let pool: Pool;
  let pool2: Pool;
  migratedPerBlock((d, p) => {
    db = d;
    pool = p;
    pool2 = createPool({ databaseUrl: d.url, applicationName: 'test-second-folder' }, quiet);
  });
  afterAll(() => pool2?.end());

  it('recording writes raw rows only; a closed half hour is folded into its realm\'s half hour and UTC day: probes, up, throttled, failures by error_code, latency buckets', async () => {
    await foldFrom(db, T0 - 10 * MIN); // 23:30
    const all = mixedResults();
    // In batches of several sizes, as group commit writes them, as the probes end.
    for (const size of [1, 7, 30]) {
      const batch = all.splice(0, size);
      expect(await insertProbeResults(pool, batch, (batch.at(-1) as ProbeResult).checkedAt.getTime() + 1000)).toBe(size);
    }
    expect(await insertProbeResults(pool, all, (all.at(-1) as ProbeResult).checkedAt.getTime() + 1000)).toBe(all.length);
    expect(await rollups(db, 'day')).toEqual([]);
    expect(await rollups(db, 'halfhour')).toEqual([]);

    // 00:31: 00:00 to 00:30 is still within its grace; 00:33: folded. 2026-11-20 is complete: its
    // day is summed; 2026-11-21 is not (the dashboard sums its half hours) until its end is folded.
    expect(await fold(pool, T0 + 51 * MIN)).toMatchObject({ halfHourRows: 2, foldedUntil: new Date('2026-11-21T00:00:00Z') });
    expect(await fold(pool, T0 + 53 * MIN)).toMatchObject({ halfHourRows: 2, foldedUntil: new Date('2026-11-21T00:30:00Z') });
    expect((await rollups(db, 'day')).map((d) => d.period_start.toISOString())).toEqual(['2026-11-20T00:00:00.000Z', '2026-11-20T00:00:00.000Z']);
    expect(await fold(pool, DAY_AFTER)).toMatchObject({ halfHourRows: 0, foldedUntil: new Date('2026-11-22T00:00:00Z') });

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
    // Each half hour (here each day too) equals the aggregate of its raw rows.
    const oracle = (await db.query(ORACLE_SQL, [1800])).rows;
    expect(halfHours.map(({ latency_buckets: _b, latency_counts: _c, ...r }) => r)).toEqual(oracle);
    expect(days.map(({ latency_buckets: _b, latency_counts: _c, ...r }) => r)).toEqual((await db.query(ORACLE_SQL, [86_400])).rows);
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

  it('folding again, or by two folders at once, gives the same rows; a folder finding another at work leaves it the work', async () => {
    const once = await normalized(db);
    expect(once).toHaveLength(8);
    await foldFrom(db, T0 - 10 * MIN);
    const [a, b] = await Promise.all([fold(pool, DAY_AFTER), fold(pool2, DAY_AFTER)]);
    expect([a.halfHourRows + b.halfHourRows, a.busy, b.busy]).toEqual([4, false, false]);
    expect(await normalized(db)).toEqual(once);

    const holder = await pool2.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(FOLD_LOCK_SQL);
      await foldFrom(db, T0 - 10 * MIN);
      expect(await foldClosedPeriods(pool, { graceMs: GRACE, now: new Date(DAY_AFTER) })).toEqual({ halfHourRows: 0, foldedUntil: null, busy: true });
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    expect(await fold(pool, DAY_AFTER)).toMatchObject({ halfHourRows: 4, busy: false });
    expect(await normalized(db)).toEqual(once);
  });

  it('a replayed result of a half hour already folded is re-folded when it is inserted, and counted once: the same results again, and through a spool replay', async () => {
    const batch = Array.from({ length: 10 }, (_, i) => result('333', new Date(T0 + i * MIN), i % 2 === 0 ? 'ok' : 'server_error', 200));
    // Recorded now, days after their half hours were folded (up to 00:30): late, re-folded at once.
    expect(await insertProbeResults(pool, batch)).toBe(10);
    const day = async () => (await rollups(db, 'day')).filter((r) => r.realm_id === '333');
    expect(await day()).toMatchObject([{ probes: 10, up: 5, failures: { server_error: 5 } }]);

    expect(await insertProbeResults(pool, batch)).toBe(0);
    // A replay after a crash: half the batch already in, the other half new.
    const spool = new Spool(mkdtempSync(path.join(os.tmpdir(), 'qbhm-rollup-spool-')), quiet, 4);
    await spool.open();
    const fresh = Array.from({ length: 5 }, (_, i) => result('333', new Date(T0 + (10 + i) * MIN), 'ok', 200));
    await spool.append([...batch.slice(5), ...fresh]);
    expect(await spool.replay((b) => insertProbeResults(pool, b))).toEqual({ replayed: 10, inserted: 5, skipped: 0 });
    await spool.close();

    expect(await day()).toMatchObject([{ probes: 15, up: 10, failures: { server_error: 5 } }]);
    expect((await rollups(db, 'halfhour')).filter((r) => r.realm_id === '333')).toMatchObject([{ probes: 15, up: 10 }]);
    const raw = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id = '333'`);
    expect(raw.rows[0]?.n).toBe(15);
    // And a fold afterwards changes nothing.
    const after = await normalized(db);
    await foldFrom(db, T0 - 10 * MIN);
    await fold(pool, DAY_AFTER);
    expect(await normalized(db)).toEqual(after);
  });

  it('a late result committed while a fold that read its half hour before is still writing is counted: the re-fold waits for that fold', async () => {
    const halfHour444 = async (): Promise<number | undefined> =>
      (await db.query<{ probes: number }>(`SELECT probes FROM quickbooks_health_rollup_halfhour WHERE realm_id = '444' AND period_start = '2026-11-20T23:30:00Z'`)).rows[0]?.probes;
    expect(await insertProbeResults(pool, [result('444', new Date(T0 + 3 * MIN), 'ok', 100)])).toBe(1);
    expect(await halfHour444()).toBe(1);
    const holder = await pool2.connect();
    let late: Promise<number> | undefined;
    try {
      await holder.query('BEGIN');
      await holder.query(FOLD_LOCK_SQL);
      // A fold reads the half hour's raw rows (one result of 444) …
      const read = (await holder.query<{ n: number }>(`SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id = '444'`)).rows[0]?.n;
      // … a late result of that half hour is recorded meanwhile …
      late = insertProbeResults(pool, [result('444', new Date(T0 + 4 * MIN), 'ok', 100)]);
      let done = false;
      void late.finally(() => (done = true));
      for (let i = 0; i < 100 && !done; i++) {
        if ((await db.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)).rowCount === 1) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      // … and the fold writes what it read, then commits.
      await holder.query(`UPDATE quickbooks_health_rollup_halfhour SET probes = $1 WHERE realm_id = '444' AND period_start = '2026-11-20T23:30:00Z'`, [read]);
      await holder.query('COMMIT');
    } finally {
      holder.release();
    }
    expect(await late).toBe(1);
    expect(await halfHour444()).toBe(2);
  });
});

describe('a fold that fails', () => {
  let db: TestDatabase;
  let pool: Pool;
  migratedPerBlock((d, p) => {
    db = d;
    pool = p;
  });

  it('logs rollup.fold_failed with the error, moves no watermark, and the next fold catches up', async () => {
    const now = Date.now();
    const start = Math.floor((now - 3 * 3_600_000) / 1_800_000) * 1_800_000;
    await foldFrom(db, start);
    // Three hours of one realm, recorded as the probes ended.
    for (let at = start; at < now - 60_000; at += 5 * MIN) expect(await insertProbeResults(pool, [result('801', new Date(at), 'ok', 150)], at + 1000)).toBe(1);
    await db.query('ALTER TABLE quickbooks_health_rollup_halfhour RENAME TO rollup_halfhour_away');
    const capture = captureLog('info');
    const folder = new RollupFolder(pool, capture.log, { graceMs: GRACE });
    expect(await folder.foldNow()).toBeUndefined();
    expect(capture.byEvent('rollup.fold_failed')).toEqual([expect.objectContaining({ level: 40, err: expect.objectContaining({ message: expect.stringContaining('quickbooks_health_rollup_halfhour') }) })]);
    const until = async () => (await db.query<{ u: Date }>('SELECT folded_until AS u FROM quickbooks_health_rollup_fold')).rows[0]?.u.getTime();
    expect(await until()).toBe(start);

    await db.query('ALTER TABLE rollup_halfhour_away RENAME TO quickbooks_health_rollup_halfhour');
    expect(await folder.foldNow()).toMatchObject({ busy: false, halfHourRows: expect.any(Number) });
    const closed = Math.floor((Date.now() - GRACE) / 1_800_000) * 1_800_000;
    expect(await until()).toBe(closed);
    const folded = await db.query<{ n: number }>(`SELECT coalesce(sum(probes), 0)::int AS n FROM quickbooks_health_rollup_halfhour WHERE realm_id = '801'`);
    const raw = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE checked_at < $1`, [new Date(closed)]);
    expect(folded.rows[0]?.n).toBe(raw.rows[0]?.n);
    expect(raw.rows[0]?.n).toBeGreaterThanOrEqual(30);
    await folder.stop();
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
    // its spool write them: one at a time, in batches, some twice; folded as the daemons fold,
    // now and then, and once more at the end.
    const codes = ['ok', 'ok', 'ok', 'throttled', 'ok', 'server_error', 'ok', 'ok', 'timeout', 'ok', 'ok'] as const;
    const all: ProbeResult[] = [];
    for (let i = 0; i < 3 * 24 * 12 + 60; i++) {
      for (const realm of ['501', '502', '503']) {
        all.push(result(realm, new Date(START + i * 5 * MIN), codes[(i + Number(realm)) % codes.length] as keyof typeof OUTCOMES, 90 + ((i * 53) % 700)));
      }
    }
    await foldFrom(db, START - 5 * MIN);
    let written = 0;
    for (let n = 0; written < all.length; n++) {
      const size = [1, 1, 3, 17, 1, 120][n % 6] as number;
      const batch = all.slice(written, written + size);
      const now = (batch.at(-1) as ProbeResult).checkedAt.getTime() + 2000;
      await insertProbeResults(pool, batch, now);
      if (n % 5 === 0) await insertProbeResults(pool, [...batch, ...all.slice(0, 2)], now); // replayed: nothing new
      if (n % 7 === 0) await fold(pool, now);
      written += size;
    }
    await fold(pool, (all.at(-1) as ProbeResult).checkedAt.getTime() + DAY);
  });

  it('rebuilding from the raw rows gives what folding gave, into empty rollups and over existing ones, in chunks', async () => {
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
    // A result of 00:55 replayed now: inserted (the next prune takes it), but its half hour, which
    // pruning cut into, is not folded again from what is left of it.
    expect(await insertProbeResults(pool, [result('501', new Date('2026-11-19T00:55:00Z'), 'ok', 100)])).toBe(1);
    expect(await normalized(db)).toEqual(before);
    // One of 01:40, after the cutoff: its half hour is folded again, and counts it.
    expect(await insertProbeResults(pool, [result('501', new Date('2026-11-19T01:40:00Z'), 'ok', 100)])).toBe(1);
    const halfHour = (await rollups(db, 'halfhour')).find((r) => r.realm_id === '501' && r.period_start.toISOString() === '2026-11-19T01:30:00.000Z');
    expect(halfHour?.probes).toBe(7);
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

  it('a missing rollup table is a schema gap: verifySchema names it; recording goes on, but a late result, whose re-fold fails, is not half-written (it waits in the spool); migrate restores it', async () => {
    await db.query('DROP TABLE quickbooks_health_rollup_day');
    expect((await verifySchema(db.client)).map(describeProblem)).toEqual(['missing table quickbooks_health_rollup_day']);
    const check = await runQbhealth(['check-schema'], { DATABASE_URL: db.url });
    expect(check.code).toBe(65);
    expect(check.stdout).toContain('missing table quickbooks_health_rollup_day');
    // A result recorded as its probe ends: raw rows only.
    expect(await insertProbeResults(pool, [result('602', new Date(T0), 'ok', 100)], T0 + 1000)).toBe(1);
    // A late one (folded half hours are re-folded in its transaction): fails as a schema gap.
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
    expect((await db.query(`SELECT probes FROM quickbooks_health_rollup_day WHERE realm_id = '601'`)).rows).toEqual([{ probes: 1 }]);
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
    expect(migrated.stdout).toMatch(/^note: health history from 2026-10-01T00:00:00.000Z on is not in the rollups \(the rollups start at \d{4}-\d\d-\d\dT[0-9:.]+Z\): .*`qbhealth rollup --rebuild`/m);

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
