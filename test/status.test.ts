/**
 * `qbhealth status` figures (uptime, percentiles, last error, token days, alerts, timeline),
 * `qbhealth prune` batching, and the CLI's help and usage exit codes.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneHistory } from '../src/db/prune.js';
import { loadStatus, parseSince, timelineMark, uptimePercent, type StatusReport } from '../src/db/status.js';
import { COMMANDS } from '../src/cli/run.js';
import { runQbhealth } from './support/cli.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const MIN = 60_000;
const DAY = 86_400_000;

interface Row {
  realm: string | null;
  at: Date;
  status: 'pass' | 'warn' | 'fail';
  latency?: number;
  code?: string;
  error?: string;
  http?: number;
  tid?: string;
}

async function insertRows(db: TestDatabase, rows: Row[]): Promise<void> {
  for (const r of rows) {
    await db.query(
      `INSERT INTO quickbooks_connection_health (connected, error, checked_at, realm_id, probe_id, status, error_code, http_status, latency_ms, intuit_tid)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [r.status === 'pass', r.error ?? null, r.at, r.realm, randomUUID(), r.status, r.code ?? (r.status === 'pass' ? 'ok' : 'server_error'), r.http ?? null, r.latency ?? 100, r.tid ?? null],
    );
  }
}

async function insertToken(db: TestDatabase, realm: string, status: string, rolling: Date, hard: Date, company: string | null = null): Promise<void> {
  await db.query(
    `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc, refresh_token_expires_at, refresh_token_hard_expires_at, status, status_reason, company_name)
     VALUES ($1, 'sandbox', 'v1:not-a-real-envelope', $2, $3, $4, $5, $6)`,
    [realm, rolling, hard, status, status === 'connected' ? null : 'Intuit answered invalid_grant', company],
  );
}

describe('status report', () => {
  let db: TestDatabase;
  // A fixed clock: the window is the 4 hours before `now`, 48 marks of 5 minutes.
  const now = new Date('2026-11-23T12:00:00Z');
  const since = new Date(now.getTime() - 4 * 60 * MIN);
  const A = '1111111111';
  const B = '2222222222';
  const C = '3333333333';

  beforeAll(async () => {
    db = await migratedDatabase();
    await insertToken(db, A, 'connected', new Date(now.getTime() + 99.5 * DAY), new Date(now.getTime() + 1800.2 * DAY), 'Clinic A');
    await insertToken(db, B, 'reconnect_required', new Date(now.getTime() - 2.5 * DAY), new Date(now.getTime() + 1000 * DAY));
    await insertRows(db, [
      // A: 3 passes and 1 failure in the window, in buckets 0, 1, 12 and 47.
      { realm: A, at: new Date(since.getTime() + 1 * MIN), status: 'pass', latency: 100 },
      { realm: A, at: new Date(since.getTime() + 6 * MIN), status: 'pass', latency: 200 },
      { realm: A, at: new Date(since.getTime() + 61 * MIN), status: 'fail', latency: 400, code: 'server_error', http: 503, tid: 'tid-in-window', error: 'Intuit answered 503' },
      { realm: A, at: new Date(now.getTime() - 1 * MIN), status: 'pass', latency: 300 },
      // Outside the window on both sides: not counted.
      { realm: A, at: new Date(since.getTime() - 1 * MIN), status: 'fail', latency: 9000 },
      { realm: A, at: new Date(now.getTime() + 1 * MIN), status: 'fail', latency: 9000 },
      // B: a throttled probe, then a failure in the same bucket.
      { realm: B, at: new Date(since.getTime() + 30 * MIN), status: 'warn', latency: 50, code: 'throttled', http: 429 },
      { realm: B, at: new Date(since.getTime() + 31 * MIN), status: 'fail', latency: 60, code: 'auth_invalid_grant', tid: 'tid-b' },
      // C: history only, no token row; its last error is older than the window.
      { realm: C, at: new Date(since.getTime() - 3 * DAY), status: 'fail', code: 'network', error: 'ECONNRESET', tid: 'tid-old' },
      { realm: C, at: new Date(since.getTime() + 200 * MIN), status: 'pass', latency: 70 },
      // Rows from before realm_id existed.
      { realm: null, at: new Date(since.getTime() + 10 * MIN), status: 'pass' },
      { realm: null, at: new Date(since.getTime() + 11 * MIN), status: 'fail' },
    ]);
    await db.query(
      `INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary, last_error, intuit_tid)
       VALUES ($1, 'quickbooks_auth', 'critical', 'open', 1, $2, 'reconnect with qbhealth connect', 'invalid_grant', 'tid-b'),
              ('', 'database', 'critical', 'open', 4, $2, 'PostgreSQL unreachable', null, null),
              ($3, 'quickbooks_api', 'warning', 'resolved', 0, $2, 'recovered', null, null)`,
      [B, new Date(since.getTime() + 31 * MIN), A],
    );
  });
  afterAll(() => db.drop());

  const report = (): Promise<StatusReport> => loadStatus(db.client, { since, now });

  it('counts 3 of 4 passing probes as 75% uptime, with percentiles over the window only', async () => {
    const a = (await report()).realms.find((r) => r.realmId === A);
    expect(a).toMatchObject({
      companyName: 'Clinic A',
      environment: 'sandbox',
      connection: 'connected',
      state: 'pass',
      probes: { total: 4, up: 3, warned: 0, failed: 1 },
      uptimePercent: 75,
      // percentile_cont over 100, 200, 300, 400.
      latencyMs: { p50: 250, p95: 385 },
      lastProbe: { status: 'pass', errorCode: 'ok', latencyMs: 300, at: new Date(now.getTime() - MIN).toISOString() },
      lastError: { errorCode: 'server_error', httpStatus: 503, intuitTid: 'tid-in-window', error: 'Intuit answered 503' },
      refreshToken: { revoked: false, rollingDaysLeft: 99, hardDaysLeft: 1800 },
      alerts: [],
    });
  });

  it('draws the timeline: one mark per bucket, failures and throttling told apart without colour', async () => {
    const r = await report();
    expect(r.bucketSeconds).toBe(300);
    const a = r.realms.find((x) => x.realmId === A);
    expect(a?.timeline).toHaveLength(48);
    expect(a?.timeline).toBe(`++${'.'.repeat(10)}x${'.'.repeat(34)}+`);
    const b = r.realms.find((x) => x.realmId === B);
    expect(b?.timeline[6]).toBe('!');
    expect(b?.buckets[6]).toMatchObject({ total: 2, up: 1, warned: 1, failed: 1 });
    expect([timelineMark({ total: 2, up: 2, warned: 1, failed: 0 }), timelineMark({ total: 1, up: 0, warned: 0, failed: 1 }), timelineMark(undefined)]).toEqual(['~', 'x', '.']);
  });

  it('reports the token state over the last probe, expired refresh tokens, open alerts, history-only realms and unattributed rows', async () => {
    const r = await report();
    expect(r.realms.map((x) => x.realmId)).toEqual([A, B, C]);
    const b = r.realms.find((x) => x.realmId === B);
    expect(b).toMatchObject({
      state: 'reconnect_required',
      connectionReason: 'Intuit answered invalid_grant',
      uptimePercent: 50,
      // Refused by Intuit: revoked, with no lifetime shown whatever the stored expiry says.
      refreshToken: { revoked: true, rollingDaysLeft: null, hardDaysLeft: null, rollingExpiresAt: null },
      lastError: { errorCode: 'auth_invalid_grant', intuitTid: 'tid-b' },
    });
    expect(b?.alerts).toEqual([expect.objectContaining({ kind: 'quickbooks_auth', severity: 'critical', realmId: B, intuitTid: 'tid-b' })]);
    const c = r.realms.find((x) => x.realmId === C);
    expect(c).toMatchObject({ connection: null, state: 'pass', uptimePercent: 100, lastError: { errorCode: 'network', intuitTid: 'tid-old' } });
    expect(r.systemAlerts).toEqual([expect.objectContaining({ kind: 'database', realmId: null, consecutiveFailures: 4 })]);
    expect(r.unattributedProbes).toBe(2);
    expect(r.lastProbeAt).toBe(new Date(now.getTime() - MIN).toISOString());
  });

  it('narrows to one realm', async () => {
    const r = await loadStatus(db.client, { since, now, realmId: B });
    expect(r.realms.map((x) => x.realmId)).toEqual([B]);
    expect(r.systemAlerts).toHaveLength(1);
  });

  it('rounds uptime to two decimals and parses windows', () => {
    expect([uptimePercent(3, 4), uptimePercent(2, 3), uptimePercent(0, 0), uptimePercent(999, 1000)]).toEqual([75, 66.67, null, 99.9]);
    expect(parseSince('24h', now).toISOString()).toBe('2026-11-22T12:00:00.000Z');
    expect(parseSince('90m', now).toISOString()).toBe('2026-11-23T10:30:00.000Z');
    expect(parseSince('2w', now).toISOString()).toBe('2026-11-09T12:00:00.000Z');
    expect(parseSince('2026-11-23T05:30:00+05:30', now).toISOString()).toBe('2026-11-23T00:00:00.000Z');
    for (const bad of ['yesterday', '24', '-1h', '0m', '2027-01-01T00:00:00Z', '']) expect(() => parseSince(bad, now)).toThrow(/duration such as 90m, 24h/);
  });
});

describe('qbhealth status', () => {
  let db: TestDatabase;
  const R = '9130357766';
  beforeAll(async () => {
    db = await migratedDatabase();
    const t = Date.now();
    await insertToken(db, R, 'connected', new Date(t + 100.5 * DAY), new Date(t + 1825.5 * DAY), 'Demo Clinic');
    await insertRows(db, [
      { realm: R, at: new Date(t - 40 * MIN), status: 'pass', latency: 120 },
      { realm: R, at: new Date(t - 30 * MIN), status: 'fail', latency: 800, code: 'timeout', tid: 'tid-cli', error: 'no answer within 10000 ms' },
      { realm: R, at: new Date(t - 20 * MIN), status: 'pass', latency: 140 },
      { realm: R, at: new Date(t - 10 * MIN), status: 'pass', latency: 160 },
    ]);
  });
  afterAll(() => db.drop());
  const env = (): Record<string, string> => ({ DATABASE_URL: db.url });

  it('prints each figure on its own labelled line and exits 0 when nothing needs attention', async () => {
    const r = await runQbhealth(['status'], env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^realm 9130357766 {2}Demo Clinic {2}\(sandbox\)$/m);
    expect(r.stdout).toMatch(/^ {2}state +PASS {2}last probe 10 min ago: ok, 160 ms$/m);
    expect(r.stdout).toMatch(/^ {2}uptime +75% over 24h \(3 of 4 probes up, 1 failed\)$/m);
    expect(r.stdout).toMatch(/^ {2}latency +p50 150 ms {2}p95 704 ms$/m);
    expect(r.stdout).toMatch(/^ {2}last error +30 min ago: timeout intuit_tid tid-cli - no answer within 10000 ms$/m);
    expect(r.stdout).toMatch(/^ {2}refresh token +100 days left \(rolling, \d{4}-\d\d-\d\d\) {2}1825 days left \(hard, \d{4}-\d\d-\d\d\)$/m);
    expect(r.stdout).toMatch(/^ {2}open alerts +none$/m);
    expect(r.stdout).toMatch(/^ {2}timeline +\|[.+x!~]{48}\| {2}24h ago -> now, 30m per mark$/m);
    expect(r.stdout).toContain('timeline: + all passed');
    // ASCII only: readable on any terminal, without colour codes.
    expect(r.stdout).toMatch(/^[\x20-\x7e\n]*$/);
  });

  it('--json gives the same report as JSON; --since narrows the window', async () => {
    const r = await runQbhealth(['status', '--json', '--since', '25m'], env());
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as StatusReport;
    expect(report.realms).toHaveLength(1);
    expect(report.realms[0]).toMatchObject({ realmId: R, uptimePercent: 100, probes: { total: 2, up: 2 }, lastError: { intuitTid: 'tid-cli' } });
    const all = JSON.parse((await runQbhealth(['status', '--json'], env())).stdout) as StatusReport;
    expect(all.realms[0]?.uptimePercent).toBe(75);
  });

  it('exits 1 when an alert is open, naming it', async () => {
    await db.query(
      `INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary)
       VALUES ($1, 'quickbooks_api', 'critical', 'open', 3, now() - interval '5 minutes', 'realm failing 3 times in a row')`,
      [R],
    );
    const r = await runQbhealth(['status'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^ {2}open alerts +CRITICAL quickbooks_api since 5 min ago \(3 failure\(s\)\): realm failing 3 times in a row$/m);
  });

  it('usage errors exit 2 and say what is accepted; an unknown realm exits 1', async () => {
    const since = await runQbhealth(['status', '--since', 'last tuesday'], env());
    expect(since.code).toBe(2);
    expect(since.stderr).toContain('give a duration such as 90m, 24h, 7d or 2w');
    const realm = await runQbhealth(['status', '--realm-id', 'abc'], env());
    expect(realm.code).toBe(2);
    const unknown = await runQbhealth(['status', '--realm-id', '42'], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('realm 42 is not known');
  });
});

describe('retention', () => {
  let db: TestDatabase;
  const now = new Date('2026-11-23T12:00:00Z');
  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(() => db.drop());

  it('deletes only rows older than the retention, in batches of the given size, and logs the count', async () => {
    const old = Array.from({ length: 12 }, (_, i): Row => ({ realm: '1', at: new Date(now.getTime() - 91 * DAY - i * MIN), status: 'pass' }));
    const kept = Array.from({ length: 3 }, (_, i): Row => ({ realm: '1', at: new Date(now.getTime() - 89 * DAY - i * MIN), status: 'fail' }));
    await insertRows(db, [...old, ...kept]);
    const capture = captureLog('info');
    const outcome = await pruneHistory(db.client, 90, capture.log, { batchSize: 5, now });
    expect(outcome).toEqual({ deleted: 12, batches: 3, cutoff: new Date(now.getTime() - 90 * DAY), rollups: { deleted: 0, cutoff: new Date(now.getTime() - 400 * DAY) } });
    expect(capture.byEvent('history.pruned')).toEqual([expect.objectContaining({ deleted: 12, batches: 3, retentionDays: 90 })]);
    const left = await db.query<{ n: number; oldest: Date }>('SELECT count(*)::int AS n, min(checked_at) AS oldest FROM quickbooks_connection_health');
    expect(left.rows[0]?.n).toBe(3);
    expect(left.rows[0]?.oldest.getTime()).toBeGreaterThan(now.getTime() - 90 * DAY);
    // Exactly a multiple of the batch: one extra, empty batch confirms there is nothing left.
    await insertRows(db, old.slice(0, 10));
    expect(await pruneHistory(db.client, 90, capture.log, { batchSize: 5, now })).toMatchObject({ deleted: 10, batches: 3 });
  });

  it('uses the checked_at index for each batch', async () => {
    await db.query('SET enable_seqscan = off');
    const plan = await db.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT id FROM quickbooks_connection_health WHERE checked_at < $1 ORDER BY checked_at LIMIT 5000`,
      [now],
    );
    await db.query('RESET enable_seqscan');
    expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toMatch(/Index (Only )?Scan (using|on) quickbooks_connection_health_checked_at_idx/);
  });

  it('qbhealth prune honours HISTORY_RETENTION_DAYS and --batch-size, and logs history.pruned', async () => {
    await insertRows(db, Array.from({ length: 7 }, (_, i): Row => ({ realm: '2', at: new Date(Date.now() - 10 * DAY - i * MIN), status: 'pass' })));
    const r = await runQbhealth(['prune', '--batch-size', '3'], { DATABASE_URL: db.url, HISTORY_RETENTION_DAYS: '7' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^pruned (\d+) row\(s\) checked before \S+ \(HISTORY_RETENTION_DAYS=7\) in (\d+) batch\(es\)$/m);
    const pruned = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.event === 'history.pruned');
    // Everything older than 7 days: the 7 rows above plus the 3 kept at 89 days.
    expect(pruned).toMatchObject({ deleted: 10, batches: 4, retentionDays: 7 });
    const bad = await runQbhealth(['prune', '--batch-size', '0'], { DATABASE_URL: db.url });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--batch-size must be a whole number');
    const badDays = await runQbhealth(['prune'], { DATABASE_URL: db.url, HISTORY_RETENTION_DAYS: 'forever' });
    expect(badDays.code).toBe(78);
    expect(badDays.stderr).toContain('HISTORY_RETENTION_DAYS');
  });
});

describe('help and usage', () => {
  it('qbhealth --help lists every command, one line each', async () => {
    const r = await runQbhealth(['--help'], {});
    expect(r.code).toBe(0);
    for (const c of COMMANDS) expect(r.stdout).toMatch(new RegExp(`^ {2}${c.name} +${c.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    expect(COMMANDS.map((c) => c.name)).toEqual(expect.arrayContaining(['status', 'probe', 'connect', 'import-tokens', 'disconnect', 'migrate', 'check-schema', 'prune', 'rotate-key']));
  });

  it.each(COMMANDS.map((c) => [c.name]))('qbhealth %s --help lists its options and exit codes; an unknown option exits 2 with that help', async (name) => {
    const command = COMMANDS.find((c) => c.name === name);
    const help = await runQbhealth([name, '--help'], {});
    expect(help.code).toBe(0);
    expect(help.stdout).toContain(`usage: qbhealth ${name}`);
    for (const option of Object.keys(command?.options ?? {})) expect(help.stdout).toContain(`--${option}`);
    for (const [code] of command?.exitCodes ?? []) expect(help.stdout).toMatch(new RegExp(`^ +${code} {2}\\S`, 'm'));
    const bad = await runQbhealth([name, '--frobnicate'], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("Unknown option '--frobnicate'");
    expect(bad.stderr).toContain(`usage: qbhealth ${name}`);
  });

  it('an unknown command exits 2 with the command list', async () => {
    const r = await runQbhealth(['stauts'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown command "stauts" (did you mean `qbhealth status`?)');
    expect((await runQbhealth(['frobnicate'], {})).stderr).toMatch(/^qbhealth: unknown command "frobnicate"$/m);
    expect(r.stderr).toMatch(/^ {2}status +/m);
  });
});
