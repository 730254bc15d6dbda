/**
 * The fleet end to end: real daemons (dist/main.js) sharing one PostgreSQL behave as one monitor.
 * Three daemons share 300 realms on a 2-second schedule: each realm once a period, never by two
 * members at once; the leader SIGKILLed mid-cycle: its realms taken over within TTL + a period,
 * one monitor_instance_down across the fleet, resolved by `qbhealth fleet retire`, nothing the
 * survivors probed lost. An Intuit outage under three daemons: one alert.raised and one
 * alert.resolved per realm, each with its notificationId and dedupKey, a failed delivery retried
 * with the same notificationId. HEARTBEAT_URL pinged after cycles, never again once every daemon
 * stopped, its secret path never logged.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon, type RunningDaemon } from './support/daemon.js';
import { realmsFixture, type Fixture } from './support/realms.js';
import { alertReceiver, bodiesOf, byRealm, closeResults, healthRows, logTime, memberOf, overlappingProbes, probeSpans, until, type AlertReceiver } from './support/fleet.js';
import { dbPassword, expectNoSecrets, expectNothingLost } from './faults/support.js';

interface Member {
  readonly env: Record<string, string>;
  readonly d: RunningDaemon;
  readonly id: string;
}

const cycles = (d: RunningDaemon): number => d.events('scheduler.cycle_completed').length;
/** Each daemon completes `n` more cycles (the fleet has moved on by `n` periods). */
const moreCycles = (members: readonly Member[], n: number, timeoutMs = 20_000): Promise<unknown> =>
  Promise.all(members.map((m) => m.d.waitFor('scheduler.cycle_completed', { count: cycles(m.d) + n, timeoutMs })));

describe('three daemons, 300 realms, a 2-second schedule', () => {
  const PERIOD_MS = 2000;
  const REALMS = 300;
  let fx: Fixture;
  let hook: AlertReceiver;
  let fleet: Member[] = [];
  const query = (text: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }> => fx.db.query(text, params);

  beforeAll(async () => {
    fx = await realmsFixture(REALMS);
    hook = await alertReceiver();
    fleet = Array.from({ length: 3 }, () => {
      // Cycles short against the period even on a busy machine: a realm is due again half a period
      // after its last probe, so cycles whose length swings by more than half a period would let a
      // realm probed late in one miss the next (probed once in two periods, as designed).
      // A realm counts as stalled 3 ticks after its last result, each once its probes' deadline has
      // passed: with a 10 s deadline, later than the takeover of a dead member's realms (TTL + a period).
      const env = { ...daemonEnv(fx.db.url, fx.sim), PROBE_SCHEDULE: '*/2 * * * * *', PROBE_CONCURRENCY: '16', PROBE_TIMEOUT_MS: '10000', ALERT_WEBHOOK_URL: hook.url };
      const d = spawnDaemon(env);
      return { env, d, id: memberOf(env, d) };
    });
    await Promise.all(fleet.map((m) => m.d.waitFor('fleet.joined')));
  });
  afterAll(async () => {
    await Promise.all(fleet.map((m) => m.d.stop('SIGKILL')));
    await hook?.close();
    await fx?.close();
  });

  it('over 10 periods every realm has 10 ± 1 results, none two within half a period, none probed by two members at once', async () => {
    await until('a result for every realm', async () => Number((await query('SELECT count(DISTINCT realm_id) AS n FROM quickbooks_connection_health')).rows[0]?.n) === REALMS, 30_000, 200);
    // The window starts once the fleet runs steadily: each member's last two cycles shorter than
    // half a period (the first cycles, every realm's first probe on a cold start, are slower).
    const steady = (m: Member): boolean => {
      const last = m.d.events('scheduler.cycle_completed').slice(-2);
      return last.length === 2 && last.every((l) => Number(l.durationMs) < PERIOD_MS / 2);
    };
    await until('every member cycling within half a period', async () => fleet.every(steady), 60_000, 100);
    // Ten periods from the middle of one (the ticks are at even seconds), so no period is cut in two.
    const from = Math.ceil(Date.now() / PERIOD_MS) * PERIOD_MS + PERIOD_MS / 2;
    const to = from + 10 * PERIOD_MS;
    // Every member has completed a cycle that started after the window: every probe in it is recorded.
    await Promise.all(fleet.map((m) => m.d.waitFor('scheduler.cycle_completed', { where: (l) => logTime(l) - Number(l.durationMs) > to, timeoutMs: 40_000 })));
    const rows = await healthRows(query);
    const spans = fleet.flatMap((m) => probeSpans(m.d, m.id));
    // A period in which no member probed anything is the machine not letting the daemons run (every
    // tick skipped as an overlap), not the fleet's coordination: it is not counted, and there may
    // be one at most.
    const periods = Array.from({ length: 10 }, (_, i) => from + i * PERIOD_MS);
    const active = periods.filter((p) => spans.some((s) => s.start >= p && s.start < p + PERIOD_MS)).length;
    const cycleTimes = fleet.map((m) => `${m.id}: ${m.d.events('scheduler.cycle_completed').filter((l) => logTime(l) >= from && logTime(l) < to + PERIOD_MS).map((l) => l.durationMs).join(' ')} ms`);
    expect(active, `periods in which the fleet probed at all; cycle times:\n${cycleTimes.join('\n')}`).toBeGreaterThanOrEqual(9);
    const counts = new Map(fx.realms.map((r) => [r, 0]));
    for (const r of rows) if (r.checkedAt >= from && r.checkedAt < to) counts.set(r.realmId, (counts.get(r.realmId) ?? 0) + 1);
    const off = [...counts].filter(([, n]) => n < active - 1 || n > active + 1);
    expect(off, `realms without ${active} ± 1 results in ${active} periods; cycle times:\n${cycleTimes.join('\n')}`).toEqual([]);
    expect(closeResults(rows, (r) => r.checkedAt, PERIOD_MS / 2), 'results of a realm within half a period').toEqual([]);
    expect(overlappingProbes(spans), 'a realm probed by two members at once').toEqual([]);
    // The three share the work: each took part in every period's probing.
    for (const m of fleet) expect(spans.filter((s) => s.member === m.id && s.start >= from && s.start < to).length, `${m.id}'s probes in the window`).toBeGreaterThan(REALMS / 10);
    expect(fleet.flatMap((m) => m.d.events('lease.lost'))).toEqual([]);
  }, 90_000);

  it('the leader SIGKILLed mid-cycle: its realms probed by the others within TTL + 1 period, one monitor_instance_down, resolved by fleet retire; nothing lost', async () => {
    const leader = [...fleet].sort((a, b) => a.id.localeCompare(b.id))[0] as Member;
    const survivors = fleet.filter((m) => m !== leader);
    const ttlMs = Number(leader.env.FLEET_MEMBER_TTL_MS);
    // Each answer takes a little while, so that a cycle is long enough to be caught in the middle.
    fx.sim.latencyMs = 10;
    const heldBy = async (id: string): Promise<number> => Number((await query('SELECT count(*) AS n FROM quickbooks_realm_leases WHERE holder = $1 AND lease_until > now()', [id])).rows[0]?.n);
    await until('the leader holding realms mid-cycle', async () => (await heldBy(leader.id)) > 0, 20_000, 5);
    leader.d.child.kill('SIGKILL');
    const killedAt = Date.now();
    await leader.d.exited;
    // What it held when it died: its leases are left as they were.
    const held = (await query('SELECT realm_id, lease_until FROM quickbooks_realm_leases WHERE holder = $1 AND lease_until IS NOT NULL', [leader.id])).rows.map((r) => ({
      realmId: String(r.realm_id),
      leaseUntil: (r.lease_until as Date).getTime(),
    }));
    expect(held.length, 'realms the leader held when it was killed').toBeGreaterThan(0);

    const takeovers = async (): Promise<Map<string, { checkedAt: number; createdAt: number; probeId: string }>> => {
      const rows = (await healthRows(query)).filter((r) => r.checkedAt > killedAt && held.some((h) => h.realmId === r.realmId));
      const first = new Map<string, { checkedAt: number; createdAt: number; probeId: string }>();
      for (const r of rows.sort((a, b) => a.checkedAt - b.checkedAt)) if (!first.has(r.realmId)) first.set(r.realmId, r);
      return first;
    };
    await until('every realm the leader held probed again', async () => (await takeovers()).size === held.length, ttlMs + PERIOD_MS + 10_000, 100);
    const survivorProbes = new Set(survivors.flatMap((m) => probeSpans(m.d, m.id)).map((s) => s.probeId));
    for (const h of held) {
      const t = (await takeovers()).get(h.realmId);
      expect(t && survivorProbes.has(t.probeId), `realm ${h.realmId} taken over by a survivor`).toBe(true);
      // Not before its lease ran out (no early steal), and within TTL + 1 period of the kill (a
      // second more for the claim, the probe and the insert on a busy machine).
      expect(t!.checkedAt, `realm ${h.realmId} taken over before its lease expired`).toBeGreaterThanOrEqual(h.leaseUntil - 5);
      expect(t!.createdAt - h.leaseUntil, `realm ${h.realmId} taken over more than a period after its lease expired`).toBeLessThanOrEqual(PERIOD_MS + 1000);
      expect(t!.createdAt - killedAt, `realm ${h.realmId} taken over late`).toBeLessThanOrEqual(ttlMs + PERIOD_MS + 1000);
    }
    // The survivors cover every realm from then on.
    const covered = killedAt + ttlMs + PERIOD_MS;
    await until('every realm probed by the survivors after the takeover', async () => new Set((await healthRows(query)).filter((r) => r.checkedAt > covered).map((r) => r.realmId)).size === REALMS, 20_000, 200);

    // One monitor_instance_down for the dead slot, across the fleet.
    const dedupKey = `qbo-health-monitor:monitor_instance_down:system:instance:${leader.env.FLEET_INSTANCE_ID}`;
    await until('monitor_instance_down raised', () => hook.accepted().some((b) => b.dedupKey === dedupKey && b.event === 'alert.raised'), 20_000);
    const raised = hook.accepted().find((b) => b.dedupKey === dedupKey) as Record<string, unknown>;
    expect(raised).toMatchObject({ event: 'alert.raised', kind: 'monitor_instance_down', realmId: null });
    expect(survivors.map((m) => memberOf(m.env, m.d))).toContain(raised.instance);
    const retired = await runQbhealth(['fleet', 'retire', leader.id], { DATABASE_URL: fx.db.url, FLEET_HEARTBEAT_MS: leader.env.FLEET_HEARTBEAT_MS as string, FLEET_MEMBER_TTL_MS: String(ttlMs) });
    expect(retired.code, retired.stderr).toBe(0);
    await until('monitor_instance_down resolved', () => hook.accepted().some((b) => b.dedupKey === dedupKey && b.event === 'alert.resolved'), 20_000);
    await moreCycles(survivors, 2);
    expect(hook.attempts.filter((a) => a.body.dedupKey === dedupKey).map((a) => a.body.event)).toEqual(['alert.raised', 'alert.resolved']);
    expect(hook.attempts.filter((a) => a.body.kind !== 'monitor_instance_down'), 'other alerts').toEqual([]);
    expect((await query('SELECT count(*) AS n FROM quickbooks_monitor_members WHERE instance_id = $1', [leader.id])).rows[0]?.n).toBe('0');

    expect(survivors.flatMap((m) => m.d.events('lease.lost')), 'a survivor lost a lease').toEqual([]);
    for (const m of survivors) expect((await m.d.stop('SIGINT')).code).toBe(0);
    await expectNothingLost(query, survivors.map((m) => m.env.SPOOL_DIR as string), survivors.map((m) => m.d), true);
    expect(overlappingProbes(fleet.flatMap((m) => probeSpans(m.d, m.id))), 'a realm probed by two members at once').toEqual([]);
  }, 90_000);
});

/** A dead-man's-switch receiver: every GET on `path` counted with its arrival time; the first `failFirst` answered 500. */
async function pingReceiver(path: string, failFirst: number): Promise<{ url: string; pings: number[]; close(): Promise<void> }> {
  const pings: number[] = [];
  let failed = 0;
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== path) return void res.writeHead(404).end();
    pings.push(Date.now());
    if (failed < failFirst) {
      failed++;
      return void res.writeHead(500).end('no');
    }
    res.writeHead(200).end('OK');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${path}`,
    pings,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('three daemons through an Intuit outage, with HEARTBEAT_URL', () => {
  const REALMS = 12;
  const PING_SECRET = 'c0ffee00-5ec2-4e7a-9b1d-hc-ping-secret-77';
  let fx: Fixture;
  let hook: AlertReceiver;
  let heartbeat: Awaited<ReturnType<typeof pingReceiver>>;
  let fleet: Member[] = [];

  beforeAll(async () => {
    fx = await realmsFixture(REALMS);
    // The first attempt of the first three notifications fails: they must come again, the same.
    hook = await alertReceiver(3);
    heartbeat = await pingReceiver(`/ping/${PING_SECRET}`, 2);
    fleet = Array.from({ length: 3 }, () => {
      const env = { ...daemonEnv(fx.db.url, fx.sim), ALERT_WEBHOOK_URL: hook.url, ALERT_AFTER_FAILURES: '2', HEARTBEAT_URL: heartbeat.url };
      const d = spawnDaemon(env);
      return { env, d, id: memberOf(env, d) };
    });
    await Promise.all(fleet.map((m) => m.d.waitFor('fleet.joined')));
  });
  afterAll(async () => {
    await Promise.all(fleet.map((m) => m.d.stop('SIGKILL')));
    await hook?.close();
    await heartbeat?.close();
    await fx?.close();
  });

  it('one alert.raised and one alert.resolved per realm across the fleet, each with a unique notificationId and its dedupKey; a failed delivery retried with the same notificationId', async () => {
    const realmsAlerted = (event: string): number => new Set(bodiesOf(hook.accepted(), event, 'quickbooks_api').map((b) => b.realmId)).size;
    await until('a result for every realm', async () => Number((await fx.db.query('SELECT count(DISTINCT realm_id) AS n FROM quickbooks_connection_health')).rows[0]?.n) === REALMS, 20_000);
    fx.sim.scenario = 'outage';
    await until(() => `alert.raised for every realm (${realmsAlerted('alert.raised')} of ${REALMS})`, () => realmsAlerted('alert.raised') === REALMS, 30_000);
    // Every member took part in the outage's probing.
    await moreCycles(fleet, 2);
    fx.sim.scenario = 'healthy';
    await until(() => `alert.resolved for every realm (${realmsAlerted('alert.resolved')} of ${REALMS})`, () => realmsAlerted('alert.resolved') === REALMS, 30_000);
    await until('the outbox delivered', async () => (await fx.db.query('SELECT count(*) AS n FROM quickbooks_alert_outbox WHERE delivered_at IS NULL')).rows[0]?.n === '0');
    await moreCycles(fleet, 2);

    for (const m of fleet) expect(m.d.events('probe.failed').length, `${m.id} probed during the outage`).toBeGreaterThan(0);
    const accepted = hook.accepted();
    expect(accepted.filter((b) => b.kind !== 'quickbooks_api'), 'alerts other than the outage').toEqual([]);
    for (const [realm, bodies] of byRealm(accepted.map((b) => ({ ...b, realmId: String(b.realmId) }) as Record<string, unknown> & { realmId: string }))) {
      expect(bodies.map((b) => b.event), `realm ${realm}`).toEqual(['alert.raised', 'alert.resolved']);
      for (const b of bodies) expect(b).toMatchObject({ dedupKey: `qbo-health-monitor:quickbooks_api:${realm}`, notificationId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
      expect(fleet.map((m) => m.id)).toContain(bodies[0]?.instance);
    }
    expect(accepted).toHaveLength(2 * REALMS);
    expect(new Set(accepted.map((b) => b.notificationId)).size, 'a notification delivered twice').toBe(accepted.length);
    // The three refused first attempts came again with the same notificationId and body.
    const refused = hook.attempts.filter((a) => a.status === 500);
    expect(refused).toHaveLength(3);
    for (const r of refused) {
      const again = hook.attempts.filter((a) => a.body.notificationId === r.body.notificationId && a.status === 200);
      expect(again, `the retry of ${String(r.body.notificationId)}`).toHaveLength(1);
      expect(again[0]?.body).toEqual(r.body);
    }
  }, 120_000);

  it('HEARTBEAT_URL: pinged after completed cycles, by whichever members run, no more once every daemon stopped, its secret path in no log line', async () => {
    await moreCycles(fleet, 2);
    const completed = (): number[] => fleet.flatMap((m) => m.d.events('scheduler.cycle_completed').map(logTime)).sort((a, b) => a - b);
    // A ping follows a completed cycle (never a tick): the n-th ping arrives after the n-th cycle completed.
    const done = completed();
    heartbeat.pings.forEach((at, i) => expect(at, `ping ${i + 1} before ${i + 1} cycles had completed`).toBeGreaterThanOrEqual(done[i] ?? Number.POSITIVE_INFINITY));
    // One ping per cycle (one is skipped only while the previous one still waits for its answer).
    expect(heartbeat.pings.length).toBeGreaterThanOrEqual(done.length * 0.9 - 3);
    expect(heartbeat.pings.length).toBeLessThanOrEqual(done.length);
    // The two refused pings were logged (without the URL, checked below).
    await until('heartbeat_url.failed logged', () => fleet.some((m) => m.d.events('heartbeat_url.failed').length > 0));
    // Two members stop: the last one keeps pinging after its cycles.
    const [a, b, last] = fleet as [Member, Member, Member];
    for (const m of [a, b]) expect((await m.d.stop('SIGINT')).code).toBe(0);
    const alone = heartbeat.pings.length;
    await moreCycles([last], 2);
    await until('pings from the last member', () => heartbeat.pings.length >= alone + 2, 5000);
    expect((await last.d.stop('SIGINT')).code).toBe(0);
    const stoppedAt = Date.now();
    const count = heartbeat.pings.length;
    expect(heartbeat.pings.every((at) => at <= stoppedAt)).toBe(true);
    expectNoSecrets(
      fleet.map((m) => m.d),
      [PING_SECRET, heartbeat.url, ...fx.sim.issuedTokens(), dbPassword(fx.db.url)],
    );
    await expectNothingLost((t) => fx.db.query(t), fleet.map((m) => m.env.SPOOL_DIR as string), fleet.map((m) => m.d), true);
    // With every daemon gone, no ping came since.
    expect(heartbeat.pings.length).toBe(count);
  }, 60_000);
});
