/**
 * The fleet's parts one at a time, against a real PostgreSQL: the lease claim (disjoint, due,
 * fair, fenced), the outbox's delivery (once, in order per alert, retried with the same
 * notificationId, handed to another member when a claim expires), the spool of a process that is
 * gone adopted by the next one, the dead-man's switch, and the FLEET_* configuration.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { insertNotification } from '../src/db/alert-queries.js';
import { claimRealms, finishLeases, heartbeat, syncLeases } from '../src/db/fleet-queries.js';
import { createPool, type Pool } from '../src/db/pool.js';
import { WebhookNotifier } from '../src/escalate/notifier.js';
import { OutboxDeliverer } from '../src/escalate/outbox.js';
import type { AlertNotification } from '../src/alert.js';
import { DeadMansSwitch } from '../src/fleet/dead-mans-switch.js';
import { ClockOffset, Membership } from '../src/fleet/membership.js';
import { ProbeCycle, type CycleHooks } from '../src/probe/cycle.js';
import type { Prober } from '../src/probe/prober.js';
import { instanceSpoolDir, Spool } from '../src/recorder/spool.js';
import type { TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import { quiet } from './support/realms.js';
import { eventually } from './support/wait.js';
import { passOutcome } from './support/outcomes.js';

let db: TestDatabase;
let pool: Pool;
beforeAll(async () => {
  db = await migratedDatabase();
  pool = createPool({ databaseUrl: db.url, applicationName: 'test', max: 8 }, quiet);
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

async function addRealms(ids: readonly string[]): Promise<void> {
  await db.query(
    `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc) SELECT id, 'sandbox', 'x' FROM unnest(ARRAY[${ids.map((i) => `'${i}'`).join(',')}]) AS id`,
  );
  await syncLeases(pool);
}

describe('realm leases', () => {
  it('concurrent claims are disjoint and cover every due realm, longest-waiting first; a finished realm is not due again within the period', async () => {
    const realms = Array.from({ length: 60 }, (_, i) => String(7_000_000_000 + i));
    await addRealms(realms);
    // Realm 59 waited longest (claimed and probed long ago), the rest less.
    await db.query(`UPDATE quickbooks_realm_leases SET probed_at = now() - interval '1 hour', claimed_at = now() - interval '1 hour' WHERE realm_id <> '${realms[59]}' AND realm_id LIKE '7%'`);
    await db.query(`UPDATE quickbooks_realm_leases SET probed_at = now() - interval '2 hours', claimed_at = now() - interval '2 hours' WHERE realm_id = '${realms[59]}'`);
    const opts = { limit: 7, dueAfterMs: 45_000, leaseMs: 15_000 };
    const first = await claimRealms(pool, 'a#1', { ...opts, limit: 1 });
    expect(first.map((l) => l.realmId)).toEqual([realms[59]]);
    const rounds = await Promise.all(['a#1', 'b#2', 'c#3', 'd#4'].map(async (member) => {
      const mine: string[] = [];
      for (;;) {
        const got = await claimRealms(pool, member, opts);
        if (got.length === 0) return mine;
        mine.push(...got.map((l) => l.realmId));
      }
    }));
    const all = rounds.flat();
    expect(new Set(all).size, 'a realm claimed twice').toBe(all.length);
    expect(all.sort()).toEqual(realms.slice(0, 59).sort());
    // Nothing is due while every realm is leased, nor once finished within the period.
    expect(await claimRealms(pool, 'e#5', opts)).toEqual([]);
    const { rows } = await db.query(`SELECT realm_id, lease_seq::text AS seq, holder FROM quickbooks_realm_leases WHERE realm_id LIKE '7%'`);
    const byHolder = new Map<string, Array<{ lease: { realmId: string; seq: string }; connected: boolean; result: unknown }>>();
    for (const r of rows as Array<{ realm_id: string; seq: string; holder: string }>) {
      byHolder.set(r.holder, [...(byHolder.get(r.holder) ?? []), { lease: { realmId: r.realm_id, seq: r.seq }, connected: true, result: { ok: true } }]);
    }
    for (const [holder, probes] of byHolder) expect((await finishLeases(pool, holder, probes)).size).toBe(probes.length);
    expect(await claimRealms(pool, 'e#5', opts)).toEqual([]);
    // A cycle on demand (`force`) takes free realms whether due or not.
    expect((await claimRealms(pool, 'e#5', { ...opts, force: true })).length).toBe(7);
  });

  it('a cycle longer than the due share of a period ends after one pass: realms it probed are not claimed again by it, however soon they are due', async () => {
    const ids = ['8500000001', '8500000002', '8500000003', '8500000004', '8500000005'];
    await addRealms(ids);
    const probed: string[] = [];
    // 30 ms a probe, one at a time: the cycle outlasts the 40 ms after which a realm is due again.
    const prober = {
      probe: async (realmId: string) => {
        probed.push(realmId);
        await new Promise((r) => setTimeout(r, 30));
        return passOutcome(realmId, 30);
      },
    } as unknown as Prober;
    const hooks: CycleHooks = {
      observe: () => undefined,
      record: async () => undefined,
      offlineShare: () => ({ realms: [], known: 0, members: 1 }),
      forget: () => undefined,
      databaseFailed: (err) => {
        throw err;
      },
      shuttingDown: () => probed.length > 50,
    };
    const cycle = new ProbeCycle(pool, prober, hooks, quiet, { instanceId: 'onepass#1', batch: 1, dueAfterMs: 40, leaseMs: 60_000 });
    await cycle.run();
    const ours = probed.filter((r) => ids.includes(r));
    expect(ours.sort()).toEqual(ids);
  });

  it('the heartbeat renews claimed realms that wait for a free probe slot, not only those being probed (a wait as long as a probe may outlast the TTL)', async () => {
    const ids = ['8400000001', '8400000002', '8400000003', '8400000004'];
    await addRealms(ids);
    // Realms 2 and 3 answer only when released: both slots busy, realm 4 claimed and waiting.
    const release = new Map<string, () => void>();
    const prober = {
      probe: async (realmId: string) => {
        if (realmId === ids[1] || realmId === ids[2]) await new Promise<void>((resolve) => release.set(realmId, resolve));
        return passOutcome(realmId);
      },
    } as unknown as Prober;
    const hooks: CycleHooks = {
      observe: () => undefined,
      record: async () => undefined,
      offlineShare: () => ({ realms: [], known: 0, members: 1 }),
      forget: () => undefined,
      databaseFailed: (err) => {
        throw err;
      },
      shuttingDown: () => false,
    };
    const member = 'waiting#1';
    const cycle = new ProbeCycle(pool, prober, hooks, quiet, { instanceId: member, batch: 2, dueAfterMs: 60_000, leaseMs: 60_000 });
    const running = cycle.run();
    await eventually(async () => expect(release.size).toBe(2));
    const ours = (): string[] => cycle.probing().filter((r) => ids.includes(r)).sort();
    expect(ours()).toEqual(ids.slice(1));
    // Renewed: all three of its live leases, the waiting one among them.
    expect((await heartbeat(pool, member, 60_000, cycle.probing())).held).toBe(3);
    for (const done of release.values()) done();
    expect(await running).toMatchObject({ realms: 4, uncoordinated: false });
    expect(ours()).toEqual([]);
  });

  it('a heartbeat and the ends of leases, on two connections at once and in any order, never deadlock; only the leases being worked on are renewed', async () => {
    const realms = Array.from({ length: 400 }, (_, i) => String(7_200_000_000 + i));
    await addRealms(realms);
    const leases = await claimRealms(pool, 'busy#1', { limit: 400, dueAfterMs: 0, leaseMs: 60_000, force: true });
    expect(leases.length).toBeGreaterThanOrEqual(400);
    const mine = leases.filter((l) => l.realmId.startsWith('72'));
    const shuffled = [...mine].sort(() => Math.random() - 0.5);
    const beats = (async () => {
      for (let i = 0; i < 30; i++) await heartbeat(pool, 'busy#1', 60_000, mine.map((l) => l.realmId));
    })();
    const ends = (async () => {
      for (let i = 0; i < shuffled.length; i += 20) await finishLeases(pool, 'busy#1', shuffled.slice(i, i + 20).map((lease) => ({ lease, connected: true, result: {} })));
    })();
    await Promise.all([beats, ends]);
    // A lease held but no longer worked on is not renewed: it runs out.
    const [kept] = await claimRealms(pool, 'busy#1', { limit: 1, dueAfterMs: 0, leaseMs: 60_000, force: true });
    await db.query(`UPDATE quickbooks_realm_leases SET lease_until = now() + interval '5 seconds' WHERE realm_id = '${kept!.realmId}'`);
    await heartbeat(pool, 'busy#1', 60_000, []);
    const { rows } = await db.query(`SELECT lease_until < now() + interval '10 seconds' AS short FROM quickbooks_realm_leases WHERE realm_id = '${kept!.realmId}'`);
    expect(rows[0]).toEqual({ short: true });
  });

  it("a lease taken over after it expired fences the first holder out: its finish is refused, the new holder's counts", async () => {
    const realm = '7100000000';
    await addRealms([realm]);
    // The earlier tests' realms are free too: out of the way, so that claims find this one.
    await db.query(`UPDATE quickbooks_oauth_tokens SET status = 'disconnected' WHERE realm_id <> '${realm}'`);
    const [old] = await claimRealms(pool, 'slow#1', { limit: 1, dueAfterMs: 0, leaseMs: 1 });
    expect(old?.realmId).toBe(realm);
    // The lease (1 ms) expires: another member takes the realm, on the database's clock.
    await eventually(async () => expect((await claimRealms(pool, 'fast#2', { limit: 1, dueAfterMs: 0, leaseMs: 60_000, force: true })).map((l) => l.realmId)).toEqual([realm]));
    expect(await finishLeases(pool, 'slow#1', [{ lease: old!, connected: true, result: {} }])).toEqual(new Set());
    const { rows } = await db.query(`SELECT holder FROM quickbooks_realm_leases WHERE realm_id = '${realm}'`);
    expect(rows[0]).toEqual({ holder: 'fast#2' });
  });
});

const notification = (realmId: string, event: AlertNotification['event']): AlertNotification => ({
  event,
  severity: 'critical',
  kind: 'quickbooks_api',
  realmId,
  summary: 'failing',
  consecutiveFailures: 3,
  since: new Date().toISOString(),
  lastError: null,
  intuitTid: null,
  notificationId: randomUUID(),
  dedupKey: `qbo-health-monitor:quickbooks_api:${realmId}`,
  instance: 'writer#1',
  text: `${event} ${realmId}`,
});

async function receiver(answers: number[]): Promise<{ url: string; bodies: AlertNotification[]; server: Server }> {
  const bodies: AlertNotification[] = [];
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      if (text !== '') bodies.push(JSON.parse(text) as AlertNotification);
      res.writeHead(answers.shift() ?? 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook/s3cr3t-path`, bodies, server };
}

describe('membership', () => {
  it('refuses to start as a member id live on another host (one FLEET_INSTANCE_ID in containers, each pid 1): exit 78, the row left alone', async () => {
    const id = `shared-id#${process.pid}`;
    await db.query(`INSERT INTO quickbooks_monitor_members (instance_id, host, pid, version) VALUES ($1, 'container-b', $2, '0.1.0')`, [id, process.pid]);
    const capture = captureLog('debug');
    const membership = new Membership(pool, capture.log, { instanceId: id, version: '0.1.0', heartbeatMs: 1000, ttlMs: 3000 });
    await expect(membership.join(undefined)).rejects.toMatchObject({ exitCode: 78, message: expect.stringContaining('another daemon is running as FLEET_INSTANCE_ID "shared-id" (pid') });
    const { rows } = await db.query('SELECT host FROM quickbooks_monitor_members WHERE instance_id = $1', [id]);
    expect(rows).toEqual([{ host: 'container-b' }]);
  });
});

describe("the database's clock as a member estimates it", () => {
  it('keeps to where the round trips agree: slow ones (a loaded host, a heartbeat waiting on a lock) do not move it; a stepped clock is followed at once', () => {
    const clock = new ClockOffset();
    // The database's clock is 250 ms ahead of this host's; quick round trips of 2 ms.
    clock.sample(1_000_250 + 1, 1_000_000, 1_000_002);
    clock.sample(1_005_250 + 1, 1_005_000, 1_005_002);
    expect(Math.abs(clock.offsetMs - 250)).toBeLessThanOrEqual(1);
    // A round trip of 900 ms whose clock reading came right at its start: the middle of it would say 250 - 450.
    clock.sample(1_010_250, 1_010_000, 1_010_900);
    expect(Math.abs(clock.offsetMs - 250)).toBeLessThanOrEqual(1);
    // And one whose reading came at its end.
    clock.sample(1_015_250 + 900, 1_015_000, 1_015_900);
    expect(Math.abs(clock.offsetMs - 250)).toBeLessThanOrEqual(1);
    // This host's clock stepped back 30 s (NTP): the offset follows from the next round trip on.
    clock.sample(1_020_250 + 30_000 + 1, 1_020_000, 1_020_002);
    expect(Math.abs(clock.offsetMs - 30_250)).toBeLessThanOrEqual(1);
  });
});

describe('the alert outbox', () => {
  it('delivers each notification once, in order per alert, retrying a failing receiver with the same notificationId', async () => {
    const hook = await receiver([503]);
    const capture = captureLog('debug');
    capture.secrets.add(hook.url);
    const raised = notification('8100000001', 'alert.raised');
    const resolved = notification('8100000001', 'alert.resolved');
    const other = notification('8100000002', 'alert.raised');
    for (const n of [raised, resolved, other]) await insertNotification(pool, n);
    const deliverer = new OutboxDeliverer(pool, new WebhookNotifier(hook.url, capture.log, { retries: 2, minTimeoutMs: 10, maxTimeoutMs: 20 }), capture.log, { instanceId: 'member#1', pollMs: 50 });
    try {
      deliverer.start();
      await eventually(async () => expect(hook.bodies.filter((b) => b.realmId?.startsWith('81'))).toHaveLength(4));
      const mine = hook.bodies.filter((b) => b.realmId?.startsWith('81'));
      // The first attempt got 503 and was retried with the same body; the alert's resolution waited
      // for its raise (another alert's notification needs not wait).
      const ids = mine.map((b) => b.notificationId);
      expect(ids.slice(0, 2)).toEqual([raised.notificationId, raised.notificationId]);
      expect(ids.slice(2).sort()).toEqual([resolved.notificationId, other.notificationId].sort());
      expect(ids.lastIndexOf(raised.notificationId)).toBeLessThan(ids.indexOf(resolved.notificationId));
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM quickbooks_alert_outbox WHERE body->>'realmId' LIKE '81%' AND delivered_at IS NOT NULL AND delivered_by = 'member#1'`);
      expect(rows[0]).toEqual({ n: 3 });
      expect(capture.byEvent('alert.delivery_failed')).toHaveLength(1);
      expect(capture.lines.join('\n')).not.toContain('s3cr3t-path');
    } finally {
      await deliverer.stop(1000);
      hook.server.close();
    }
  });

  it('a slow receiver: a member starts only deliveries its claim still covers and hands the rest back, so with two members delivering no notification goes out twice', async () => {
    const bodies: AlertNotification[] = [];
    // Each answer takes 400 ms.
    const slow = createServer((req, res) => {
      let text = '';
      req.on('data', (d: Buffer) => (text += d.toString()));
      req.on('end', () => {
        bodies.push(JSON.parse(text) as AlertNotification);
        setTimeout(() => res.writeHead(200).end(), 400);
      });
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/hook`;
    const sent = Array.from({ length: 8 }, (_, i) => notification(`830000000${i}`, 'alert.raised'));
    for (const n of sent) await insertNotification(pool, n);
    const capture = captureLog('debug');
    // Claims of 2 s; one delivery takes 1.5 s at worst (one attempt of 1 s, 0.5 s of retry window).
    const member = (id: string): OutboxDeliverer =>
      new OutboxDeliverer(pool, new WebhookNotifier(url, capture.log, { retries: 0, attemptTimeoutMs: 1000, maxRetryTimeMs: 500 }), capture.log, { instanceId: id, pollMs: 100, claimMs: 2000 });
    const members = [member('member#1'), member('member#2')];
    try {
      for (const m of members) m.start();
      const ours = (): string[] => bodies.filter((b) => b.realmId?.startsWith('830')).map((b) => b.notificationId);
      await eventually(async () => expect(new Set(ours()).size).toBe(sent.length), 20_000);
      for (const m of members) await m.stop(2000);
      expect(ours().length, 'a notification delivered twice').toBe(sent.length);
      expect(capture.byEvent('outbox.handed_back').filter((l) => Number(l.handedBack) > 0).length, 'claims handed back').toBeGreaterThan(0);
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM quickbooks_alert_outbox WHERE body->>'realmId' LIKE '830%' AND delivered_at IS NOT NULL AND claimed_by IS NULL`);
      expect(rows[0]).toEqual({ n: sent.length });
    } finally {
      for (const m of members) await m.stop(100);
      slow.closeAllConnections();
      slow.close();
    }
  });

  it('a receiver that keeps failing leaves the notification in the outbox, due again later, for any member; a claim that expires (its member died) goes to another', async () => {
    const hook = await receiver([500, 500, 500, 500]);
    const capture = captureLog('debug');
    const n = notification('8200000001', 'alert.raised');
    const later = notification('8200000001', 'alert.resolved');
    await insertNotification(pool, n);
    await insertNotification(pool, later);
    const failing = new OutboxDeliverer(pool, new WebhookNotifier(hook.url, capture.log, { retries: 1, minTimeoutMs: 10, maxTimeoutMs: 20 }), capture.log, { instanceId: 'member#1', pollMs: 60_000 });
    failing.start();
    await eventually(async () => expect(capture.byEvent('alert.delivery_failed').filter((l) => l.retryInMs !== undefined)).toHaveLength(1));
    await failing.stop(1000);
    const { rows } = await db.query(`SELECT delivered_at, claimed_by, attempts, last_error, next_attempt_at > now() AS later FROM quickbooks_alert_outbox WHERE notification_id = '${n.notificationId}'`);
    expect(rows[0]).toMatchObject({ delivered_at: null, claimed_by: null, attempts: 1, last_error: 'alert webhook answered HTTP 500', later: true });
    // The alert's resolution waits behind its undelivered raise: a receiver never sees it resolved first.
    expect(hook.bodies.map((b) => b.notificationId)).not.toContain(later.notificationId);

    // Due now, claimed by a member that then dies (its claim runs 1 ms): another member delivers it.
    await db.query(`UPDATE quickbooks_alert_outbox SET next_attempt_at = now(), claimed_by = 'dead#9', claimed_until = now() + interval '1 millisecond' WHERE notification_id = '${n.notificationId}'`);
    const ok = await receiver([]);
    const second = new OutboxDeliverer(pool, new WebhookNotifier(ok.url, capture.log), capture.log, { instanceId: 'member#2', pollMs: 50 });
    try {
      second.start();
      await eventually(async () => expect(ok.bodies.map((b) => b.notificationId)).toEqual([n.notificationId, later.notificationId]));
      const after = await db.query(`SELECT delivered_by FROM quickbooks_alert_outbox WHERE notification_id = '${n.notificationId}'`);
      expect(after.rows[0]).toEqual({ delivered_by: 'member#2' });
    } finally {
      await second.stop(1000);
      hook.server.close();
      ok.server.close();
    }
  });
});

describe('spools', () => {
  it("each process has its own directory; a daemon adopts what any process that is gone left (its own slot's or a slot that runs no more), and leaves a live one's alone", async () => {
    const root = path.join(os.tmpdir(), `qbhm-spool-${randomUUID().slice(0, 8)}`);
    const dead = instanceSpoolDir(root, 'host:8080/0', 999_999_999);
    const live = instanceSpoolDir(root, 'host:8080/0', process.ppid);
    for (const dir of [dead, live]) mkdirSync(dir, { recursive: true });
    const line = (id: string): string => `${JSON.stringify({ probeId: id, realmId: '1', checkedAt: new Date().toISOString(), status: 'pass' })}\n`;
    writeFileSync(path.join(dead, 'current.jsonl'), line(randomUUID()) + line(randomUUID()));
    writeFileSync(path.join(live, 'current.jsonl'), line(randomUUID()));
    const capture = captureLog('debug');
    const mine = instanceSpoolDir(root, 'host:8080/0');
    // A slot that never runs again (scaled down, its PORT changed): its spool is adopted too.
    const gone = instanceSpoolDir(root, 'host:9999/2', 999_999_998);
    mkdirSync(gone, { recursive: true });
    writeFileSync(path.join(gone, 'replay-0000000000001-000001.jsonl'), line(randomUUID()));
    const spool = new Spool(mine, capture.log, undefined, { root });
    expect(await spool.open()).toBe(3);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(gone)).toBe(false);
    expect(readdirSync(live)).toEqual(['current.jsonl']);
    expect(capture.byEvent('spool.found').map((l) => l.from).sort()).toEqual([dead, gone].sort());
    // Another slot's directory is never this process's business.
    expect(instanceSpoolDir(root, 'host:8081/0')).not.toBe(mine);
    await spool.close();
  });
});

describe("the dead-man's switch (HEARTBEAT_URL)", () => {
  it('pings after each call; a failing URL is logged once a minute, never with its secret path', async () => {
    const hook = await receiver([200, 500]);
    const capture = captureLog('debug');
    capture.secrets.add(hook.url);
    const outcomes: string[] = [];
    const sw = new DeadMansSwitch(hook.url, capture.log);
    sw.onPing = (o) => outcomes.push(o);
    sw.ping();
    await sw.settle();
    sw.ping();
    await sw.settle();
    expect(outcomes).toEqual(['ok', 'failed']);
    hook.server.close();
    hook.server.closeAllConnections();
    sw.ping();
    await sw.settle();
    expect(outcomes).toEqual(['ok', 'failed', 'failed']);
    expect(capture.byEvent('heartbeat_url.failed')).toHaveLength(1);
    expect(capture.lines.join('\n')).not.toContain('s3cr3t-path');
  });
});

describe('FLEET_* configuration', () => {
  const VALID = { DATABASE_URL: 'postgres://u:p@h/d', QBO_CLIENT_ID: 'id', QBO_CLIENT_SECRET: 'secret-value-1', TOKEN_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64') };

  it('defaults the slot to <hostname>:<PORT>, with the PM2 worker number under PM2; the TTL to 3 heartbeats', () => {
    const plain = parseConfig({ ...VALID, PORT: '8081' }, 'full');
    const pm2 = parseConfig({ ...VALID, NODE_APP_INSTANCE: '3' }, 'full');
    if (!plain.ok || !pm2.ok) throw new Error('expected a valid configuration');
    expect(plain.config).toMatchObject({ instanceId: `${os.hostname()}:8081`, fleetHeartbeatMs: 5000, fleetMemberTtlMs: 15_000, heartbeatUrl: undefined });
    expect(pm2.config.instanceId).toBe(`${os.hostname()}:8080/3`);
  });

  it('rejects a TTL under two heartbeats, a malformed id and a HEARTBEAT_URL that is no http(s) URL, without echoing the URL', () => {
    const result = parseConfig({ ...VALID, FLEET_HEARTBEAT_MS: '5000', FLEET_MEMBER_TTL_MS: '6000', FLEET_INSTANCE_ID: 'has space', HEARTBEAT_URL: 'ftp://hc-ping.com/secret-uuid' }, 'full');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.problems.join('\n')).toMatch(/FLEET_MEMBER_TTL_MS: must be at least twice FLEET_HEARTBEAT_MS/);
    expect(result.problems.join('\n')).toMatch(/FLEET_INSTANCE_ID: must be 1 to 128/);
    expect(result.problems.join('\n')).toMatch(/HEARTBEAT_URL: must be an absolute http/);
    expect(result.problems.join('\n')).not.toContain('secret-uuid');
  });
});
