/**
 * Faults in a fleet of real daemons (dist/main.js) sharing one PostgreSQL: a member paused past
 * its TTL (SIGSTOP) and resumed; PostgreSQL restarted under three members (a server of its own);
 * a member whose clock is 30 s ahead; two daemons started with one FLEET_INSTANCE_ID. Each case
 * checks what the fleet must keep: no result of a realm recorded twice, no realm probed by two
 * members at once while they coordinate, each alert notified once, nothing lost, no false alarm.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { freePort, startEmbeddedPostgres, type RunningPostgres } from '../../src/dev/embedded-postgres.js';
import { shareOf } from '../../src/fleet/share.js';
import { ProbeCycle, type CycleHooks } from '../../src/probe/cycle.js';
import type { Prober } from '../../src/probe/prober.js';
import { startSimulator, type Simulator } from '../../src/simulator/simulator.js';
import { runQbhealth } from '../support/cli.js';
import { daemonEnv, spawnDaemon, type LogLine, type RunningDaemon } from '../support/daemon.js';
import { alertReceiver, closeResults, healthRows, memberOf, overlappingProbes, probeSpans, until, type AlertReceiver, type ProbeSpan } from '../support/fleet.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase } from '../support/qbo.js';
import { quiet, realmsFixture, type Fixture } from '../support/realms.js';
import { attempted, dbPassword, expectNoSecrets, expectNothingLost, rowIds } from './support.js';
import { passOutcome } from '../support/outcomes.js';

interface Member {
  readonly env: Record<string, string>;
  readonly d: RunningDaemon;
  readonly id: string;
}

const CLOCK_SKEW = fileURLToPath(new URL('../support/clock-skew.mjs', import.meta.url));
const cycles = (d: RunningDaemon): number => d.events('scheduler.cycle_completed').length;
const moreCycles = (members: readonly Member[], n: number, timeoutMs = 20_000): Promise<unknown> =>
  Promise.all(members.map((m) => m.d.waitFor('scheduler.cycle_completed', { count: cycles(m.d) + n, timeoutMs })));
/** Every daemon this file started: killed after the file, whatever happened to the case that started it (a timeout too). */
const spawned: RunningDaemon[] = [];
afterAll(async () => {
  for (const d of spawned) {
    d.child.kill('SIGCONT');
    await d.stop('SIGKILL');
  }
});
const start = (env: Record<string, string>, nodeArgs: string[] = []): Member => {
  const d = spawnDaemon(env, undefined, nodeArgs);
  spawned.push(d);
  return { env, d, id: memberOf(env, d) };
};
/** Per alert (dedupKey), the events notified, in order; every notificationId once. */
function notifiedOnce(hook: AlertReceiver): Map<string, string[]> {
  const ids = hook.attempts.map((a) => a.body.notificationId);
  expect(new Set(ids).size, 'a notification sent twice').toBe(ids.length);
  const byKey = new Map<string, string[]>();
  for (const a of hook.attempts) byKey.set(String(a.body.dedupKey), [...(byKey.get(String(a.body.dedupKey)) ?? []), String(a.body.event)]);
  for (const [key, events] of byKey) {
    // An alert is raised, then resolved, then perhaps raised again: never raised twice in a row.
    events.forEach((e, i) => expect(e, `${key}: ${events.join(', ')}`).toBe(i % 2 === 0 ? 'alert.raised' : 'alert.resolved'));
  }
  return byKey;
}

describe('a member paused past its TTL (SIGSTOP), then resumed (SIGCONT)', () => {
  it('its late results are dropped (lease.lost), no realm recorded twice, each alert notified once, and it carries on as a member', async () => {
    const fx = await realmsFixture(30);
    // Answers slow enough that the paused member has probes in flight.
    fx.sim.latencyMs = 150;
    const hook = await alertReceiver();
    // A realm counts as stalled 3 ticks after its last result, each tick once its probes' deadline
    // has passed: with a 10 s deadline that is later than the takeover of the paused member's
    // realms (its TTL, 5 s, and a period), which would otherwise raise monitor_stalled rightly.
    const fleet = Array.from({ length: 3 }, () => start({ ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, PROBE_TIMEOUT_MS: '10000' }));
    const query = (text: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }> => fx.db.query(text, params);
    try {
      await Promise.all(fleet.map((m) => m.d.waitFor('fleet.joined')));
      await until('a result for every realm', async () => Number((await query('SELECT count(DISTINCT realm_id) AS n FROM quickbooks_connection_health')).rows[0]?.n) === 30, 20_000);
      // The leader: leadership moves while it is paused, and comes back.
      const paused = [...fleet].sort((a, b) => a.id.localeCompare(b.id))[0] as Member;
      const others = fleet.filter((m) => m !== paused);
      const ttlMs = Number(paused.env.FLEET_MEMBER_TTL_MS);
      await until('the member probing', async () => Number((await query('SELECT count(*) AS n FROM quickbooks_realm_leases WHERE holder = $1 AND lease_until > now()', [paused.id])).rows[0]?.n) > 0, 20_000, 5);
      paused.d.child.kill('SIGSTOP');
      const pausedAt = Date.now();
      const held = (await query('SELECT realm_id, lease_seq FROM quickbooks_realm_leases WHERE holder = $1 AND lease_until IS NOT NULL', [paused.id])).rows.map((r) => ({ realmId: String(r.realm_id), seq: String(r.lease_seq) }));
      expect(held.length).toBeGreaterThan(0);
      // The others take its realms over once its leases expire, and probe them.
      await until(
        'its realms taken over and probed',
        async () => {
          const { rows } = await query('SELECT realm_id, lease_seq, probed_by FROM quickbooks_realm_leases WHERE realm_id = ANY($1::text[])', [held.map((h) => h.realmId)]);
          return rows.every((r) => String(r.lease_seq) !== held.find((h) => h.realmId === r.realm_id)?.seq && r.probed_by !== paused.id);
        },
        ttlMs + 10_000,
      );
      const downKey = `qbo-health-monitor:monitor_instance_down:system:instance:${paused.env.FLEET_INSTANCE_ID}`;
      await until('monitor_instance_down raised', () => hook.accepted().some((b) => b.dedupKey === downKey), 15_000);
      // Its leases were last renewed by a heartbeat up to one interval before the pause.
      expect(Date.now() - pausedAt).toBeGreaterThan(ttlMs - Number(paused.env.FLEET_HEARTBEAT_MS));
      const resumedFrom = paused.d.lines.length;
      paused.d.child.kill('SIGCONT');

      // It finds its leases gone: what it probed meanwhile is dropped.
      const lost = await paused.d.waitFor('lease.lost');
      expect(lost).toMatchObject({ level: 40, instance: paused.id });
      // It rejoins: live again (the alert resolved), its next results its own and recorded.
      await until('monitor_instance_down resolved', () => hook.accepted().some((b) => b.dedupKey === downKey && b.event === 'alert.resolved'), 15_000);
      const afterLost = (l: LogLine): boolean => !paused.d.events('lease.lost').some((x) => x.probeId === l.probeId);
      const later = await paused.d.waitFor('probe.succeeded', { where: (l) => paused.d.lines.indexOf(l) > paused.d.lines.indexOf(lost) && afterLost(l), timeoutMs: 15_000 });
      await until('its later result recorded', async () => (await query('SELECT 1 FROM quickbooks_connection_health WHERE probe_id = $1', [later.probeId])).rows.length === 1);
      expect(paused.d.events('fleet.joined')).toHaveLength(1);
      await moreCycles(fleet, 2);
      for (const m of fleet) expect((await m.d.stop('SIGINT')).code).toBe(0);

      const lostIds = paused.d.events('lease.lost').map((l) => String(l.probeId));
      const rows = await healthRows(query);
      // Dropped, not recorded: the member that took the realm over recorded its own result.
      expect(rows.filter((r) => lostIds.includes(r.probeId)), 'a result whose lease was lost recorded').toEqual([]);
      // No realm recorded twice within a period: the recorded probes never overlap, and are at least half a period apart.
      const spans = fleet.flatMap((m) => probeSpans(m.d, m.id));
      const recorded = new Set(rows.map((r) => r.probeId));
      expect(overlappingProbes(spans.filter((s) => recorded.has(s.probeId))), 'two recorded results of a realm from probes that overlapped').toEqual([]);
      expect(closeResults(rows, (r) => r.checkedAt, 500), 'two results of a realm within half a period').toEqual([]);
      // Every other probe logged is a row.
      const tried = attempted(...fleet.map((m) => m.d)).filter((id) => !lostIds.includes(id));
      expect(tried.filter((id) => !recorded.has(id)), 'probes without a row').toEqual([]);
      // Each alert notified once: the slot down while paused, back after.
      const notified = notifiedOnce(hook);
      expect([...notified]).toEqual([[downKey, ['alert.raised', 'alert.resolved']]]);
      expect(paused.d.lines.slice(resumedFrom).filter((l) => l.event === 'alert.raised'), 'alerts the resumed member raised').toEqual([]);
      for (const m of others) expect(m.d.events('lease.lost'), `${m.id} lost a lease`).toEqual([]);
      expectNoSecrets(fleet.map((m) => m.d), [...fx.sim.issuedTokens(), dbPassword(fx.db.url)]);
    } finally {
      for (const m of fleet) {
        m.d.child.kill('SIGCONT');
        await m.d.stop('SIGKILL');
      }
      await hook.close();
      await fx.close();
    }
  }, 90_000);
});

describe('PostgreSQL restarted under three members (a server of its own)', () => {
  const PASSWORD = 'fleet-fault-pg-password';
  const REALMS = ['9130360001', '9130360002', '9130360003', '9130360004', '9130360005', '9130360006'];
  let sim: Simulator;
  let hook: AlertReceiver;
  let server: RunningPostgres | undefined;
  let dataDir: string;
  let port: number;
  let url: string;
  const startPg = async (): Promise<void> => {
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
    hook = await alertReceiver();
    const parent = mkdtempSync(path.join(os.tmpdir(), 'qbhm-fleetpg-'));
    chmodSync(parent, 0o755);
    dataDir = path.join(parent, 'data');
    port = await freePort();
    await startPg();
    url = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`;
    const env = daemonEnv(url, sim);
    expect((await runQbhealth(['migrate'], env)).code).toBe(0);
    for (const realm of REALMS) expect((await runQbhealth(['import-tokens', '--realm-id', realm], env, { stdin: sim.addRealm(realm, `Fleet Co ${realm}`) })).code).toBe(0);
  });
  afterAll(async () => {
    await server?.stop();
    await sim?.close();
    await hook?.close();
  });

  it('each member spools and alerts directly with the shared dedupKey; after the restart the spools replay, nothing lost or doubled, no member reported down, no realm stalled', async () => {
    // A schedule period longer than the TTL, as in production (a minute against 15 s): a member that
    // regains PostgreSQL has settled (one TTL) before the next cycle probes the realms again.
    const PERIOD_MS = 4000;
    const env = (): Record<string, string> => ({
      ...daemonEnv(url, sim),
      PROBE_SCHEDULE: '*/4 * * * * *',
      FLEET_HEARTBEAT_MS: '500',
      FLEET_MEMBER_TTL_MS: '2000',
      ALERT_WEBHOOK_URL: hook.url,
      ALERT_AFTER_FAILURES: '2',
      // Batches of two slow answers: each period every member takes two realms.
      PROBE_CONCURRENCY: '2',
    });
    sim.latencyMs = 100;
    const fleet = Array.from({ length: 3 }, () => start(env()));
    try {
      await Promise.all(fleet.map((m) => m.d.waitFor('fleet.joined')));
      await until('a result for every realm', async () => Number((await query('SELECT count(DISTINCT realm_id) AS n FROM quickbooks_connection_health')).rows[0]?.n) === REALMS.length, 3 * PERIOD_MS);
      await moreCycles(fleet, 1);
      const outageFrom = fleet.map((m) => m.d.lines.length);
      await server?.stop();
      server = undefined;
      const outageAt = Date.now();
      // The members spool their shares, and each raises its own database alert, sent directly.
      await until('results spooled', () => fleet.some((m) => m.d.events('spool.appended').length > 0), 2 * PERIOD_MS);
      await until('a database alert from every member', () => new Set(hook.accepted().filter((b) => b.kind === 'database' && b.event === 'alert.raised').map((b) => b.instance)).size === 3, 4 * PERIOD_MS);
      // Down for three periods (every realm is stalled by then, as far as the database can tell),
      // and back just after a cycle, so that the members settle well before the next one.
      const uncoordinated = (m: Member, i: number): number => m.d.lines.slice(outageFrom[i]).filter((l) => l.event === 'scheduler.cycle_completed' && l.uncoordinated === true).length;
      await until('three periods without PostgreSQL', () => fleet.every((m, i) => uncoordinated(m, i) >= 3), 5 * PERIOD_MS);
      const restartAt = Date.now();
      await startPg();
      const spooled = fleet.filter((m) => m.d.events('spool.appended').length > 0);
      await Promise.all(spooled.map((m) => m.d.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0, timeoutMs: 30_000 })));
      await until('every database alert resolved', () => new Set(hook.accepted().filter((b) => b.kind === 'database' && b.event === 'alert.resolved').map((b) => b.instance)).size === 3, 20_000);
      // Coordinated again for a few periods (long enough for a false member-down or stall alert to show).
      await moreCycles(fleet, 2, 3 * PERIOD_MS);
      for (const m of fleet) expect((await m.d.stop('SIGINT')).code).toBe(0);

      const byInstance = new Map<string, string[]>();
      for (const b of hook.accepted()) {
        expect(b).toMatchObject({ kind: 'database', dedupKey: 'qbo-health-monitor:database:monitor', realmId: null });
        byInstance.set(String(b.instance), [...(byInstance.get(String(b.instance)) ?? []), String(b.event)]);
      }
      expect(new Set(hook.accepted().map((b) => b.notificationId)).size, 'a notification sent twice').toBe(hook.accepted().length);
      expect([...byInstance.keys()].sort()).toEqual(fleet.map((m) => m.env.FLEET_INSTANCE_ID).sort());
      for (const events of byInstance.values()) expect(events).toEqual(['alert.raised', 'alert.resolved']);
      for (const m of fleet) expect(m.d.lines.filter((l) => l.event === 'alert.raised' && l.kind !== 'database'), `${m.id}: alerts besides its database alert`).toEqual([]);

      // Nothing lost: every probe logged is a row, no spool left; and nothing doubled.
      await expectNothingLost(query, fleet.map((m) => m.env.SPOOL_DIR as string), fleet.map((m) => m.d), true);
      const rows = await healthRows(query);
      expect(closeResults(rows, (r) => r.checkedAt, 500), 'a realm probed twice within half a period').toEqual([]);
      // The members' shares covered every realm while PostgreSQL was away (three periods and more).
      const duringOutage = rows.filter((r) => r.checkedAt > outageAt && r.checkedAt < restartAt);
      for (const realm of REALMS) expect(duringOutage.filter((r) => r.realmId === realm).length, `${realm}: results without PostgreSQL`).toBeGreaterThanOrEqual(2);
      // Probed without coordination, each member kept to the realms it held last: no realm probed by two at once.
      expect(overlappingProbes(fleet.flatMap((m) => probeSpans(m.d, m.id)))).toEqual([]);
      expectNoSecrets(fleet.map((m) => m.d), [...sim.issuedTokens(), PASSWORD]);
    } finally {
      for (const m of fleet) await m.d.stop('SIGKILL');
      if (!server) await startPg();
    }
  }, 150_000);

  it('a member killed just before PostgreSQL goes away (within its TTL, so still listed live): the survivor probes every realm meanwhile, its own share and the dead one\'s', async () => {
    const PERIOD_MS = 2000;
    const env = (): Record<string, string> => ({
      ...daemonEnv(url, sim),
      PROBE_SCHEDULE: '*/2 * * * * *',
      FLEET_HEARTBEAT_MS: '500',
      // Long enough that the killed member is still live, as far as anyone could tell, when PostgreSQL goes.
      FLEET_MEMBER_TTL_MS: '20000',
      ALERT_WEBHOOK_URL: hook.url,
    });
    sim.latencyMs = 20;
    const [survivor, killed] = [start(env()), start(env())] as [Member, Member];
    try {
      await Promise.all([survivor, killed].map((m) => m.d.waitFor('fleet.joined')));
      await moreCycles([survivor, killed], 2, 4 * PERIOD_MS);
      await killed.d.stop('SIGKILL');
      // The survivor's last reads of the members saw the killed one's heartbeat more than a second old (two heartbeats).
      await until('the killed member two heartbeats late, read by the survivor', async () => {
        const { rows } = await query(`SELECT extract(epoch FROM now() - heartbeat_at) * 1000 AS age FROM quickbooks_monitor_members WHERE instance_id = '${killed.id}'`);
        return Number(rows[0]?.age) > 1700;
      }, 5000);
      const from = survivor.d.lines.length;
      await server?.stop();
      server = undefined;
      await until('two cycles without PostgreSQL', () => survivor.d.lines.slice(from).filter((l) => l.event === 'scheduler.cycle_completed' && l.uncoordinated === true).length >= 2, 5 * PERIOD_MS);
      const probedMeanwhile = new Set(survivor.d.lines.slice(from).filter((l) => l.event === 'probe.succeeded').map((l) => String(l.realmId)));
      expect([...probedMeanwhile].sort(), 'realms the survivor probed without PostgreSQL').toEqual([...REALMS].sort());
      await startPg();
      await survivor.d.waitFor('spool.replayed', { where: (l) => Number(l.count) > 0, timeoutMs: 30_000 });
      expect((await survivor.d.stop('SIGINT')).code).toBe(0);
    } finally {
      for (const m of [survivor, killed]) await m.d.stop('SIGKILL');
      if (!server) await startPg();
      await query(`DELETE FROM quickbooks_monitor_members WHERE instance_id = '${killed.id}'`);
    }
  }, 90_000);
});

describe('PostgreSQL away: what a member probes without coordination', () => {
  it('the realms are divided among the members last seen live alike on every member: each realm falls to exactly one, and a member leaving moves only its own', () => {
    const realms = Array.from({ length: 900 }, (_, i) => String(9130370000 + i));
    const members = ['host-a:8080#101', 'host-b:8080#202', 'host-c:8080#303'];
    const shares = members.map((m) => shareOf(realms, members, m));
    // Computed on each member (a differently ordered list) the division is the same.
    expect(shareOf(realms, [...members].reverse(), members[0] as string)).toEqual(shares[0]);
    expect(shares.flat().sort()).toEqual([...realms].sort());
    for (const share of shares) expect(share.length, 'an uneven division').toBeGreaterThan(200);
    // Member c gone: a and b keep what they had and take c's between them.
    const left = members.slice(0, 2);
    for (const [i, m] of left.entries()) {
      const now = shareOf(realms, left, m);
      expect(now.filter((r) => !(shares[i] as string[]).includes(r)).every((r) => (shares[2] as string[]).includes(r))).toBe(true);
      expect((shares[i] as string[]).every((r) => now.includes(r))).toBe(true);
    }
    // A member not yet in the list it last read counts itself.
    expect(shareOf(realms, members.slice(1), members[0] as string)).toEqual(shares[0]);
  });

  it('a cycle whose claims PostgreSQL refuses, even after some succeeded, probes its share once and no realm it claimed before the refusal (the probe cycle against a real database)', async () => {
    const db = await migratedDatabase();
    const pool = createPool({ databaseUrl: db.url, applicationName: 'test', max: 4 }, quiet);
    try {
      const realms = ['9130370001', '9130370002', '9130370003', '9130370004', '9130370005', '9130370006'];
      await db.query(`INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc) SELECT id, 'sandbox', 'x' FROM unnest($1::text[]) AS id`, [realms]);
      // PostgreSQL refuses connections after `answers` more queries.
      let answers = Infinity;
      const flaky = {
        query: (...args: unknown[]) =>
          answers-- <= 0 ? Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })) : (pool.query as (...a: unknown[]) => Promise<unknown>)(...args),
      } as unknown as Pool;
      const probed: string[] = [];
      const prober = {
        probe: async (realmId: string) => {
          probed.push(realmId);
          return passOutcome(realmId);
        },
      } as unknown as Prober;
      const share = realms.slice(0, 4);
      let failures = 0;
      const hooks: CycleHooks = {
        observe: () => undefined,
        record: async () => undefined,
        offlineShare: () => ({ realms: share, known: realms.length, members: 2 }),
        forget: () => undefined,
        databaseFailed: () => void failures++,
        shuttingDown: () => false,
      };
      // Batches of one, on one slot: the sync and the first claim answer, then PostgreSQL is gone.
      const cycle = new ProbeCycle(flaky, prober, hooks, quiet, { instanceId: 'a#1', batch: 1, dueAfterMs: 60_000, leaseMs: 5000 });
      answers = 2;
      const summary = await cycle.run();
      expect(summary).toMatchObject({ uncoordinated: true });
      expect(failures).toBeGreaterThan(0);
      const claimed = probed[0] as string;
      // The claimed realm once, then the rest of the share, each once.
      expect(probed.slice(1).sort()).toEqual(share.filter((r) => r !== claimed).sort());
      expect(new Set(probed).size).toBe(probed.length);
    } finally {
      await pool.end();
      await db.drop();
    }
  });
});

describe('a claim that times out or loses a deadlock (the probe cycle against a real database)', () => {
  it('once: nothing beyond what was claimed is probed (the others claim on), a database failure counted; twice in a row: the share is probed without coordination', async () => {
    const db = await migratedDatabase();
    const pool = createPool({ databaseUrl: db.url, applicationName: 'test', max: 4 }, quiet);
    try {
      const realms = ['9130380001', '9130380002', '9130380003'];
      await db.query(`INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc) SELECT id, 'sandbox', 'x' FROM unnest($1::text[]) AS id`, [realms]);
      let timingOut = false;
      // The lease claim cancelled by statement_timeout while `timingOut`; everything else answers.
      const flaky = {
        query: (...args: unknown[]) =>
          timingOut && /FOR UPDATE OF l SKIP LOCKED/.test(String(args[0]))
            ? Promise.reject(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }))
            : (pool.query as (...a: unknown[]) => Promise<unknown>)(...args),
      } as unknown as Pool;
      const probed: string[] = [];
      const prober = {
        probe: async (realmId: string) => {
          probed.push(realmId);
          return passOutcome(realmId);
        },
      } as unknown as Prober;
      let failures = 0;
      const hooks: CycleHooks = {
        observe: () => undefined,
        record: async () => undefined,
        offlineShare: () => ({ realms, known: realms.length, members: 1 }),
        forget: () => undefined,
        databaseFailed: () => void failures++,
        shuttingDown: () => false,
      };
      const cycle = new ProbeCycle(flaky, prober, hooks, quiet, { instanceId: 'a#1', batch: 2, dueAfterMs: 60_000, leaseMs: 5000 });
      timingOut = true;
      expect(await cycle.run()).toMatchObject({ realms: 0, uncoordinated: false });
      expect(probed).toEqual([]);
      expect(failures).toBe(1);
      expect(await cycle.run()).toMatchObject({ realms: 3, uncoordinated: true });
      expect(failures).toBe(2);
      // Claims answer again: coordinated, and the count of failures in a row starts afresh.
      timingOut = false;
      probed.length = 0;
      expect(await cycle.run()).toMatchObject({ realms: 3, uncoordinated: false });
      timingOut = true;
      expect(await cycle.run()).toMatchObject({ realms: 0, uncoordinated: false });
    } finally {
      await pool.end();
      await db.drop();
    }
  });
});

describe('a member whose clock is 30 s ahead (leases on the database clock)', () => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await realmsFixture(20);
    fx.sim.latencyMs = 20;
  });
  afterAll(() => fx?.close());

  it('neither takes leases early nor double-probes, and no realm or member is falsely reported stalled or down', async () => {
    const SKEW_MS = 30_000;
    const hook = await alertReceiver();
    // The skewed member is the leader (the smallest id): it runs the fleet-wide staleness and member checks.
    const skewed = start({ ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, FLEET_INSTANCE_ID: 'a-skewed', QBHM_TEST_CLOCK_SKEW_MS: String(SKEW_MS) }, ['--import', CLOCK_SKEW]);
    const plain = start({ ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, FLEET_INSTANCE_ID: 'b-plain' });
    const fleet = [skewed, plain];
    try {
      await Promise.all(fleet.map((m) => m.d.waitFor('fleet.joined')));
      // Its clock is off indeed.
      const firstLine = skewed.d.lines[0];
      expect(Date.parse(String(firstLine?.time)) - Date.now()).toBeGreaterThan(SKEW_MS - 5000);
      await until('a result for every realm', async () => Number((await fx.db.query('SELECT count(DISTINCT realm_id) AS n FROM quickbooks_connection_health')).rows[0]?.n) === 20);
      await moreCycles(fleet, 8);
      const base = await skewed.d.url();
      const health = (await (await fetch(`${base}/health`)).json()) as { status: string; checks: Record<string, Array<{ status: string }>> };
      for (const m of fleet) expect((await m.d.stop('SIGINT')).code).toBe(0);

      for (const m of fleet) expect(m.d.events('lease.lost'), `${m.id} lost a lease`).toEqual([]);
      const spans: ProbeSpan[] = [...probeSpans(skewed.d, skewed.id, SKEW_MS), ...probeSpans(plain.d, plain.id)];
      expect(overlappingProbes(spans), 'a realm probed by both at once').toEqual([]);
      expect(closeResults(spans, (s) => s.start, 500), 'a realm probed twice within half a period').toEqual([]);
      for (const m of fleet) expect(spans.filter((s) => s.member === m.id).length, `${m.id} took no share`).toBeGreaterThan(0);
      expect(hook.attempts, 'alerts').toEqual([]);
      for (const m of fleet) expect(m.d.events('alert.raised'), `${m.id} raised`).toEqual([]);
      for (const m of fleet) expect(m.d.events('fleet.member_down'), `${m.id} saw a member down`).toEqual([]);
      expect(health.checks['fleet:members']?.[0]?.status).toBe('pass');
      // Its history is stamped on the database's clock, not 30 s in the future.
      const skewedIds = new Set(probeSpans(skewed.d, skewed.id).map((s) => s.probeId));
      const skewedRows = (await healthRows((t) => fx.db.query(t))).filter((r) => skewedIds.has(r.probeId));
      expect(skewedRows.length).toBeGreaterThan(0);
      for (const r of skewedRows) expect(Math.abs(r.createdAt - r.checkedAt), `row ${r.probeId}: checked_at ${r.checkedAt - r.createdAt} ms from its insert`).toBeLessThan(5000);
      await expectNothingLost((t) => fx.db.query(t), fleet.map((m) => m.env.SPOOL_DIR as string), fleet.map((m) => m.d), true);
    } finally {
      for (const m of fleet) await m.d.stop('SIGKILL');
      await hook.close();
    }
  }, 60_000);
});

describe("the fleet's view read held up (the token table locked past the TTL)", () => {
  it('the heartbeat goes on: the member stays live, loses no lease, and nobody is reported down', async () => {
    const fx = await realmsFixture(2);
    const hook = await alertReceiver();
    const env: Record<string, string> = { ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url };
    const m = start(env);
    const locker = new pg.Client({ connectionString: fx.db.url });
    let connected = false;
    try {
      await m.d.waitFor('probe.succeeded');
      const ttlMs = Number(env.FLEET_MEMBER_TTL_MS);
      await locker.connect();
      connected = true;
      await locker.query('BEGIN');
      // The view (and the claims) read the token table: they wait on the lock.
      await locker.query('LOCK TABLE quickbooks_oauth_tokens IN ACCESS EXCLUSIVE MODE');
      const lockedAt = Date.now();
      let oldest = 0;
      await until(
        'the lock held past the TTL',
        async () => {
          const { rows } = await fx.db.query('SELECT (extract(epoch FROM now() - heartbeat_at) * 1000)::float8 AS age FROM quickbooks_monitor_members WHERE instance_id = $1', [m.id]);
          oldest = Math.max(oldest, Number(rows[0]?.age ?? Number.POSITIVE_INFINITY));
          return Date.now() - lockedAt > ttlMs + 1000;
        },
        ttlMs + 10_000,
        200,
      );
      await locker.query('ROLLBACK');
      expect(oldest, "the member's heartbeat age while the view read waited").toBeLessThan(2000);
      const from = m.d.lines.length;
      await m.d.waitFor('probe.succeeded', { where: (l) => m.d.lines.indexOf(l) >= from, timeoutMs: 15_000 });
      expect((await m.d.stop('SIGINT')).code).toBe(0);
      expect(m.d.events('lease.lost')).toEqual([]);
      expect(m.d.events('fleet.member_down')).toEqual([]);
      expect(hook.attempts.filter((a) => a.body.kind === 'monitor_instance_down')).toEqual([]);
      await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [m.d], true);
    } finally {
      if (connected) await locker.end();
      await m.d.stop('SIGKILL');
      await hook.close();
      await fx.close();
    }
  }, 60_000);
});

describe('two daemons started with one FLEET_INSTANCE_ID on one host', () => {
  it('the second exits 78 naming the instance id and the first; the first carries on alone', async () => {
    const fx = await realmsFixture(2);
    const env = daemonEnv(fx.db.url, fx.sim);
    const first = start(env);
    let second: Member | undefined;
    try {
      await first.d.waitFor('probe.succeeded');
      second = start(env);
      // Bounded: a second daemon that does not refuse to start runs on, and the case fails at once.
      const exit = await Promise.race<{ code: number | string | null }>([
        second.d.exited,
        first.d.waitFor('probe.succeeded', { count: first.d.events('probe.succeeded').length + 5 }).then(() => ({ code: 'still running after 5 more probes of the first' })),
      ]);
      expect(exit.code).toBe(78);
      const fatal = second.d.events('daemon.fatal');
      expect(fatal).toHaveLength(1);
      expect(String(fatal[0]?.msg)).toContain(`FLEET_INSTANCE_ID "${env.FLEET_INSTANCE_ID}"`);
      expect(String(fatal[0]?.msg)).toContain(`pid ${first.d.child.pid}`);
      expect(second.d.events('probe.succeeded')).toEqual([]);
      // The first was never disturbed: still the only member, still probing, and nothing lost.
      await first.d.waitFor('probe.succeeded', { count: first.d.events('probe.succeeded').length + 2 });
      expect((await fx.db.query('SELECT instance_id FROM quickbooks_monitor_members')).rows.map((r) => r.instance_id)).toEqual([first.id]);
      expect(first.d.lines.filter((l) => Number(l.level) >= 40)).toEqual([]);
      expect((await first.d.stop('SIGINT')).code).toBe(0);
      await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [first.d], true);
      expect(await rowIds((t) => fx.db.query(t))).toHaveLength(attempted(first.d).length);
    } finally {
      await first.d.stop('SIGKILL');
      await second?.d.stop('SIGKILL');
      await fx.close();
    }
  }, 60_000);
});
