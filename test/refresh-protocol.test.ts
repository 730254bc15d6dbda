import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { deadlineSignal } from '../src/deadline.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase, monitor, type Monitor } from './support/qbo.js';

describe('refresh protocol (two monitoring processes, one database, one Intuit)', () => {
  let sim: Simulator;
  let db: TestDatabase;
  const monitors: Monitor[] = [];
  const endpoints = () => ({ tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl, apiBaseUrl: sim.url });
  const spawnMonitor = () => {
    const m = monitor(db, endpoints());
    monitors.push(m);
    return m;
  };
  let realmCounter = 0;
  /** A realm imported through the real refresh path, with its access token then expired. */
  const importedRealm = async (m: Monitor): Promise<string> => {
    const realmId = String(4620816365000 + realmCounter++);
    const first = sim.addRealm(realmId, `Company ${realmId}`);
    const { IntuitOAuth } = await import('../src/quickbooks/oauth.js');
    const oauth = new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl });
    await m.store.save(realmId, 'sandbox', await oauth.refresh(first, deadlineSignal(3000)));
    sim.expireAccessTokens();
    return realmId;
  };

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, latencyMs: 50 });
    db = await migratedDatabase();
  });
  afterEach(async () => {
    await Promise.all(monitors.splice(0).map((m) => m.close()));
  });
  afterAll(async () => {
    await db.drop();
    await sim.close();
  });

  it('two concurrent probes on an expired access token make exactly one refresh, and both pass', async () => {
    const a = spawnMonitor();
    const b = spawnMonitor();
    const realmId = await importedRealm(a);
    const before = sim.stats.refreshes;
    const [ra, rb] = await Promise.all([a.prober.probeRealm(realmId), b.prober.probeRealm(realmId)]);
    expect([ra.errorCode, rb.errorCode]).toEqual(['ok', 'ok']);
    expect(sim.stats.refreshes - before).toBe(1);
    expect(sim.stats.refreshFailures).toBe(0);
    const row = (await db.query('SELECT status, revision FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    expect(row).toEqual({ status: 'connected', revision: '2' });
  });

  it('a realm rotated by another writer while this one refreshes recovers instead of going reconnect_required', async () => {
    const a = spawnMonitor();
    const realmId = await importedRealm(a);
    // Another writer (a second app, an import) rotates the token at Intuit first and stores the
    // new pair; its UPDATE waits on our row lock until our refresh with the old token is refused.
    const other = spawnMonitor();
    const current = await other.store.get(realmId);
    const { IntuitOAuth } = await import('../src/quickbooks/oauth.js');
    const oauth = new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl });
    const rotated = await oauth.refresh(current!.refreshToken, deadlineSignal(3000));
    const lockHolder = new pg.Client({ connectionString: db.url });
    await lockHolder.connect();
    await lockHolder.query('BEGIN');
    await lockHolder.query('SELECT 1 FROM quickbooks_oauth_tokens WHERE realm_id = $1 FOR UPDATE', [realmId]);
    // Sessions of this database waiting for a lock, to order the two writers deterministically.
    const waiting = async (n: number): Promise<void> => {
      for (let i = 0; i < 500; i++) {
        const { rows } = await db.query(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()`,
        );
        if (rows[0].n >= n) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`expected ${n} sessions waiting for the row lock`);
    };
    const probe = a.prober.probeRealm(realmId);
    await waiting(1); // the probe holds the old token and queues on the row lock first
    const cipherWrite = other.store.save(realmId, 'sandbox', rotated);
    await waiting(2); // the other writer queues behind it
    await lockHolder.query('COMMIT');
    await lockHolder.end();
    await cipherWrite;
    const result = await probe;
    expect(result.error).toBeUndefined();
    expect(result.errorCode).toBe('ok');
    const row = (await db.query('SELECT status FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    expect(row.status).toBe('connected');
    // It went through the refusal and the one re-read, not around them.
    expect(a.capture.byEvent('token.refresh_failed')).toEqual([expect.objectContaining({ level: 40, recovered: true })]);
  });

  it('a truly dead refresh token makes the realm reconnect_required with an error event, and later probes skip Intuit', async () => {
    const a = spawnMonitor();
    const realmId = await importedRealm(a);
    sim.scenario = 'revoked';
    try {
      const result = await a.prober.probeRealm(realmId);
      expect(result).toMatchObject({ connected: false, status: 'fail', errorCode: 'auth_invalid_grant' });
      expect(result.error).toContain('qbhealth connect');
    } finally {
      sim.scenario = 'healthy';
    }
    const row = (await db.query('SELECT status, status_reason FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    expect(row.status).toBe('reconnect_required');
    expect(a.capture.byEvent('token.refresh_failed')).toEqual([expect.objectContaining({ level: 50, errorCode: 'auth_invalid_grant' })]);
    const calls = sim.stats.apiCalls + sim.stats.refreshes + sim.stats.refreshFailures;
    const again = await a.prober.probeRealm(realmId);
    expect(again.errorCode).toBe('auth_invalid_grant');
    expect(sim.stats.apiCalls + sim.stats.refreshes + sim.stats.refreshFailures).toBe(calls);
  });

  it('records the hard expiry and reports the earlier expiry on the result', async () => {
    const a = spawnMonitor();
    const realmId = await importedRealm(a);
    const result = await a.prober.probeRealm(realmId);
    const row = (await db.query('SELECT refresh_token_expires_at, refresh_token_hard_expires_at FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    expect(row.refresh_token_hard_expires_at.getTime() - Date.now()).toBeGreaterThan(4 * 365 * 86_400_000);
    expect(result.refreshTokenExpiresAt?.getTime()).toBe(Math.min(row.refresh_token_expires_at.getTime(), row.refresh_token_hard_expires_at.getTime()));
  });
});
