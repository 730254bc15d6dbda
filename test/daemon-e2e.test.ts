/**
 * End to end: the built daemon (node dist/main.js) against PostgreSQL and the Intuit simulator,
 * observed only from outside: its log lines, its HTTP endpoints, the database and the webhook.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import type { StatusReport } from '../src/db/status.js';
import { runQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon, webhookReceiver, withoutInstanceLabel, type RunningDaemon, type WebhookReceiver } from './support/daemon.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, KEY_B64 } from './support/qbo.js';
import { eventually } from './support/wait.js';

const REALM = '9341452222';

const HEALTH_TOKEN = 'health-token-for-tests-0123';

describe('the daemon, end to end', () => {
  let sim: Simulator;
  let hook: WebhookReceiver;
  let db: TestDatabase;
  let env: Record<string, string>;
  let daemon: RunningDaemon | undefined;

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    hook = await webhookReceiver();
  });
  afterAll(async () => {
    await sim?.close();
    await hook?.close();
  });
  afterEach(async () => {
    await daemon?.stop('SIGKILL');
    daemon = undefined;
    await db?.drop();
    sim.scenario = 'healthy';
    hook.bodies.length = 0;
  });

  /** A fresh database with one imported realm (the daemon migrates it at start). */
  async function setUp(extra: Record<string, string> = {}): Promise<void> {
    db = await createTestDatabase();
    env = {
      ...daemonEnv(db.url, sim),
      ALERT_WEBHOOK_URL: hook.url,
      ALERT_AFTER_FAILURES: '2',
      ALERT_REPEAT_MINUTES: '0.05',
      HEALTH_TOKEN,
      ...extra,
    };
    const migrated = await runQbhealth(['migrate'], env);
    expect(migrated.code).toBe(0);
    const refreshToken = sim.addRealm(REALM, 'Amy\'s Bird Sanctuary');
    const imported = await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: refreshToken });
    expect(imported.code).toBe(0);
  }

  const loggedProbeIds = (d: RunningDaemon, from = 0): string[] =>
    d.lines.slice(from).filter((l) => l.event === 'probe.succeeded' || l.event === 'probe.failed').map((l) => String(l.probeId));
  const rowProbeIds = async (query: TestDatabase['query'] = (t, p) => db.query(t, p)): Promise<string[]> =>
    (await query<{ probe_id: string }>('SELECT probe_id FROM quickbooks_connection_health ORDER BY id')).rows.map((r) => r.probe_id);

  const rowCount = async (): Promise<number> => Number((await db.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n);

  it('records a row per tick, serves health and metrics from memory, and stops cleanly on SIGINT', async () => {
    await setUp();
    daemon = spawnDaemon(env);
    const base = await daemon.url();
    await daemon.waitFor('probe.succeeded', { count: 3 });

    expect((await fetch(`${base}/health/live`)).status).toBe(200);
    expect((await fetch(`${base}/health/ready`)).status).toBe(200);
    const anonymous = await fetch(`${base}/health`);
    expect(anonymous.status).toBe(200);
    expect(await anonymous.json()).toEqual({ status: 'pass' });
    const detailed = await fetch(`${base}/health`, { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } });
    expect(detailed.headers.get('content-type')).toBe('application/health+json');
    const doc = (await detailed.json()) as { status: string; checks: Record<string, Array<Record<string, unknown>>> };
    expect(doc.status).toBe('pass');
    expect(doc.checks['quickbooks:connection']).toEqual([expect.objectContaining({ componentId: REALM, status: 'pass', observedValue: 'ok' })]);
    expect(doc.checks['postgres:connection']?.[0]?.status).toBe('pass');
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    const metrics = await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } })).text();
    const { text: series, instances } = withoutInstanceLabel(metrics);
    // Every series says which member served it (several share one port under PM2 cluster mode).
    expect(instances).toHaveLength(1);
    expect(series).toContain(`probe_success{realm_id="${REALM}"} 1`);
    expect(series).toMatch(/qbhealth_spool_pending 0/);
    expect(series).toMatch(/process_resident_memory_bytes \d+/);
    expect((await fetch(`${base}/nowhere`)).status).toBe(404);
    expect(daemon.events('scheduler.cycle_completed')[0]).toMatchObject({ realms: 1, pass: 1, warn: 0, fail: 0, durationMs: expect.any(Number) });

    // GET /status: the `qbhealth status --json` document, behind HEALTH_TOKEN.
    const auth = { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } };
    expect((await fetch(`${base}/status`)).status).toBe(401);
    const statusRes = await fetch(`${base}/status?since=1h&realmId=${REALM}`, auth);
    expect(statusRes.status).toBe(200);
    const served = (await statusRes.json()) as StatusReport;
    const cli = await runQbhealth(['status', '--json', '--since', '1h', '--realm-id', REALM], { DATABASE_URL: db.url });
    expect(cli.code).toBe(0);
    const printed = JSON.parse(cli.stdout) as StatusReport;
    expect(Object.keys(served).sort()).toEqual(Object.keys(printed).sort());
    expect(served.realms.map((r) => [r.realmId, r.state, r.companyName, r.connection])).toEqual([[REALM, 'pass', "Amy's Bird Sanctuary", 'connected']]);
    expect(printed.realms.map((r) => [r.realmId, r.state, r.companyName, r.connection])).toEqual([[REALM, 'pass', "Amy's Bird Sanctuary", 'connected']]);
    expect(served.realms[0]?.probes.total).toBeGreaterThanOrEqual(3);
    expect(served.realms[0]?.uptimePercent).toBe(100);
    const badWindow = await fetch(`${base}/status?since=forever`, auth);
    expect(badWindow.status).toBe(400);
    expect(await badWindow.text()).toContain('duration such as 90m');

    const exit = await daemon.stop('SIGINT');
    expect(exit.code).toBe(0);
    expect(daemon.events('daemon.stopped')).toHaveLength(1);
    const probes = daemon.events('probe.succeeded').length + daemon.events('probe.failed').length;
    expect(await rowCount()).toBe(probes);
    const everything = daemon.lines.map((l) => JSON.stringify(l)).join('\n') + daemon.stderr() + metrics + JSON.stringify(doc) + JSON.stringify(served);
    for (const secret of [...sim.issuedTokens(), CLIENT_SECRET, KEY_B64, HEALTH_TOKEN]) expect(everything).not.toContain(secret);
    expect(daemon.events('test.unparseable')).toEqual([]);
  });

  it('an API outage raises one alert after the threshold, reminds, and resolves on recovery', async () => {
    await setUp();
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded');
    sim.scenario = 'outage';
    const raised = await daemon.waitFor('alert.raised');
    expect(raised).toMatchObject({ kind: 'quickbooks_api', realmId: REALM, severity: 'critical', consecutiveFailures: 2 });
    expect(daemon.events('probe.failed').length).toBeGreaterThanOrEqual(2);
    await daemon.waitFor('alert.repeated');
    sim.scenario = 'healthy';
    const resolved = await daemon.waitFor('alert.resolved');
    expect(resolved).toMatchObject({ kind: 'quickbooks_api', realmId: REALM });
    expect(daemon.events('alert.raised')).toHaveLength(1);
    await hook.waitFor('alert.resolved', 'quickbooks_api');
    const sent = hook.bodies.map((b) => b.event);
    expect(sent[0]).toBe('alert.raised');
    expect(sent.at(-1)).toBe('alert.resolved');
    expect(sent).toContain('alert.repeated');
    expect(hook.bodies[0]).toMatchObject({ kind: 'quickbooks_api', realmId: REALM, severity: 'critical', text: expect.stringContaining('server_error') });
    // Persisted at the end of the cycle that resolved it.
    await eventually(async () => {
      const row = (await db.query('SELECT state, consecutive_failures FROM quickbooks_alert_state WHERE realm_id = $1 AND kind = $2', [REALM, 'quickbooks_api'])).rows[0];
      expect(row).toEqual({ state: 'resolved', consecutive_failures: 0 });
    });
  });

  it('invalid_grant raises a critical alert at once, telling the operator to reconnect', async () => {
    await setUp({ ALERT_AFTER_FAILURES: '5' });
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded');
    sim.scenario = 'revoked';
    sim.expireAccessTokens();
    const raised = await daemon.waitFor('alert.raised');
    expect(raised).toMatchObject({ kind: 'quickbooks_auth', severity: 'critical', consecutiveFailures: 1, summary: expect.stringContaining('qbhealth connect') });
    expect(await hook.waitFor('alert.raised', 'quickbooks_auth')).toMatchObject({ severity: 'critical', realmId: REALM, summary: expect.stringContaining('qbhealth connect') });

    // A restart with the alert open restores it: one alerts.restored line, one daemon.started,
    // and no second page.
    expect((await daemon.stop('SIGINT')).code).toBe(0);
    const raisedBefore = hook.bodies.filter((b) => b.event === 'alert.raised').length;
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.failed', { count: 2 });
    expect(daemon.events('alerts.restored')).toEqual([expect.objectContaining({ openAlerts: 1 })]);
    expect(daemon.events('daemon.started')).toHaveLength(1);
    expect(daemon.events('alert.raised')).toEqual([]);
    expect(hook.bodies.filter((b) => b.event === 'alert.raised')).toHaveLength(raisedBefore);
  });

  it('a dropped health table raises a schema alert naming it; after `qbhealth migrate` the spool is replayed', async () => {
    await setUp();
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded', { count: 2 });
    await db.query('DROP TABLE quickbooks_connection_health');
    const from = daemon.lines.length;
    const raised = await daemon.waitFor('alert.raised', { where: (l) => l.kind === 'schema' });
    expect(raised).toMatchObject({ severity: 'critical', summary: expect.stringMatching(/quickbooks_connection_health.*qbhealth migrate/) });
    await daemon.waitFor('spool.appended');
    await eventually(async () => expect((await fetch(`${await daemon!.url()}/health/ready`)).status).toBe(503));

    const migrated = await runQbhealth(['migrate'], env);
    expect(migrated.code).toBe(0);
    await daemon.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });
    await daemon.waitFor('alert.resolved', { where: (l) => l.kind === 'schema' });
    await eventually(async () => expect((await fetch(`${await daemon!.url()}/health/ready`)).status).toBe(200));
    expect((await daemon.stop('SIGINT')).code).toBe(0);
    // Everything probed after the drop is in the re-created table, spooled results included.
    const rows = new Set(await rowProbeIds());
    const after = loggedProbeIds(daemon, from);
    expect(after.length).toBeGreaterThan(0);
    expect(after.filter((id) => !rows.has(id))).toEqual([]);
  });

  it('SIGINT during a slow probe: the probe finishes within its deadline, is recorded, and the exit is 0', async () => {
    await setUp({ PROBE_TIMEOUT_MS: '4000', PROBE_SCHEDULE: '*/2 * * * * *' });
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded');
    sim.latencyMs = 1500;
    await eventually(async () => expect(sim.stats.inFlight).toBeGreaterThan(0), 10_000);
    daemon.child.kill('SIGINT');
    const stopping = await daemon.waitFor('daemon.stopping');
    expect(stopping.inFlight).toBe(true);
    const exit = await daemon.exited;
    sim.latencyMs = 0;
    expect(exit.code).toBe(0);
    const stopped = await daemon.waitFor('daemon.stopped');
    // Well within PM2's kill_timeout (30 s): the probe deadline plus the flush.
    expect(Date.parse(String(stopped.time)) - Date.parse(String(stopping.time))).toBeLessThan(20_000);
    expect(new Set(await rowProbeIds())).toEqual(new Set(loggedProbeIds(daemon)));
  });

  it('a refresh token closer to expiry than REFRESH_TOKEN_WARN_DAYS raises a warning at once, and /health says warn', async () => {
    // The simulator's rolling expiry is 101 days away; warn at 200.
    await setUp({ REFRESH_TOKEN_WARN_DAYS: '200' });
    daemon = spawnDaemon(env);
    const raised = await daemon.waitFor('alert.raised', { where: (l) => l.kind === 'refresh_token_expiry' });
    expect(raised).toMatchObject({ severity: 'warning', realmId: REALM, summary: expect.stringMatching(/expires in 10\d day\(s\).*qbhealth connect/) });
    const doc = (await (await fetch(`${await daemon.url()}/health`, { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } })).json()) as { status: string };
    expect(doc.status).toBe('warn');
    expect(daemon.events('probe.succeeded').at(-1)).toMatchObject({ status: 'warn' });
  });

  it('a cycle still running at the next tick is logged as an overlap, and a second SIGINT exits at once', async () => {
    await setUp({ PROBE_TIMEOUT_MS: '8000' });
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded');
    sim.latencyMs = 2500;
    try {
      await daemon.waitFor('scheduler.overlap');
      daemon.child.kill('SIGINT');
      await daemon.waitFor('daemon.stopping');
      daemon.child.kill('SIGINT');
      const exit = await daemon.exited;
      expect(exit.code).toBe(1);
      expect(daemon.events('daemon.stop_forced')).toEqual([expect.objectContaining({ msg: expect.stringMatching(/second SIGINT: exiting now/) })]);
      expect(daemon.events('daemon.stopping')).toHaveLength(1);
      expect(daemon.events('daemon.stopped')).toEqual([]);
    } finally {
      sim.latencyMs = 0;
    }
  });

  it('start-up failures exit with the contract\'s codes and say what to do: 78 config, 75 database down, 65 schema', async () => {
    const invalid = spawnDaemon({ DATABASE_URL: 'mysql://x', TOKEN_ENCRYPTION_KEY: 'short' });
    expect((await invalid.exited).code).toBe(78);
    expect(invalid.events('config.invalid')).toHaveLength(1);
    expect(invalid.events('config.invalid')[0]).toMatchObject({ level: 60, problems: expect.arrayContaining([expect.stringMatching(/^DATABASE_URL/), expect.stringMatching(/^QBO_CLIENT_ID/)]) });
    expect(invalid.stderr()).toContain('configuration invalid');

    db = await createTestDatabase();
    const base = daemonEnv(db.url, sim);
    const down = spawnDaemon({ ...base, DATABASE_URL: 'postgres://postgres:x@127.0.0.1:1/none' });
    expect((await down.exited).code).toBe(75);
    expect(down.events('daemon.fatal')).toEqual([expect.objectContaining({ msg: expect.stringMatching(/PostgreSQL is unreachable \(ECONNREFUSED.*this is retried/) })]);

    const unmigrated = spawnDaemon({ ...base, MIGRATE_ON_START: 'false' });
    expect((await unmigrated.exited).code).toBe(65);
    const invalidSchema = unmigrated.events('schema.invalid');
    expect(invalidSchema).toHaveLength(1);
    expect(invalidSchema[0]).toMatchObject({ level: 60, problems: expect.arrayContaining(['missing table quickbooks_connection_health']) });
    expect(invalidSchema.at(-1)?.msg).toMatch(/qbhealth migrate/);
  });
});
