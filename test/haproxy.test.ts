/**
 * The load balancer's view, with the load balancer operators use: HAProxy (Debian's) in front of
 * two daemons sharing one database ("one daemon per host"), health-checking `/health/ready`. A
 * daemon that stops is taken out of rotation while every request through HAProxy is still
 * answered, and the other daemon takes over its realms.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort } from '../src/dev/embedded-postgres.js';
import { daemonEnv, spawnDaemon, type RunningDaemon } from './support/daemon.js';
import { realmsFixture, type Fixture } from './support/realms.js';
import { eventually, pollStatuses } from './support/wait.js';

const HAPROXY = '/usr/sbin/haproxy';

let fx: Fixture;
let daemons: RunningDaemon[] = [];
let haproxy: ChildProcess | undefined;

beforeAll(async () => {
  if (!existsSync(HAPROXY)) throw new Error(`${HAPROXY} is missing: install Debian's haproxy (apt-get install haproxy; .ci/run does)`);
  fx = await realmsFixture(4);
});
afterAll(async () => {
  haproxy?.kill('SIGTERM');
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await fx?.close();
});

/** HAProxy's view of each server of backend `monitors`, from its stats CSV: name → status (UP, DOWN, …). */
async function serverStates(statsPort: number): Promise<Record<string, string>> {
  const csv = await (await fetch(`http://127.0.0.1:${statsPort}/stats;csv`)).text();
  const [header, ...rows] = csv.split('\n').filter(Boolean);
  const cols = (header ?? '').replace(/^# /, '').split(',');
  const at = (name: string): number => cols.indexOf(name);
  const states: Record<string, string> = {};
  for (const row of rows.map((r) => r.split(','))) {
    if (row[at('pxname')] === 'monitors' && !['FRONTEND', 'BACKEND'].includes(String(row[at('svname')]))) states[String(row[at('svname')])] = String(row[at('status')]);
  }
  return states;
}

it('HAProxy checks /health/ready on two daemons; one stopping is taken out with every request still answered, and the other takes its realms', async () => {
  const ports = [await freePort(), await freePort()];
  daemons = ports.map((port) => spawnDaemon({ ...daemonEnv(fx.db.url, fx.sim), PORT: String(port) }));
  await Promise.all(daemons.map((d) => d.waitFor('probe.succeeded')));

  const [front, stats] = [await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    [
      'global',
      '  maxconn 256',
      'defaults',
      '  mode http',
      '  timeout connect 1s',
      '  timeout client 5s',
      '  timeout server 5s',
      '  retries 3',
      '  option redispatch',
      '  retry-on conn-failure empty-response response-timeout 503',
      `frontend health`,
      `  bind 127.0.0.1:${front}`,
      '  default_backend monitors',
      `frontend stats`,
      `  bind 127.0.0.1:${stats}`,
      '  stats enable',
      '  stats uri /stats',
      'backend monitors',
      '  balance roundrobin',
      '  option httpchk GET /health/ready',
      '  http-check expect status 200',
      ...ports.map((p, i) => `  server host${i} 127.0.0.1:${p} check inter 200ms fall 2 rise 1`),
      '',
    ].join('\n'),
  );
  haproxy = spawn(HAPROXY, ['-f', cfg, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let haproxyOut = '';
  haproxy.stdout?.on('data', (d: Buffer) => (haproxyOut += d.toString()));
  haproxy.stderr?.on('data', (d: Buffer) => (haproxyOut += d.toString()));
  await eventually(async () => expect(await serverStates(stats)).toEqual({ host0: 'UP', host1: 'UP' }), 15_000).catch((err: unknown) => {
    throw new Error(`HAProxy did not see both daemons up: ${String(err)}\n${haproxyOut}`);
  });

  // Requests through HAProxy while daemon 0 stops (SIGINT, as PM2 stops it): all answered 200.
  const poller = pollStatuses(`http://127.0.0.1:${front}/health/ready`);
  const stopped = daemons[0]?.stop('SIGINT');
  await eventually(async () => expect((await serverStates(stats)).host0).toMatch(/^DOWN/), 15_000);
  expect((await stopped)?.code).toBe(0);
  // Every realm is probed by the daemon left, the ones the stopped daemon held included.
  const survivor = daemons[1] as RunningDaemon;
  const from = survivor.lines.length;
  await eventually(async () => {
    const probed = new Set(survivor.lines.slice(from).filter((l) => l.event === 'probe.succeeded').map((l) => l.realmId));
    expect([...probed].sort()).toEqual([...fx.realms].sort());
  }, 15_000);
  // Enough polls to have spanned the stop (a loaded machine answers fewer in the same time).
  await eventually(async () => expect(poller.count()).toBeGreaterThan(10), 15_000);
  const answers = await poller.stop();
  expect(answers.filter((a) => a !== 200), 'requests through HAProxy not answered 200 while a daemon stopped').toEqual([]);
  expect((await serverStates(stats)).host1).toBe('UP');
}, 90_000);
