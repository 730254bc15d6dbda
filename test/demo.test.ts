/**
 * `npm run demo` as a newcomer runs it: started in a process group of its own (as a terminal's
 * foreground job), Ctrl-C sent to that whole group. It must serve /health, point only at the
 * simulator, stop every process it started (PostgreSQL included), and reuse its database.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { StatusReport } from '../src/db/status.js';
import { freePort } from '../src/dev/embedded-postgres.js';
import { runQbhealth } from './support/cli.js';

const DEMO = fileURLToPath(new URL('../dist/dev/demo.js', import.meta.url));

/** Every live process whose ancestry leads to `root`. */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may contain spaces and parentheses: fields start after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(entry), ppid);
    } catch (err) {
      // A process that exited between readdir and read has no stat: it is not a descendant.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  const found: number[] = [];
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        found.push(pid);
        break;
      }
    }
  }
  return found;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
};

interface DemoRun {
  readonly pid: number;
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startDemo(dir: string, port: number, extraEnv: Record<string, string> = {}): DemoRun {
  const child = spawn(process.execPath, [DEMO], {
    detached: true,
    env: { PATH: process.env.PATH ?? '', TZ: 'Asia/Kolkata', PORT: String(port), QBHEALTH_DEMO_DIR: dir, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const onData = (d: Buffer): void => {
    out += d.toString();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const waitForOutput = async (pattern: RegExp, timeoutMs: number): Promise<void> => {
    const until = Date.now() + timeoutMs;
    while (!pattern.test(out)) {
      if (child.exitCode !== null) throw new Error(`the demo exited (${child.exitCode}) before printing ${pattern}:\n${out}`);
      if (Date.now() > until) throw new Error(`the demo did not print ${pattern} within ${timeoutMs} ms:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return { pid: child.pid as number, output: () => out, waitForOutput, exited };
}

/** Ctrl-C as a terminal sends it: SIGINT to the foreground process group. */
async function ctrlC(run: DemoRun): Promise<{ code: number | null; leftovers: number[] }> {
  const tree = descendants(run.pid);
  expect(tree.length).toBeGreaterThanOrEqual(3); // the stack, the daemon, PostgreSQL (and its workers)
  process.kill(-run.pid, 'SIGINT');
  const exit = await Promise.race([run.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000))]);
  if (exit === 'timeout') {
    for (const pid of [run.pid, ...tree]) if (alive(pid)) process.kill(pid, 'SIGKILL');
    throw new Error(`the demo did not stop within 10 s of Ctrl-C:\n${run.output()}`);
  }
  return { code: exit.code, leftovers: tree.filter(alive) };
}

describe('npm run demo', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-demo-'));
  // The postgres user (as root) must be able to enter the demo directory.
  chmodSync(dir, 0o755);
  let running: DemoRun | undefined;
  afterAll(async () => {
    if (running && alive(running.pid)) await ctrlC(running);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves /health on PORT against the simulator only, and stops everything on Ctrl-C', async () => {
    const port = await freePort();
    // Every 2 s rather than the demo's 10, so the alert is raised and resolved sooner.
    running = startDemo(dir, port, { PROBE_SCHEDULE: '*/2 * * * * *' });
    await running.waitForOutput(/Press Ctrl-C to stop everything/, 120_000);
    expect(running.output()).toContain('on "*/2 * * * * *"');
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    await running.waitForOutput(/probe succeeded/, 15_000);
    // /health is rebuilt at most once a second: the realm shows up within that.
    let doc: { checks: Record<string, Array<{ componentId?: string; status: string }>> } = { checks: {} };
    for (let i = 0; i < 30 && (doc.checks['quickbooks:connection'] ?? []).length === 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      doc = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as typeof doc;
    }
    expect(doc.checks['quickbooks:connection']).toEqual([expect.objectContaining({ componentId: '9341453050', status: 'pass' })]);

    const out = running.output();
    expect(out).toContain(`http://127.0.0.1:${port}/health`);
    expect(out).toContain(`http://127.0.0.1:${port}/metrics`);
    expect(out).toMatch(/curl -X POST 'http:\/\/127\.0\.0\.1:\d+\/_sim\/scenario\?name=outage'/);
    // Human-readable logs, not JSON lines.
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: probe succeeded/m);
    // Every Intuit URL points at loopback.
    const envFile = readFileSync(path.join(dir, '.env'), 'utf8');
    for (const name of ['QBO_TOKEN_URL', 'QBO_API_BASE_URL', 'QBO_REVOKE_URL']) expect(envFile).toMatch(new RegExp(`^${name}=http://127\\.0\\.0\\.1:\\d+`, 'm'));
    const keys = JSON.parse(readFileSync(path.join(dir, 'keys.json'), 'utf8')) as Record<string, string>;

    // The printed way to break the connection raises an alert, delivered to the demo's webhook, and resolves it.
    const sim = /curl -X POST '(http:\/\/127\.0\.0\.1:\d+)\/_sim\/scenario/.exec(out)?.[1];
    expect((await fetch(`${sim}/_sim/scenario?name=outage`, { method: 'POST' })).status).toBe(200);
    await running.waitForOutput(/webhook received: \S+ \[CRITICAL\] quickbooks_api realm 9341453050/, 35_000);
    expect((await fetch(`${sim}/_sim/scenario?name=healthy`, { method: 'POST' })).status).toBe(200);
    await running.waitForOutput(/webhook received: \S+ \[RESOLVED\] quickbooks_api realm 9341453050/, 25_000);

    const stop = await ctrlC(running);
    expect(stop.code).toBe(0);
    expect(stop.leftovers).toEqual([]);
    expect(running.output()).toContain('stopped: daemon, simulator and PostgreSQL');
    expect(running.output()).toMatch(/INFO: stopped/);
    for (const secret of [keys.clientSecret, keys.tokenEncryptionKey, keys.postgresPassword]) expect(running.output()).not.toContain(secret);
  }, 180_000);

  it('reuses its database next time, with the earlier history', async () => {
    if (running && alive(running.pid)) await ctrlC(running);
    const port = await freePort();
    running = startDemo(dir, port);
    await running.waitForOutput(/Press Ctrl-C to stop everything/, 120_000);
    expect(running.output()).toContain('Reusing the database');
    expect(running.output()).toContain('no pending migrations');
    const databaseUrl = /^DATABASE_URL=(.+)$/m.exec(readFileSync(path.join(dir, '.env'), 'utf8'))?.[1] ?? '';
    const status = await runQbhealth(['status', '--json'], { DATABASE_URL: databaseUrl });
    const report = JSON.parse(status.stdout) as StatusReport;
    expect(report.realms[0]).toMatchObject({ realmId: '9341453050', companyName: 'Harbour Dental Clinic (demo)', connection: 'connected' });
    expect(report.realms[0]?.probes.total).toBeGreaterThanOrEqual(1);
    const stop = await ctrlC(running);
    expect(stop).toEqual({ code: 0, leftovers: [] });
  }, 150_000);
});
