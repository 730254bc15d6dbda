/** The daemon under real PM2 (a private PM2_HOME), started from the project's ecosystem.config.js. */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../src/dev/embedded-postgres.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { daemonEnv, webhookReceiver, type WebhookReceiver } from './support/daemon.js';
import { realmsFixture, type Fixture } from './support/realms.js';
import { eventually, pollStatuses } from './support/wait.js';
import { CLIENT_ID, CLIENT_SECRET } from './support/qbo.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PM2 = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');
const run = promisify(execFile);

let sim: Simulator;
let db: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  db = await createTestDatabase();
  env = {
    ...daemonEnv(db.url, sim),
    PATH: process.env.PATH ?? '',
    HOME: mkdtempSync(path.join(os.tmpdir(), 'qbhm-home-')),
    PM2_HOME: mkdtempSync(path.join(os.tmpdir(), 'qbhm-pm2-')),
  };
});

afterAll(async () => {
  await run(process.execPath, [PM2, 'kill'], { cwd: ROOT, env }).catch((err: unknown) => {
    throw new Error(`pm2 kill failed: ${String(err)}`);
  });
  await db?.drop();
  await sim?.close();
});

const pm2 = async (...args: string[]): Promise<string> => (await run(process.execPath, [PM2, ...args], { cwd: ROOT, env, timeout: 90_000 })).stdout;

interface Pm2Process {
  name: string;
  pm2_env: { status: string; pm_out_log_path: string; restart_time: number; exit_code?: number };
}

it('starts under PM2 honouring wait_ready, logs JSON lines, and stops with daemon.stopped', async () => {
  // A fresh database: the daemon's MIGRATE_ON_START creates the schema before it says ready.
  await pm2('start', 'ecosystem.config.js', '--env', 'production');
  const list = JSON.parse(await pm2('jlist')) as Pm2Process[];
  const app = list.find((p) => p.name === 'qbo-health-monitor');
  expect(app?.pm2_env.status).toBe('online');
  // wait_ready: `pm2 start` returned only after the daemon said ready, which it does after logging daemon.started.
  const out = (): string[] => readFileSync(app!.pm2_env.pm_out_log_path, 'utf8').split('\n').filter(Boolean);
  const events = (): string[] => out().map((l) => (JSON.parse(l) as { event?: string }).event ?? '');
  expect(events()).toContain('migration.applied');
  expect(events()).toContain('daemon.started');

  await pm2('stop', 'ecosystem.config.js');
  const after = (JSON.parse(await pm2('jlist')) as Pm2Process[]).find((p) => p.name === 'qbo-health-monitor');
  expect(after?.pm2_env.status).toBe('stopped');
  expect(after?.pm2_env.restart_time).toBe(0);
  expect(events()).toContain('daemon.stopped');
  // Every line PM2 wrote is one JSON object (no time prefix from PM2).
  for (const line of out()) expect(() => JSON.parse(line)).not.toThrow();
});

describe('two PM2 cluster workers (the ecosystem file as shipped): one fleet on one port', () => {
  let fx: Fixture;
  let hook: WebhookReceiver;
  let clusterEnv: Record<string, string>;
  let port: number;
  const pm2c = async (...args: string[]): Promise<string> => (await run(process.execPath, [PM2, ...args], { cwd: ROOT, env: clusterEnv, timeout: 120_000 })).stdout;

  beforeAll(async () => {
    fx = await realmsFixture(3);
    hook = await webhookReceiver();
    port = await freePort();
    const base = daemonEnv(fx.db.url, fx.sim);
    // Each worker is its own member by default: <hostname>:<PORT>/<NODE_APP_INSTANCE>.
    delete base.FLEET_INSTANCE_ID;
    clusterEnv = {
      ...base,
      PORT: String(port),
      ALERT_WEBHOOK_URL: hook.url,
      ALERT_AFTER_FAILURES: '2',
      PATH: process.env.PATH ?? '',
      HOME: mkdtempSync(path.join(os.tmpdir(), 'qbhm-home-')),
      PM2_HOME: mkdtempSync(path.join(os.tmpdir(), 'qbhm-pm2-')),
    };
  });
  afterAll(async () => {
    if (clusterEnv) await run(process.execPath, [PM2, 'kill'], { cwd: ROOT, env: clusterEnv }).catch((err: unknown) => {
      throw new Error(`pm2 kill failed: ${String(err)}`);
    });
    await hook?.close();
    await fx?.close();
  });

  it('pm2 reload rolls through both workers: every health poll answered, no realm unprobed for more than 2 periods, no duplicate notification', async () => {
    await pm2c('start', 'ecosystem.config.js', '--env', 'production');
    const workers = (JSON.parse(await pm2c('jlist')) as Pm2Process[]).filter((p) => p.name === 'qbo-health-monitor');
    expect(workers.map((w) => w.pm2_env.status)).toEqual(['online', 'online']);
    const members = async (): Promise<string[]> => (await fx.db.query('SELECT instance_id FROM quickbooks_monitor_members ORDER BY instance_id')).rows.map((r) => String(r.instance_id));
    // Each worker is a member: its slot (<hostname>:<PORT>/<NODE_APP_INSTANCE>) and its pid.
    const slots = async (): Promise<string[]> => (await members()).map((id) => id.replace(/#\d+$/, '')).sort();
    await eventually(async () => expect(await slots()).toEqual([`${os.hostname()}:${port}/0`, `${os.hostname()}:${port}/1`]));

    // An Intuit outage raises one alert per realm, whichever worker probed it.
    fx.sim.scenario = 'outage';
    await eventually(async () => expect(new Set(hook.bodies.filter((b) => b.event === 'alert.raised').map((b) => b.realmId)).size).toBe(3), 20_000);

    // The load balancer's view during the reload: one poll every 20 ms on the shared port.
    // Each poll on a connection of its own, as load balancers check (HAProxy's default).
    const poller = pollStatuses(`http://127.0.0.1:${port}/health/ready`, { newConnection: true });
    const reloadFrom = new Date();
    try {
      await pm2c('reload', 'qbo-health-monitor');
    } catch (err) {
      const paths = (JSON.parse(await pm2c('jlist')) as Array<Pm2Process & { pm2_env: { pm_err_log_path: string } }>).filter((p) => p.name === 'qbo-health-monitor');
      const tail = (file: string): string => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-30).join('\n') : '');
      throw new Error(`pm2 reload failed: ${String(err)}\n${paths.map((p) => `${p.pm2_env.status}\n${tail(p.pm2_env.pm_out_log_path)}\n${tail(p.pm2_env.pm_err_log_path)}`).join('\n---\n')}`);
    }
    const reloadTo = new Date();
    const polls = await poller.stop();
    expect(polls.length).toBeGreaterThan(10);
    expect(polls.filter((p) => p !== 200), `polls not answered 200 during the reload: ${JSON.stringify(polls.filter((p) => p !== 200))}`).toEqual([]);
    const after = (JSON.parse(await pm2c('jlist')) as Pm2Process[]).filter((p) => p.name === 'qbo-health-monitor');
    expect(after.map((w) => w.pm2_env.status)).toEqual(['online', 'online']);
    // The old processes left the fleet as they stopped; the new ones fill the same slots.
    await eventually(async () => expect(await slots()).toEqual([`${os.hostname()}:${port}/0`, `${os.hostname()}:${port}/1`]));
    await eventually(async () => expect(await members()).toHaveLength(2));

    // No realm went unprobed for more than 2 periods (1 s each) across the reload.
    const rows = (await fx.db.query(`SELECT realm_id, checked_at FROM quickbooks_connection_health WHERE checked_at BETWEEN '${new Date(reloadFrom.getTime() - 3000).toISOString()}' AND '${new Date(reloadTo.getTime() + 3000).toISOString()}' ORDER BY realm_id, checked_at`)).rows as Array<{ realm_id: string; checked_at: Date }>;
    for (const realm of fx.realms) {
      const times = rows.filter((r) => r.realm_id === realm).map((r) => r.checked_at.getTime());
      expect(times.length, realm).toBeGreaterThan(1);
      const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
      expect(Math.max(...gaps), `largest gap between probes of ${realm} across the reload`).toBeLessThanOrEqual(2500);
    }

    // Recovery: each realm's alert resolves once. No notification was sent twice, none raised twice.
    fx.sim.scenario = 'healthy';
    await eventually(async () => expect(new Set(hook.bodies.filter((b) => b.event === 'alert.resolved').map((b) => b.realmId)).size).toBe(3), 20_000);
    const ids = hook.bodies.map((b) => String(b.notificationId));
    expect(new Set(ids).size).toBe(ids.length);
    const perRealm = (event: string): Record<string, number> => {
      const counts: Record<string, number> = {};
      for (const b of hook.bodies.filter((x) => x.event === event && x.kind === 'quickbooks_api')) counts[String(b.realmId)] = (counts[String(b.realmId)] ?? 0) + 1;
      return counts;
    };
    expect(perRealm('alert.raised')).toEqual(Object.fromEntries(fx.realms.map((r) => [r, 1])));
    expect(perRealm('alert.resolved')).toEqual(Object.fromEntries(fx.realms.map((r) => [r, 1])));

    // `pm2 scale … 1` stops one worker cleanly: it leaves the fleet, the other keeps every realm.
    await pm2c('scale', 'qbo-health-monitor', '1');
    await eventually(async () => expect(await members()).toHaveLength(1));
    await pm2c('delete', 'qbo-health-monitor');
    await eventually(async () => expect(await members()).toEqual([]));
  }, 150_000);
});
