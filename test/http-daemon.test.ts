/**
 * The health server's unauthenticated surface, seen from outside the real daemon: a flood of
 * `/status` windows never takes the connections the probes record with (no spooled result, no
 * false `database` alert), and an exposed port without HEALTH_TOKEN is announced at start.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STATUS_APPLICATION_NAME } from '../src/db/status.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon } from './support/daemon.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase } from './support/qbo.js';

const HEALTH_TOKEN = 'health-token-for-flood-tests-0042';
const REALMS = ['9341460001', '9341460002'];
// A history heavy enough that each report costs PostgreSQL real work (percentiles, buckets).
const HISTORY_ROWS = 300_000;
/** What a probe that cannot get a connection leads to. */
const DATABASE_TROUBLE = ['db.write_failed', 'spool.appended', 'probe.skipped', 'db.connection_error'];

/** Polls `condition` (log lines arrive on their own) until it holds. */
async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the real daemon under a flood of /status windows', () => {
  let sim: Simulator;
  let db: TestDatabase;

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    db = await migratedDatabase();
    const env = daemonEnv(db.url, sim);
    for (const realm of REALMS) {
      const imported = await runQbhealth(['import-tokens', '--realm-id', realm], env, { stdin: sim.addRealm(realm, `Flood Co ${realm}`) });
      expect(imported.code, imported.stderr).toBe(0);
    }
    await db.query(
      `INSERT INTO quickbooks_connection_health (connected, checked_at, created_at, realm_id, probe_id, status, error_code, latency_ms)
       SELECT true, now() - i * interval '30 milliseconds', now(), '9341460999', gen_random_uuid(), 'pass', 'ok', i % 700
         FROM generate_series(1, $1::int) AS i`,
      [HISTORY_ROWS],
    );
    await db.query('ANALYZE quickbooks_connection_health');
  }, 120_000);
  afterAll(async () => {
    await sim?.close();
    await db?.drop();
  });

  it('200 distinct /status requests in flight through three probe cycles: probes keep recording, no database alert, at most 2 status connections', async () => {
    const daemon = spawnDaemon({ ...daemonEnv(db.url, sim), HEALTH_TOKEN, ALERT_AFTER_FAILURES: '1' });
    try {
      const base = await daemon.url();
      await daemon.waitFor('scheduler.cycle_completed', { count: 2 });
      const cyclesBefore = daemon.events('scheduler.cycle_completed').length;
      const rowsBefore = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id <> '9341460999'")).rows[0]!.n;

      // A sustained flood: 200 requests in flight at all times, every one a different window (ISO
      // instants a second apart, all covering the history), for three probe cycles.
      const startMs = Date.now() - 3 * 3_600_000;
      const statuses: number[] = [];
      let sent = 0;
      let flooding = true;
      const client = async (): Promise<void> => {
        while (flooding) {
          const since = new Date(startMs - sent++ * 1000).toISOString();
          const r = await fetch(`${base}/status?since=${since}`, { headers: { authorization: `Bearer ${HEALTH_TOKEN}` } });
          await r.arrayBuffer();
          statuses.push(r.status);
        }
      };
      const clients = Array.from({ length: 200 }, client);
      let most = 0;
      const sampler = (async () => {
        while (flooding) {
          const n = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1', [STATUS_APPLICATION_NAME])).rows[0]!.n;
          most = Math.max(most, n);
        }
      })();
      // Until three more cycles completed, or the first sign of the probes' connections starving.
      const starving = (): boolean =>
        daemon.lines.some((l) => DATABASE_TROUBLE.includes(String(l.event)) || (l.event === 'alert.raised' && l.kind === 'database'));
      try {
        await until(() => starving() || daemon.events('scheduler.cycle_completed').length >= cyclesBefore + 3, 60_000);
      } finally {
        flooding = false;
        await Promise.all([...clients, sampler]);
      }

      // Each request got an answer: the report, or "not now" (never a 500, never a hang).
      expect(statuses.every((s) => s === 200 || s === 503), JSON.stringify(statuses)).toBe(true);
      expect(statuses).toContain(200);
      expect(most).toBeLessThanOrEqual(2);

      // The probes recorded straight into PostgreSQL the whole time.
      const rowsAfter = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id <> '9341460999'")).rows[0]!.n;
      expect(rowsAfter).toBeGreaterThanOrEqual(rowsBefore + 2 * REALMS.length);
      expect((await daemon.stop('SIGINT')).code).toBe(0);
      for (const event of DATABASE_TROUBLE) expect(daemon.events(event), event).toEqual([]);
      expect(daemon.events('alert.raised').filter((l) => l.kind === 'database')).toEqual([]);
      expect(daemon.events('db.read_failed').filter((l) => l.what !== 'status report')).toEqual([]);
      const database = await db.query("SELECT state FROM quickbooks_alert_state WHERE kind = 'database'");
      expect(database.rows).toEqual([]);
      const probes = daemon.events('probe.succeeded').length + daemon.events('probe.failed').length;
      const rows = (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM quickbooks_connection_health WHERE realm_id <> '9341460999'")).rows[0]!.n;
      expect(rows).toBe(probes);
    } finally {
      await daemon.stop('SIGKILL');
    }
  }, 120_000);
});

describe('the real daemon on an address others can reach', () => {
  let db: TestDatabase;
  const nowhere = { tokenUrl: 'http://127.0.0.1:9/token', revokeUrl: 'http://127.0.0.1:9/revoke', url: 'http://127.0.0.1:9' };

  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function startedLines(env: Record<string, string>): Promise<Array<Record<string, unknown>>> {
    const daemon = spawnDaemon({ ...daemonEnv(db.url, nowhere), ...env });
    try {
      await daemon.url();
      expect((await daemon.stop('SIGINT')).code).toBe(0);
      return daemon.lines;
    } finally {
      await daemon.stop('SIGKILL');
    }
  }

  it('HOST=0.0.0.0 without HEALTH_TOKEN warns at start, before daemon.started, naming the risk', async () => {
    const lines = await startedLines({ HOST: '0.0.0.0', PORT: '0' });
    const warned = lines.findIndex((l) => l.event === 'http.unauthenticated');
    expect(warned).toBeGreaterThanOrEqual(0);
    expect(warned).toBeLessThan(lines.findIndex((l) => l.event === 'daemon.started'));
    expect(lines[warned]).toMatchObject({ level: 40, host: '0.0.0.0' });
    expect(String(lines[warned]?.msg)).toMatch(/anyone who can reach this port .*realm id, company name and error/);
    expect(lines.filter((l) => l.event === 'http.unauthenticated')).toHaveLength(1);
  });

  it('on loopback, or with HEALTH_TOKEN, it does not', async () => {
    expect((await startedLines({ HOST: '127.0.0.1', PORT: '0' })).filter((l) => l.event === 'http.unauthenticated')).toEqual([]);
    expect((await startedLines({ HOST: '0.0.0.0', PORT: '0', HEALTH_TOKEN })).filter((l) => l.event === 'http.unauthenticated')).toEqual([]);
  });
});
