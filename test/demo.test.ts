/**
 * `npm run demo` as a newcomer runs it: started in a process group of its own (as a terminal's
 * foreground job), Ctrl-C sent to that whole group. It must serve /health, point only at the
 * simulator, tell a story whose every printed step works in the order printed (revoked included,
 * with its way back), keep pinned ports across runs, stop every process it started (PostgreSQL
 * included), and reuse its database.
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

/**
 * Runs a command line the demo printed, as the newcomer pastes it into another terminal (the same
 * working directory); resolves with its first stdout match, then with its exit.
 */
function runPrinted(commandLine: string): { match(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>; exited: Promise<{ code: number | null; out: string }>; kill(): void } {
  const [program, ...args] = commandLine.split(' ');
  expect(program).toBe('node');
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; out: string }>((resolve) => child.on('close', (code) => resolve({ code, out })));
  const match = async (pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const found = pattern.exec(out);
      if (found) return found;
      if (child.exitCode !== null) throw new Error(`\`${commandLine}\` exited (${child.exitCode}) before printing ${pattern}:\n${out}`);
      if (Date.now() > until) throw new Error(`\`${commandLine}\` did not print ${pattern} within ${timeoutMs} ms:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { match, exited, kill };
}

interface DemoRun {
  readonly pid: number;
  output(): string;
  /** Waits until `pattern` matches the output from character `from` on. */
  waitForOutput(pattern: RegExp, timeoutMs: number, from?: number): Promise<void>;
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
  const waitForOutput = async (pattern: RegExp, timeoutMs: number, from = 0): Promise<void> => {
    const until = Date.now() + timeoutMs;
    while (!pattern.test(out.slice(from))) {
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
  // Pinned for both runs: what the first run printed must still work in the second.
  let pinned: { SIM_PORT: string; WEBHOOK_PORT: string };
  let printedOutage = '';
  afterAll(async () => {
    if (running && alive(running.pid)) await ctrlC(running);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves /health on PORT against the simulator only, and stops everything on Ctrl-C', async () => {
    const port = await freePort();
    pinned = { SIM_PORT: String(await freePort()), WEBHOOK_PORT: String(await freePort()) };
    // Every 2 s rather than the demo's 10, so the alert is raised and resolved sooner.
    running = startDemo(dir, port, { PROBE_SCHEDULE: '*/2 * * * * *', ...pinned });
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
    // The dashboard's URL comes first, and the page is served.
    const banner = out.slice(out.indexOf('demo | Dashboard: '));
    expect(banner).toMatch(new RegExp(`^demo \\| Dashboard: http://127\\.0\\.0\\.1:${port}/ `));
    expect(banner.indexOf('/health')).toBeGreaterThan(0);
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(200);
    expect(out).toContain(`http://127.0.0.1:${port}/health`);
    expect(out).toContain(`http://127.0.0.1:${port}/metrics`);
    printedOutage = `curl -X POST 'http://127.0.0.1:${pinned.SIM_PORT}/_sim/scenario?name=outage'`;
    expect(out).toContain(printedOutage);
    // Human-readable logs, not JSON lines.
    expect(out).toMatch(/^\[\d\d:\d\d:\d\d\] INFO: probe succeeded/m);
    // Every Intuit URL points at loopback.
    const envFile = readFileSync(path.join(dir, '.env'), 'utf8');
    for (const name of ['QBO_TOKEN_URL', 'QBO_API_BASE_URL', 'QBO_REVOKE_URL', 'QBO_AUTHORIZE_URL']) {
      expect(envFile).toMatch(new RegExp(`^${name}=http://127\\.0\\.0\\.1:${pinned.SIM_PORT}(/|$)`, 'm'));
    }
    expect(envFile).toMatch(new RegExp(`^ALERT_WEBHOOK_URL=http://127\\.0\\.0\\.1:${pinned.WEBHOOK_PORT}/`, 'm'));
    const keys = JSON.parse(readFileSync(path.join(dir, 'keys.json'), 'utf8')) as Record<string, string>;

    // The printed way to break the connection raises an alert, delivered to the demo's webhook, and resolves it.
    const sim = /curl -X POST '(http:\/\/127\.0\.0\.1:\d+)\/_sim\/scenario/.exec(out)?.[1];
    expect((await fetch(`${sim}/_sim/scenario?name=outage`, { method: 'POST' })).status).toBe(200);
    await running.waitForOutput(/webhook received: \S+ \[CRITICAL\] quickbooks_api: [^\n]*realm 9341453050/, 35_000);
    expect((await fetch(`${sim}/_sim/scenario?name=healthy`, { method: 'POST' })).status).toBe(200);
    await running.waitForOutput(/webhook received: \S+ \[RESOLVED\] quickbooks_api realm 9341453050/, 25_000);

    // Revoked, and the way back the banner prints, in its order: healthy alone does not resolve it
    // (the realm is reconnect_required; the monitor no longer calls Intuit for it); the printed
    // `connect` does, at the next probe.
    const connectLine = /^demo \| {3}(node --env-file=\S+ \S+ connect)$/m.exec(out)?.[1] ?? '';
    expect(connectLine).not.toBe('');
    const order = ['name=revoked', 'name=healthy', connectLine].map((step) => out.lastIndexOf(step));
    expect(Math.min(...order)).toBeGreaterThanOrEqual(0);
    expect(order).toEqual([...order].sort((a, b) => a - b));
    expect((await fetch(`${sim}/_sim/scenario?name=revoked`, { method: 'POST' })).status).toBe(200);
    await running.waitForOutput(/webhook received: \S+ \[CRITICAL\] quickbooks_auth: [^\n]*realm 9341453050/, 25_000);
    expect((await fetch(`${sim}/_sim/scenario?name=healthy`, { method: 'POST' })).status).toBe(200);
    // Two probes that both began after the switch (cycles never overlap), still refused.
    const afterHealthy = running.output().length;
    await running.waitForOutput(/probe failed[^]*probe failed/, 25_000, afterHealthy);
    expect(running.output()).not.toMatch(/\[RESOLVED\] quickbooks_auth/);
    const connect = runPrinted(connectLine);
    let connected: { code: number | null; out: string };
    try {
      const [, authorizeUrl] = await connect.match(/^ {2}(http:\/\/127\.0\.0\.1:\d+\/connect\/oauth2\?\S+)$/m);
      await connect.match(/^Waiting up to/m);
      // The browser's part: the simulator's consent page approves and redirects to the waiting callback.
      const consent = await fetch(authorizeUrl ?? '');
      expect(consent.status).toBe(200);
      connected = await connect.exited;
    } finally {
      connect.kill();
    }
    expect(connected.code, connected.out).toBe(0);
    expect(connected.out).toContain('connected realm 9341453050 (sandbox): "Harbour Dental Clinic (demo)"');
    await running.waitForOutput(/webhook received: \S+ \[RESOLVED\] quickbooks_auth realm 9341453050/, 25_000);
    for (const secret of [keys.clientSecret, keys.tokenEncryptionKey, keys.postgresPassword]) expect(connected.out).not.toContain(secret);

    const stop = await ctrlC(running);
    expect(stop.code).toBe(0);
    expect(stop.leftovers).toEqual([]);
    expect(running.output()).toContain('stopped: daemon, simulator and PostgreSQL');
    expect(running.output()).toMatch(/INFO: stopped/);
    for (const secret of [keys.clientSecret, keys.tokenEncryptionKey, keys.postgresPassword]) expect(running.output()).not.toContain(secret);
  }, 240_000);

  it('reuses its database next time, with the earlier history and the pinned ports', async () => {
    if (running && alive(running.pid)) await ctrlC(running);
    const port = await freePort();
    running = startDemo(dir, port, pinned);
    await running.waitForOutput(/Press Ctrl-C to stop everything/, 120_000);
    expect(running.output()).toContain('Reusing the database');
    expect(running.output()).toContain(printedOutage);
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
