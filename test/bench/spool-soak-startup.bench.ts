/**
 * spool_replay (100,000 spooled results replayed vs the same rows through COPY), soak_memory
 * (20,000 probes in the daemon, memory and handles after warm-up vs at the end) and startup
 * (process start to /health/ready 200 vs `node -e 0`), each with its baseline from this run.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { insertProbeResults } from '../../src/db/queries.js';
import { CURRENT_FILE, Spool } from '../../src/recorder/spool.js';
import { freePort } from '../../src/dev/embedded-postgres.js';
import type { ProbeResult } from '../../src/probe/result.js';
import { daemonEnv, MAIN } from '../support/daemon.js';
import { migratedDatabase } from '../support/qbo.js';
import { atLeast, atMost, COMMAND, ratioAtLeast, record, type BenchResult } from './results.js';
import { percentile, quiet, realmsFixture } from '../support/realms.js';

const SOAK_DRIVER = fileURLToPath(new URL('./soak-driver.mjs', import.meta.url));

function results(n: number): ProbeResult[] {
  const start = Date.parse('2026-11-01T00:00:00Z');
  return Array.from({ length: n }, (_, i) => {
    const failed = i % 10 === 0;
    return {
      probeId: randomUUID(),
      realmId: String(9_100_000_000 + (i % 50)),
      checkedAt: new Date(start + i * 1000),
      connected: !failed,
      status: failed ? 'fail' : 'pass',
      errorCode: failed ? 'server_error' : 'ok',
      error: failed ? 'Intuit HTTP 503 (text/html, 58 bytes)' : undefined,
      httpStatus: failed ? 503 : 200,
      latencyMs: 40 + (i % 60),
      intuitTid: `1-${i.toString(16)}-abcdef`,
      refreshTokenExpiresAt: new Date(start + 100 * 86_400_000),
      companyName: undefined,
    };
  });
}

const csvField = (v: unknown): string => (v === undefined || v === null ? '' : `"${String(v).replaceAll('"', '""')}"`);

describe('spool, soak and start-up', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('spool_replay: 100,000 spooled results vs COPY of the same rows', async () => {
    const N = 100_000;
    const rows = results(N);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-spool-bench-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // The spool's own format: one JSON line per result, instants as ISO strings.
    writeFileSync(
      path.join(dir, CURRENT_FILE),
      `${rows.map((r) => JSON.stringify({ ...r, checkedAt: r.checkedAt.toISOString(), refreshTokenExpiresAt: r.refreshTokenExpiresAt?.toISOString() })).join('\n')}\n`,
    );

    // Baseline: COPY from a server-side CSV of the same rows into an identical, empty table.
    const copyDb = await migratedDatabase();
    cleanups.push(() => copyDb.drop());
    const csv = path.join(dir, 'rows.csv');
    writeFileSync(
      csv,
      `${rows
        .map((r) =>
          [r.connected, r.error, r.checkedAt.toISOString(), r.realmId, r.probeId, r.status, r.errorCode, r.httpStatus, r.latencyMs, r.intuitTid, r.refreshTokenExpiresAt?.toISOString()]
            .map(csvField)
            .join(','),
        )
        .join('\n')}\n`,
    );
    chmodSync(dir, 0o755);
    chmodSync(csv, 0o644);
    const copyStart = performance.now();
    await copyDb.query(
      `COPY quickbooks_connection_health (connected, error, checked_at, realm_id, probe_id, status, error_code, http_status, latency_ms, intuit_tid, refresh_token_expires_at) FROM '${csv}' WITH (FORMAT csv)`,
    );
    const copyRate = N / ((performance.now() - copyStart) / 1000);
    expect(Number((await copyDb.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n)).toBe(N);

    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    const spool = new Spool(dir, quiet);
    expect(await spool.open()).toBe(N);
    const replayStart = performance.now();
    const outcome = await spool.replay((batch) => insertProbeResults(pool, batch));
    const replayRate = N / ((performance.now() - replayStart) / 1000);
    await spool.close();
    expect(outcome).toMatchObject({ replayed: N, inserted: N, skipped: 0 });
    expect(Number((await db.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n)).toBe(N);

    const ratio = ratioAtLeast('spool_replay', replayRate, 'rows/s', copyRate, 0.3);
    const floor = atLeast('spool_replay_rate', replayRate, 'rows/s', 10_000, copyRate);
    record(ratio, floor);
    expect(ratio.pass, `replay ${Math.round(replayRate)} rows/s vs COPY ${Math.round(copyRate)}`).toBe(true);
    expect(floor.pass).toBe(true);
  });

  it('soak_memory: 20,000 probes over 10 realms after 20,000 of warm-up; RSS and heap growth, handles unchanged', async () => {
    const fx = await realmsFixture(10);
    cleanups.push(() => fx.close());
    const env = { ...daemonEnv(fx.db.url, fx.sim), PROBE_SCHEDULE: '0 0 1 1 *', LOG_LEVEL: 'info', SOAK_WARMUP_CYCLES: '2000', SOAK_CYCLES: '2000', SOAK_SAMPLE_EVERY: '200', SOAK_SETTLE_MS: '32000' };
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', SOAK_DRIVER], { env: { PATH: process.env.PATH ?? '', TZ: 'Asia/Kolkata', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`soak driver exited ${String(code)}: ${stderr}`))));
    });
    interface Sample {
      probes: number;
      rss: number;
      heapUsed: number;
      handles: number;
      byType: Record<string, number>;
    }
    const { samples } = JSON.parse(out) as { samples: Sample[] };
    process.stdout.write(`soak samples (probes rss heapUsed handles): ${samples.map((x) => `${x.probes} ${(x.rss / 1048576).toFixed(1)} ${(x.heapUsed / 1048576).toFixed(1)} ${x.handles}`).join(' | ')}\n`);
    // The first 20,000 probes warm up (JIT, pool, allocator arenas: RSS climbs, then levels off);
    // growth is measured over the next 20,000, comparing the median of the first three samples
    // with the median of the last three, so one sample caught mid-allocation does not decide it.
    const median3 = (xs: Sample[], key: 'rss' | 'heapUsed'): number => (xs.map((x) => x[key]).sort((a, b) => a - b)[1] as number);
    const before = { ...(samples[0] as Sample), rss: median3(samples.slice(0, 3), 'rss'), heapUsed: median3(samples.slice(0, 3), 'heapUsed') };
    const after = { ...(samples.at(-1) as Sample), rss: median3(samples.slice(-3), 'rss'), heapUsed: median3(samples.slice(-3), 'heapUsed') };
    expect(after.probes - before.probes).toBe(20_000);
    const rows = Number((await fx.db.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n);
    expect(rows).toBe(after.probes);
    const MB = 1024 * 1024;
    const rss = atMost('soak_memory_rss_growth', (after.rss - before.rss) / MB, 'MB', 10, before.rss / MB);
    const heap = atMost('soak_memory_heap_growth', (after.heapUsed - before.heapUsed) / MB, 'MB', 10, before.heapUsed / MB);
    const handles: BenchResult = {
      name: 'soak_memory_handles',
      value: after.handles,
      unit: 'handles',
      baseline: before.handles,
      ratio: after.handles / before.handles,
      target: 'unchanged',
      pass: after.handles === before.handles,
      command: COMMAND,
    };
    record(rss, heap, handles);
    expect(rss.pass, `RSS ${before.rss} -> ${after.rss}`).toBe(true);
    expect(heap.pass, `heap ${before.heapUsed} -> ${after.heapUsed}`).toBe(true);
    expect(after.byType, 'active handles by type, after warm-up vs at the end').toEqual(before.byType);
  });

  it('startup: process start to /health/ready 200 (migrations applied) vs node -e 0', async () => {
    const fx = await realmsFixture(10);
    cleanups.push(() => fx.close());
    const node: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      execFileSync(process.execPath, ['-e', '0']);
      node.push(performance.now() - t);
    }
    const daemon: number[] = [];
    for (let i = 0; i < 5; i++) {
      const port = await freePort();
      const env = { PATH: process.env.PATH ?? '', TZ: 'Asia/Kolkata', ...daemonEnv(fx.db.url, fx.sim), PORT: String(port), LOG_LEVEL: 'warn' };
      const t = performance.now();
      const child = spawn(process.execPath, [MAIN], { env, stdio: 'ignore' });
      let ready = false;
      while (!ready) {
        if (child.exitCode !== null) throw new Error(`the daemon exited ${child.exitCode} before it was ready`);
        ready = await fetch(`http://127.0.0.1:${port}/health/ready`).then(
          (r) => r.status === 200,
          () => false,
        );
        if (!ready) await new Promise((r) => setTimeout(r, 5));
      }
      daemon.push(performance.now() - t);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
    }
    const sorted = (a: number[]): number[] => [...a].sort((x, y) => x - y);
    const startup = atMost('startup', percentile(sorted(daemon), 50), 'ms', 1500, percentile(sorted(node), 50));
    record(startup);
    expect(startup.pass, `start-up ${startup.value} ms`).toBe(true);
  });
});
