/**
 * The alert history (quickbooks_alert_events) against a real PostgreSQL: incidents as the
 * dashboard reads them, the history written in the transaction of the state change (a failed
 * transaction leaves neither), and its retention.
 */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALERT_HISTORY_RETENTION_DAYS, readIncidents } from '../src/db/incident-queries.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { pruneHistory } from '../src/db/prune.js';
import { createSilence, listSilences } from '../src/db/silence-queries.js';
import { Escalator, type Failure } from '../src/escalate/escalator.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const DAY = 86_400_000;
const failure = (code: string): Failure => ({ severity: 'critical', summary: `QuickBooks API failing: {count} consecutive probes failed (${code})`, lastError: `HTTP 503`, errorCode: code, intuitTid: 'tid-1' });

describe('alert history', () => {
  let db: TestDatabase;
  let pool: Pool;
  beforeAll(async () => {
    db = await migratedDatabase();
    pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  const escalator = (notify = true) => {
    const capture = captureLog('info');
    return { e: new Escalator(pool, capture.log, { alertAfterFailures: 2, alertRepeatMinutes: 0, instanceId: 'member#1', notify }), capture };
  };
  const step = async (e: Escalator, realm: string, ok: boolean): Promise<boolean> => {
    if (ok) e.succeed(realm, 'quickbooks_api');
    else e.fail(realm, 'quickbooks_api', failure('server_error'));
    return e.persist();
  };

  it('readIncidents returns each incident raised -> resolved, with its duration, cause, error code and the notifications sent', async () => {
    const { e } = escalator();
    const R = '9200000001';
    for (const ok of [false, false, false, true]) expect(await step(e, R, ok)).toBe(true);
    const incidents = (await readIncidents(pool, { days: 90 })).filter((i) => i.realmId === R);
    const { rows } = await db.query<{ event: string; at: Date }>(`SELECT event, at FROM quickbooks_alert_events WHERE realm_id = $1 ORDER BY id`, [R]);
    expect(rows.map((r) => r.event)).toEqual(['alert.raised', 'alert.repeated', 'alert.resolved']);
    const raisedAt = rows[0]?.at as Date;
    const resolvedAt = rows[2]?.at as Date;
    expect(incidents).toEqual([
      {
        realmId: R,
        kind: 'quickbooks_api',
        severity: 'critical',
        raisedAt: raisedAt.toISOString(),
        resolvedAt: resolvedAt.toISOString(),
        durationMs: resolvedAt.getTime() - raisedAt.getTime(),
        cause: 'QuickBooks API failing: 2 consecutive probes failed (server_error)',
        errorCode: 'server_error',
        notifications: 3,
        silenced: false,
      },
    ]);

    // A second incident of the same realm, silenced and still open: counted apart, nothing notified.
    await createSilence(pool, { realmId: R, kind: null, durationMs: 3_600_000, reason: 'maintenance', createdBy: 'alice' });
    for (const ok of [false, false]) expect(await step(e, R, ok)).toBe(true);
    const both = (await readIncidents(pool, { days: 90 })).filter((i) => i.realmId === R);
    expect(both).toHaveLength(2);
    expect(both[0]).toMatchObject({ resolvedAt: null, notifications: 0, silenced: true, errorCode: 'server_error' });
    expect(both[0]?.durationMs).toBeGreaterThanOrEqual(0);
    expect(both[1]).toMatchObject({ resolvedAt: resolvedAt.toISOString(), notifications: 3, silenced: false });
    expect(await listSilences(pool)).toEqual([expect.objectContaining({ realmId: R, kind: null, reason: 'maintenance', createdBy: 'alice' })]);
  });

  it('readIncidents keeps to its window: incidents resolved before it are left out, open ones are in whenever raised, system ones have no realm', async () => {
    const now = new Date('2026-06-01T12:00:00Z');
    const insert = async (realm: string, event: string, at: Date, since: Date, notified: boolean, kind = 'quickbooks_auth'): Promise<void> => {
      await db.query(
        `INSERT INTO quickbooks_alert_events (realm_id, kind, event, severity, since, at, consecutive_failures, summary, notification_id, instance)
         VALUES ($1, $2, $3, 'warning', $4, $5, 1, 'the summary', CASE WHEN $6 THEN gen_random_uuid() END, 'm#1')`,
        [realm, kind, event, since, at, notified],
      );
    };
    const old = new Date(now.getTime() - 100 * DAY);
    await insert('9200000010', 'alert.raised', old, old, true);
    await insert('9200000010', 'alert.resolved', new Date(old.getTime() + 2 * 3_600_000), old, true);
    const straddling = new Date(now.getTime() - 95 * DAY);
    await insert('9200000011', 'alert.raised', straddling, straddling, true);
    await insert('9200000011', 'alert.resolved', new Date(now.getTime() - 80 * DAY), straddling, true);
    const recent = new Date(now.getTime() - 10 * DAY);
    await insert('', 'alert.raised', recent, recent, false, 'database');
    // An open alert raised 200 days ago, its state still open.
    const longAgo = new Date(now.getTime() - 200 * DAY);
    await insert('9200000012', 'alert.raised', longAgo, longAgo, true);
    await db.query(`INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary) VALUES ('9200000012', 'quickbooks_auth', 'warning', 'open', 1, $1, 'x')`, [longAgo]);
    // After `now`: not yet happened as far as this read is concerned.
    await insert('9200000013', 'alert.raised', new Date(now.getTime() + DAY), new Date(now.getTime() + DAY), true);

    // (The first test's incidents happened after this `now`.)
    const incidents = await readIncidents(pool, { days: 90, now });
    expect(incidents.map((i) => [i.realmId, i.kind, i.resolvedAt !== null, i.durationMs])).toEqual([
      [null, 'database', false, 10 * DAY],
      ['9200000011', 'quickbooks_auth', true, 15 * DAY],
      ['9200000012', 'quickbooks_auth', false, 200 * DAY],
    ]);
    expect(incidents[0]?.notifications).toBe(0);
  });

  it('writes the history in the transaction of the state change: when it cannot be written, neither are the state nor the notification, and the reverse', async () => {
    const { e, capture } = escalator();
    const R = '9200000020';
    // The history refuses this realm's rows (a real constraint, in the real database).
    await db.query(`ALTER TABLE quickbooks_alert_events ADD CONSTRAINT refuse_9200000020 CHECK (realm_id <> '9200000020')`);
    expect(await step(e, R, false)).toBe(true);
    expect(await step(e, R, false)).toBe(false);
    const state = async () => (await db.query(`SELECT state, consecutive_failures FROM quickbooks_alert_state WHERE realm_id = $1`, [R])).rows;
    const outbox = async () => (await db.query(`SELECT event FROM quickbooks_alert_outbox WHERE body->>'realmId' = $1`, [R])).rows;
    const history = async () => (await db.query(`SELECT event FROM quickbooks_alert_events WHERE realm_id = $1`, [R])).rows;
    // The second failure would raise: its state change and its outbox row were rolled back with the history row.
    expect(await state()).toEqual([{ state: 'resolved', consecutive_failures: 1 }]);
    expect(await outbox()).toEqual([]);
    expect(capture.byEvent('db.write_failed')).toHaveLength(1);
    expect(e.isOpen(R, 'quickbooks_api')).toBe(false);
    await db.query(`ALTER TABLE quickbooks_alert_events DROP CONSTRAINT refuse_9200000020`);
    // The change waited in memory and is applied now: all three together.
    expect(await e.persist()).toBe(true);
    expect(await state()).toEqual([{ state: 'open', consecutive_failures: 2 }]);
    expect(await outbox()).toEqual([{ event: 'alert.raised' }]);
    expect(await history()).toEqual([{ event: 'alert.raised' }]);

    // The outbox refuses: no history row either.
    await db.query(`ALTER TABLE quickbooks_alert_outbox ADD CONSTRAINT refuse_9200000020 CHECK (body->>'realmId' IS DISTINCT FROM '9200000020') NOT VALID`);
    try {
      expect(await step(e, R, true)).toBe(false);
      expect(await history()).toEqual([{ event: 'alert.raised' }]);
      expect(await state()).toEqual([{ state: 'open', consecutive_failures: 2 }]);
    } finally {
      await db.query(`ALTER TABLE quickbooks_alert_outbox DROP CONSTRAINT refuse_9200000020`);
    }
    expect(await e.persist()).toBe(true);
    expect(await history()).toEqual([{ event: 'alert.raised' }, { event: 'alert.resolved' }]);
  });

  it('records history without a webhook: transitions are kept, no notification counted', async () => {
    const { e } = escalator(false);
    const R = '9200000030';
    for (const ok of [false, false, true]) expect(await step(e, R, ok)).toBe(true);
    const { rows } = await db.query(`SELECT event, notification_id, silenced FROM quickbooks_alert_events WHERE realm_id = $1 ORDER BY id`, [R]);
    expect(rows).toEqual([
      { event: 'alert.raised', notification_id: null, silenced: false },
      { event: 'alert.resolved', notification_id: null, silenced: false },
    ]);
    expect((await readIncidents(pool)).find((i) => i.realmId === R)).toMatchObject({ notifications: 0, silenced: false });
  });

  it(`the daily prune keeps alert history ${ALERT_HISTORY_RETENTION_DAYS} days (open incidents whole) and silences that ended as long`, async () => {
    const now = new Date();
    const ago = (days: number): Date => new Date(now.getTime() - days * DAY);
    const insert = (realm: string, at: Date, since: Date): Promise<unknown> =>
      db.query(
        `INSERT INTO quickbooks_alert_events (realm_id, kind, event, severity, since, at, consecutive_failures, summary, instance)
         VALUES ($1, 'quickbooks_api', 'alert.raised', 'critical', $2, $3, 3, 's', 'm#1')`,
        [realm, since, at],
      );
    await insert('9200000040', ago(ALERT_HISTORY_RETENTION_DAYS + 1), ago(ALERT_HISTORY_RETENTION_DAYS + 1));
    await insert('9200000041', ago(ALERT_HISTORY_RETENTION_DAYS - 1), ago(ALERT_HISTORY_RETENTION_DAYS - 1));
    await insert('9200000042', ago(ALERT_HISTORY_RETENTION_DAYS + 5), ago(ALERT_HISTORY_RETENTION_DAYS + 5));
    await db.query(`INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary) VALUES ('9200000042', 'quickbooks_api', 'critical', 'open', 3, $1, 's')`, [ago(ALERT_HISTORY_RETENTION_DAYS + 5)]);
    await db.query(
      `INSERT INTO quickbooks_alert_silences (realm_id, starts_at, ends_at, reason, created_by) VALUES ('9200000043', $1, $2, 'old', 'alice'), ('9200000044', $3, $4, 'kept', 'alice')`,
      [ago(ALERT_HISTORY_RETENTION_DAYS + 3), ago(ALERT_HISTORY_RETENTION_DAYS + 2), ago(ALERT_HISTORY_RETENTION_DAYS), ago(ALERT_HISTORY_RETENTION_DAYS - 2)],
    );
    const capture = captureLog('info');
    // The probe history's retention (90) is shorter: the alert history's own applies.
    await pruneHistory(pool, 90, capture.log, { now });
    const left = await db.query(`SELECT realm_id FROM quickbooks_alert_events WHERE realm_id IN ('9200000040', '9200000041', '9200000042') ORDER BY realm_id`);
    expect(left.rows.map((r) => r.realm_id)).toEqual(['9200000041', '9200000042']);
    const silences = await db.query(`SELECT realm_id FROM quickbooks_alert_silences WHERE realm_id IN ('9200000043', '9200000044')`);
    expect(silences.rows).toEqual([{ realm_id: '9200000044' }]);
    expect(capture.byEvent('alert_history.pruned')).toEqual([expect.objectContaining({ events: 1, silences: 1, retentionDays: ALERT_HISTORY_RETENTION_DAYS })]);
  });
});
