import { randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPool, type Pool } from '../src/db/pool.js';
import { insertProbeResults } from '../src/db/health-queries.js';
import { foldClosedPeriods } from '../src/db/rollup-fold.js';
import { Escalator } from '../src/escalate/escalator.js';
import { WebhookNotifier } from '../src/escalate/notifier.js';
import { DatabaseAlerts } from '../src/escalate/database-alerts.js';
import { applyChange, type AlertState, type Change } from '../src/escalate/transition.js';
import { describeDbFailure, type DbOutcome } from '../src/db/failure.js';
import type { ProbeResult } from '../src/probe-result.js';
import { FatalError, Recorder } from '../src/recorder/recorder.js';
import { CURRENT_FILE, Spool, type ReplayOutcome } from '../src/recorder/spool.js';
import type { TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';

const result = (i: number, realmId = '111'): ProbeResult => ({
  probeId: randomUUID(),
  realmId,
  checkedAt: new Date(Date.UTC(2026, 10, 23, 12, 0, i)),
  connected: i % 2 === 0,
  status: i % 2 === 0 ? 'pass' : 'fail',
  errorCode: i % 2 === 0 ? 'ok' : 'server_error',
  error: i % 2 === 0 ? undefined : 'Intuit HTTP 503',
  httpStatus: i % 2 === 0 ? 200 : 503,
  latencyMs: 40 + i,
  intuitTid: `tid-${i}`,
  refreshTokenExpiresAt: new Date(Date.UTC(2027, 0, 1)),
  companyName: 'Spool Co',
});

const spoolDir = (): string => mkdtempSync(path.join(os.tmpdir(), 'qbhm-spool-test-'));

let db: TestDatabase;
let pool: Pool;
beforeAll(async () => {
  db = await migratedDatabase();
  pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

const rows = async (): Promise<Array<{ probe_id: string; checked_at: Date; error_code: string }>> =>
  (await db.query<{ probe_id: string; checked_at: Date; error_code: string }>('SELECT probe_id, checked_at, error_code FROM quickbooks_connection_health ORDER BY id')).rows;

describe('the spool', () => {
  it('replays in order, skips and reports a torn last line, and a second replay after a crash inserts nothing twice', async () => {
    await db.query('TRUNCATE quickbooks_connection_health');
    const capture = captureLog('debug');
    const dir = spoolDir();
    const spool = new Spool(dir, capture.log, 2);
    await spool.open();
    const written = Array.from({ length: 5 }, (_, i) => result(i));
    await spool.append(written.slice(0, 3));
    await spool.append(written.slice(3));
    await spool.close();
    appendFileSync(path.join(dir, CURRENT_FILE), '{"probeId":"torn-by-a-cra');
    expect(capture.byEvent('spool.appended')).toHaveLength(2);

    // A restart finds 5 complete lines and a torn one; the first replay dies after one batch.
    const again = new Spool(dir, capture.log, 2);
    expect(await again.open()).toBe(6);
    let batches = 0;
    await expect(
      again.replay(async (batch) => {
        if (++batches === 2) throw new Error('connection terminated');
        return insertProbeResults(pool, batch);
      }),
    ).rejects.toThrow('connection terminated');
    expect((await rows()).length).toBe(2);

    const outcome = await again.replay((batch) => insertProbeResults(pool, batch));
    expect(outcome).toEqual({ replayed: 5, inserted: 3, skipped: 1 });
    expect((await rows()).map((r) => r.probe_id)).toEqual(written.map((r) => r.probeId));
    expect((await rows())[1]?.checked_at.getTime()).toBe(written[1]?.checkedAt.getTime());
    expect(again.pending).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
    expect(capture.byEvent('spool.replayed')).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ skipped: true, msg: expect.stringContaining('torn last line') }),
        expect.objectContaining({ count: 5, inserted: 3, skipped: 1 }),
      ]),
    );
  });
});

describe('the recorder', () => {
  it('spools while the database refuses, then replays before the next write, keeping order', async () => {
    await db.query('TRUNCATE quickbooks_connection_health');
    const capture = captureLog('debug');
    const spool = new Spool(spoolDir(), capture.log);
    await spool.open();
    const outcomes: DbOutcome[] = [];
    const recorder = new Recorder(pool, spool, capture.log, (o) => outcomes.push(o));
    const first = result(0);
    expect(await recorder.record(first)).toBe('database');

    await db.query('ALTER TABLE quickbooks_connection_health RENAME TO quickbooks_connection_health_away');
    const held = [result(1), result(2)];
    expect(await Promise.all(held.map((r) => recorder.record(r)))).toEqual(['spool', 'spool']);
    expect(outcomes.at(-1)).toMatchObject({ ok: false, kind: 'schema', summary: expect.stringMatching(/quickbooks_connection_health.*qbhealth migrate/) });
    expect(capture.byEvent('db.write_failed')[0]).toMatchObject({ level: 50, kind: 'schema' });
    expect(spool.pending).toBe(2);

    await db.query('ALTER TABLE quickbooks_connection_health_away RENAME TO quickbooks_connection_health');
    const last = result(3);
    expect(await recorder.record(last)).toBe('database');
    expect((await rows()).map((r) => r.probe_id)).toEqual([first, ...held, last].map((r) => r.probeId));
    expect(spool.pending).toBe(0);
    expect(outcomes.at(-1)).toEqual({ ok: true });
  });

  it('reports what each replay took out of the spool (qbhealth_spool_replayed_total), and nothing for a replay that failed', async () => {
    await db.query('TRUNCATE quickbooks_connection_health');
    const capture = captureLog('debug');
    const spool = new Spool(spoolDir(), capture.log);
    await spool.open();
    const replays: ReplayOutcome[] = [];
    const recorder = new Recorder(pool, spool, capture.log, () => undefined, (o) => replays.push(o));
    expect(await recorder.record(result(0))).toBe('database');
    expect(replays).toEqual([]);

    await db.query('ALTER TABLE quickbooks_connection_health RENAME TO quickbooks_connection_health_away');
    expect(await Promise.all([result(1), result(2), result(3)].map((r) => recorder.record(r)))).toEqual(['spool', 'spool', 'spool']);
    // The table is still away: the replay before this write fails, and counts nothing.
    expect(await recorder.record(result(4))).toBe('spool');
    expect(await recorder.replaySpool()).toBe(false);
    expect(replays).toEqual([]);

    await db.query('ALTER TABLE quickbooks_connection_health_away RENAME TO quickbooks_connection_health');
    expect(await recorder.record(result(5))).toBe('database');
    expect(replays).toEqual([{ replayed: 4, inserted: 4, skipped: 0 }]);
    expect((await rows()).length).toBe(6);
    // Nothing left: no further replay, no further count.
    expect(await recorder.replaySpool()).toBe(true);
    expect(await recorder.record(result(6))).toBe('database');
    expect(replays).toHaveLength(1);
  });

  it('fails with a FatalError (exit 75) when neither the database nor the spool can take a result', async () => {
    const capture = captureLog('debug');
    const notADirectory = path.join(spoolDir(), 'file');
    writeFileSync(notADirectory, '');
    const spool = new Spool(path.join(notADirectory, 'spool'), capture.log);
    const dead = createPool({ databaseUrl: 'postgres://nobody:x@127.0.0.1:1/none', applicationName: 'test', connectionTimeoutMs: 500 }, capture.log);
    try {
      const recorder = new Recorder(dead, spool, capture.log, () => undefined);
      const failure = await recorder.record(result(0)).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(failure).toBeInstanceOf(FatalError);
      expect(failure).toMatchObject({ exitCode: 75, message: expect.stringContaining('neither PostgreSQL nor the spool') });
    } finally {
      await dead.end();
    }
  });
});

describe('escalation', () => {
  const options = { alertAfterFailures: 3, alertRepeatMinutes: 10 };
  const failure = { severity: 'critical' as const, summary: 'API failing: {count} consecutive probes failed' };

  it('the state machine: counts below the threshold, raises once at it, reminds on schedule, resolves on success', () => {
    let at = new Date('2026-11-23T10:00:00Z');
    let state: AlertState | undefined;
    const events: string[] = [];
    const step = (change: Change): void => {
      const next = applyChange(state, '42', change, at, options);
      state = next.state ?? state;
      if (next.transition) events.push(`${next.transition.event}:${next.transition.state.consecutiveFailures}`);
    };
    step({ op: 'fail', kind: 'quickbooks_api', failure });
    step({ op: 'fail', kind: 'quickbooks_api', failure });
    expect(events).toEqual([]);
    step({ op: 'fail', kind: 'quickbooks_api', failure });
    expect(events).toEqual(['alert.raised:3']);
    expect(state?.summary).toBe('API failing: 3 consecutive probes failed');
    at = new Date(at.getTime() + 5 * 60_000);
    step({ op: 'fail', kind: 'quickbooks_api', failure });
    expect(events).toEqual(['alert.raised:3']);
    at = new Date(at.getTime() + 5 * 60_000);
    step({ op: 'fail', kind: 'quickbooks_api', failure });
    expect(events).toEqual(['alert.raised:3', 'alert.repeated:5']);
    step({ op: 'succeed', kind: 'quickbooks_api' });
    expect(events).toEqual(['alert.raised:3', 'alert.repeated:5', 'alert.resolved:5']);
    expect(state).toMatchObject({ state: 'resolved', consecutiveFailures: 0, resolvedAt: at });

    // A warning that turns critical (a member down, then realms going unprobed) is told at once.
    state = undefined;
    events.length = 0;
    step({ op: 'fail', kind: 'monitor_instance_down', failure: { severity: 'warning', immediate: true, summary: 'member down' } });
    step({ op: 'fail', kind: 'monitor_instance_down', failure: { severity: 'warning', immediate: true, summary: 'member down' } });
    step({ op: 'fail', kind: 'monitor_instance_down', failure: { severity: 'critical', immediate: true, summary: 'member down, realms unprobed' } });
    expect(events).toEqual(['alert.raised:1', 'alert.repeated:3']);
    expect(state).toMatchObject({ severity: 'critical' });
  });

  it('alert state lives in PostgreSQL: a restarted (or another) member neither re-pages nor forgets, and each transition is one outbox row', async () => {
    const capture = captureLog('debug');
    const first = new Escalator(pool, capture.log, { ...options, instanceId: 'member-a', notify: true });
    for (let i = 0; i < 3; i++) first.fail('4242', 'quickbooks_api', failure);
    expect(await first.persist()).toBe(true);
    expect(capture.byEvent('alert.raised')).toEqual([expect.objectContaining({ level: 50, kind: 'quickbooks_api', realmId: '4242', consecutiveFailures: 3, instance: 'member-a' })]);

    const second = new Escalator(pool, capture.log, { ...options, instanceId: 'member-b', notify: true });
    expect(await second.load()).toBeGreaterThanOrEqual(1);
    expect(second.isOpen('4242', 'quickbooks_api')).toBe(true);
    second.fail('4242', 'quickbooks_api', failure);
    expect(await second.persist()).toBe(true);
    expect(capture.byEvent('alert.raised')).toHaveLength(1);
    second.succeed('4242', 'quickbooks_api');
    expect(await second.persist()).toBe(true);
    expect(capture.byEvent('alert.resolved')).toEqual([expect.objectContaining({ level: 30, kind: 'quickbooks_api', consecutiveFailures: 4, instance: 'member-b' })]);
    const row = (await db.query("SELECT state, consecutive_failures FROM quickbooks_alert_state WHERE realm_id = '4242'")).rows[0];
    expect(row).toMatchObject({ state: 'resolved', consecutive_failures: 0 });
    const outbox = (await db.query("SELECT event, dedup_key, created_by FROM quickbooks_alert_outbox WHERE body->>'realmId' = '4242' ORDER BY seq")).rows;
    expect(outbox).toEqual([
      { event: 'alert.raised', dedup_key: 'qbo-health-monitor:quickbooks_api:4242', created_by: 'member-a' },
      { event: 'alert.resolved', dedup_key: 'qbo-health-monitor:quickbooks_api:4242', created_by: 'member-b' },
    ]);
  });

  it('two members escalating the same failure at the same moment raise it once (the row lock serialises them)', async () => {
    const captures = [captureLog('debug'), captureLog('debug'), captureLog('debug')];
    const members = captures.map((c, i) => new Escalator(pool, c.log, { ...options, instanceId: `member-${i}`, notify: true }));
    for (const m of members) m.fail('system:instance:gone', 'monitor_instance_down', { severity: 'warning', immediate: true, summary: 'member gone stopped heartbeating' });
    expect(await Promise.all(members.map((m) => m.persist()))).toEqual([true, true, true]);
    expect(captures.flatMap((c) => c.byEvent('alert.raised'))).toHaveLength(1);
    const outbox = (await db.query("SELECT count(*)::int AS n FROM quickbooks_alert_outbox WHERE dedup_key = 'qbo-health-monitor:monitor_instance_down:system:instance:gone'")).rows[0];
    expect(outbox).toEqual({ n: 1 });
  });

  it("a member's own schema alert is raised at once and sent directly, naming the member", async () => {
    const capture = captureLog('debug');
    const alerts = new DatabaseAlerts(new WebhookNotifier(undefined, capture.log), capture.log, { ...options, instanceId: 'member-x' });
    const gap = Object.assign(new Error('relation "quickbooks_connection_health" does not exist'), { code: '42P01' });
    alerts.note(describeDbFailure(gap));
    alerts.apply();
    expect(capture.byEvent('alert.raised')).toEqual([
      expect.objectContaining({ kind: 'schema', realmId: null, consecutiveFailures: 1, instance: 'member-x', dedupKey: 'qbo-health-monitor:schema:monitor', msg: expect.stringContaining('(instance member-x)') }),
    ]);
  });
});

describe('a result for a half hour already folded, recorded by a member whose clock is behind the database\'s', () => {
  it('is judged late on the database\'s clock (Recorder.dbNow) and re-folded into the rollups', async () => {
    const realNow = Date.now();
    const halfHour = 30 * 60_000;
    // A half hour two hours ago, folded already.
    const slot = Math.floor((realNow - 2 * 3_600_000) / halfHour) * halfHour;
    await foldClosedPeriods(pool, { graceMs: 120_000, wait: true });
    const capture = captureLog('debug');
    const spool = new Spool(spoolDir(), capture.log);
    await spool.open();
    const recorder = new Recorder(pool, spool, capture.log, () => undefined);
    recorder.dbNow = () => realNow;
    // This host's clock three hours behind PostgreSQL's: by it, that half hour has not even begun.
    vi.useFakeTimers({ toFake: ['Date'], now: realNow - 3 * 3_600_000 });
    try {
      const late = { ...result(0, '9990001'), checkedAt: new Date(slot + 60_000) };
      expect(await recorder.record(late)).toBe('database');
    } finally {
      vi.useRealTimers();
    }
    const { rows } = await db.query<{ probes: number }>(`SELECT probes FROM quickbooks_health_rollup_halfhour WHERE realm_id = '9990001' AND period_start = $1`, [new Date(slot)]);
    expect(rows).toEqual([{ probes: 1 }]);
  });
});
