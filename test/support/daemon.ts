/** Runs the built daemon (dist/main.js) as PM2 would, and reads its JSON log lines as they come. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { scratchDir } from './cli.js';
import { simulatorEnv } from './qbo.js';

export const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

/** The daemon against `databaseUrl` and the simulator: a tick a second, a free port, its own spool. */
export function daemonEnv(databaseUrl: string, sim: Parameters<typeof simulatorEnv>[1]): Record<string, string> {
  return {
    ...simulatorEnv(databaseUrl, sim),
    PROBE_SCHEDULE: '* * * * * *',
    PROBE_TIMEOUT_MS: '3000',
    HOST: '127.0.0.1',
    PORT: '0',
    // Each env its own member (PORT 0 would give every daemon the default id <host>:0); a
    // daemon restarted with the same env comes back as the same member.
    FLEET_INSTANCE_ID: `test-${randomUUID().slice(0, 8)}`,
    // The fleet's view (and the forgetting of removed realms) at test pace.
    FLEET_HEARTBEAT_MS: '500',
    FLEET_MEMBER_TTL_MS: '5000',
    SPOOL_DIR: mkdtempSync(path.join(os.tmpdir(), 'qbhm-spool-')),
  };
}

export type LogLine = Record<string, unknown> & { event?: string; level?: number; msg?: string };

export interface RunningDaemon {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: LogLine[];
  readonly stderr: () => string;
  events(event: string): LogLine[];
  /** The n-th (1-based) line with `event` that matches, waiting up to `timeoutMs`. */
  waitFor(event: string, opts?: { count?: number; timeoutMs?: number; where?: (line: LogLine) => boolean }): Promise<LogLine>;
  /** Base URL of the health server, known once `daemon.started` was logged. */
  url(): Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnDaemon(env: Record<string, string>, cwd = scratchDir(), nodeArgs: readonly string[] = []): RunningDaemon {
  const child = spawn(process.execPath, [...nodeArgs, MAIN], {
    cwd,
    env: { PATH: process.env.PATH ?? '', TZ: process.env.TZ ?? 'Asia/Kolkata', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end();
  const lines: LogLine[] = [];
  let partial = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...waiters]) w();
  };
  child.stdout.on('data', (chunk: Buffer) => {
    partial += chunk.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const text of parts) {
      if (text.trim() === '') continue;
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch (err) {
        // Every stdout line must be JSON: a stray line is itself a defect, kept so a test sees it.
        lines.push({ event: 'test.unparseable', msg: text, err: String(err) });
      }
    }
    wake();
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      resolve({ code, signal });
      wake();
    });
  });
  const events = (event: string): LogLine[] => lines.filter((l) => l.event === event);
  const tail = (): string => lines.slice(-Number(process.env.QBHM_TEST_TAIL ?? 15)).map((l) => JSON.stringify(l)).join('\n');

  const waitFor: RunningDaemon['waitFor'] = (event, opts = {}) =>
    new Promise((resolve, reject) => {
      const count = opts.count ?? 1;
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`no ${count}× "${event}" within ${opts.timeoutMs ?? 20_000} ms; last lines:\n${tail()}\nstderr:\n${stderr}`));
      }, opts.timeoutMs ?? 20_000);
      const check = (): void => {
        const found = events(event).filter((l) => !opts.where || opts.where(l));
        const hit = found[count - 1];
        if (hit) {
          clearTimeout(timer);
          waiters.delete(check);
          return resolve(hit);
        }
        if (child.exitCode !== null || child.signalCode !== null) {
          clearTimeout(timer);
          waiters.delete(check);
          reject(new Error(`the daemon exited (${child.exitCode ?? child.signalCode}) before ${count}× "${event}"; last lines:\n${tail()}\nstderr:\n${stderr}`));
        }
      };
      waiters.add(check);
      check();
    });

  return {
    child,
    lines,
    stderr: () => stderr,
    events,
    waitFor,
    async url() {
      const started = await waitFor('daemon.started', { where: (l) => l.health !== undefined });
      const health = started.health as { port: number };
      return `http://127.0.0.1:${health.port}`;
    },
    exited,
    async stop(signal = 'SIGINT') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** A webhook receiver that keeps every alert body it is sent. */
export interface WebhookReceiver {
  readonly url: string;
  readonly bodies: Array<Record<string, unknown>>;
  readonly server: Server;
  /** Resolves once a body with this `event` (and kind, when given) has arrived. */
  waitFor(event: string, kind?: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

export async function webhookReceiver(): Promise<WebhookReceiver> {
  const bodies: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      bodies.push(JSON.parse(text) as Record<string, unknown>);
      res.writeHead(200).end('ok');
      for (const w of [...waiters]) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    bodies,
    server,
    waitFor: (event, kind, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no webhook "${event}"${kind ? ` for ${kind}` : ''} within ${timeoutMs} ms; got ${JSON.stringify(bodies.map((b) => [b.event, b.kind]))}`));
        }, timeoutMs);
        const check = (): void => {
          const hit = bodies.find((b) => b.event === event && (kind === undefined || b.kind === kind));
          if (!hit) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(hit);
        };
        waiters.add(check);
        check();
      }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * A /metrics exposition without the `monitor_instance` label every series carries (which member
 * served it), so a test can name a series by its own labels; `instances` lists the values seen.
 */
export function withoutInstanceLabel(text: string): { text: string; instances: string[] } {
  const instances = new Set<string>();
  const stripped = text.replace(/(\{|,)monitor_instance="([^"]*)"(,|\})/g, (_m, before: string, id: string, after: string) => {
    instances.add(id);
    if (before === '{' && after === '}') return '';
    return before === '{' ? '{' : after;
  });
  return { text: stripped, instances: [...instances] };
}
