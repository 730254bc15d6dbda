/**
 * Faults on Intuit's side, against the real daemon: each answer the simulator can be made to give
 * is classified, recorded, escalated at the threshold and resolved on recovery, with every probe
 * a row; then invalid_grant, a second daemon racing the same refresh token, a webhook that is
 * down or hangs, and SIGINT during a slow probe.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Scenario } from '../../src/simulator/simulator.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type RunningDaemon, type WebhookReceiver } from '../support/daemon.js';
import { eventually } from '../support/wait.js';
import { realmsFixture, type Fixture } from '../support/realms.js';
import { dbPassword, expectNoSecrets, expectNothingLost } from './support.js';

const HEALTH_TOKEN = 'fault-suite-health-token-0123456789';

describe('Intuit faults, one daemon switching scenarios', () => {
  let fx: Fixture;
  let hook: WebhookReceiver;
  let daemon: RunningDaemon;
  let env: Record<string, string>;
  let base: string;
  const realm = (): string => fx.realms[0] as string;

  beforeAll(async () => {
    fx = await realmsFixture(1);
    hook = await webhookReceiver();
    env = { ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, ALERT_AFTER_FAILURES: '2', PROBE_TIMEOUT_MS: '1500', HEALTH_TOKEN };
    daemon = spawnDaemon(env);
    base = await daemon.url();
    await daemon.waitFor('probe.succeeded');
  });
  afterAll(async () => {
    await daemon?.stop('SIGINT');
    await hook?.close();
    await fx?.close();
  });

  const cases: Array<[Scenario, string, number | undefined, 'fail' | 'warn']> = [
    ['error500', 'server_error', 500, 'fail'],
    ['outage', 'server_error', 503, 'fail'], // a 503 HTML page
    ['throttled', 'throttled', 429, 'warn'],
    ['reset', 'network', undefined, 'fail'], // the connection reset before any answer
    ['hang', 'timeout', undefined, 'fail'], // a socket that never answers
    ['malformed', 'bad_response', 200, 'fail'], // truncated JSON
    ['fault200', 'bad_response', 200, 'fail'], // a 200 carrying a Fault
    ['huge', 'bad_response', 200, 'fail'], // a 50 MB body, read no further than 1 MiB
  ];

  it.each(cases)('%s: classified as %s, recorded, alerted at the threshold, resolved on recovery', async (scenario, code, http, status) => {
    const from = daemon.lines.length;
    const alertsBefore = hook.bodies.length;
    fx.sim.scenario = scenario;
    const failures = [
      await daemon.waitFor('probe.failed', { where: (l) => daemon.lines.indexOf(l) >= from && l.errorCode === code }),
      await daemon.waitFor('probe.failed', { count: 2, where: (l) => daemon.lines.indexOf(l) >= from && l.errorCode === code }),
    ];
    const raised = await daemon.waitFor('alert.raised', { where: (l) => daemon.lines.indexOf(l) >= from });
    // Throttling is not an outage: a warning of its own, and no quickbooks_api alert.
    const kind = status === 'warn' ? 'quickbooks_throttled' : 'quickbooks_api';
    expect(raised).toMatchObject({ kind, realmId: realm(), severity: status === 'warn' ? 'warning' : 'critical', consecutiveFailures: 2 });
    // The text names the realm once, with its company.
    expect(String(raised.msg).match(new RegExp(`realm ${realm()}`, 'g'))).toHaveLength(1);
    expect(String(raised.msg)).toContain(`realm ${realm()} (Bench Company ${realm()})`);
    // The operator's views: /health says fail (warn when throttled), the row carries the code and HTTP status.
    const health = await fetch(`${base}/health`, { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } });
    expect(health.status).toBe(status === 'warn' ? 200 : 503);
    const row = (await fx.db.query('SELECT status, error_code, http_status, connected FROM quickbooks_connection_health WHERE probe_id = $1', [failures[0]?.probeId])).rows[0];
    expect(row).toMatchObject({ status, error_code: code, http_status: http ?? null, connected: false });
    fx.sim.scenario = 'healthy';
    await daemon.waitFor('alert.resolved', { where: (l) => daemon.lines.indexOf(l) >= from });
    await hook.waitFor('alert.resolved', kind);
    if (status === 'warn') expect(daemon.lines.slice(from).filter((l) => l.event === 'alert.raised' && l.kind === 'quickbooks_api')).toEqual([]);
    expect(hook.bodies.slice(alertsBefore).map((b) => b.event)).toContain('alert.raised');
    await daemon.waitFor('probe.succeeded', { where: (l) => daemon.lines.indexOf(l) >= from });
  });

  it('invalid_grant: a critical alert at once, the realm marked reconnect_required, Intuit not called again', async () => {
    const from = daemon.lines.length;
    fx.sim.scenario = 'revoked';
    fx.sim.expireAccessTokens();
    const failed = await daemon.waitFor('probe.failed', { where: (l) => daemon.lines.indexOf(l) >= from && l.errorCode === 'auth_invalid_grant' });
    const raised = await daemon.waitFor('alert.raised', { where: (l) => daemon.lines.indexOf(l) >= from && l.kind === 'quickbooks_auth' });
    expect(raised).toMatchObject({ severity: 'critical', consecutiveFailures: 1, summary: expect.stringContaining('qbhealth connect') });
    expect(daemon.lines.indexOf(raised)).toBeGreaterThan(daemon.lines.indexOf(failed));
    const token = (await fx.db.query('SELECT status FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realm()])).rows[0];
    expect(token?.status).toBe('reconnect_required');
    // Later cycles keep recording the failure (the history shows it) without calling Intuit again.
    const calls = { api: fx.sim.stats.apiCalls, refused: fx.sim.stats.refreshFailures, refreshes: fx.sim.stats.refreshes };
    const mark = daemon.lines.length;
    await daemon.waitFor('scheduler.cycle_completed', { count: daemon.events('scheduler.cycle_completed').length + 2 });
    const later = daemon.lines.slice(mark).filter((l) => l.event === 'probe.failed' || l.event === 'probe.succeeded');
    expect(later.length).toBeGreaterThanOrEqual(1);
    expect(later.every((l) => l.errorCode === 'auth_invalid_grant')).toBe(true);
    expect({ api: fx.sim.stats.apiCalls, refused: fx.sim.stats.refreshFailures, refreshes: fx.sim.stats.refreshes }).toEqual(calls);
    expect(daemon.events('alert.raised').filter((l) => l.kind === 'quickbooks_auth')).toHaveLength(1);
    fx.sim.scenario = 'healthy';
  });

  it('after all of it: stopped cleanly, nothing lost, no secret logged', async () => {
    expect((await daemon.stop('SIGINT')).code).toBe(0);
    await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [daemon], true);
    expectNoSecrets([daemon], [...fx.sim.issuedTokens(), HEALTH_TOKEN, dbPassword(fx.db.url)]);
  });
});

describe('a second daemon against the same database when the access tokens expire', () => {
  it('refreshes exactly once per expiry; neither sees invalid_grant or marks reconnect_required', async () => {
    const fx = await realmsFixture(3);
    const envA = daemonEnv(fx.db.url, fx.sim);
    const envB = daemonEnv(fx.db.url, fx.sim);
    const a = spawnDaemon(envA);
    const b = spawnDaemon(envB);
    try {
      // The two share the realms through their leases; between them every realm is probed.
      await eventually(async () => expect(new Set([...a.events('probe.succeeded'), ...b.events('probe.succeeded')].map((l) => l.realmId)).size).toBe(3));
      for (let round = 1; round <= 2; round++) {
        const before = fx.sim.stats.refreshes;
        fx.sim.expireAccessTokens();
        const target = (d: RunningDaemon): number => d.events('scheduler.cycle_completed').length + 2;
        await Promise.all([a.waitFor('scheduler.cycle_completed', { count: target(a) }), b.waitFor('scheduler.cycle_completed', { count: target(b) })]);
        expect(fx.sim.stats.refreshes - before, `round ${round}: one refresh per realm`).toBe(3);
      }
      expect(fx.sim.stats.refreshFailures).toBe(0);
      for (const d of [a, b]) expect(d.events('probe.failed').filter((l) => String(l.errorCode).startsWith('auth_'))).toEqual([]);
      expect((await fx.db.query("SELECT count(*)::int AS n FROM quickbooks_oauth_tokens WHERE status <> 'connected'")).rows[0].n).toBe(0);
      await a.stop('SIGINT');
      await b.stop('SIGINT');
      await expectNothingLost((t) => fx.db.query(t), [envA.SPOOL_DIR as string, envB.SPOOL_DIR as string], [a, b], true);
      expectNoSecrets([a, b], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
    } finally {
      await a.stop('SIGKILL');
      await b.stop('SIGKILL');
      await fx.close();
    }
  });
});

/** A receiver on `port` that keeps the alert bodies; `hang` accepts requests and never answers. */
async function receiverOn(port: number, hang: boolean): Promise<{ bodies: Array<Record<string, unknown>>; close(): Promise<void> }> {
  const bodies: Array<Record<string, unknown>> = [];
  const server = createServer((req, res) => {
    if (hang) return;
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      bodies.push(JSON.parse(text) as Record<string, unknown>);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    bodies,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function unusedPort(): Promise<number> {
  const parked: Server = createServer();
  await new Promise<void>((r) => parked.listen(0, '127.0.0.1', r));
  const port = (parked.address() as AddressInfo).port;
  await new Promise<void>((r) => parked.close(() => r()));
  return port;
}

describe('the alert webhook down or hanging', () => {
  it.each([
    ['down (connection refused)', false],
    ['hanging (never answers)', true],
  ])('%s: the alert is kept and re-sent; probes go on at their pace meanwhile', async (_what, hang) => {
    const fx = await realmsFixture(1);
    const port = await unusedPort();
    const broken = hang ? await receiverOn(port, true) : undefined;
    const env: Record<string, string> = { ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`, ALERT_AFTER_FAILURES: '2', ALERT_REPEAT_MINUTES: '60' };
    const daemon = spawnDaemon(env);
    let working: Awaited<ReturnType<typeof receiverOn>> | undefined;
    try {
      await daemon.waitFor('probe.succeeded');
      fx.sim.scenario = 'outage';
      const raised = await daemon.waitFor('alert.raised');
      const probesAtRaise = daemon.events('probe.failed').length;
      // A hanging attempt is cut off after 10 s; a refused one fails at once.
      const failed = await daemon.waitFor('alert.delivery_failed', { timeoutMs: 30_000 });
      expect(daemon.lines.indexOf(failed)).toBeGreaterThan(daemon.lines.indexOf(raised));
      // Probing never waited for the webhook: at one a second, the failed attempt's time is all probes.
      if (hang) expect(daemon.events('probe.failed').length - probesAtRaise).toBeGreaterThanOrEqual(5);
      await daemon.waitFor('probe.failed', { count: daemon.events('probe.failed').length + 2 });
      await broken?.close();
      working = await receiverOn(port, false);
      for (let i = 0; i < 300 && !working.bodies.some((b) => b.event === 'alert.raised'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(working.bodies.find((b) => b.event === 'alert.raised')).toMatchObject({ kind: 'quickbooks_api', severity: 'critical', realmId: fx.realms[0] });
      expect(daemon.child.exitCode).toBeNull();
      expect((await daemon.stop('SIGINT')).code).toBe(0);
      await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [daemon], true);
      expectNoSecrets([daemon], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
    } finally {
      await daemon.stop('SIGKILL');
      await broken?.close();
      await working?.close();
      await fx.close();
    }
  }, 90_000);
});

describe('SIGINT during a slow probe', () => {
  it('lets the probe finish within its deadline, records it, and exits 0', async () => {
    const fx = await realmsFixture(1, { slowMs: 1500 });
    const env: Record<string, string> = { ...daemonEnv(fx.db.url, fx.sim), PROBE_TIMEOUT_MS: '5000' };
    const daemon = spawnDaemon(env);
    try {
      await daemon.waitFor('probe.succeeded');
      fx.sim.scenario = 'slow';
      for (let i = 0; i < 100 && fx.sim.stats.inFlight === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(fx.sim.stats.inFlight).toBeGreaterThan(0);
      const exit = await daemon.stop('SIGINT');
      expect(exit.code).toBe(0);
      expect(daemon.events('daemon.stopping')).toEqual([expect.objectContaining({ inFlight: true })]);
      expect(daemon.events('probe.succeeded').length).toBeGreaterThanOrEqual(2);
      await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [daemon], true);
      expectNoSecrets([daemon], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
    } finally {
      await daemon.stop('SIGKILL');
      await fx.close();
    }
  });
});
