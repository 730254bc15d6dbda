/**
 * Failures on the monitor's own side end as results, and a rotated token pair is never lost:
 * the prober and token store against a real PostgreSQL and the Intuit simulator.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { TokenCipher } from '../src/quickbooks/cipher.js';
import { IntuitOAuth } from '../src/quickbooks/oauth.js';
import { deadlineSignal } from '../src/deadline.js';
import { RealmDisconnectedError, TokenStore } from '../src/quickbooks/token-store.js';
import { Prober } from '../src/probe/prober.js';
import { createPool } from '../src/db/pool.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, KEY, migratedDatabase, monitor, type Monitor } from './support/qbo.js';

describe("the monitor's own failures are results", () => {
  let sim: Simulator;
  let db: TestDatabase;
  const monitors: Monitor[] = [];
  const holders: pg.Client[] = [];
  let counter = 0;

  const endpoints = () => ({ tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl, apiBaseUrl: sim.url });
  const spawnMonitor = (probeTimeoutMs = 3000): Monitor => {
    const m = monitor(db, endpoints(), probeTimeoutMs);
    monitors.push(m);
    return m;
  };
  /** A second session that holds locks for as long as the test wants. */
  const holder = async (): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    holders.push(c);
    return c;
  };
  const importedRealm = async (m: Monitor): Promise<string> => {
    const realmId = String(5550000000 + counter++);
    const first = sim.addRealm(realmId, `Company ${realmId}`);
    const oauth = new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl });
    await m.store.save(realmId, 'sandbox', await oauth.refresh(first, deadlineSignal(3000)));
    return realmId;
  };
  /** Makes the stored access token stale, so the next probe refreshes. */
  const expireStored = async (realmId: string): Promise<void> => {
    await db.query(`UPDATE quickbooks_oauth_tokens SET access_token_expires_at = now() - interval '1 hour' WHERE realm_id = $1`, [realmId]);
  };
  const storedRefreshToken = async (realmId: string): Promise<string> => {
    const row = (await db.query<{ refresh_token_enc: string }>('SELECT refresh_token_enc FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    return new TokenCipher(KEY).decrypt(row!.refresh_token_enc, realmId, 'refresh_token');
  };

  /** A deferred constraint trigger fails the COMMIT itself, after a token UPDATE went through. */
  const refuseCommits = async (): Promise<void> => {
    await db.query(`CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'commit refused for the test'; END $$`);
    await db.query(`CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON quickbooks_oauth_tokens DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()`);
  };
  const allowCommits = async (): Promise<void> => {
    await db.query('DROP TRIGGER refuse_commit ON quickbooks_oauth_tokens');
    await db.query('DROP FUNCTION refuse_commit()');
  };

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    db = await migratedDatabase();
  });
  afterEach(async () => {
    sim.refreshDelayMs = 0;
    sim.scenario = 'healthy';
    for (const c of holders.splice(0)) await c.end();
    await Promise.all(monitors.splice(0).map((m) => m.close()));
  });
  afterAll(async () => {
    await db.drop();
    await sim.close();
  });

  it('a key that cannot open the tokens is a token_unreadable result naming TOKEN_ENCRYPTION_KEY, at error level', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    const wrongKey = new TokenStore(m.pool, new TokenCipher(Buffer.alloc(32, 7)), new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', ...endpoints() }), m.capture.secrets, m.capture.log);
    const prober = new Prober(wrongKey, { apiBaseUrl: sim.url, probeTimeoutMs: 3000, refreshTokenWarnDays: 14 }, m.capture.log, m.capture.secrets);
    const { result, cause } = await prober.probe(realmId);
    expect(result).toMatchObject({ realmId, status: 'fail', connected: false, errorCode: 'token_unreadable' });
    expect(result.error).toContain('TOKEN_ENCRYPTION_KEY');
    expect(cause?.name).toBe('TokenUnreadableError');
    expect(m.capture.byEvent('probe.failed').at(-1)).toMatchObject({ levelName: 'error', errorCode: 'token_unreadable' });
    // The start-up check reports the same realm.
    const check = await wrongKey.checkReadable();
    expect(check.unreadable.map((u) => u.realmId)).toContain(realmId);
  });

  it('a statement timeout (57014) while reading the tokens is a database_unavailable result, not a skipped probe', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    const pool = createPool({ databaseUrl: db.url, applicationName: 'test-57014', statementTimeoutMs: 300 }, m.capture.log);
    try {
      const store = new TokenStore(pool, new TokenCipher(KEY), new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', ...endpoints() }), m.capture.secrets, m.capture.log);
      const prober = new Prober(store, { apiBaseUrl: sim.url, probeTimeoutMs: 3000, refreshTokenWarnDays: 14 }, m.capture.log, m.capture.secrets);
      const locker = await holder();
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE quickbooks_oauth_tokens IN ACCESS EXCLUSIVE MODE');
      const { result, cause } = await prober.probe(realmId);
      expect(result).toMatchObject({ realmId, status: 'fail', errorCode: 'database_unavailable' });
      expect((cause as { code?: string }).code).toBe('57014');
      expect(result.error).toMatch(/statement timeout/);
    } finally {
      await pool.end();
    }
  });

  it('a token row lock that is not granted before the deadline (55P03) is a result too', async () => {
    const m = spawnMonitor(800);
    const realmId = await importedRealm(m);
    await expireStored(realmId);
    const locker = await holder();
    await locker.query('BEGIN');
    await locker.query('SELECT 1 FROM quickbooks_oauth_tokens WHERE realm_id = $1 FOR UPDATE', [realmId]);
    const before = sim.stats.refreshes;
    const { result } = await m.prober.probe(realmId);
    expect(result).toMatchObject({ status: 'fail', errorCode: 'database_unavailable' });
    expect(result.error).toMatch(/lock timeout/);
    expect(sim.stats.refreshes).toBe(before);
  });

  it('anything unexpected is an internal result: the message in the row, the stack only in the log', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    class Broken extends TokenStore {
      override get(): never {
        throw new TypeError('cannot read properties of undefined (reading "refreshToken")');
      }
    }
    const broken = new Broken(m.pool, new TokenCipher(KEY), new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://x/cb', ...endpoints() }), m.capture.secrets, m.capture.log);
    const prober = new Prober(broken, { apiBaseUrl: sim.url, probeTimeoutMs: 3000, refreshTokenWarnDays: 14 }, m.capture.log, m.capture.secrets);
    const { result } = await prober.probe(realmId);
    expect(result).toMatchObject({ status: 'fail', errorCode: 'internal' });
    expect(result.error).toBe('unexpected failure in the probe: TypeError: cannot read properties of undefined (reading "refreshToken")');
    expect(result.error).not.toMatch(/\n\s+at /);
    const line = m.capture.byEvent('probe.failed').at(-1) as { levelName: string; err: { stack?: string } };
    expect(line.levelName).toBe('error');
    expect(line.err.stack).toMatch(/\n\s+at /);
  });

  it('a refresh Intuit answers after the probe deadline is still stored, and the next probe passes without invalid_grant', async () => {
    const m = spawnMonitor(500);
    const realmId = await importedRealm(m);
    await expireStored(realmId);
    sim.refreshDelayMs = 2500;
    const failuresBefore = sim.stats.refreshFailures;
    const refreshesBefore = sim.stats.refreshes;
    const { result } = await m.prober.probe(realmId);
    expect(result).toMatchObject({ status: 'fail', errorCode: 'timeout' });
    // A probe while that refresh is still unanswered joins it: a timeout again (Intuit is slow),
    // not a lock PostgreSQL would not grant, and no second request with the spent token.
    const meanwhile = await m.prober.probe(realmId);
    expect(meanwhile.result).toMatchObject({ status: 'fail', errorCode: 'timeout' });
    expect(await m.store.settle()).toEqual([]);
    expect(sim.stats.refreshes).toBe(refreshesBefore + 1);
    // The pair Intuit issued after the deadline is the stored one.
    const stored = await storedRefreshToken(realmId);
    expect(sim.issuedTokens()).toContain(stored);
    sim.refreshDelayMs = 0;
    const next = await m.prober.probe(realmId);
    expect(next.result.errorCode).toBe('ok');
    expect(sim.stats.refreshFailures).toBe(failuresBefore);
    expect(m.capture.byEvent('token.refreshed').length).toBeGreaterThan(0);
  });

  it('a pair whose COMMIT fails after Intuit answered is kept in memory and stored when the database takes it', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    await expireStored(realmId);
    await refuseCommits();
    const storedBefore = await storedRefreshToken(realmId);
    let failed;
    try {
      failed = await m.prober.probe(realmId);
    } finally {
      await allowCommits();
    }
    expect(failed.result).toMatchObject({ status: 'fail', errorCode: 'database_unavailable' });
    expect(m.store.unsavedRealms()).toEqual([realmId]);
    expect(m.capture.byEvent('token.unsaved').at(-1)).toMatchObject({ levelName: 'error', realmId });
    // The stored token is spent at Intuit; the kept pair is the only live one.
    expect(await storedRefreshToken(realmId)).toBe(storedBefore);
    // The next probe stores the kept pair first, then uses it: no refresh with the spent token.
    const refusedBefore = sim.stats.refreshFailures;
    const next = await m.prober.probe(realmId);
    expect(next.result.errorCode).toBe('ok');
    expect(m.store.unsavedRealms()).toEqual([]);
    expect(sim.stats.refreshFailures).toBe(refusedBefore);
    expect(sim.issuedTokens()).toContain(await storedRefreshToken(realmId));
    expect(m.capture.byEvent('token.refreshed').some((l) => l.late === true)).toBe(true);
  });

  it('a kept pair does not revive a realm disconnected meanwhile', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    await expireStored(realmId);
    await refuseCommits();
    try {
      expect((await m.prober.probe(realmId)).result.errorCode).toBe('database_unavailable');
    } finally {
      await allowCommits();
    }
    expect(m.store.unsavedRealms()).toEqual([realmId]);
    await m.store.setStatus(realmId, 'disconnected', 'qbhealth disconnect');
    await m.store.storeUnsaved();
    expect((await db.query('SELECT status FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0]).toEqual({ status: 'disconnected' });
    expect(m.store.unsavedRealms()).toEqual([]);
    expect(m.capture.byEvent('token.unsaved').at(-1)).toMatchObject({ realmId, outcome: 'disconnected' });
  });

  it('a disconnected realm is never refreshed, by a probe or by the refresh path', async () => {
    const m = spawnMonitor();
    const realmId = await importedRealm(m);
    await expireStored(realmId);
    await db.query(`UPDATE quickbooks_oauth_tokens SET status = 'disconnected' WHERE realm_id = $1`, [realmId]);
    const before = sim.stats.refreshes;
    await expect(m.prober.probe(realmId)).rejects.toBeInstanceOf(RealmDisconnectedError);
    await expect(m.store.freshAccessToken(realmId, deadlineSignal(2000))).rejects.toBeInstanceOf(RealmDisconnectedError);
    expect(sim.stats.refreshes).toBe(before);
    const row = (await db.query('SELECT status FROM quickbooks_oauth_tokens WHERE realm_id = $1', [realmId])).rows[0];
    expect(row).toEqual({ status: 'disconnected' });
  });
});
