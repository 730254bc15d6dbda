/**
 * Faults on the database's side, against the real daemon. Each case checks what the operator
 * sees (exit code, log event, alert, /health) and that nothing was lost: every probe logged is a
 * row or a spooled result, and after recovery a row. Cases that stop PostgreSQL run on a server
 * of their own; the others use a database of their own on the shared one.
 */
import { appendFileSync, chmodSync, mkdtempSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEmbeddedPostgres, type RunningPostgres } from '../../src/dev/embedded-postgres.js';
import { startSimulator, type Simulator } from '../../src/simulator/simulator.js';
import { readIncidents } from '../../src/db/incident-queries.js';
import { instanceSpoolDir } from '../../src/recorder/spool.js';
import { runQbhealth } from '../support/cli.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type RunningDaemon, type WebhookReceiver } from '../support/daemon.js';
import { adminUrl } from '../support/db.js';
import { CLIENT_ID, CLIENT_SECRET } from '../support/qbo.js';
import { realmsFixture, type Fixture } from '../support/realms.js';
import { attempted, dbPassword, expectNoSecrets, expectNothingLost, spooledIds } from './support.js';

const until = async (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> => {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};

describe('PostgreSQL stopped under the daemon (a server of its own)', () => {
  const PASSWORD = 'fault-suite-pg-password';
  let sim: Simulator;
  let hook: WebhookReceiver;
  let server: RunningPostgres | undefined;
  let dataDir: string;
  let port: number;
  let url: string;
  const start = async (): Promise<void> => {
    server = await startEmbeddedPostgres({ dataDir, port, password: PASSWORD, settings: { fsync: 'off' } });
  };
  const stop = async (): Promise<void> => {
    await server?.stop();
    server = undefined;
  };
  const query = async (text: string): Promise<{ rows: Array<Record<string, unknown>> }> => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return await client.query(text);
    } finally {
      await client.end();
    }
  };
  const env = (): Record<string, string> => ({ ...daemonEnv(url, sim), ALERT_WEBHOOK_URL: hook.url, ALERT_AFTER_FAILURES: '2' });

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    hook = await webhookReceiver();
    const parent = mkdtempSync(path.join(os.tmpdir(), 'qbhm-faultpg-'));
    chmodSync(parent, 0o755);
    dataDir = path.join(parent, 'data');
    port = await freePort();
    await start();
    url = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`;
    const e = env();
    expect((await runQbhealth(['migrate'], e)).code).toBe(0);
    for (const realm of ['9130350001', '9130350002']) {
      const imported = await runQbhealth(['import-tokens', '--realm-id', realm], e, { stdin: sim.addRealm(realm, `Fault Co ${realm}`) });
      expect(imported.code).toBe(0);
    }
  });
  afterAll(async () => {
    await server?.stop();
    await sim?.close();
    await hook?.close();
  });

  it('killed mid-run and restarted: spooled meanwhile, a database alert, readiness 503; replayed after, every probe a row', async () => {
    const e = env();
    const daemon = spawnDaemon(e);
    try {
      const base = await daemon.url();
      await daemon.waitFor('probe.succeeded', { count: 2 });
      const outageFrom = daemon.lines.length;
      await stop();
      await daemon.waitFor('spool.appended', { count: 2 });
      // A probe that needs PostgreSQL for its tokens (the access token refused, so a refresh is
      // due) is a result too, spooled like the others; no token is refreshed without the database.
      const refreshes = sim.stats.refreshes;
      sim.expireAccessTokens();
      const needingDb = await daemon.waitFor('probe.failed', { where: (l) => l.errorCode === 'database_unavailable' });
      expect(sim.stats.refreshes).toBe(refreshes);
      const raised = await daemon.waitFor('alert.raised', { where: (l) => l.kind === 'database' });
      expect(raised).toMatchObject({ severity: 'critical', summary: expect.stringContaining('results wait in the spool') });
      expect((await fetch(`${base}/health/ready`)).status).toBe(503);
      expect((await fetch(`${base}/health/live`)).status).toBe(200);
      const during = (await (await fetch(`${base}/health`)).json()) as { status: string; checks: Record<string, Array<{ status: string; observedValue?: number }>> };
      expect(during.status).toBe('fail');
      expect(during.checks['spool:pending']?.[0]?.observedValue).toBeGreaterThan(0);
      // /status reads PostgreSQL: it says so with a 503 (and a warn line), never a hang or a 500.
      const status = await fetch(`${base}/status`);
      expect(status.status).toBe(503);
      expect(await status.text()).toContain('cannot be read from PostgreSQL');
      // The warn line (logs are written asynchronously, so it may follow the response).
      await daemon.waitFor('db.read_failed', { where: (l) => l.what === 'status report' && l.level === 40 });
      expect(spooledIds(e.SPOOL_DIR as string).length).toBeGreaterThan(0);
      // The log stays readable through the outage: besides the probes' own lines, the spool's,
      // the cycle summaries and the alerts, each warning is written once (repeats are counted),
      // and no expected failure (PostgreSQL unreachable, a classified Intuit answer) has a stack.
      await daemon.waitFor('scheduler.cycle_completed', { count: 8, where: (l) => daemon.lines.indexOf(l) >= outageFrom });
      const outage = daemon.lines.slice(outageFrom);
      const perCycle = new Set(['probe.succeeded', 'probe.failed', 'scheduler.cycle_completed', 'spool.appended', 'alert.raised', 'alert.repeated', 'alert.resolved']);
      const repeated = outage.filter((l) => !perCycle.has(String(l.event)) && !(l.event === 'db.read_failed' && l.what === 'status report'));
      const kinds = repeated.map((l) => `${String(l.event)} ${String(l.msg)}`);
      expect(kinds.length, kinds.join('\n')).toBe(new Set(kinds).size);
      expect(outage.filter((l) => JSON.stringify(l.err ?? {}).includes('"stack"'))).toEqual([]);
      const cycles = outage.filter((l) => l.event === 'scheduler.cycle_completed').length;
      expect(cycles).toBeGreaterThanOrEqual(8);
      expect(outage.length).toBeLessThan(cycles * 5 + 20);
      await start();
      await daemon.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });
      await daemon.waitFor('alert.resolved', { where: (l) => l.kind === 'database' });
      await hook.waitFor('alert.resolved', 'database');
      await until('/health/ready 200', async () => (await fetch(`${base}/health/ready`)).status === 200);
      // The outage, held in memory while PostgreSQL was away, reaches the incident history once it answers.
      const history = async () => (await query(`SELECT event FROM quickbooks_alert_events WHERE kind = 'database' ORDER BY id`)).rows.map((r) => r.event);
      await until('the database incident in the history', async () => (await history()).includes('alert.resolved'));
      expect(await history()).toEqual(['alert.raised', 'alert.resolved']);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const incidents = await readIncidents(client).finally(() => client.end());
      const dbIncidents = incidents.filter((i) => i.kind === 'database');
      expect(dbIncidents).toHaveLength(1);
      expect(dbIncidents[0]).toMatchObject({ realmId: null, severity: 'critical', instance: e.FLEET_INSTANCE_ID, notifications: 2, cause: expect.stringContaining('results wait in the spool') });
      expect(dbIncidents[0]?.resolvedAt).not.toBeNull();
      expect(dbIncidents[0]?.durationMs).toBeGreaterThan(0);
      expect((await daemon.stop('SIGINT')).code).toBe(0);
      await expectNothingLost(query, e.SPOOL_DIR as string, [daemon], true);
      const row = (await query(`SELECT status, error_code FROM quickbooks_connection_health WHERE probe_id = '${String(needingDb.probeId)}'`)).rows[0];
      expect(row).toEqual({ status: 'fail', error_code: 'database_unavailable' });
      // The member's own database alert went straight to the webhook (the outbox is in the database
      // that failed), naming the member, with the key every member gives this alert.
      const database = hook.bodies.filter((b) => b.kind === 'database');
      expect(database.map((b) => b.event)).toEqual(['alert.raised', 'alert.resolved']);
      for (const b of database) expect(b).toMatchObject({ dedupKey: 'qbo-health-monitor:database:monitor', instance: e.FLEET_INSTANCE_ID, text: expect.stringContaining(`(instance ${e.FLEET_INSTANCE_ID})`) });
      expectNoSecrets([daemon], [...sim.issuedTokens(), PASSWORD]);
    } finally {
      await daemon.stop('SIGKILL');
      if (!server) await start();
    }
  });

  it('the spool unwritable while the database is down: fatal, logged, exit 75', async () => {
    const e = env();
    const daemon = spawnDaemon(e);
    try {
      await daemon.waitFor('probe.succeeded', { count: 2 });
      // Root ignores file modes, so the spool's file is pointed at a device that refuses every write.
      symlinkSync('/dev/full', path.join(instanceSpoolDir(e.SPOOL_DIR as string, e.FLEET_INSTANCE_ID as string, daemon.child.pid), 'current.jsonl'));
      await stop();
      const exit = await daemon.exited;
      expect(exit.code).toBe(75);
      const fatal = daemon.events('daemon.fatal');
      expect(fatal).toHaveLength(1);
      expect(String(fatal[0]?.msg)).toMatch(/spool/i);
      expect(daemon.events('db.write_failed').length).toBeGreaterThan(0);
      await start();
      // Every result is in the database, or was refused loudly: the probes after the last row are the ones the fatal line is about.
      const rows = (await query('SELECT count(*)::int AS n FROM quickbooks_connection_health')).rows[0]?.n as number;
      expect(rows).toBeGreaterThanOrEqual(2);
      expectNoSecrets([daemon], [...sim.issuedTokens(), PASSWORD]);
    } finally {
      await daemon.stop('SIGKILL');
      if (!server) await start();
    }
  });

  it('SIGKILL while spooling, a torn last line, then a restart: replayed, the torn line reported, every complete result a row', async () => {
    const e = env();
    const first = spawnDaemon(e);
    await first.waitFor('probe.succeeded', { count: 2 });
    await stop();
    await first.waitFor('spool.appended', { count: 3 });
    await first.stop('SIGKILL');
    // What a crash in the middle of an append leaves: half a line.
    appendFileSync(path.join(instanceSpoolDir(e.SPOOL_DIR as string, e.FLEET_INSTANCE_ID as string, first.child.pid), 'current.jsonl'), '{"probeId":"6f9619ff-8b86-d011-b42d-00cf4fc964ff","realmId":"91303');
    const spooled = spooledIds(e.SPOOL_DIR as string);
    expect(spooled.length).toBeGreaterThanOrEqual(3);
    await start();
    const second = spawnDaemon(e);
    try {
      const replayed = await second.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });
      expect(replayed).toMatchObject({ skipped: 1 });
      expect(second.lines.some((l) => l.level === 40 && /torn|skipped|could not be read/i.test(String(l.msg)))).toBe(true);
      await second.waitFor('probe.succeeded');
      expect((await second.stop('SIGINT')).code).toBe(0);
      // The first run's attempts that reached a row or the spool, and all of the second's, are rows now.
      const rows = new Set((await query('SELECT probe_id FROM quickbooks_connection_health')).rows.map((r) => String(r.probe_id)));
      for (const id of spooled) expect(rows.has(id)).toBe(true);
      await expectNothingLost(query, e.SPOOL_DIR as string, [second], true);
      expectNoSecrets([first, second], [...sim.issuedTokens(), PASSWORD]);
    } finally {
      await second.stop('SIGKILL');
    }
  });
});

describe('PostgreSQL refusing at start', () => {
  it('unreachable: exit 75, the address and "this is retried" in the message', async () => {
    const fx = await realmsFixture(1);
    try {
      const dead = `postgres://postgres:${dbPassword(fx.db.url)}@127.0.0.1:${await freePort()}/postgres`;
      const daemon = spawnDaemon({ ...daemonEnv(dead, fx.sim) });
      expect((await daemon.exited).code).toBe(75);
      expect(daemon.events('daemon.fatal')).toEqual([expect.objectContaining({ msg: expect.stringMatching(/PostgreSQL is unreachable \(ECONNREFUSED.*this is retried/) })]);
      expectNoSecrets([daemon], [dbPassword(fx.db.url)]);
    } finally {
      await fx.close();
    }
  });

  it('authentication refused: exit 78, naming DATABASE_URL, never the password', async () => {
    const fx = await realmsFixture(1);
    try {
      const wrong = new URL(fx.db.url);
      wrong.password = 'not-the-password-4711';
      const daemon = spawnDaemon({ ...daemonEnv(wrong.toString(), fx.sim) });
      expect((await daemon.exited).code).toBe(78);
      expect(daemon.events('daemon.fatal')).toEqual([expect.objectContaining({ msg: expect.stringContaining('DATABASE_URL') })]);
      expectNoSecrets([daemon], ['not-the-password-4711', dbPassword(fx.db.url)]);
    } finally {
      await fx.close();
    }
  });
});

describe('the database misbehaving under a running daemon', () => {
  let fx: Fixture;
  let daemon: RunningDaemon | undefined;
  let env: Record<string, string>;
  const query = (t: string): Promise<{ rows: Array<Record<string, unknown>> }> => fx.db.query(t);
  const admin = async (text: string): Promise<void> => {
    const client = new pg.Client({ connectionString: adminUrl() });
    await client.connect();
    try {
      await client.query(text);
    } finally {
      await client.end();
    }
  };
  const dropDaemonConnections = (): Promise<void> =>
    admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${fx.db.name}' AND application_name = 'qbo-health-monitor'`);

  beforeAll(async () => {
    fx = await realmsFixture(2);
  });
  afterAll(async () => {
    await daemon?.stop('SIGKILL');
    await fx?.close();
  });
  const startDaemon = async (): Promise<RunningDaemon> => {
    env = { ...daemonEnv(fx.db.url, fx.sim), ALERT_AFTER_FAILURES: '2' };
    daemon = spawnDaemon(env);
    await daemon.waitFor('probe.succeeded', { count: 2 });
    return daemon;
  };

  it('read-only (default_transaction_read_only): results spooled, a database alert; writable again: replayed', async () => {
    const d = await startDaemon();
    await admin(`ALTER DATABASE ${fx.db.name} SET default_transaction_read_only = on`);
    await dropDaemonConnections();
    const failed = await d.waitFor('db.write_failed', { timeoutMs: 30_000 });
    expect(JSON.stringify(failed)).toContain('25006');
    await d.waitFor('spool.appended');
    await d.waitFor('alert.raised', { where: (l) => l.kind === 'database' });
    await admin(`ALTER DATABASE ${fx.db.name} RESET default_transaction_read_only`);
    await dropDaemonConnections();
    await d.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0, timeoutMs: 30_000 });
    await d.waitFor('alert.resolved', { where: (l) => l.kind === 'database' });
    expect((await d.stop('SIGINT')).code).toBe(0);
    await expectNothingLost(query, env.SPOOL_DIR as string, [d], true);
    expectNoSecrets([d], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
  });

  it('statement timeout (the insert cancelled while it waits on a lock): spooled, then replayed', async () => {
    const d = await startDaemon();
    const locker = new pg.Client({ connectionString: fx.db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE quickbooks_connection_health IN ACCESS EXCLUSIVE MODE');
      // Cancel the daemon's inserts as they queue on the lock: SQLSTATE 57014, as a statement_timeout raises.
      const end = Date.now() + 20_000;
      while (d.events('spool.appended').length < 2 && Date.now() < end) {
        await admin(
          `SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = '${fx.db.name}' AND application_name = 'qbo-health-monitor' AND wait_event_type = 'Lock'`,
        );
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(d.events('spool.appended').length).toBeGreaterThanOrEqual(2);
      expect(JSON.stringify(d.events('db.write_failed'))).toContain('57014');
    } finally {
      await locker.query('COMMIT');
      await locker.end();
    }
    await d.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });
    expect((await d.stop('SIGINT')).code).toBe(0);
    await expectNothingLost(query, env.SPOOL_DIR as string, [d], true);
    expectNoSecrets([d], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
  });

  it.each([
    ['table dropped', 'DROP TABLE quickbooks_connection_health', 'quickbooks_connection_health'],
    ['column dropped', 'ALTER TABLE quickbooks_connection_health DROP COLUMN intuit_tid', 'intuit_tid'],
  ])('%s mid-run: a critical schema alert naming it, readiness 503; after qbhealth migrate, replayed', async (_what, sql, named) => {
    const d = await startDaemon();
    const base = await d.url();
    // The rows that go with a dropped table, taken under the lock so none is missed or miscounted.
    await fx.db.query('BEGIN');
    await fx.db.query('LOCK TABLE quickbooks_connection_health IN ACCESS EXCLUSIVE MODE');
    const before = (await fx.db.query('SELECT probe_id FROM quickbooks_connection_health')).rows.map((r) => String(r.probe_id));
    await fx.db.query(sql);
    await fx.db.query('COMMIT');
    const raised = await d.waitFor('alert.raised', { where: (l) => l.kind === 'schema' });
    expect(raised).toMatchObject({ severity: 'critical' });
    expect(String(raised.summary)).toContain(named);
    expect(String(raised.summary)).toContain('qbhealth migrate');
    await until('/health/ready 503', async () => (await fetch(`${base}/health/ready`)).status === 503);
    await d.waitFor('spool.appended');
    const migrated = await runQbhealth(['migrate'], env);
    expect(migrated.code).toBe(0);
    await d.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0, timeoutMs: 30_000 });
    await d.waitFor('alert.resolved', { where: (l) => l.kind === 'schema' });
    expect((await d.stop('SIGINT')).code).toBe(0);
    const rows = new Set((await fx.db.query('SELECT probe_id FROM quickbooks_connection_health')).rows.map((r) => String(r.probe_id)));
    const gone = new Set(named === 'intuit_tid' ? [] : before);
    const lost = attempted(d).filter((id) => !gone.has(id) && !rows.has(id));
    expect(lost, 'probes without a row').toEqual([]);
    expect(spooledIds(env.SPOOL_DIR as string)).toEqual([]);
    expectNoSecrets([d], [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
  });
});
