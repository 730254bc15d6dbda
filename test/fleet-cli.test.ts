/**
 * `qbhealth fleet`, `qbhealth fleet retire ID`, and the fleet section of `qbhealth status` and of
 * the `/status` document (StatusReader), against a real PostgreSQL with member rows written by
 * hand: two live members on different versions and one whose heartbeat stopped 10 minutes ago.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { memberTtlFromEnv } from '../src/cli/fleet-commands.js';
import type { FleetReport } from '../src/db/fleet-report.js';
import { StatusReader, type StatusReport } from '../src/db/status.js';
import { runQbhealth } from './support/cli.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';
import { KEY_B64, migratedDatabase } from './support/qbo.js';

const LIVE = 'web-1:8080';
const LIVE_OLD = 'web-3:8080';
const DEAD = 'web-2:8080';
const [A, B, C, D] = ['1000000001', '1000000002', '1000000003', '1000000004'];

interface LeaseRow {
  realm_id: string;
  holder: string | null;
  lease_until: Date | null;
}

/** Members and leases as a fleet would leave them; the heartbeats and leases relative to the database's now(). */
async function arrangeFleet(db: TestDatabase): Promise<void> {
  await db.query('DELETE FROM quickbooks_monitor_members');
  await db.query('DELETE FROM quickbooks_realm_leases');
  await db.query(
    `INSERT INTO quickbooks_monitor_members (instance_id, host, pid, version, health_address, started_at, heartbeat_at) VALUES
       ($1, 'web-1', 4242, '0.2.0', 'http://10.0.0.5:8080', now() - interval '3 hours', now()),
       ($2, 'web-3', 5151, '0.1.0', 'http://10.0.0.7:8080', now() - interval '2 days', now() - interval '1 second'),
       ($3, 'web-2', 999, '0.0.9', NULL, now() - interval '5 days', now() - interval '10 minutes')`,
    [LIVE, LIVE_OLD, DEAD],
  );
  // A held by the live member; B held by the dead one (its lease not yet expired), C's lease from
  // the dead one expired; D is disconnected and not monitored.
  await db.query(
    `INSERT INTO quickbooks_realm_leases (realm_id, holder, lease_seq, lease_until, claimed_at) VALUES
       ($1, $4, 1, now() + interval '1 minute', now()),
       ($2, $5, 1, now() + interval '1 minute', now() - interval '10 minutes'),
       ($3, $5, 1, now() - interval '9 minutes', now() - interval '10 minutes')`,
    [A, B, C, LIVE, DEAD],
  );
}

async function insertTokens(db: TestDatabase): Promise<void> {
  for (const [realm, status] of [[A, 'connected'], [B, 'connected'], [C, 'reconnect_required'], [D, 'disconnected']] as const) {
    await db.query(
      `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc, status) VALUES ($1, 'sandbox', 'v1:not-a-real-envelope', $2)`,
      [realm, status],
    );
  }
}

const leases = async (db: TestDatabase): Promise<LeaseRow[]> =>
  (await db.query<LeaseRow>('SELECT realm_id, holder, lease_until FROM quickbooks_realm_leases ORDER BY realm_id')).rows;
const memberIds = async (db: TestDatabase): Promise<string[]> =>
  (await db.query<{ instance_id: string }>('SELECT instance_id FROM quickbooks_monitor_members ORDER BY instance_id')).rows.map((r) => r.instance_id);

describe('qbhealth fleet', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await migratedDatabase();
    await insertTokens(db);
  });
  beforeEach(() => arrangeFleet(db));
  afterAll(() => db.drop());
  const env = (extra: Record<string, string> = {}): Record<string, string> => ({ DATABASE_URL: db.url, ...extra });

  it('lists every member with its fields, warns about the live versions, names the down member, and exits 1', async () => {
    const r = await runQbhealth(['fleet'], env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^QuickBooks health monitor fleet at \S+Z \(database clock\); a member is down after FLEET_MEMBER_TTL_MS=15000 ms without a heartbeat$/m);
    expect(r.stdout).toMatch(/^instance +state +heartbeat +host +pid +version +started +realms held +health address$/m);
    expect(r.stdout).toMatch(/^web-1:8080 +LIVE +\d s ago +web-1 +4242 +0\.2\.0 +3 h ago +1 +http:\/\/10\.0\.0\.5:8080$/m);
    expect(r.stdout).toMatch(/^web-3:8080 +LIVE +\d s ago +web-3 +5151 +0\.1\.0 +2 d ago +0 +http:\/\/10\.0\.0\.7:8080$/m);
    // Its lease on B has not expired yet: still counted as held; C's expired lease is not.
    expect(r.stdout).toMatch(/^web-2:8080 +DOWN +10 min ago +web-2 +999 +0\.0\.9 +5 d ago +1 +-$/m);
    // Only live members' versions: the dead member's 0.0.9 is not a rolling upgrade in progress.
    expect(r.stdout).toMatch(/^warning: the live members run different versions: 0\.1\.0 \(web-3:8080\), 0\.2\.0 \(web-1:8080\); finish the rolling upgrade$/m);
    expect(r.stdout).toContain('web-2:8080 is down (last heartbeat 10 min ago): start it again, or if it is gone for good, `qbhealth fleet retire web-2:8080`');
    // A, B, C monitored (D is disconnected); A and B held.
    expect(r.stdout).toMatch(/^fleet: 2 live, 1 down; realms: 3 monitored, 2 held now$/m);
    expect(r.stdout).toMatch(/^[\x20-\x7e\n]*$/);
  });

  it('--json gives the same fleet for machines', async () => {
    const r = await runQbhealth(['fleet', '--json'], env());
    expect(r.code).toBe(1);
    const fleet = JSON.parse(r.stdout) as FleetReport;
    expect(fleet).toMatchObject({ memberTtlMs: 15000, live: 2, down: 1, versionsDiffer: true, realms: { total: 3, held: 2 } });
    expect(fleet.versions).toEqual([
      { version: '0.1.0', members: [LIVE_OLD] },
      { version: '0.2.0', members: [LIVE] },
    ]);
    expect(fleet.members.map((m) => [m.instanceId, m.state, m.realmsHeld])).toEqual([
      [LIVE, 'live', 1],
      [DEAD, 'down', 1],
      [LIVE_OLD, 'live', 0],
    ]);
    const dead = fleet.members.find((m) => m.instanceId === DEAD);
    expect(dead).toMatchObject({ host: 'web-2', pid: 999, version: '0.0.9', healthAddress: null });
    expect(dead?.heartbeatAgeMs).toBeGreaterThanOrEqual(600_000);
    expect(dead?.heartbeatAgeMs).toBeLessThan(660_000);
    // Measured on the database's clock: its now() less the heartbeat (ISO strings keep milliseconds).
    expect(Math.abs(Date.parse(fleet.at) - Date.parse(dead?.heartbeatAt ?? '') - (dead?.heartbeatAgeMs ?? 0))).toBeLessThanOrEqual(1);
    const live = fleet.members.find((m) => m.instanceId === LIVE);
    expect(live).toMatchObject({ healthAddress: 'http://10.0.0.5:8080', version: '0.2.0', pid: 4242 });
    expect(live?.heartbeatAgeMs).toBeLessThan(15_000);
    expect(Date.parse(fleet.at) - Date.parse(live?.startedAt ?? '')).toBeGreaterThanOrEqual(3 * 3_600_000);
  });

  it('judges live or down against FLEET_MEMBER_TTL_MS, and exits 0 when every member is live', async () => {
    const r = await runQbhealth(['fleet'], env({ FLEET_MEMBER_TTL_MS: String(15 * 60_000) }));
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^web-2:8080 +LIVE +10 min ago /m);
    expect(r.stdout).toMatch(/^fleet: 3 live, 0 down; realms: 3 monitored, 2 held now$/m);
    expect(r.stdout).not.toMatch(/^\S+ is down \(/m);
    // The versions now differ three ways, and a warning is not a failure.
    expect(r.stdout).toMatch(/^warning: the live members run different versions: 0\.0\.9 \(web-2:8080\), 0\.1\.0 \(web-3:8080\), 0\.2\.0 \(web-1:8080\)/m);
    const bad = await runQbhealth(['fleet'], env({ FLEET_MEMBER_TTL_MS: '9000', FLEET_HEARTBEAT_MS: '5000' }));
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain('FLEET_MEMBER_TTL_MS: must be at least twice FLEET_HEARTBEAT_MS (5000)');
  });

  it('retire refuses a live member, saying to stop it first, and changes nothing', async () => {
    const r = await runQbhealth(['fleet', 'retire', LIVE], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^qbhealth fleet retire: fleet member web-1:8080 is live \(heartbeat \d s ago on web-1, pid 4242\): stop it first/m);
    expect(r.stderr).toContain('Nothing was changed');
    expect(await memberIds(db)).toEqual([LIVE, DEAD, LIVE_OLD]);
    expect((await leases(db)).find((l) => l.realm_id === A)?.holder).toBe(LIVE);
  });

  it('retire removes a dead member and frees its leases, expired or not; the others keep theirs', async () => {
    const r = await runQbhealth(['fleet', 'retire', DEAD], env());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^retired fleet member web-2:8080 \(host web-2, pid 999, version 0\.0\.9, last heartbeat 10 min ago\): its realm leases are freed/m);
    expect(await memberIds(db)).toEqual([LIVE, LIVE_OLD]);
    expect((await leases(db)).map((l) => [l.realm_id, l.holder, l.lease_until === null])).toEqual([
      [A, LIVE, false],
      [B, null, true],
      [C, null, true],
    ]);
    const after = await runQbhealth(['fleet'], env());
    expect(after.code).toBe(0);
    expect(after.stdout).not.toContain(DEAD);
    expect(after.stdout).toMatch(/^fleet: 2 live, 0 down; realms: 3 monitored, 1 held now$/m);
  });

  it('retire of a slot (FLEET_INSTANCE_ID, as alerts name it) removes every dead process of it, and refuses while one is live', async () => {
    await db.query(
      `INSERT INTO quickbooks_monitor_members (instance_id, host, pid, version, started_at, heartbeat_at) VALUES
         ('web-4:8080/0#11', 'web-4', 11, '0.2.0', now() - interval '1 day', now() - interval '20 minutes'),
         ('web-4:8080/0#12', 'web-4', 12, '0.2.0', now() - interval '1 hour', now() - interval '5 minutes'),
         ('web-5:8080/0#13', 'web-5', 13, '0.2.0', now() - interval '1 day', now() - interval '20 minutes'),
         ('web-5:8080/0#14', 'web-5', 14, '0.2.0', now() - interval '1 hour', now())`,
    );
    const slot = await runQbhealth(['fleet', 'retire', 'web-4:8080/0'], env());
    expect(slot.stderr).toBe('');
    expect(slot.code).toBe(0);
    expect(slot.stdout).toContain('retired fleet member web-4:8080/0#11');
    expect(slot.stdout).toContain('retired fleet member web-4:8080/0#12');
    expect(slot.stdout).toContain('slot web-4:8080/0 retired');
    const refused = await runQbhealth(['fleet', 'retire', 'web-5:8080/0'], env());
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('fleet member web-5:8080/0 has a live process (web-5:8080/0#14)');
    expect(await memberIds(db)).toEqual([LIVE, DEAD, LIVE_OLD, 'web-5:8080/0#13', 'web-5:8080/0#14']);
  });

  it('retire of an unknown id says which ids exist; a missing or extra ID is a usage error', async () => {
    const unknown = await runQbhealth(['fleet', 'retire', 'web-9:8080'], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no fleet member is registered as "web-9:8080" (registered: web-1:8080, web-2:8080, web-3:8080); nothing was changed');
    expect(await memberIds(db)).toEqual([LIVE, DEAD, LIVE_OLD]);

    const missing = await runQbhealth(['fleet', 'retire'], env());
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^qbhealth: missing ID \(`qbhealth fleet retire ID`\)$/m);
    expect(missing.stderr).toContain('usage: qbhealth fleet retire ID');
    const extra = await runQbhealth(['fleet', 'retire', DEAD, LIVE], env());
    expect(extra.code).toBe(2);
    expect(extra.stderr).toContain(`unexpected argument "${LIVE}"`);
    const option = await runQbhealth(['fleet', 'retire', DEAD, '--force'], env());
    expect(option.code).toBe(2);
    expect(option.stderr).toContain("Unknown option '--force'");
    const sub = await runQbhealth(['fleet', 'retrie', DEAD], env());
    expect(sub.code).toBe(2);
    expect(sub.stderr).toContain('unknown subcommand "retrie" (did you mean `qbhealth fleet retire`?)');
    // None of them touched the fleet.
    expect(await memberIds(db)).toEqual([LIVE, DEAD, LIVE_OLD]);
  });

  it('with no member registered it says no daemon has joined and exits 1', async () => {
    await db.query('DELETE FROM quickbooks_monitor_members');
    const r = await runQbhealth(['fleet'], env());
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('no member registered: no daemon has joined the fleet; is it running? (`pm2 status`)');
    expect(r.stdout).toMatch(/^fleet: 0 live, 0 down; realms: 3 monitored, 2 held now$/m);
    const none = await runQbhealth(['fleet', 'retire', DEAD], env());
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('no member is registered at all');
  });
});

describe('qbhealth fleet and an unusable database', () => {
  it('exits 75 when PostgreSQL is unreachable, saying nothing was retried, without the password', async () => {
    const url = 'postgres://monitor:pw-unused-2@127.0.0.1:9/none';
    for (const args of [['fleet'], ['fleet', '--json'], ['fleet', 'retire', DEAD]]) {
      const r = await runQbhealth(args, { DATABASE_URL: url });
      expect(r.code).toBe(75);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/PostgreSQL is unreachable \(ECONNREFUSED/);
      expect(r.stderr).toContain(`Nothing was retried (exit 75): run \`qbhealth ${args[0] === 'fleet' && args[1] === 'retire' ? 'fleet retire' : 'fleet'}\` again`);
      expect(r.stderr).not.toContain('pw-unused-2');
    }
  });

  it('exits 65 when the fleet tables are missing, pointing at migrate', async () => {
    const db = await createTestDatabase();
    try {
      const r = await runQbhealth(['fleet'], { DATABASE_URL: db.url });
      expect(r.code).toBe(65);
      expect(r.stderr).toContain('run `qbhealth migrate`');
    } finally {
      await db.drop();
    }
  });
});

describe('the fleet section of qbhealth status and of /status', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await migratedDatabase();
    await insertTokens(db);
    await arrangeFleet(db);
  });
  afterAll(() => db.drop());

  it('qbhealth status prints the members, the version warning and the down member after the realms', async () => {
    const r = await runQbhealth(['status'], { DATABASE_URL: db.url });
    expect(r.stdout).toMatch(/^fleet: 2 live, 1 down; realms: 3 monitored, 2 held now \(down after 15000 ms without a heartbeat\)$/m);
    expect(r.stdout).toMatch(/^ {2}instance +state +heartbeat +host +pid +version +started +realms held +health address$/m);
    expect(r.stdout).toMatch(/^ {2}web-1:8080 +LIVE +\d s ago +web-1 +4242 +0\.2\.0 +3 h ago +1 +http:\/\/10\.0\.0\.5:8080$/m);
    expect(r.stdout).toMatch(/^ {2}web-2:8080 +DOWN +10 min ago +web-2 +999 +0\.0\.9 +5 d ago +1 +-$/m);
    expect(r.stdout).toMatch(/^ {2}warning: the live members run different versions: 0\.1\.0 \(web-3:8080\), 0\.2\.0 \(web-1:8080\)/m);
    expect(r.stdout.indexOf('fleet: ')).toBeGreaterThan(r.stdout.indexOf('system alerts:'));
  });

  it('qbhealth status --json carries the same fleet as qbhealth fleet --json, judged against FLEET_MEMBER_TTL_MS', async () => {
    const status = JSON.parse((await runQbhealth(['status', '--json'], { DATABASE_URL: db.url })).stdout) as StatusReport;
    const fleet = JSON.parse((await runQbhealth(['fleet', '--json'], { DATABASE_URL: db.url })).stdout) as FleetReport;
    const shape = (f: FleetReport): unknown => ({ ...f, at: undefined, members: f.members.map((m) => ({ ...m, heartbeatAgeMs: undefined })) });
    expect(shape(status.fleet)).toEqual(shape(fleet));
    expect(status.fleet.down).toBe(1);
    const longTtl = JSON.parse((await runQbhealth(['status', '--json', '--realm-id', A], { DATABASE_URL: db.url, FLEET_MEMBER_TTL_MS: '3600000' })).stdout) as StatusReport;
    // Narrowed to a realm, the fleet is still the whole fleet.
    expect(longTtl.fleet).toMatchObject({ memberTtlMs: 3_600_000, live: 3, down: 0 });
  });

  it('StatusReader (GET /status) reports the fleet, down after its fleetMemberTtlMs (default 15000)', async () => {
    const since = new Date(Date.now() - 3_600_000);
    const log = captureLog('warn');
    const byDefault = new StatusReader(db.url, log.log);
    const configured = new StatusReader(db.url, log.log, { fleetMemberTtlMs: 3_600_000 });
    try {
      const a = await byDefault.load({ since });
      expect(a.fleet).toMatchObject({ memberTtlMs: 15_000, live: 2, down: 1, realms: { total: 3, held: 2 } });
      expect(a.fleet.members.find((m) => m.instanceId === DEAD)).toMatchObject({ state: 'down', host: 'web-2', pid: 999, version: '0.0.9', realmsHeld: 1 });
      const b = await configured.load({ since });
      expect(b.fleet).toMatchObject({ memberTtlMs: 3_600_000, live: 3, down: 0 });
    } finally {
      await Promise.all([byDefault.close(), configured.close()]);
    }
    expect(log.lines).toEqual([]);
  });
});

describe('FLEET_MEMBER_TTL_MS for the commands that need only DATABASE_URL', () => {
  const full = { DATABASE_URL: 'postgres://u:p@localhost/db', QBO_CLIENT_ID: 'id', QBO_CLIENT_SECRET: 'secret', TOKEN_ENCRYPTION_KEY: KEY_B64 };
  it.each([
    {},
    { FLEET_HEARTBEAT_MS: '2000' },
    { FLEET_MEMBER_TTL_MS: ' 60000 ' },
    { FLEET_MEMBER_TTL_MS: '' },
    { FLEET_HEARTBEAT_MS: '10000', FLEET_MEMBER_TTL_MS: '15000' },
    { FLEET_MEMBER_TTL_MS: 'soon' },
    { FLEET_HEARTBEAT_MS: '50' },
    { FLEET_MEMBER_TTL_MS: '3600001' },
  ])('reads %o as the daemon does', (fleetEnv) => {
    const ours = memberTtlFromEnv(fleetEnv);
    const daemon = parseConfig({ ...full, ...fleetEnv }, 'full');
    if (daemon.ok) {
      expect(ours).toEqual({ ttlMs: daemon.config.fleetMemberTtlMs, problems: [] });
    } else {
      expect(ours.problems).toEqual(daemon.problems.filter((p) => p.startsWith('FLEET_')));
      expect(ours.problems.length).toBeGreaterThan(0);
    }
  });
});
