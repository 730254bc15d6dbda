/**
 * readDashboardHistory (db/dashboard-queries.ts) on 90 days of seeded history: three realms, one
 * healthy with a 2-hour outage 10 days ago, one throttled today, one revoked today, folded into the
 * rollups up to the last closed half hour, the open one read from the raw rows. Every bar is
 * checked against the same figures computed from the raw rows by SQL of the test's own, the
 * percentiles against exact nearest-rank percentiles (within the sketch's 2 %), and the outage day
 * against hand-counted numbers. And results in the open half hour: shown before any fold, counted
 * once after it. Real PostgreSQL.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { DashboardHistory, RealmHistory, UptimeBar } from '../src/dashboard-model.js';
import { readDashboardHistory } from '../src/db/dashboard-queries.js';
import { insertProbeResults } from '../src/db/health-queries.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { foldClosedPeriods } from '../src/db/rollup-fold.js';
import type { ProbeResult } from '../src/probe-result.js';
import type { TestDatabase } from './support/db.js';
import { migratedDatabase } from './support/qbo.js';

const HEALTHY = '9100000001';
const THROTTLED = '9100000002';
const REVOKED = '9100000003';
const NOW = new Date('2026-11-24T15:12:00Z');
const TODAY = Date.parse('2026-11-24T00:00:00Z');
const DAY = 86_400_000;
const FIRST_DAY = TODAY - 89 * DAY;
const OUTAGE_DAY = TODAY - 10 * DAY;

let db: TestDatabase;
let pool: Pool;
let history: DashboardHistory;

// One probe every 10 minutes from the first day's midnight to NOW, for each realm, with a latency
// that varies with the probe; then what each realm went through.
const SEED_SQL = `
  INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, error, latency_ms, checked_at)
  SELECT gen_random_uuid(), r, code = 'ok', CASE code WHEN 'ok' THEN 'pass' WHEN 'throttled' THEN 'warn' ELSE 'fail' END,
         code, CASE WHEN code <> 'ok' THEN 'Intuit said ' || code END, latency, at
    FROM (SELECT r, at, 80 + (g * 37) % 900 + (g % 97) * 3 AS latency,
                 CASE WHEN r = '${HEALTHY}' AND at >= $4::timestamptz + interval '12 hours' AND at < $4::timestamptz + interval '14 hours' THEN 'server_error'
                      WHEN r = '${THROTTLED}' AND at >= $5::timestamptz + interval '9 hours' AND extract(minute FROM at)::int % 30 = 0 THEN 'throttled'
                      WHEN r = '${REVOKED}' AND at >= $5::timestamptz THEN 'auth_invalid_grant'
                      ELSE 'ok' END AS code
            FROM generate_series(0, floor(extract(epoch FROM $2::timestamptz - $1::timestamptz) / 600)::int) AS g,
                 unnest($3::text[]) AS r,
                 LATERAL (SELECT $1::timestamptz + g * interval '10 minutes' AS at) AS t) AS probes`;

/** The day bars computed from the raw rows, by day in UTC. */
const ORACLE_DAYS_SQL = `
  SELECT realm_id, day, sum(n)::int AS probes, coalesce(sum(n) FILTER (WHERE status IN ('pass', 'warn')), 0)::int AS up,
         coalesce(sum(n) FILTER (WHERE error_code = 'throttled'), 0)::int AS throttled,
         coalesce(jsonb_object_agg(error_code, n) FILTER (WHERE error_code <> 'ok'), '{}') AS failures
    FROM (SELECT realm_id, date_trunc('day', checked_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day, status, error_code, count(*) AS n
            FROM quickbooks_connection_health GROUP BY 1, 2, 3, 4) AS c
   GROUP BY realm_id, day`;

const EXACT_PERCENTILES_SQL = `
  SELECT realm_id, percentile_disc(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50, percentile_disc(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95, count(*)::int AS n
    FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2 GROUP BY realm_id`;

const counts = (b: UptimeBar | undefined) => b && { probes: b.probes, up: b.up, throttled: b.throttled, failures: b.failures };

beforeAll(async () => {
  db = await migratedDatabase();
  pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
  await db.query(SEED_SQL, [new Date(FIRST_DAY), NOW, [HEALTHY, THROTTLED, REVOKED], new Date(OUTAGE_DAY), new Date(TODAY)]);
  // Folded as the daemons fold, from the first day on (a day per transaction) to the last closed
  // half hour at NOW: 15:00, so 15:00 to 15:12 is read from the raw rows.
  await db.query(`UPDATE quickbooks_health_rollup_fold SET folded_until = $1`, [new Date(FIRST_DAY)]);
  expect(await foldClosedPeriods(pool, { graceMs: 120_000, now: NOW, wait: true })).toMatchObject({ foldedUntil: new Date('2026-11-24T15:00:00Z'), busy: false });
  history = await readDashboardHistory(pool, { now: NOW });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('readDashboardHistory', () => {
  it('gives each realm 90 day bars ending today and 48 half-hour bars ending with the current half hour (UTC)', () => {
    expect(history.generatedAt).toBe(NOW.toISOString());
    expect(history.realms.map((r) => r.realmId)).toEqual([HEALTHY, THROTTLED, REVOKED]);
    for (const r of history.realms) {
      expect(r.days).toHaveLength(90);
      expect(r.days[0]).toMatchObject({ from: '2026-08-27T00:00:00.000Z', to: '2026-08-28T00:00:00.000Z', probes: 144, up: 144, uptime: 1 });
      expect(r.days[89]).toMatchObject({ from: '2026-11-24T00:00:00.000Z', to: '2026-11-25T00:00:00.000Z', probes: 92 });
      expect(r.halfHours).toHaveLength(48);
      expect(r.halfHours[0]).toMatchObject({ from: '2026-11-23T15:30:00.000Z', probes: 3 });
      expect(r.halfHours[47]).toMatchObject({ from: '2026-11-24T15:00:00.000Z', to: '2026-11-24T15:30:00.000Z', probes: 2 });
    }
  });

  it('shows the 2-hour outage 10 days ago on that day\'s bar: 12 of 144 probes failed with server_error', () => {
    const healthy = history.realms[0];
    const outage = healthy?.days[79];
    expect(outage).toEqual({
      from: '2026-11-14T00:00:00.000Z',
      to: '2026-11-15T00:00:00.000Z',
      probes: 144,
      up: 132,
      throttled: 0,
      failures: { server_error: 12 },
      uptime: 132 / 144,
    });
    expect(healthy?.days.filter((d) => d.uptime !== 1).map((d) => d.from)).toEqual(['2026-11-14T00:00:00.000Z']);
    const total = 89 * 144 + 92;
    expect(healthy?.uptime90d).toBeCloseTo((total - 12) / total, 12);
  });

  it('counts throttled probes as up and as failures by error_code; a revoked realm fails with auth_invalid_grant', () => {
    const throttledToday = history.realms[1]?.days[89];
    // 09:00 to 15:10, on the hour and half hour: 13 throttled of 92, all of them up.
    expect(throttledToday).toMatchObject({ probes: 92, up: 92, throttled: 13, failures: { throttled: 13 }, uptime: 1 });
    expect(history.realms[1]?.halfHours[47]).toMatchObject({ probes: 2, throttled: 1, up: 2 });
    expect(history.realms[2]?.days[89]).toMatchObject({ probes: 92, up: 0, throttled: 0, failures: { auth_invalid_grant: 92 }, uptime: 0 });
    expect(history.realms[2]?.days[88]).toMatchObject({ probes: 144, up: 144, failures: {} });
  });

  it('every day bar equals the same figures computed from the raw rows', async () => {
    const oracle = await db.query<{ realm_id: string; day: Date; probes: number; up: number; throttled: number; failures: Record<string, number> }>(ORACLE_DAYS_SQL);
    expect(oracle.rows).toHaveLength(3 * 90);
    for (const o of oracle.rows) {
      const realm = history.realms.find((r) => r.realmId === o.realm_id);
      const bar = realm?.days.find((d) => d.from === o.day.toISOString());
      expect(counts(bar), `${o.realm_id} ${o.day.toISOString()}`).toEqual({ probes: o.probes, up: o.up, throttled: o.throttled, failures: o.failures });
    }
  });

  it('reads p50 and p95 over 24 h and 7 days within 2 % of the exact percentiles', async () => {
    const windows = [
      { key: 'latency24h', from: new Date('2026-11-23T15:30:00Z'), to: new Date('2026-11-24T15:30:00Z') },
      { key: 'latency7d', from: new Date(TODAY - 6 * DAY), to: new Date(TODAY + DAY) },
    ] as const;
    for (const w of windows) {
      const exact = await db.query<{ realm_id: string; p50: number; p95: number; n: number }>(EXACT_PERCENTILES_SQL, [w.from, w.to]);
      expect(exact.rows).toHaveLength(3);
      for (const e of exact.rows) {
        const read = history.realms.find((r) => r.realmId === e.realm_id)?.[w.key];
        expect(read?.probes).toBe(e.n);
        expect(Math.abs((read?.p50 as number) - e.p50) / e.p50, `${w.key} p50 ${read?.p50} vs ${e.p50}`).toBeLessThanOrEqual(0.02);
        expect(Math.abs((read?.p95 as number) - e.p95) / e.p95, `${w.key} p95 ${read?.p95} vs ${e.p95}`).toBeLessThanOrEqual(0.02);
      }
    }
  });

  it('answers for the realms asked, in that order, a realm without history with empty bars; closed half hours from the rollups alone, the open one from the raw rows', async () => {
    const asked = await readDashboardHistory(pool, { now: NOW, realmIds: [REVOKED, '42'] });
    expect(asked.realms.map((r) => r.realmId)).toEqual([REVOKED, '42']);
    expect(asked.realms[0]).toEqual(history.realms[2]);
    const none = asked.realms[1];
    expect(none?.days.every((d) => d.probes === 0 && d.uptime === null)).toBe(true);
    expect(none).toMatchObject({ uptime90d: null, latency24h: { p50: null, p95: null, probes: 0 }, latency7d: { p50: null, p95: null, probes: 0 } });

    await db.query('TRUNCATE quickbooks_connection_health');
    const rollupsOnly = await readDashboardHistory(pool, { now: NOW });
    for (const [i, realm] of rollupsOnly.realms.entries()) {
      const before = history.realms[i] as RealmHistory;
      expect(realm.days.slice(0, 89)).toEqual(before.days.slice(0, 89));
      expect(realm.halfHours.slice(0, 47)).toEqual(before.halfHours.slice(0, 47));
      // The open half hour's 2 probes (15:00, 15:10) were only in the raw rows.
      expect(realm.halfHours[47]?.probes).toBe(0);
      expect(realm.days[89]?.probes).toBe(90);
    }
  });
});

const T_OPEN = Date.parse('2026-11-24T15:00:00Z');
const OPEN_REALM = '9100000009';

function probe(at: number, code: 'ok' | 'server_error', latencyMs: number): ProbeResult {
  return {
    probeId: randomUUID(),
    realmId: OPEN_REALM,
    checkedAt: new Date(at),
    connected: code === 'ok',
    status: code === 'ok' ? 'pass' : 'fail',
    errorCode: code,
    error: code === 'ok' ? undefined : 'Intuit HTTP 503',
    httpStatus: code === 'ok' ? 200 : 503,
    latencyMs,
    intuitTid: undefined,
    refreshTokenExpiresAt: undefined,
    companyName: undefined,
  };
}

describe('the open half hour', () => {
  let openDb: TestDatabase;
  let openPool: Pool;
  beforeAll(async () => {
    openDb = await migratedDatabase();
    openPool = createPool({ databaseUrl: openDb.url, applicationName: 'test' }, pino({ level: 'silent' }));
    await openDb.query(`UPDATE quickbooks_health_rollup_fold SET folded_until = $1`, [new Date(T_OPEN)]);
  });
  afterAll(async () => {
    await openPool?.end();
    await openDb?.drop();
  });

  it('shows an outage recorded a moment ago before any fold, and counts it once after the fold', async () => {
    // Recorded as the probes end: 3 passes, then an outage.
    const MIN = 60_000;
    const probes = [probe(T_OPEN + 5 * MIN, 'ok', 120), probe(T_OPEN + 6 * MIN, 'ok', 130), probe(T_OPEN + 7 * MIN, 'ok', 140), probe(T_OPEN + 10 * MIN, 'server_error', 900), probe(T_OPEN + 11 * MIN, 'server_error', 950)];
    for (const p of probes) expect(await insertProbeResults(openPool, [p], p.checkedAt.getTime() + 2000)).toBe(1);
    const rollupRows = async (): Promise<number> =>
      (await openDb.query<{ n: number }>(`SELECT (SELECT count(*) FROM quickbooks_health_rollup_halfhour) + (SELECT count(*) FROM quickbooks_health_rollup_day) AS n`)).rows[0]?.n ?? 0;
    expect(Number(await rollupRows())).toBe(0);

    const at = new Date(T_OPEN + 12 * MIN);
    const fresh = (await readDashboardHistory(openPool, { now: at })).realms;
    expect(fresh.map((r) => r.realmId)).toEqual([OPEN_REALM]);
    const expected = { probes: 5, up: 3, throttled: 0, failures: { server_error: 2 }, uptime: 3 / 5 };
    expect(fresh[0]?.halfHours[47]).toMatchObject({ from: '2026-11-24T15:00:00.000Z', ...expected });
    expect(fresh[0]?.days[89]).toMatchObject({ from: '2026-11-24T00:00:00.000Z', ...expected });
    expect(fresh[0]?.latency24h).toMatchObject({ probes: 5, p95: expect.any(Number) });
    expect(fresh[0]?.latency7d.probes).toBe(5);

    // Still open at 15:31 (within the grace): nothing folded. Closed at 15:33: folded, counted once.
    expect(await foldClosedPeriods(openPool, { graceMs: 120_000, now: new Date(T_OPEN + 31 * MIN), wait: true })).toMatchObject({ halfHourRows: 0 });
    expect(await foldClosedPeriods(openPool, { graceMs: 120_000, now: new Date(T_OPEN + 33 * MIN), wait: true })).toMatchObject({ halfHourRows: 1, foldedUntil: new Date(T_OPEN + 30 * MIN) });
    expect(Number(await rollupRows())).toBe(1); // the half hour; its day is summed when it is complete
    expect((await readDashboardHistory(openPool, { now: at })).realms).toEqual(fresh);
    const later = (await readDashboardHistory(openPool, { now: new Date(T_OPEN + 40 * MIN) })).realms[0];
    expect(later?.halfHours[46]).toMatchObject({ from: '2026-11-24T15:00:00.000Z', ...expected });
    expect(later?.days[89]).toMatchObject(expected);
  });
});
