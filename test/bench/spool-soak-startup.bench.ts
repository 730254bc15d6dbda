/**
 * spool_replay (100,000 spooled results replayed vs the same rows through COPY), soak_memory
 * (20,000 probes in the daemon, heap and handles after warm-up vs at the end) and startup
 * (process start to /health/ready 200 vs `node -e 0`), each with its baseline from this run.
 * Each is several rounds, the measured side and its baseline alternating, judged on the median
 * with the spread printed beside it (results.ts).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.js';
import { insertProbeResults } from '../../src/db/health-queries.js';
import { CURRENT_FILE, Spool } from '../../src/recorder/spool.js';
import { freePort } from '../../src/dev/embedded-postgres.js';
import type { ProbeResult } from '../../src/probe-result.js';
import { daemonEnv, MAIN } from '../support/daemon.js';
import { migratedDatabase } from '../support/qbo.js';
import { atLeast, atMost, COMMAND, failed, median, ratioAtLeast, record, reported, type BenchResult } from './results.js';
import { quiet, realmsFixture } from '../support/realms.js';

const SOAK_DRIVER = fileURLToPath(new URL('./soak-driver.mjs', import.meta.url));
/** Settled samples (idle connections closed, forced GC) before and after the soak, compared pairwise. */
const SETTLED_SAMPLES = 5;

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
    const ROUNDS = 5;
    const rows = results(N);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-spool-bench-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // The spool's own format: one JSON line per result, instants as ISO strings.
    const spoolText = `${rows.map((r) => JSON.stringify({ ...r, checkedAt: r.checkedAt.toISOString(), refreshTokenExpiresAt: r.refreshTokenExpiresAt?.toISOString() })).join('\n')}\n`;

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
    const count = async (d: { query: typeof copyDb.query }): Promise<number> => Number((await d.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n);
    const copyOnce = async (): Promise<number> => {
      await copyDb.query('TRUNCATE quickbooks_connection_health');
      const start = performance.now();
      await copyDb.query(
        `COPY quickbooks_connection_health (connected, error, checked_at, realm_id, probe_id, status, error_code, http_status, latency_ms, intuit_tid, refresh_token_expires_at) FROM '${csv}' WITH (FORMAT csv)`,
      );
      const rate = N / ((performance.now() - start) / 1000);
      expect(await count(copyDb)).toBe(N);
      return rate;
    };

    const db = await migratedDatabase();
    cleanups.push(() => db.drop());
    const pool = createPool({ databaseUrl: db.url, applicationName: 'bench' }, quiet);
    cleanups.push(() => pool.end());
    const replayOnce = async (round: number): Promise<number> => {
      await db.query('TRUNCATE quickbooks_connection_health');
      const spoolDir = path.join(dir, `spool-${round}`);
      mkdirSync(spoolDir);
      writeFileSync(path.join(spoolDir, CURRENT_FILE), spoolText);
      const spool = new Spool(spoolDir, quiet);
      expect(await spool.open()).toBe(N);
      const start = performance.now();
      const outcome = await spool.replay((batch) => insertProbeResults(pool, batch));
      const rate = N / ((performance.now() - start) / 1000);
      await spool.close();
      expect(outcome).toMatchObject({ replayed: N, inserted: N, skipped: 0 });
      expect(await count(db)).toBe(N);
      return rate;
    };

    // Interleaved, the order flipping each round: replay, COPY, COPY, replay, …
    const replayRates: number[] = [];
    const copyRates: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0) {
        replayRates.push(await replayOnce(round));
        copyRates.push(await copyOnce());
      } else {
        copyRates.push(await copyOnce());
        replayRates.push(await replayOnce(round));
      }
    }
    const measured = [
      ratioAtLeast('spool_replay', 'rows/s', { values: replayRates, baselines: copyRates }, 0.3),
      atLeast('spool_replay_rate', 'rows/s', { values: replayRates, baselines: copyRates }, 10_000),
    ];
    record(...measured);
    expect(failed(measured), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
  });

  it('soak_memory: 20,000 probes over 10 realms after 20,000 of warm-up; heap growth and handles judged, RSS reported', async () => {
    const fx = await realmsFixture(10);
    cleanups.push(() => fx.close());
    const env = {
      ...daemonEnv(fx.db.url, fx.sim),
      PROBE_SCHEDULE: '0 0 1 1 *',
      LOG_LEVEL: 'info',
      SOAK_WARMUP_CYCLES: '2000',
      SOAK_CYCLES: '2000',
      SOAK_SAMPLE_EVERY: '200',
      SOAK_SETTLE_MS: '32000',
      SOAK_SETTLED_SAMPLES: String(SETTLED_SAMPLES),
    };
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
    const { before, during, after } = JSON.parse(out) as { before: Sample[]; during: Sample[]; after: Sample[] };
    const MB = 1024 * 1024;
    const show = (xs: Sample[]): string => xs.map((x) => `${x.probes} ${(x.rss / MB).toFixed(1)} ${(x.heapUsed / MB).toFixed(1)} ${x.handles}`).join(' | ');
    process.stdout.write(`soak samples (probes rss heapUsed handles), settled before: ${show(before)}\n  during (pool connections open, not compared): ${show(during)}\n  settled after: ${show(after)}\n`);
    expect(before).toHaveLength(SETTLED_SAMPLES);
    expect(after).toHaveLength(SETTLED_SAMPLES);
    expect((after[0] as Sample).probes - (before[0] as Sample).probes).toBe(20_000);
    const rows = Number((await fx.db.query('SELECT count(*) AS n FROM quickbooks_connection_health')).rows[0].n);
    expect(rows).toBe((after[0] as Sample).probes);

    // Like is compared with like: each settled sample after the soak with the settled sample
    // taken in the same position before it (after the pool's idle connections closed, after a
    // forced GC). The heap is judged; RSS is only reported, because the allocator returns freed
    // pages to the system lazily and RSS moves by tens of MB either way with no leak at all.
    const growth = (key: 'rss' | 'heapUsed'): number[] => after.map((a, i) => (a[key] - (before[i] as Sample)[key]) / MB);
    const heap = atMost('soak_memory_heap_growth', 'MB', { values: growth('heapUsed') }, 10);
    const rss = reported('soak_memory_rss_growth', 'MB', { values: growth('rss') });
    const handleCounts = after.map((a) => a.handles);
    const sameHandles = after.every((a, i) => isDeepStrictEqual(a.byType, (before[i] as Sample).byType));
    const handles: BenchResult = {
      name: 'soak_memory_handles',
      value: median(handleCounts),
      unit: 'handles',
      baseline: median(before.map((b) => b.handles)),
      ratio: null,
      judged: 'value',
      spread: [Math.min(...handleCounts), Math.max(...handleCounts)],
      rounds: after.length,
      target: 'unchanged by type',
      verdict: sameHandles ? 'pass' : 'fail',
      command: COMMAND,
    };
    record(heap, rss, handles);
    expect(failed([heap, handles]), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
    expect(after.map((a) => a.byType), 'active handles by type, after the soak vs before it').toEqual(before.map((b) => b.byType));
  });

  it('startup: process start to /health/ready 200 (migrations applied) vs node -e 0', async () => {
    const ROUNDS = 7;
    const fx = await realmsFixture(10);
    cleanups.push(() => fx.close());
    const nodeOnce = (): number => {
      const t = performance.now();
      execFileSync(process.execPath, ['-e', '0']);
      return performance.now() - t;
    };
    const daemonOnce = async (): Promise<number> => {
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
      const took = performance.now() - t;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      await exited;
      return took;
    };
    const node: number[] = [];
    const daemon: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0) {
        daemon.push(await daemonOnce());
        node.push(nodeOnce());
      } else {
        node.push(nodeOnce());
        daemon.push(await daemonOnce());
      }
    }
    const startup = atMost('startup', 'ms', { values: daemon, baselines: node }, 1500);
    record(startup);
    expect(failed([startup]), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
  });
});
