/**
 * No silent path, against the real daemon: a key that cannot open the tokens, a scheduler that
 * ticks but never gets to a realm, a realm an operator removes, and the operator commands that
 * must not revive or race a realm. Each ends in a row, an alert, an exit code or a log line.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runQbhealth } from '../support/cli.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type RunningDaemon, type WebhookReceiver } from '../support/daemon.js';
import { simulatorEnv } from '../support/qbo.js';
import { realmsFixture, type Fixture } from '../support/realms.js';
import { dbPassword, expectNoSecrets, expectNothingLost } from './support.js';
import { eventually } from '../support/wait.js';

const WRONG_KEY = Buffer.alloc(32, 9).toString('base64');


describe('a TOKEN_ENCRYPTION_KEY that cannot open the stored tokens (wrong key after a restart)', () => {
  let fx: Fixture;
  let hook: WebhookReceiver;
  let daemon: RunningDaemon;
  let spoolDir: string;

  beforeAll(async () => {
    fx = await realmsFixture(1);
    hook = await webhookReceiver();
  });
  afterAll(async () => {
    await daemon?.stop();
    await hook?.close();
    await fx?.close();
  });

  it('stays up, names the realm and the variable at once, records token_unreadable every cycle, alerts once, and /health fails', async () => {
    const realm = fx.realms[0] as string;
    const env: Record<string, string> = { ...daemonEnv(fx.db.url, fx.sim), TOKEN_ENCRYPTION_KEY: WRONG_KEY, ALERT_WEBHOOK_URL: hook.url };
    spoolDir = env.SPOOL_DIR as string;
    daemon = spawnDaemon(env);
    const report = await daemon.waitFor('token.unreadable');
    expect(report).toMatchObject({ level: 50, realms: [realm] });
    expect(report.msg).toContain('TOKEN_ENCRYPTION_KEY');
    const base = await daemon.url();
    // The alert goes out at start, before any probe, and is not raised again by the probes.
    const raised = await hook.waitFor('alert.raised', 'quickbooks_auth');
    expect(raised).toMatchObject({ severity: 'critical', realmId: realm });
    expect(String(raised.summary)).toContain('TOKEN_ENCRYPTION_KEY');
    await daemon.waitFor('probe.failed', { count: 3, where: (l) => l.errorCode === 'token_unreadable' });
    await daemon.waitFor('scheduler.cycle_completed', { count: 3 });
    await eventually(async () => {
      const rows = (await fx.db.query(`SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id = $1 AND error_code = 'token_unreadable' AND status = 'fail'`, [realm])).rows[0];
      expect(rows?.n).toBeGreaterThanOrEqual(3);
    });
    expect(hook.bodies.filter((b) => b.event === 'alert.raised')).toHaveLength(1);
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(503);
    const doc = (await health.json()) as { checks: Record<string, Array<{ componentId?: string; status: string; observedValue?: unknown }>> };
    expect(doc.checks['quickbooks:connection']).toEqual([expect.objectContaining({ componentId: realm, status: 'fail', observedValue: 'token_unreadable' })]);
    expect(fx.sim.stats.apiCalls).toBe(0);
    const stopped = await daemon.stop();
    expect(stopped.code).toBe(0);
    await expectNothingLost((text) => fx.db.query(text), spoolDir, [daemon], false);
    expectNoSecrets([daemon], [WRONG_KEY, dbPassword(fx.db.url), ...fx.sim.issuedTokens()], hook.bodies.map((b) => JSON.stringify(b)));
  });
});

describe('a scheduler that ticks but never gets to a realm (its work blocked)', () => {
  let fx: Fixture;
  let hook: WebhookReceiver;
  let daemon: RunningDaemon;
  let locker: pg.Client | undefined;
  let spoolDir: string;

  beforeAll(async () => {
    fx = await realmsFixture(1);
    hook = await webhookReceiver();
  });
  afterAll(async () => {
    await locker?.end();
    await daemon?.stop();
    await hook?.close();
    await fx?.close();
  });

  it('raises monitor_stalled and fails /health within 3 periods, and resolves when results come again', async () => {
    const realm = fx.realms[0] as string;
    const env: Record<string, string> = { ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url };
    spoolDir = env.SPOOL_DIR as string;
    daemon = spawnDaemon(env);
    const base = await daemon.url();
    await daemon.waitFor('probe.succeeded');
    // Another session takes the token table: the cycle's realm listing waits on it, the ticks
    // overlap, and no result comes for the realm. Liveness cannot see this; staleness must.
    locker = new pg.Client({ connectionString: fx.db.url });
    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE quickbooks_oauth_tokens IN ACCESS EXCLUSIVE MODE');
    const from = daemon.lines.length;
    const raised = await daemon.waitFor('alert.raised', { where: (l) => l.kind === 'monitor_stalled', timeoutMs: 15_000 });
    expect(raised).toMatchObject({ realmId: realm, severity: 'critical' });
    expect(daemon.lines.slice(from).filter((l) => l.event === 'probe.succeeded' || l.event === 'probe.failed')).toEqual([]);
    await hook.waitFor('alert.raised', 'monitor_stalled');
    const health = await fetch(`${base}/health`);
    expect(health.status).toBe(503);
    const doc = (await health.json()) as { checks: Record<string, Array<{ status: string; observedValue?: unknown; output?: string }>> };
    expect(doc.checks['monitor:staleness']?.[0]).toMatchObject({ status: 'fail', observedValue: 1 });
    expect(doc.checks['monitor:staleness']?.[0]?.output).toContain(realm);
    expect((await fetch(`${base}/health/live`)).status).toBe(200);
    await locker.query('ROLLBACK');
    await hook.waitFor('alert.resolved', 'monitor_stalled');
    await eventually(async () => expect((await fetch(`${base}/health`)).status).toBe(200));
  });

  it('a refresh whose token row lock is held elsewhere past the deadline is a row (database_unavailable), then recovers', async () => {
    const realm = fx.realms[0] as string;
    const holder = new pg.Client({ connectionString: fx.db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM quickbooks_oauth_tokens WHERE realm_id = $1 FOR UPDATE', [realm]);
      const from = daemon.lines.length;
      fx.sim.expireAccessTokens();
      const failed = await daemon.waitFor('probe.failed', { where: (l) => daemon.lines.indexOf(l) >= from && l.errorCode === 'database_unavailable' });
      await eventually(async () => {
        const row = (await fx.db.query('SELECT status, error_code, error FROM quickbooks_connection_health WHERE probe_id = $1', [failed.probeId])).rows[0];
        expect(row).toMatchObject({ status: 'fail', error_code: 'database_unavailable', error: expect.stringContaining('lock') });
      });
      // Every cycle fails the same way: the realm's own database alert at the threshold (3), once.
      const raised = await daemon.waitFor('alert.raised', { where: (l) => daemon.lines.indexOf(l) >= from && l.kind === 'database', timeoutMs: 30_000 });
      expect(raised).toMatchObject({ realmId: realm, severity: 'critical', consecutiveFailures: 3, summary: expect.stringContaining('pg_locks') });
      await holder.query('ROLLBACK');
      await hook.waitFor('alert.resolved', 'database');
      await daemon.waitFor('probe.succeeded', { where: (l) => daemon.lines.indexOf(l) > daemon.lines.indexOf(failed) });
    } finally {
      await holder.end();
    }
    expect((await daemon.stop()).code).toBe(0);
    await expectNothingLost((text) => fx.db.query(text), spoolDir, [daemon], true);
    expectNoSecrets([daemon], [dbPassword(fx.db.url), ...fx.sim.issuedTokens()], hook.bodies.map((b) => JSON.stringify(b)));
  });
});

describe('a realm removed or disconnected while it has an open alert', () => {
  let fx: Fixture;
  let hook: WebhookReceiver;
  let daemon: RunningDaemon;

  beforeAll(async () => {
    fx = await realmsFixture(2);
    hook = await webhookReceiver();
  });
  afterAll(async () => {
    await daemon?.stop();
    await hook?.close();
    await fx?.close();
  });

  it('is forgotten: its alerts resolve with the reason, its metrics series go, the others go on', async () => {
    const [gone, kept] = fx.realms as [string, string];
    daemon = spawnDaemon({ ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, ALERT_AFTER_FAILURES: '2' });
    const base = await daemon.url();
    fx.sim.scenario = 'error500';
    await daemon.waitFor('alert.raised', { where: (l) => l.realmId === gone && l.kind === 'quickbooks_api' });
    await fx.db.query('DELETE FROM quickbooks_oauth_tokens WHERE realm_id = $1', [gone]);
    const resolved = await hook.waitFor('alert.resolved', 'quickbooks_api');
    expect(resolved).toMatchObject({ realmId: gone, reason: 'realm disconnected by an operator' });
    expect(String(resolved.text)).toContain('realm disconnected by an operator');
    await daemon.waitFor('realm.forgotten', { where: (l) => l.realmId === gone });
    const from = daemon.lines.length;
    await daemon.waitFor('scheduler.cycle_completed', { where: (l) => daemon.lines.indexOf(l) >= from });
    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).not.toContain(`realm_id="${gone}"`);
    expect(metrics).toContain(`realm_id="${kept}"`);
    const state = (await fx.db.query(`SELECT state FROM quickbooks_alert_state WHERE realm_id = $1`, [gone])).rows;
    expect(state.map((r) => r.state)).toEqual(['resolved']);
    // The other realm's alert stays open: forgetting one realm touches no other.
    expect(hook.bodies.filter((b) => b.event === 'alert.resolved' && b.realmId === kept)).toEqual([]);
    fx.sim.scenario = 'healthy';
    expect((await daemon.stop()).code).toBe(0);
    expectNoSecrets([daemon], [dbPassword(fx.db.url), ...fx.sim.issuedTokens()], hook.bodies.map((b) => JSON.stringify(b)));
  });
});

describe('operator commands never revive or race a realm', () => {
  let fx: Fixture;
  let env: Record<string, string>;

  beforeAll(async () => {
    fx = await realmsFixture(2);
    env = simulatorEnv(fx.db.url, fx.sim);
  });
  afterAll(async () => {
    await fx?.close();
  });
  afterEach(() => {
    fx.sim.scenario = 'healthy';
  });

  it('probe --realm-id on a disconnected realm refuses, records nothing and refreshes nothing', async () => {
    const realm = fx.realms[0] as string;
    await fx.db.query(`UPDATE quickbooks_oauth_tokens SET status = 'disconnected', access_token_expires_at = now() - interval '1 hour' WHERE realm_id = $1`, [realm]);
    const refreshes = fx.sim.stats.refreshes;
    const rows = (await fx.db.query('SELECT count(*)::int AS n FROM quickbooks_connection_health')).rows[0]?.n as number;
    const run = await runQbhealth(['probe', '--realm-id', realm], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`realm ${realm} is disconnected .*qbhealth connect`));
    expect(fx.sim.stats.refreshes).toBe(refreshes);
    expect((await fx.db.query('SELECT count(*)::int AS n FROM quickbooks_connection_health')).rows[0]?.n).toBe(rows);
    expect((await fx.db.query('SELECT status FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realm])).rows[0]).toEqual({ status: 'disconnected' });
  });

  it('import-tokens waits for the realm row lock a refresher holds, then stores under it', async () => {
    const realm = fx.realms[1] as string;
    const fresh = fx.sim.addRealm(realm, 'Re-imported Company');
    const locker = new pg.Client({ connectionString: fx.db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('SELECT 1 FROM quickbooks_oauth_tokens WHERE realm_id = $1 FOR UPDATE', [realm]);
      const refreshes = fx.sim.stats.refreshes;
      const importing = runQbhealth(['import-tokens', '--realm-id', realm], env, { stdin: fresh });
      // It waits on the lock and has not spent the token at Intuit.
      await eventually(async () => {
        const waiting = (await fx.db.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'qbhealth' AND wait_event_type = 'Lock'`)).rows[0];
        expect(waiting?.n).toBe(1);
      });
      expect(fx.sim.stats.refreshes).toBe(refreshes);
      await locker.query('ROLLBACK');
      const done = await importing;
      expect(done.code, done.stderr).toBe(0);
      expect(fx.sim.stats.refreshes).toBe(refreshes + 1);
      expect(done.stdout + done.stderr).not.toContain(fresh);
    } finally {
      await locker.end();
    }
  });
});

describe('an exit that cannot finish the shutdown while a token refresh is unanswered', () => {
  let fx: Fixture;
  let daemon: RunningDaemon;

  beforeAll(async () => {
    fx = await realmsFixture(1);
  });
  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    await fx?.close();
  });

  it('a second SIGINT names the realm whose rotated tokens it may lose (token.lost)', async () => {
    const realm = fx.realms[0] as string;
    daemon = spawnDaemon({ ...daemonEnv(fx.db.url, fx.sim), PROBE_TIMEOUT_MS: '1000' });
    await daemon.waitFor('probe.succeeded');
    fx.sim.refreshDelayMs = 8000;
    fx.sim.expireAccessTokens();
    // The refresh is sent and unanswered; its probe gives up at its deadline.
    await daemon.waitFor('probe.failed', { where: (l) => l.errorCode === 'timeout' });
    expect(fx.sim.stats.inFlight).toBeGreaterThan(0);
    daemon.child.kill('SIGINT');
    await daemon.waitFor('daemon.stopping');
    daemon.child.kill('SIGINT');
    expect((await daemon.exited).code).toBe(1);
    expect(daemon.events('token.lost')).toEqual([expect.objectContaining({ level: 50, realms: [realm] })]);
    fx.sim.refreshDelayMs = 0;
  });
});
