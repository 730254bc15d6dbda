/**
 * Each realm's last error (`qbhealth status`, the dashboard's stored read) is read on the partial
 * index of rows that are not a pass (0008): a realm with thousands of passes and no failure costs
 * an index probe, not a scan of its history, and the error found is still the newest one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadStoredDashboard } from '../src/db/dashboard-reads.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { LAST_SQL, loadStatus } from '../src/db/status.js';
import { verifySchema } from '../src/db/verify.js';
import { quiet } from './support/realms.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const NOW = Date.parse('2026-11-24T12:00:00Z');
const PASSES = 5000;
const NEVER_FAILS = '9140000001';
const FAILED_ONCE = '9140000002';
const LEGACY_FAILURE = '9140000003';
const FAILED_AT = new Date(NOW - 3 * 86_400_000);

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows': number;
  'Actual Loops': number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}

const nodes = (n: PlanNode): PlanNode[] => [n, ...(n.Plans ?? []).flatMap(nodes)];

describe('the last error read', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, quiet);
    // A probe a minute up to NOW for each realm, all passes.
    await db.query(
      `INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, http_status, latency_ms, checked_at)
       SELECT gen_random_uuid(), r, true, 'pass', 'ok', 200, 120, $1::timestamptz - g * interval '1 minute'
         FROM unnest($2::text[]) AS r, generate_series(1, $3::int) AS g`,
      [new Date(NOW), [NEVER_FAILS, FAILED_ONCE, LEGACY_FAILURE], PASSES],
    );
    await db.query(
      `INSERT INTO quickbooks_connection_health (probe_id, realm_id, connected, status, error_code, error, http_status, latency_ms, intuit_tid, checked_at)
       VALUES (gen_random_uuid(), $1, false, 'fail', 'server_error', 'Intuit HTTP 503', 503, 900, '1-old-tid', $2::timestamptz - interval '1 minute'),
              (gen_random_uuid(), $1, false, 'fail', 'server_error', 'Intuit HTTP 503', 503, 900, '1-newest-tid', $2)`,
      [FAILED_ONCE, FAILED_AT],
    );
    // Written before `status` existed: connected = false is a failure.
    await db.query(
      `INSERT INTO quickbooks_connection_health (realm_id, connected, error, checked_at) VALUES ($1, false, 'legacy outage', $2)`,
      [LEGACY_FAILURE, FAILED_AT],
    );
    await db.query('VACUUM ANALYZE quickbooks_connection_health');
  });

  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('reads a few index entries, not the realms\' thousands of passes', async () => {
    const realms = [NEVER_FAILS, FAILED_ONCE, LEGACY_FAILURE];
    const plan = (await pool.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${LAST_SQL}`, [realms, new Date(NOW + 1000)])).rows[0]?.['QUERY PLAN'][0]?.Plan as PlanNode;
    const scans = nodes(plan).filter((n) => n['Relation Name'] === 'quickbooks_connection_health');
    expect(scans.map((n) => n['Index Name'])).toContain('quickbooks_connection_health_last_error_idx');
    // Rows each scan returned or filtered away, over all its loops (one per realm).
    const read = scans.reduce((sum, n) => sum + n['Actual Loops'] * (n['Actual Rows'] + (n['Rows Removed by Filter'] ?? 0)), 0);
    expect(read).toBeLessThanOrEqual(4 * realms.length);
  });

  it('status and the dashboard\'s stored read still show each realm\'s newest error', async () => {
    const check = (report: Awaited<ReturnType<typeof loadStatus>>): void => {
      const byRealm = new Map(report.realms.map((r) => [r.realmId, r]));
      expect(byRealm.get(NEVER_FAILS)?.lastError).toBeNull();
      expect(byRealm.get(FAILED_ONCE)?.lastError).toMatchObject({ at: FAILED_AT.toISOString(), status: 'fail', errorCode: 'server_error', httpStatus: 503, intuitTid: '1-newest-tid' });
      expect(byRealm.get(LEGACY_FAILURE)?.lastError).toMatchObject({ at: FAILED_AT.toISOString(), status: 'fail', error: 'legacy outage' });
      expect(byRealm.get(NEVER_FAILS)?.lastProbe?.status).toBe('pass');
    };
    check(await loadStatus(pool, { since: new Date(NOW - 3_600_000), now: new Date(NOW + 1000) }));
    check((await loadStoredDashboard(pool, { now: new Date(NOW + 1000) })).status);
  });

  it('the schema check demands the partial index with its predicate', async () => {
    const missing = async (): Promise<string[]> =>
      (await verifySchema(pool)).filter((p) => p.kind === 'missing_index').map((p) => (p.kind === 'missing_index' ? p.columns.join(',') : ''));
    expect(await missing()).toEqual([]);
    await db.query('DROP INDEX quickbooks_connection_health_last_error_idx');
    // Same columns, another predicate: the last error's condition does not imply it.
    await db.query(`CREATE INDEX other_partial ON quickbooks_connection_health (realm_id, checked_at, id) WHERE status <> 'pass'`);
    expect(await missing()).toEqual(['realm_id,checked_at,id']);
    await db.query(`CREATE INDEX hand_made ON quickbooks_connection_health (realm_id, checked_at, id) WHERE COALESCE(status, CASE WHEN connected THEN 'pass' ELSE 'fail' END) <> 'pass'`);
    expect(await missing()).toEqual([]);
  });
});
