/**
 * One event name, one meaning: a scripted run of the real daemon (healthy, an Intuit outage,
 * PostgreSQL down, the health table dropped, a restart with an alert open, a prune, a stop)
 * produces exactly the events it should. The events a run emits once per happening are counted
 * exactly, so a duplicate or a name reused for another situation fails the test; the periodic ones
 * (one per probe, per cycle, per write) must carry names from the contract's list.
 */
import { chmodSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startEmbeddedPostgres, type RunningPostgres } from '../../src/dev/embedded-postgres.js';
import { startSimulator, type Simulator } from '../../src/simulator/simulator.js';
import { runQbhealth } from '../support/cli.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type LogLine, type RunningDaemon, type WebhookReceiver } from '../support/daemon.js';
import { CLIENT_ID, CLIENT_SECRET } from '../support/qbo.js';
import { spooledIds } from './support.js';

/** Events a run emits any number of times (per probe, per cycle, per write, per repeat interval). */
const PERIODIC = new Set([
  'probe.succeeded',
  'probe.failed',
  'scheduler.cycle_completed',
  'scheduler.overlap',
  'spool.appended',
  'spool.replayed',
  'token.refreshed',
  'token.refresh_failed',
  'db.connection_error',
  'db.read_failed',
  'db.write_failed',
  // Catching up, or folding rollups, while the health table is dropped: once a minute at most.
  'db.recovery_failed',
  'rollup.fold_failed',
  // Notifications claimed and not delivered when the daemon stops go back to the fleet (when there are any).
  'outbox.handed_back',
  'alert.repeated',
]);

/** name (and kind, for alerts) -> count, for the events that are not periodic. */
function happenings(lines: readonly LogLine[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const l of lines) {
    const event = String(l.event);
    expect(event, JSON.stringify(l)).not.toBe('undefined');
    if (PERIODIC.has(event)) continue;
    const key = event.startsWith('alert.') ? `${event} ${String(l.kind)}` : event;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/** Periodic warnings are written once per repeat interval (a minute): never twice in a short run. */
function expectNoRepeatedWarnings(lines: readonly LogLine[]): void {
  // Probe lines, token refreshes and the spool's own line are one per probe or write by design.
  const perProbe = new Set(['probe.succeeded', 'probe.failed', 'token.refresh_failed', 'spool.appended', 'spool.replayed', 'alert.repeated']);
  const warnings = lines.filter((l) => Number(l.level) >= 40 && PERIODIC.has(String(l.event)) && !perProbe.has(String(l.event)));
  const keys = warnings.map((l) => `${String(l.event)} ${String(l.msg)}`);
  expect(keys.length, warnings.map((l) => JSON.stringify(l)).join('\n')).toBe(new Set(keys).size);
}

describe('a scripted run emits exactly the events it should', () => {
  const PASSWORD = 'event-script-pg-password';
  const REALM = '9130351111';
  let sim: Simulator;
  let hook: WebhookReceiver;
  let server: RunningPostgres | undefined;
  let dataDir: string;
  let port: number;
  let url: string;
  const daemons: RunningDaemon[] = [];
  const start = async (): Promise<void> => {
    server = await startEmbeddedPostgres({ dataDir, port, password: PASSWORD, settings: { fsync: 'off' } });
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

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    hook = await webhookReceiver();
    const parent = mkdtempSync(path.join(os.tmpdir(), 'qbhm-events-'));
    chmodSync(parent, 0o755);
    dataDir = path.join(parent, 'data');
    port = await freePort();
    await start();
    url = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`;
  });
  afterAll(async () => {
    for (const d of daemons) await d.stop('SIGKILL');
    await server?.stop();
    await sim?.close();
    await hook?.close();
  });

  it('healthy, outage, PostgreSQL down, table dropped, restart with an alert open, prune, stop', async () => {
    const env: Record<string, string> = { ...daemonEnv(url, sim), ALERT_WEBHOOK_URL: hook.url, ALERT_AFTER_FAILURES: '2' };
    expect((await runQbhealth(['migrate'], env)).code).toBe(0);
    expect((await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: sim.addRealm(REALM, 'Script Co') })).code).toBe(0);

    const first = spawnDaemon(env);
    daemons.push(first);
    await first.waitFor('probe.succeeded', { count: 2 });
    const after = (line: LogLine) => (l: LogLine): boolean => first.lines.indexOf(l) > first.lines.indexOf(line);

    // An Intuit outage: raised at the threshold, resolved by the next success.
    sim.scenario = 'error500';
    const apiRaised = await first.waitFor('alert.raised', { where: (l) => l.kind === 'quickbooks_api' });
    sim.scenario = 'healthy';
    await first.waitFor('alert.resolved', { where: (l) => l.kind === 'quickbooks_api' });

    // PostgreSQL down: results spooled, a database alert; back: replayed and resolved.
    await server?.stop();
    server = undefined;
    await first.waitFor('alert.raised', { where: (l) => l.kind === 'database', timeoutMs: 30_000 });
    await start();
    await first.waitFor('alert.resolved', { where: (l) => l.kind === 'database', timeoutMs: 30_000 });
    await first.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0 });

    // The health table dropped: a schema alert; `qbhealth migrate` restores it.
    await query('DROP TABLE quickbooks_connection_health');
    await first.waitFor('alert.raised', { where: (l) => l.kind === 'schema' });
    expect((await runQbhealth(['migrate'], env)).code).toBe(0);
    await first.waitFor('alert.resolved', { where: (l) => l.kind === 'schema', timeoutMs: 30_000 });
    const healthy = await first.waitFor('probe.succeeded', { where: after(apiRaised), count: 3 });

    // An alert left open across the restart: the app revoked.
    sim.scenario = 'revoked';
    sim.expireAccessTokens();
    await first.waitFor('alert.raised', { where: (l) => l.kind === 'quickbooks_auth' && after(healthy)(l) });
    expect((await first.stop('SIGINT')).code).toBe(0);

    expect(happenings(first.lines)).toEqual({
      'fleet.joined': 1,
      'daemon.started': 1,
      'alert.raised quickbooks_api': 1,
      'alert.resolved quickbooks_api': 1,
      'alert.raised database': 1,
      'alert.resolved database': 1,
      'db.recovered': 1,
      // While PostgreSQL is down: the fleet heartbeat and the claim of due realms fail, once each
      // (repeats counted), and the member probes the realms it held last.
      'fleet.heartbeat_failed': 1,
      'lease.claim_failed': 1,
      'alert.raised schema': 1,
      'alert.resolved schema': 1,
      'alert.raised quickbooks_auth': 1,
      'daemon.stopping': 1,
      'fleet.left': 1,
      'daemon.stopped': 1,
    });
    expectNoRepeatedWarnings(first.lines);

    // The restart restores the open alert without paging again.
    const second = spawnDaemon(env);
    daemons.push(second);
    await second.waitFor('probe.failed', { count: 2 });
    const pruned = await runQbhealth(['prune'], env);
    expect(pruned.code).toBe(0);
    expect((await second.stop('SIGINT')).code).toBe(0);
    expect(happenings(second.lines)).toEqual({
      'fleet.joined': 1,
      'daemon.started': 1,
      'alerts.restored': 1,
      'daemon.stopping': 1,
      'fleet.left': 1,
      'daemon.stopped': 1,
    });
    expect(second.events('alerts.restored')[0]).toMatchObject({ openAlerts: 1 });
    expectNoRepeatedWarnings(second.lines);
    // (The rows dropped with the table are gone by design; the loss checks of that case are in database.test.ts.)
    expect(spooledIds(env.SPOOL_DIR as string)).toEqual([]);
  }, 150_000);
});
