/**
 * health_endpoint, health_endpoint_live, *_under_probe and probe_cycle: the built daemon
 * (dist/main.js) against the simulator, measured with autocannon, each against a baseline from
 * the same run: a bare node:http server in its own process answering the very bytes the daemon
 * answered, and for the probe cycle the ideal time (realms x simulator latency / concurrency).
 *
 * The machine is shared and noisy (2 cores, and neighbours that slow either for seconds at a
 * time), so one long measurement of each side says more about the neighbours than about the
 * server. Instead each comparison is many short rounds, the daemon and the bare server
 * alternating (ours, bare, bare, ours, …: each round's pair is adjacent in time, and the order
 * flips so neither side always goes first), and the verdict is on the median of the per-round
 * ratios; the spread of those ratios is printed beside it. The load generator runs in a process
 * of its own on one CPU and both servers on the other (cpu.ts), so placement favours neither.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonEnv, spawnDaemon, type RunningDaemon } from '../support/daemon.js';
import { atMost, COMMAND, excessAtMost, failed, median, ratioAtLeast, record, reported, type BenchResult } from './results.js';
import { realmsFixture, type Fixture } from '../support/realms.js';
import { LOAD_CPU, pin, pinnedCommand, PINNED, SERVER_CPU } from './cpu.js';

const LOAD_GENERATOR = fileURLToPath(new URL('./load-generator.mjs', import.meta.url));

const CONNECTIONS = 50;
/**
 * Rounds per comparison and seconds per side per round: short and many (see the file's comment).
 * Under probe a round is as long as the cycle period (4 s), so every round of the daemon contains
 * a cycle; those rows are reported, and only the event-loop lag among them is judged.
 */
const JUDGED = { rounds: 21, seconds: 2 } as const;
const UNDER_PROBE = { rounds: 9, seconds: 4 } as const;
/**
 * The p99 latency target, as the daemon's p99 above the bare server's in the same round. Under a
 * saturating load p99 is mostly queueing and descheduling: in one run a neighbour slowed this
 * machine and the bare server's own median p99 was 8 ms, so an absolute 5 ms judged the
 * machine. On a quiet machine the bare server's p99 is 1 ms, and 1 + 4 is the earlier 5 ms.
 */
const P99_OVER_BARE_MS = 4;
/** Unrecorded load on each side first, so JIT warm-up is in no round. */
const WARMUP_S = 2;

interface Load {
  readonly rps: number;
  readonly p99: number;
  readonly non2xx: number;
  readonly errors: number;
}

interface LoadGenerator {
  run(url: string, seconds: number): Promise<Load>;
  close(): void;
}

/** autocannon in its own process (load-generator.mjs), pinned to LOAD_CPU. */
function startLoadGenerator(): LoadGenerator {
  const [command, args] = pinnedCommand(LOAD_CPU, [process.execPath, LOAD_GENERATOR]);
  const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map<number, { resolve: (l: Load) => void; reject: (e: Error) => void }>();
  let next = 0;
  child.on('message', (m: { id: number; ok: true; load: Load } | { id: number; ok: false; error: string }) => {
    const w = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.ok) w?.resolve(m.load);
    else w?.reject(new Error(`autocannon failed: ${m.error}`));
  });
  child.on('exit', (code, signal) => {
    for (const w of waiting.values()) w.reject(new Error(`the load generator exited (${String(code ?? signal)})`));
    waiting.clear();
  });
  return {
    run: (url, seconds) =>
      new Promise<Load>((resolve, reject) => {
        const id = next++;
        waiting.set(id, { resolve, reject });
        child.send({ id, url, seconds, connections: CONNECTIONS });
      }),
    close: () => child.disconnect(),
  };
}

/** A bare node:http server in its own process that answers every request with `body` and these headers. */
async function bareServer(body: Buffer, contentType: string): Promise<{ url: string; close(): void }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-bare-'));
  const file = path.join(dir, 'body');
  writeFileSync(file, body);
  const script = `
    const http = require('node:http');
    const body = require('node:fs').readFileSync(${JSON.stringify(file)});
    const headers = { 'content-type': ${JSON.stringify(contentType)}, 'cache-control': 'no-store', 'content-length': body.length };
    const server = http.createServer((req, res) => { res.writeHead(200, headers); res.end(body); });
    server.keepAliveTimeout = 5000;
    server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));`;
  const [command, args] = pinnedCommand(SERVER_CPU, [process.execPath, '-e', script]);
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (code) => reject(new Error(`bare server exited ${String(code)}`)));
  });
  return { url: `http://127.0.0.1:${port}`, close: () => child.kill('SIGKILL') };
}

async function bytesOf(url: string): Promise<{ body: Buffer; contentType: string; status: number }> {
  const res = await fetch(url);
  return { body: Buffer.from(await res.arrayBuffer()), contentType: res.headers.get('content-type') ?? 'application/json', status: res.status };
}

interface Comparison {
  readonly ours: Load[];
  readonly bare: Load[];
  /** The daemon's event-loop lag p99 over each of its rounds, when asked for. */
  readonly lags: number[];
}

interface CompareOptions {
  readonly rounds: number;
  readonly seconds: number;
  /** Reads the daemon's event-loop lag since the previous read (called around each daemon round). */
  readonly lagOf?: () => Promise<number>;
}

/**
 * The daemon's path vs a bare server with the same bytes, in interleaved rounds: the daemon's
 * process and the bare server's both pinned to SERVER_CPU, the load generator to LOAD_CPU.
 */
async function compare(load: LoadGenerator, name: string, daemon: RunningDaemon, daemonUrl: string, opts: CompareOptions): Promise<Comparison> {
  const sample = await bytesOf(daemonUrl);
  expect(sample.status).toBe(200);
  pin(daemon.child.pid as number, SERVER_CPU);
  const bare = await bareServer(sample.body, sample.contentType);
  try {
    await load.run(daemonUrl, WARMUP_S);
    await load.run(bare.url, WARMUP_S);
    const ours: Load[] = [];
    const bares: Load[] = [];
    const lags: number[] = [];
    const { lagOf } = opts;
    const runOurs = async (): Promise<void> => {
      // The daemon's event-loop lag is read around its own load only (while the bare server is
      // hammered, the daemon merely waits for its CPU).
      await lagOf?.();
      ours.push(await load.run(daemonUrl, opts.seconds));
      if (lagOf) lags.push(await lagOf());
    };
    const runBare = async (): Promise<void> => {
      bares.push(await load.run(bare.url, opts.seconds));
    };
    for (let round = 0; round < opts.rounds; round++) {
      if (round % 2 === 0) {
        await runOurs();
        await runBare();
      } else {
        await runBare();
        await runOurs();
      }
    }
    process.stdout.write(
      `${name} rounds (ours/bare req/s${PINNED ? `; servers on CPU ${SERVER_CPU}, load on CPU ${LOAD_CPU}` : '; not pinned'}): ` +
        `${ours.map((o, i) => `${Math.round(o.rps)}/${Math.round((bares[i] as Load).rps)}=${(o.rps / (bares[i] as Load).rps).toFixed(3)}`).join(' ')}\n`,
    );
    expect(ours.reduce((n, r) => n + r.errors, 0)).toBe(0);
    expect(ours.reduce((n, r) => n + r.non2xx, 0)).toBe(0);
    return { ours, bare: bares, lags };
  } finally {
    bare.close();
  }
}

const rates = (c: Comparison): { values: number[]; baselines: number[] } => ({ values: c.ours.map((l) => l.rps), baselines: c.bare.map((l) => l.rps) });
const p99s = (c: Comparison): { values: number[]; baselines: number[] } => ({ values: c.ours.map((l) => l.p99), baselines: c.bare.map((l) => l.p99) });

/** prom-client's monitorEventLoopDelay resolution: each sample is the gap between two 10 ms timer ticks. */
const LAG_RESOLUTION_MS = 10;

/**
 * The daemon's event-loop delay p99 since the previous scrape (prom-client resets the histogram
 * on each collect), as lag beyond the sampling interval: an idle loop reads 0.
 */
async function eventLoopLagP99Ms(base: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  // Labelled by member (monitor_instance) since several daemons can share a port.
  const m = /^nodejs_eventloop_lag_p99_seconds(?:\{[^}]*\})? (\S+)$/m.exec(text);
  if (!m) throw new Error('nodejs_eventloop_lag_p99_seconds missing from /metrics');
  return Math.max(0, Number(m[1]) * 1000 - LAG_RESOLUTION_MS);
}

function expectTargetsMet(rows: readonly BenchResult[]): void {
  expect(failed(rows), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
}

describe('health endpoint and probe cycle', () => {
  const open: Array<{ daemon?: RunningDaemon; fx?: Fixture }> = [];
  let load: LoadGenerator;
  beforeAll(() => {
    load = startLoadGenerator();
  });
  afterAll(async () => {
    load.close();
    for (const o of open) {
      await o.daemon?.stop('SIGINT');
      await o.fx?.close();
    }
  });

  it('health_endpoint: /health and /health/live vs a bare node:http server with the same bytes', async () => {
    const fx = await realmsFixture(10);
    const daemon = spawnDaemon({ ...daemonEnv(fx.db.url, fx.sim), PROBE_SCHEDULE: '*/5 * * * * *', LOG_LEVEL: 'info' });
    open.push({ daemon, fx });
    const base = await daemon.url();
    // Wait until /health lists every realm (after the first cycle), so the bytes are the real document.
    for (let i = 0; i < 100; i++) {
      const doc = (await (await fetch(`${base}/health`)).json()) as { checks: Record<string, unknown[]> };
      if ((doc.checks['quickbooks:connection'] ?? []).length === 10) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const health = await compare(load, 'health_endpoint', daemon, `${base}/health`, JUDGED);
    const live = await compare(load, 'health_endpoint_live', daemon, `${base}/health/live`, JUDGED);
    const rows = [
      ratioAtLeast('health_endpoint', 'req/s', rates(health), 0.85),
      excessAtMost('health_endpoint_p99', 'ms', p99s(health), P99_OVER_BARE_MS),
      ratioAtLeast('health_endpoint_live', 'req/s', rates(live), 0.85),
      excessAtMost('health_endpoint_live_p99', 'ms', p99s(live), P99_OVER_BARE_MS),
    ];
    record(...rows);
    expectTargetsMet(rows);
  });

  it('probe_cycle and health_endpoint_under_probe: 1,000 realms, 50 ms simulator latency, concurrency 20', async () => {
    const fx = await realmsFixture(1000);
    fx.sim.latencyMs = 50;
    const daemon = spawnDaemon({
      ...daemonEnv(fx.db.url, fx.sim),
      PROBE_SCHEDULE: '*/4 * * * * *',
      PROBE_CONCURRENCY: '20',
      PROBE_TIMEOUT_MS: '10000',
      LOG_LEVEL: 'info',
    });
    open.push({ daemon, fx });
    const base = await daemon.url();

    // probe_cycle: the median of cycles 2 to 8 (the first also opens connections and warms up),
    // nothing else loading the machine meanwhile.
    const CYCLES = 8;
    const cycles = [];
    for (let n = 1; n <= CYCLES; n++) cycles.push(await daemon.waitFor('scheduler.cycle_completed', { count: n, timeoutMs: 60_000 }));
    for (const c of cycles) expect(c).toMatchObject({ realms: 1000, pass: 1000, fail: 0 });
    const idealMs = (1000 * 50) / 20;
    const measured = cycles.slice(1).map((c) => Number(c.durationMs));
    // Lower is better here: each cycle's ratio is ideal / actual.
    const cycleRatios = measured.map((ms) => idealMs / ms);
    const cycleRatio = median(cycleRatios);
    const cycle: BenchResult = {
      name: 'probe_cycle',
      value: median(measured),
      unit: 'ms',
      baseline: idealMs,
      ratio: cycleRatio,
      judged: 'ratio',
      spread: [Math.min(...cycleRatios), Math.max(...cycleRatios)],
      rounds: measured.length,
      target: 'ideal/actual >= 0.8',
      verdict: cycleRatio >= 0.8 ? 'pass' : 'fail',
      command: COMMAND,
    };
    // Every result recorded: rows equal the probes logged so far (results land before the cycle line).
    const logged = daemon.events('probe.succeeded').length + daemon.events('probe.failed').length;
    const rows = Number((await fx.db.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n);
    expect(rows).toBeGreaterThanOrEqual(CYCLES * 1000);
    expect(rows).toBeLessThanOrEqual(logged);

    // health_endpoint_under_probe: cycles keep running (every 4 s, each about 3 s) during the load.
    // The target is the event-loop lag while /health/live is loaded (the probes are what is under
    // test); the lag while /health's 1,000-realm document (about 250 KB) is served back to back is
    // reported beside it: there the loop is busy writing responses, not probing.
    const cyclesBefore = daemon.events('scheduler.cycle_completed').length;
    const lagOf = (): Promise<number> => eventLoopLagP99Ms(base);
    const live = await compare(load, 'health_endpoint_live_under_probe', daemon, `${base}/health/live`, { ...UNDER_PROBE, lagOf });
    const health = await compare(load, 'health_endpoint_under_probe', daemon, `${base}/health`, { ...UNDER_PROBE, lagOf });
    expect(daemon.events('scheduler.cycle_completed').length - cyclesBefore).toBeGreaterThanOrEqual(4);
    const judged = [cycle, atMost('event_loop_lag_p99_under_probe', 'ms', { values: live.lags }, 20)];
    record(
      cycle,
      reported('health_endpoint_live_under_probe', 'req/s', rates(live)),
      reported('health_endpoint_live_under_probe_p99', 'ms', p99s(live)),
      reported('health_endpoint_under_probe', 'req/s', rates(health)),
      reported('health_endpoint_under_probe_p99', 'ms', p99s(health)),
      judged[1] as BenchResult,
      reported('event_loop_lag_p99_serving_health_under_probe', 'ms', { values: health.lags }),
    );
    expectTargetsMet(judged);
  });
});
