/**
 * Silences in the escalation, against a real PostgreSQL and a real webhook receiver: a silenced
 * alert is recorded and shown but not notified; when its silence ends while it is still open it is
 * notified once, whichever of two members gets there; a resolution of an alert never notified is
 * not notified; a member's own database alerts honour the silences it read.
 */
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AlertKind } from '../src/alert.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { createSilence, removeSilence } from '../src/db/silence-queries.js';
import { loadStatus, StatusReader, type StatusReport } from '../src/db/status.js';
import { HealthState } from '../src/health/state.js';
import { Metrics } from '../src/http/metrics.js';
import { HealthServer } from '../src/http/server.js';
import { DatabaseAlerts } from '../src/escalate/database-alerts.js';
import { Escalator, type Failure } from '../src/escalate/escalator.js';
import { WebhookNotifier } from '../src/escalate/notifier.js';
import { OutboxDeliverer } from '../src/escalate/outbox.js';
import { releaseHeldAlerts, releaseHeldAlertsIn, SilenceCache } from '../src/escalate/silences.js';
import { captureLog, type CapturedLog } from './support/log.js';
import { alertReceiver, type AlertReceiver } from './support/fleet.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';
import { eventually } from './support/wait.js';

const failure = (realm: string, code = 'server_error'): Failure => ({ severity: 'critical', summary: `realm ${realm} failing {count} times (${code})`, lastError: `Intuit said ${code}`, errorCode: code, intuitTid: `tid-${realm}` });

describe('silences in the escalation', () => {
  let db: TestDatabase;
  let pool: Pool;
  let hook: AlertReceiver;
  const running: OutboxDeliverer[] = [];

  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
    hook = await alertReceiver();
  });
  afterEach(async () => {
    for (const d of running.splice(0)) await d.stop(1000);
  });
  afterAll(async () => {
    await hook.close();
    await pool.end();
    await db.drop();
  });

  const member = (id: string, repeatMinutes = 60): { e: Escalator; capture: CapturedLog } => {
    const capture = captureLog('info');
    const e = new Escalator(pool, capture.log, { alertAfterFailures: 3, alertRepeatMinutes: repeatMinutes, instanceId: id, notify: true });
    return { e, capture };
  };
  const deliverer = (id: string, capture: CapturedLog): OutboxDeliverer => {
    const d = new OutboxDeliverer(pool, new WebhookNotifier(hook.url, capture.log, { retries: 1, minTimeoutMs: 10, maxTimeoutMs: 20 }), capture.log, { instanceId: id, pollMs: 25 });
    running.push(d);
    d.start();
    return d;
  };
  const failTimes = async (e: Escalator, realm: string, n: number, kind: AlertKind = 'quickbooks_api', code = 'server_error'): Promise<void> => {
    for (let i = 0; i < n; i++) {
      e.fail(realm, kind, failure(realm, code));
      expect(await e.persist()).toBe(true);
    }
  };
  const succeed = async (e: Escalator, realm: string, kind: AlertKind = 'quickbooks_api'): Promise<void> => {
    e.succeed(realm, kind);
    expect(await e.persist()).toBe(true);
  };
  const received = (realm: string): Array<Record<string, unknown>> => hook.accepted().filter((b) => b.realmId === realm);
  /** Another realm's alert, not silenced, delivered through the same outbox: everything written before it has been delivered too. */
  const control = async (e: Escalator, realm: string): Promise<void> => {
    await failTimes(e, realm, 3);
    await eventually(async () => expect(received(realm).map((b) => b.event)).toContain('alert.raised'));
  };
  const silence = (realmId: string | null, kind: AlertKind | null, reason = 'Intuit maintenance') =>
    createSilence(pool, { realmId, kind, durationMs: 2 * 3_600_000, reason, createdBy: 'alice' });
  const events = async (realm: string) =>
    (await db.query(`SELECT event, silenced, silence_id, notification_id, error_code, instance FROM quickbooks_alert_events WHERE realm_id = $1 ORDER BY id`, [realm])).rows;

  it("a silenced realm's failure is recorded, shown silenced in status, and the webhook receives nothing", async () => {
    const R = '9100000001';
    const s = await silence(R, null);
    // A realm with history, so that the status report lists it.
    await db.query(`INSERT INTO quickbooks_connection_health (connected, realm_id, status, error_code) VALUES (false, $1, 'fail', 'server_error')`, [R]);
    const { e, capture } = member('member#1');
    deliverer('member#1', capture);
    await failTimes(e, R, 4);
    // Recorded: the state is open (the escalator knows it), the history says raised and held back.
    expect(e.isOpen(R, 'quickbooks_api')).toBe(true);
    expect(await events(R)).toEqual([{ event: 'alert.raised', silenced: true, silence_id: s.id, notification_id: null, error_code: 'server_error', instance: 'member#1' }]);
    expect((await db.query(`SELECT count(*)::int AS n FROM quickbooks_alert_outbox WHERE body->>'realmId' = $1`, [R])).rows[0]).toEqual({ n: 0 });
    // Logged as silenced, never as raised (a metric filter on alert.raised does not page).
    expect(capture.byEvent('alert.silenced')).toEqual([expect.objectContaining({ alert: 'alert.raised', realmId: R, silenceId: s.id, kind: 'quickbooks_api' })]);
    expect(capture.byEvent('alert.raised').filter((l) => l.realmId === R)).toEqual([]);
    // Shown: the status report marks it silenced and lists the silence.
    const report = await loadStatus(pool, { since: new Date(Date.now() - 3_600_000) });
    expect(report.realms.find((r) => r.realmId === R)?.alerts).toEqual([expect.objectContaining({ kind: 'quickbooks_api', silenced: true, silenceId: s.id })]);
    expect(report.silences).toEqual([expect.objectContaining({ id: s.id, realmId: R, kind: null, reason: 'Intuit maintenance', createdBy: 'alice' })]);
    // GET /status serves the same document.
    const state = new HealthState();
    const server = new HealthServer(state, new Metrics(state), { healthToken: undefined, refreshTokenWarnDays: 14, version: 'test', status: new StatusReader(db.url, capture.log) }, capture.log);
    try {
      const { port } = await server.listen('127.0.0.1', 0);
      const served = (await (await fetch(`http://127.0.0.1:${port}/status?since=1h`)).json()) as StatusReport;
      expect(served.realms.find((r) => r.realmId === R)?.alerts).toEqual([expect.objectContaining({ silenced: true, silenceId: s.id })]);
      expect(served.silences).toEqual([expect.objectContaining({ id: s.id, realmId: R })]);
    } finally {
      await server.close();
    }
    // Nothing reached the webhook, while an unsilenced realm's alert written after it did.
    await control(e, '9100000091');
    expect(received(R)).toEqual([]);
  });

  it('a silence removed while the alert is still open: it is notified then, once, with two members racing', async () => {
    const R = '9100000002';
    const s = await silence(R, 'quickbooks_api');
    const a = member('member#a');
    const b = member('member#b');
    await failTimes(a.e, R, 2);
    await failTimes(b.e, R, 2);
    expect(await events(R)).toEqual([expect.objectContaining({ event: 'alert.raised', silenced: true, notification_id: null })]);
    deliverer('member#a', a.capture);
    deliverer('member#b', b.capture);
    expect(await removeSilence(pool, s.id, 'bob')).toMatchObject({ outcome: 'removed' });
    await eventually(async () => expect(received(R)).toHaveLength(1));
    expect(received(R)[0]).toMatchObject({ event: 'alert.raised', kind: 'quickbooks_api', consecutiveFailures: 4, summary: `realm ${R} failing 4 times (server_error)` });
    // Both members keep polling: still once, and once in the history.
    await control(a.e, '9100000092');
    await control(b.e, '9100000093');
    expect(received(R)).toHaveLength(1);
    expect((await events(R)).map((r) => [r.event, r.silenced, r.notification_id !== null])).toEqual([
      ['alert.raised', true, false],
      ['alert.raised', false, true],
    ]);
    const released = [...a.capture.byEvent('alert.raised'), ...b.capture.byEvent('alert.raised')].filter((l) => l.realmId === R);
    expect(released).toEqual([expect.objectContaining({ silenceEnded: true })]);
  });

  it('an expired silence releases exactly once when many releases race on separate connections', async () => {
    const R = '9100000003';
    const s = await silence(R, null);
    const { e } = member('member#1');
    await failTimes(e, R, 3);
    // The window ends (as if two hours had passed).
    await db.query(`UPDATE quickbooks_alert_silences SET starts_at = now() - interval '2 hours', ends_at = now() - interval '1 second' WHERE id = $1`, [s.id]);
    const pools = [pool, createPool({ databaseUrl: db.url, applicationName: 'test-b' }, pino({ level: 'silent' }))];
    try {
      const log = pino({ level: 'silent' });
      const made = await Promise.all(Array.from({ length: 8 }, (_, i) => releaseHeldAlerts(pools[i % 2] as Pool, log, { instanceId: `racer#${i}` })));
      expect(made.flat().filter((n) => n.realmId === R).map((n) => n.event)).toEqual(['alert.raised']);
      const outbox = await db.query(`SELECT event FROM quickbooks_alert_outbox WHERE body->>'realmId' = $1`, [R]);
      expect(outbox.rows).toEqual([{ event: 'alert.raised' }]);
      // A later pass finds nothing left to release.
      expect((await releaseHeldAlerts(pool, log, { instanceId: 'racer#9' })).filter((n) => n.realmId === R)).toEqual([]);
    } finally {
      await pools[1]?.end();
    }
  });

  it('a member that read a held alert just before another released it, and locked it just after, does not notify it again', async () => {
    const R = '9100000010';
    const s = await silence(R, null);
    const { e } = member('member#1');
    await failTimes(e, R, 3);
    await db.query(`UPDATE quickbooks_alert_silences SET starts_at = now() - interval '2 hours', ends_at = now() - interval '1 second' WHERE id = $1`, [s.id]);
    // Member A is mid-release: its transaction holds the alert states against new row locks.
    const a = new pg.Client({ connectionString: db.url });
    await a.connect();
    try {
      await a.query('BEGIN');
      await a.query('LOCK TABLE quickbooks_alert_state IN EXCLUSIVE MODE');
      // Member B reads the held alert, then waits to lock it.
      const b = releaseHeldAlerts(pool, pino({ level: 'silent' }), { instanceId: 'member#b' });
      await eventually(async () => {
        const { rows } = await db.query(`SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted AND c.relname = 'quickbooks_alert_state'`);
        expect(rows[0]).toEqual({ n: 1 });
      });
      // A releases it and commits; B then gets the row and must see that it is done.
      const byA = await releaseHeldAlertsIn(a, { instanceId: 'member#a' });
      await a.query('COMMIT');
      expect(byA.filter((r) => r.notification.realmId === R).map((r) => r.notification.event)).toEqual(['alert.raised']);
      expect((await b).filter((n) => n.realmId === R)).toEqual([]);
    } finally {
      await a.end();
    }
    const outbox = await db.query(`SELECT body->>'instance' AS instance FROM quickbooks_alert_outbox WHERE body->>'realmId' = $1`, [R]);
    expect(outbox.rows).toEqual([{ instance: 'member#a' }]);
  });

  it('a silence by kind holds back that kind for every realm, and no other kind', async () => {
    const R = '9100000004';
    const s = await silence(null, 'quickbooks_auth', 'rotating the Intuit app keys');
    const { e, capture } = member('member#1');
    deliverer('member#1', capture);
    e.fail(R, 'quickbooks_auth', { ...failure(R, 'auth_invalid_grant'), immediate: true });
    expect(await e.persist()).toBe(true);
    e.fail('9100000005', 'quickbooks_auth', { ...failure('9100000005', 'auth_invalid_grant'), immediate: true });
    expect(await e.persist()).toBe(true);
    await failTimes(e, R, 3, 'quickbooks_api');
    await eventually(async () => expect(received(R).map((b) => b.kind)).toEqual(['quickbooks_api']));
    expect((await events(R)).map((r) => [r.event, r.silenced, r.silence_id])).toEqual([
      ['alert.raised', true, s.id],
      ['alert.raised', false, null],
    ]);
    expect(received('9100000005')).toEqual([]);
    expect((await events('9100000005'))[0]).toMatchObject({ silenced: true, silence_id: s.id });
  });

  it('a resolution after a silenced raise is not notified, even once the silence is over; one of an alert notified before the silence is', async () => {
    const R = '9100000006';
    const s = await silence(R, null);
    const { e, capture } = member('member#1');
    deliverer('member#1', capture);
    await failTimes(e, R, 3);
    await succeed(e, R);
    expect(await removeSilence(pool, s.id, 'bob')).toMatchObject({ outcome: 'removed' });
    expect((await events(R)).map((r) => [r.event, r.silenced, r.notification_id !== null])).toEqual([
      ['alert.raised', true, false],
      ['alert.resolved', true, false],
    ]);
    expect(capture.byEvent('alert.silenced').filter((l) => l.realmId === R).map((l) => l.alert)).toEqual(['alert.raised', 'alert.resolved']);

    // Told before the silence: its resolution during the silence is told too, so no receiver keeps it open.
    const T = '9100000007';
    await failTimes(e, T, 3);
    await eventually(async () => expect(received(T).map((b) => b.event)).toEqual(['alert.raised']));
    await silence(T, null);
    await succeed(e, T);
    await eventually(async () => expect(received(T).map((b) => b.event)).toEqual(['alert.raised', 'alert.resolved']));
    await control(e, '9100000096');
    expect(received(R)).toEqual([]);
  });

  it('an alert notified before its silence: reminders and an escalation are held, and one reminder goes out when the silence ends', async () => {
    const R = '9100000008';
    // Every failure is due a reminder (ALERT_REPEAT_MINUTES 0).
    const { e, capture } = member('member#1', 0);
    deliverer('member#1', capture);
    e.fail(R, 'quickbooks_api', { ...failure(R), severity: 'warning' });
    e.fail(R, 'quickbooks_api', { ...failure(R), severity: 'warning' });
    e.fail(R, 'quickbooks_api', { ...failure(R), severity: 'warning' });
    expect(await e.persist()).toBe(true);
    await eventually(async () => expect(received(R).map((b) => b.event)).toEqual(['alert.raised']));
    const s = await silence(R, 'quickbooks_api');
    await failTimes(e, R, 2);
    expect(capture.byEvent('alert.silenced').filter((l) => l.realmId === R).map((l) => l.alert)).toEqual(['alert.repeated', 'alert.repeated']);
    await removeSilence(pool, s.id, 'bob');
    await eventually(async () => expect(received(R).map((b) => [b.event, b.severity])).toEqual([['alert.raised', 'warning'], ['alert.repeated', 'critical']]));
    await control(e, '9100000098');
    expect(received(R)).toHaveLength(2);
  });
});

describe("a member's own database alerts", () => {
  let db: TestDatabase;
  let pool: Pool;
  const hooks: AlertReceiver[] = [];
  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    for (const h of hooks) await h.close();
    await pool.end();
    await db.drop();
  });
  const receiver = async (): Promise<AlertReceiver> => {
    const h = await alertReceiver();
    hooks.push(h);
    return h;
  };

  const down = { ok: false, kind: 'database', summary: 'PostgreSQL is unreachable (ECONNREFUSED)', err: new Error('connect ECONNREFUSED') } as const;
  const alerts = (hook: AlertReceiver, capture: CapturedLog, cache?: SilenceCache): { a: DatabaseAlerts; notifier: WebhookNotifier } => {
    const notifier = new WebhookNotifier(hook.url, capture.log, { retries: 1, minTimeoutMs: 10, maxTimeoutMs: 20 });
    const a = new DatabaseAlerts(notifier, capture.log, { alertAfterFailures: 2, alertRepeatMinutes: 60, instanceId: 'host-a:8080' });
    a.silences = cache;
    return { a, notifier };
  };
  const cycles = async (a: DatabaseAlerts, notifier: WebhookNotifier, n: number, outcome: Parameters<DatabaseAlerts['note']>[0] = down): Promise<void> => {
    for (let i = 0; i < n; i++) {
      a.note(outcome);
      a.apply();
    }
    await notifier.drain(5000);
  };

  it('honour a silence of kind database read while PostgreSQL answered, are notified when it ends, and go out when no silence was read', async () => {
    const s = await createSilence(pool, { realmId: null, kind: 'database', durationMs: 3_600_000, reason: 'PostgreSQL upgrade', createdBy: 'alice' });
    // The outbox deliverer's poll reads the silences into the member's cache while PostgreSQL answers.
    const cache = new SilenceCache();
    await releaseHeldAlerts(pool, pino({ level: 'silent' }), { instanceId: 'host-a:8080', cache });
    const hook = await receiver();
    const silenced = captureLog('info');
    const { a, notifier } = alerts(hook, silenced, cache);
    // PostgreSQL is now down: the silence read before is honoured.
    await cycles(a, notifier, 3);
    expect(a.openAlerts().map((x) => x.kind)).toEqual(['database']);
    expect(silenced.byEvent('alert.silenced')).toEqual([expect.objectContaining({ alert: 'alert.raised', kind: 'database', silenceId: s.id })]);
    expect(hook.accepted()).toEqual([]);

    // A member that never read the silences (started during the outage) sends.
    const blindHook = await receiver();
    const other = alerts(blindHook, captureLog('info'));
    await cycles(other.a, other.notifier, 2);
    expect(blindHook.accepted().map((b) => [b.event, b.kind, b.dedupKey])).toEqual([['alert.raised', 'database', 'qbo-health-monitor:database:monitor']]);
    expect(hook.accepted()).toEqual([]);

    // The silence is removed; the first member reads that, and its open alert is notified once.
    await removeSilence(pool, s.id, 'bob');
    await releaseHeldAlerts(pool, pino({ level: 'silent' }), { instanceId: 'host-a:8080', cache });
    await cycles(a, notifier, 2);
    expect(hook.accepted().map((b) => [b.event, b.kind])).toEqual([['alert.raised', 'database']]);
    expect(silenced.byEvent('alert.raised')).toEqual([expect.objectContaining({ silenceEnded: true })]);
    // And its resolution, now that it was notified, is too.
    await cycles(a, notifier, 1, { ok: true });
    expect(hook.accepted().map((b) => b.event)).toEqual(['alert.raised', 'alert.resolved']);
  });

  it('a database alert raised and resolved within its silence is never notified', async () => {
    const s = await createSilence(pool, { realmId: null, kind: 'database', durationMs: 3_600_000, reason: 'failover drill', createdBy: 'alice' });
    const cache = new SilenceCache();
    await releaseHeldAlerts(pool, pino({ level: 'silent' }), { instanceId: 'host-b:8080', cache });
    const capture = captureLog('info');
    const hook = await receiver();
    const { a, notifier } = alerts(hook, capture, cache);
    await cycles(a, notifier, 2);
    await cycles(a, notifier, 1, { ok: true });
    await removeSilence(pool, s.id, 'bob');
    await releaseHeldAlerts(pool, pino({ level: 'silent' }), { instanceId: 'host-b:8080', cache });
    await cycles(a, notifier, 1, { ok: true });
    expect(hook.accepted()).toEqual([]);
    expect(capture.byEvent('alert.silenced').map((l) => l.alert)).toEqual(['alert.raised', 'alert.resolved']);
  });
});
