/**
 * What machines read from the real daemon, checked by their own parsers: `/metrics` through
 * Prometheus' linter (`promtool check metrics`, Debian package `prometheus`; `.ci/run` installs
 * it), after a probe, a spooled outage and its replay, so every family has series; the health
 * endpoints as application/health+json.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { daemonEnv, spawnDaemon, withoutInstanceLabel, type RunningDaemon } from './support/daemon.js';
import { realmsFixture, type Fixture } from './support/realms.js';

/** promtool from PATH, or where Debian puts it. */
function findPromtool(): string | undefined {
  const which = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  const onPath = which.stdout.trim();
  if (which.status === 0 && onPath !== '') return onPath;
  return existsSync('/usr/bin/promtool') ? '/usr/bin/promtool' : undefined;
}

const promtool = findPromtool();
if (!promtool) {
  // Visible in the run's output: the lint is skipped here, never silently passed.
  console.warn('metrics-lint: SKIPPED, promtool is not installed (apt-get install prometheus; .ci/run installs it)');
}

/** promtool's verdict on an exposition: exit code and everything it printed. */
function lint(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtool as string, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

/** The value of the sample `series` (name and labels exactly as exposed), or undefined. */
function sampleOf(text: string, series: string): number | undefined {
  const line = withoutInstanceLabel(text).text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Polls `check` until it returns a value (or fails after `timeoutMs` naming what it waited for). */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the real daemon, read by the parsers of its readers', () => {
  let fx: Fixture;
  let daemon: RunningDaemon | undefined;

  beforeAll(async () => {
    fx = await realmsFixture(1);
  });
  afterAll(async () => {
    await daemon?.stop();
    await fx?.close();
  });

  it.skipIf(!promtool)(
    '`promtool check metrics` reports nothing on /metrics, after a probe, a spooled outage and its replay; qbhealth_spool_replayed_total counts the replayed rows',
    async () => {
      const realm = fx.realms[0] as string;
      daemon = spawnDaemon(daemonEnv(fx.db.url, fx.sim));
      const base = await daemon.url();
      const scrape = async (): Promise<string> => {
        const res = await fetch(`${base}/metrics`);
        expect(res.status).toBe(200);
        return res.text();
      };
      const first = await until('a probe of the realm in /metrics', async () => {
        const t = await scrape();
        return withoutInstanceLabel(t).text.includes(`probe_success{realm_id="${realm}"} 1`) ? t : undefined;
      });
      expect(await lint(first)).toEqual({ code: 0, output: '' });

      // The table goes away: results wait in the spool; it comes back: they are replayed.
      await fx.db.query('ALTER TABLE quickbooks_connection_health RENAME TO quickbooks_connection_health_away');
      await until('2 spooled results', async () => ((sampleOf(await scrape(), 'qbhealth_spool_appended_total') ?? 0) >= 2 ? true : undefined));
      await fx.db.query('ALTER TABLE quickbooks_connection_health_away RENAME TO quickbooks_connection_health');
      const text = await until('the spool replayed', async () => {
        const t = await scrape();
        const appended = sampleOf(t, 'qbhealth_spool_appended_total') ?? 0;
        return appended >= 2 && sampleOf(t, 'qbhealth_spool_pending') === 0 && sampleOf(t, 'qbhealth_spool_replayed_total') === appended ? t : undefined;
      });
      // The log's spool.replayed lines (written asynchronously) add up to the same number.
      const replayed = sampleOf(text, 'qbhealth_spool_replayed_total');
      const running = daemon;
      await until('spool.replayed lines adding up to the counter', async () =>
        running.events('spool.replayed').reduce((n, l) => n + (typeof l.count === 'number' ? l.count : 0), 0) === replayed ? true : undefined,
      );

      // Every family we expose is present with data, and none of prom-client's misnamed gauges.
      expect(sampleOf(text, `probe_duration_seconds{realm_id="${realm}"}`)).toBeGreaterThan(0);
      expect(sampleOf(text, 'qbhealth_companyinfo_duration_seconds_count')).toBeGreaterThan(0);
      expect(withoutInstanceLabel(text).text).toContain(`qbhealth_refresh_token_expiry_seconds{realm_id="${realm}"}`);
      expect(text).toMatch(/^nodejs_active_handles\{type="/m);
      expect(text).not.toMatch(/^nodejs_active_(handles|requests|resources)_total/m);

      expect(await lint(text)).toEqual({ code: 0, output: '' });
    },
    60_000,
  );

  it('/health/live, /health/ready and /health all answer application/health+json', async () => {
    daemon ??= spawnDaemon(daemonEnv(fx.db.url, fx.sim));
    const base = await daemon.url();
    for (const path of ['/health/live', '/health/ready', '/health']) {
      const res = await until(`${path} to pass`, async () => {
        const r = await fetch(`${base}${path}`);
        const body = (await r.json()) as { status: string };
        return r.status === 200 ? { r, body } : undefined;
      });
      expect(res.r.headers.get('content-type'), path).toBe('application/health+json');
      expect(['pass', 'warn'], path).toContain(res.body.status);
    }
  });
});
