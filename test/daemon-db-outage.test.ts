/**
 * PostgreSQL stopped under a running daemon, then started again: nothing probed meanwhile is lost.
 * This file runs its own PostgreSQL (the shared one must stay up for the other files).
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort, startEmbeddedPostgres, type RunningPostgres } from '../src/dev/embedded-postgres.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type RunningDaemon, type WebhookReceiver } from './support/daemon.js';
import { CLIENT_ID, CLIENT_SECRET } from './support/qbo.js';

const REALM = '9130355377';
const PASSWORD = 'outage-test-password';

let sim: Simulator;
let hook: WebhookReceiver;
let server: RunningPostgres | undefined;
let daemon: RunningDaemon | undefined;
let dataDir: string;
let port: number;

const start = (): Promise<RunningPostgres> => startEmbeddedPostgres({ dataDir, port, password: PASSWORD, settings: { fsync: 'off' } });

beforeAll(async () => {
  sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  hook = await webhookReceiver();
  const parent = mkdtempSync(path.join(os.tmpdir(), 'qbhm-outage-'));
  chmodSync(parent, 0o755);
  dataDir = path.join(parent, 'data');
  port = await freePort();
  server = await start();
});

afterAll(async () => {
  await daemon?.stop('SIGKILL');
  await server?.stop();
  await sim?.close();
  await hook?.close();
});

it('PostgreSQL stopped mid-run: results spooled, readiness 503, a database alert; back: the spool is replayed and every probe has its row', async () => {
  const env = {
    ...daemonEnv(server!.url, sim),
    ALERT_WEBHOOK_URL: hook.url,
    ALERT_AFTER_FAILURES: '2',
  };
  expect((await runQbhealth(['migrate'], env)).code).toBe(0);
  expect((await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: sim.addRealm(REALM, 'Outage Co') })).code).toBe(0);

  daemon = spawnDaemon(env);
  const base = await daemon.url();
  await daemon.waitFor('probe.succeeded', { count: 2 });

  await server!.stop();
  server = undefined;
  await daemon.waitFor('spool.appended', { count: 2 });
  const raised = await daemon.waitFor('alert.raised', { where: (l) => l.kind === 'database' });
  expect(raised).toMatchObject({ severity: 'critical', summary: expect.stringContaining('results wait in the spool') });
  expect((await fetch(`${base}/health/ready`)).status).toBe(503);
  expect((await fetch(`${base}/health/live`)).status).toBe(200);
  const during = (await (await fetch(`${base}/health`)).json()) as { status: string; checks: Record<string, Array<{ status: string; observedValue?: number }>> };
  expect(during.status).toBe('fail');
  // /status reads PostgreSQL: it says so with a 503 (and a warn line), never a hang or a 500.
  const status = await fetch(`${base}/status`);
  expect(status.status).toBe(503);
  expect(await status.text()).toContain('cannot be read from PostgreSQL');
  // The warn line (logs are written asynchronously, so it may follow the response).
  await daemon.waitFor('db.read_failed', { where: (l) => l.what === 'status report' && l.level === 40 });
  expect(during.checks['spool:pending']?.[0]?.observedValue).toBeGreaterThan(0);

  server = await start();
  await daemon.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });
  await daemon.waitFor('alert.resolved', { where: (l) => l.kind === 'database' });
  await hook.waitFor('alert.resolved', 'database');
  expect((await daemon.stop('SIGINT')).code).toBe(0);

  const client = new pg.Client({ connectionString: server.url });
  await client.connect();
  try {
    const rows = (await client.query<{ probe_id: string }>('SELECT probe_id FROM quickbooks_connection_health')).rows.map((r) => r.probe_id);
    const probed = daemon.lines.filter((l) => l.event === 'probe.succeeded' || l.event === 'probe.failed').map((l) => String(l.probeId));
    expect(rows.length).toBe(probed.length);
    expect(new Set(rows)).toEqual(new Set(probed));
    const alert = (await client.query("SELECT state FROM quickbooks_alert_state WHERE realm_id = '' AND kind = 'database'")).rows[0];
    expect(alert?.state).toBe('resolved');
  } finally {
    await client.end();
  }
});
