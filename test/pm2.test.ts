/** The daemon under real PM2 (a private PM2_HOME), started from the project's ecosystem.config.js. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { daemonEnv } from './support/daemon.js';
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
