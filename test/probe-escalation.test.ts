/** How each kind of probe result escalates: the monitor's own failures included. */
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../src/db/pool.js';
import { Escalator } from '../src/escalate/escalator.js';
import { escalateProbeResult } from '../src/escalate/probe-escalation.js';
import type { ProbeResult } from '../src/probe-result.js';
import type { ErrorCode } from '../src/quickbooks/outcome.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const result = (realmId: string, errorCode: ErrorCode, error?: string): ProbeResult => ({
  probeId: `${realmId}-${Math.random()}`,
  realmId,
  checkedAt: new Date(),
  connected: errorCode === 'ok',
  status: errorCode === 'ok' ? 'pass' : 'fail',
  errorCode,
  error,
  httpStatus: undefined,
  latencyMs: 3,
  intuitTid: undefined,
  refreshTokenExpiresAt: undefined,
  companyName: undefined,
});

describe('escalation of probe results', () => {
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
  const escalator = () => {
    const capture = captureLog('info');
    const e = new Escalator(pool, capture.log, { alertAfterFailures: 3, alertRepeatMinutes: 60, instanceId: 'test-member', notify: true });
    return { e, capture };
  };
  /** One probe result escalated, its changes applied (under the row lock) before the test looks. */
  const esc = async (e: Escalator, r: ProbeResult): Promise<void> => {
    escalateProbeResult(e, r, 14);
    expect(await e.persist()).toBe(true);
  };

  it('token_unreadable raises a critical quickbooks_auth alert at once, naming TOKEN_ENCRYPTION_KEY, and not again on the next probes', async () => {
    const { e, capture } = escalator();
    for (let i = 0; i < 3; i++) await esc(e, result('11', 'token_unreadable', 'cannot decrypt'));
    const raised = capture.byEvent('alert.raised');
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({ kind: 'quickbooks_auth', severity: 'critical', realmId: '11', consecutiveFailures: 1 });
    expect(String(raised[0]?.summary)).toContain('TOKEN_ENCRYPTION_KEY');
    // The transition's notification is in the outbox, written in its transaction, once.
    const { rows } = await pool.query<{ event: string; dedup_key: string; body: { notificationId: string; instance: string } }>(
      "SELECT event, dedup_key, body FROM quickbooks_alert_outbox WHERE body->>'realmId' = '11'",
    );
    expect(rows).toEqual([expect.objectContaining({ event: 'alert.raised', dedup_key: 'qbo-health-monitor:quickbooks_auth:11', body: expect.objectContaining({ instance: 'test-member', notificationId: raised[0]?.notificationId }) })]);
  });

  it('internal raises after ALERT_AFTER_FAILURES as critical, saying it is the monitor, and a success resolves it', async () => {
    const { e, capture } = escalator();
    await esc(e, result('12', 'internal', 'unexpected failure in the probe: TypeError: x'));
    await esc(e, result('12', 'internal', 'unexpected failure in the probe: TypeError: x'));
    expect(capture.byEvent('alert.raised')).toEqual([]);
    await esc(e, result('12', 'internal', 'unexpected failure in the probe: TypeError: x'));
    expect(capture.byEvent('alert.raised')).toEqual([expect.objectContaining({ kind: 'quickbooks_api', severity: 'critical', consecutiveFailures: 3, summary: expect.stringContaining('the monitor itself failed') })]);
    await esc(e, result('12', 'ok'));
    expect(capture.byEvent('alert.resolved')).toEqual([expect.objectContaining({ kind: 'quickbooks_api', realmId: '12' })]);
  });

  it("database_unavailable that reaches the realm (a lock or statement timeout) counts towards the realm's database alert, never its API alert", async () => {
    const { e, capture } = escalator();
    await esc(e, result('13', 'server_error', 'Intuit HTTP 500'));
    for (let i = 0; i < 3; i++) await esc(e, result('13', 'database_unavailable', "PostgreSQL could not serve this realm's tokens: canceling statement due to lock timeout"));
    expect(capture.byEvent('alert.raised')).toEqual([expect.objectContaining({ kind: 'database', realmId: '13', severity: 'critical', consecutiveFailures: 3, summary: expect.stringContaining('pg_locks') })]);
    // The server_error count was neither reset nor advanced: two more reach the threshold.
    await esc(e, result('13', 'server_error', 'Intuit HTTP 500'));
    expect(capture.byEvent('alert.resolved')).toEqual([expect.objectContaining({ kind: 'database', realmId: '13' })]);
    await esc(e, result('13', 'server_error', 'Intuit HTTP 500'));
    expect(capture.byEvent('alert.raised').at(-1)).toMatchObject({ kind: 'quickbooks_api', consecutiveFailures: 3 });
  });

  it('throttled probes raise a warning of their own and neither count towards nor resolve an API alert', async () => {
    const { e, capture } = escalator();
    for (let i = 0; i < 3; i++) await esc(e, result('16', 'server_error', 'Intuit HTTP 500'));
    expect(capture.byEvent('alert.raised')).toEqual([expect.objectContaining({ kind: 'quickbooks_api' })]);
    for (let i = 0; i < 3; i++) await esc(e, { ...result('16', 'throttled', 'Intuit HTTP 429'), status: 'warn' });
    expect(capture.byEvent('alert.raised').at(-1)).toMatchObject({ kind: 'quickbooks_throttled', severity: 'warning', summary: expect.stringContaining('Intuit is throttling realm 16') });
    expect(capture.byEvent('alert.resolved')).toEqual([]);
    expect(e.openAlerts().map((a) => a.kind).sort()).toEqual(['quickbooks_api', 'quickbooks_throttled']);
    await esc(e, result('16', 'ok'));
    expect(capture.byEvent('alert.resolved').map((l) => l.kind).sort()).toEqual(['quickbooks_api', 'quickbooks_throttled']);
  });

  it('a realm no longer monitored resolves its open alerts with the reason, and only its own', async () => {
    const { e, capture } = escalator();
    await esc(e, result('14', 'auth_invalid_grant', 'revoked'));
    await esc(e, result('15', 'auth_invalid_grant', 'revoked'));
    expect(e.resolveRealm('14', 'realm disconnected by an operator')).toBe(1);
    expect(await e.persist()).toBe(true);
    const resolved = capture.byEvent('alert.resolved');
    expect(resolved).toEqual([expect.objectContaining({ realmId: '14', reason: 'realm disconnected by an operator', msg: expect.stringContaining('resolved: realm disconnected by an operator') })]);
    expect(e.openAlerts().map((a) => a.realmId)).toEqual(['15']);
    expect([...e.realmsWithState()]).toEqual(['15']);
  });
});
