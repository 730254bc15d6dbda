/**
 * A member's own database alerts in the incident history: kept in memory while PostgreSQL is
 * away, written once it answers (idempotently, retried after a failed write), shown by
 * readIncidents one incident per member. Against a real PostgreSQL; the "database away" is a
 * pool pointed at a port nothing listens on.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../src/dev/embedded-postgres.js';
import { readIncidents } from '../src/db/incident-queries.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { PendingAlertHistory } from '../src/escalate/database-alert-history.js';
import { DatabaseAlerts } from '../src/escalate/database-alerts.js';
import { WebhookNotifier } from '../src/escalate/notifier.js';
import { LogEvent } from '../src/log.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const down = { ok: false, kind: 'database', summary: 'PostgreSQL is unreachable', err: new Error('connect ECONNREFUSED') } as const;

describe('database alerts in the incident history', () => {
  let db: TestDatabase;
  let pool: Pool;
  let deadPool: Pool;
  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
    const port = await freePort();
    deadPool = createPool({ databaseUrl: `postgres://nobody:x@127.0.0.1:${port}/none`, applicationName: 'test', connectionTimeoutMs: 2000 }, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await deadPool.end();
    await pool.end();
    await db.drop();
  });

  /** A member whose database fails for `failures` checks a minute apart from `start`, then answers. */
  const outage = (instanceId: string, start: number, failures: number) => {
    const capture = captureLog('info');
    let t = start;
    const alerts = new DatabaseAlerts(new WebhookNotifier(undefined, capture.log), capture.log, { alertAfterFailures: 2, alertRepeatMinutes: 0, instanceId }, () => new Date(t));
    for (let i = 0; i < failures; i++, t += 60_000) {
      alerts.note(down);
      alerts.apply();
    }
    const resolvedAt = t;
    alerts.note({ ok: true });
    alerts.apply();
    return { alerts, capture, raisedAt: start + 60_000, resolvedAt };
  };
  const incidentsOf = async (instance: string) => (await readIncidents(pool, { days: 90 })).filter((i) => i.kind === 'database' && i.instance === instance);

  it('an alert raised and resolved while PostgreSQL was down shows after recovery, once, with its times and instance; a failed write is logged and retried', async () => {
    const start = Date.now() - 3_600_000;
    const { alerts, capture, raisedAt, resolvedAt } = outage('host-a:8080', start, 3);
    expect(alerts.history.size).toBe(3); // raised, repeated, resolved

    await alerts.history.flush(deadPool);
    const failed = capture.byEvent(LogEvent.alertHistoryFlushFailed);
    expect(failed).toHaveLength(1);
    expect(failed[0]?.err).toBeDefined();
    expect(alerts.history.size).toBe(3);
    expect(await incidentsOf('host-a:8080')).toEqual([]);

    await alerts.history.flush(pool);
    expect(alerts.history.size).toBe(0);
    expect(await incidentsOf('host-a:8080')).toEqual([
      {
        realmId: null,
        kind: 'database',
        severity: 'critical',
        raisedAt: new Date(raisedAt).toISOString(),
        resolvedAt: new Date(resolvedAt).toISOString(),
        durationMs: resolvedAt - raisedAt,
        cause: 'PostgreSQL is unreachable; failing for 2 consecutive cycle(s)',
        errorCode: null,
        // No webhook configured: nothing was notified.
        notifications: 0,
        silenced: false,
        instance: 'host-a:8080',
      },
    ]);
  });

  it('writing the same transitions again (a retried flush whose COMMIT was lost) adds nothing', async () => {
    const start = Date.now() - 7_200_000;
    await outage('host-b:8080', start, 2).alerts.history.flush(pool);
    const count = async () => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM quickbooks_alert_events WHERE instance = 'host-b:8080'`, [])).rows[0]?.n;
    expect(await count()).toBe(2);
    // The same clock makes the same transitions (the rows the lost COMMIT had written): none added.
    await outage('host-b:8080', start, 2).alerts.history.flush(pool);
    expect(await count()).toBe(2);
    expect(await incidentsOf('host-b:8080')).toHaveLength(1);
  });

  it('several members raising their own database alert at the same instant: one incident per member', async () => {
    const start = Date.now() - 10_800_000;
    for (const member of ['host-c:1', 'host-d:1']) await outage(member, start, 2).alerts.history.flush(pool);
    expect(await incidentsOf('host-c:1')).toHaveLength(1);
    expect(await incidentsOf('host-d:1')).toHaveLength(1);
    const both = (await readIncidents(pool, { days: 90 })).filter((i) => i.raisedAt === new Date(start + 60_000).toISOString());
    expect(both.map((i) => i.instance).sort()).toEqual(['host-c:1', 'host-d:1']);
  });

  it('over its bound, the oldest transitions are dropped with a warning naming how many', () => {
    const capture = captureLog('info');
    const history = new PendingAlertHistory(capture.log, 2);
    const record = { realmId: '', kind: 'database', event: 'alert.raised', severity: 'critical', since: new Date(), at: new Date(), consecutiveFailures: 2, summary: 's', lastError: null, errorCode: null, intuitTid: null, reason: null, notificationId: null, silenced: false, silenceId: null, instance: 'host-e:1' } as const;
    for (let i = 0; i < 3; i++) history.add({ ...record, consecutiveFailures: i });
    expect(history.size).toBe(2);
    expect(capture.byEvent(LogEvent.alertHistoryDropped)).toMatchObject([{ dropped: 1 }]);
  });
});
