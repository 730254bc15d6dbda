/**
 * Changing TOKEN_ENCRYPTION_KEY without a reconnect: TOKEN_ENCRYPTION_KEY_PREVIOUS opens what the
 * old key sealed, `qbhealth rotate-key` re-seals every envelope under the new key under the same
 * row lock the daemon refreshes under, and the documented procedure works with the real daemon.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { TokenCipher, type TokenField } from '../src/quickbooks/cipher.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth, spawnQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon } from './support/daemon.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase, simulatorEnv } from './support/qbo.js';

const OLD = Buffer.alloc(32, 0x11);
const NEW = Buffer.alloc(32, 0x22);
const STRANGER = Buffer.alloc(32, 0x33);
const b64 = (key: Buffer): string => key.toString('base64');

/** An envelope as releases before key ids wrote it. */
function sealV1(key: Buffer, plaintext: string, realmId: string, field: TokenField): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(`${realmId}\u0000${field}`));
  const body = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return ['v1', iv.toString('base64'), c.getAuthTag().toString('base64'), body.toString('base64')].join('.');
}

const v2 = (key: Buffer, plaintext: string, realmId: string, field: TokenField): string => new TokenCipher(key).encrypt(plaintext, realmId, field);

interface Row {
  realm_id: string;
  access_token_enc: string | null;
  refresh_token_enc: string;
  revision: string;
  updated_at: Date;
}

describe('TOKEN_ENCRYPTION_KEY_PREVIOUS', () => {
  const base = { DATABASE_URL: 'postgres://u:pw@localhost/db', QBO_CLIENT_ID: 'id', QBO_CLIENT_SECRET: 'secret-value', TOKEN_ENCRYPTION_KEY: b64(NEW) };

  it('is optional, decodes like TOKEN_ENCRYPTION_KEY and is a secret', () => {
    const without = parseConfig(base, 'full');
    expect(without.ok && without.config.tokenEncryptionKeyPrevious).toBeUndefined();
    const withPrevious = parseConfig({ ...base, TOKEN_ENCRYPTION_KEY_PREVIOUS: b64(OLD) }, 'full');
    expect(withPrevious.ok).toBe(true);
    if (!withPrevious.ok) return;
    expect(withPrevious.config.tokenEncryptionKeyPrevious?.equals(OLD)).toBe(true);
    expect(withPrevious.secrets).toContain(b64(OLD));
  });

  it('an invalid value is one problem line naming the variable, never echoing it', () => {
    const short = b64(randomBytes(16));
    for (const value of [short, 'not base64 at all!']) {
      const parsed = parseConfig({ ...base, TOKEN_ENCRYPTION_KEY_PREVIOUS: value }, 'full');
      expect(parsed.ok).toBe(false);
      if (parsed.ok) return;
      expect(parsed.problems).toEqual([expect.stringMatching(/^TOKEN_ENCRYPTION_KEY_PREVIOUS: must be 32 random bytes in base64/)]);
      expect(parsed.problems.join('\n')).not.toContain(value);
      expect(parsed.secrets).toContain(value);
    }
  });
});

describe('qbhealth rotate-key', () => {
  let db: TestDatabase;
  const env = (keys: { current: Buffer; previous?: Buffer }): Record<string, string> => ({
    DATABASE_URL: db.url,
    QBO_CLIENT_ID: CLIENT_ID,
    QBO_CLIENT_SECRET: CLIENT_SECRET,
    TOKEN_ENCRYPTION_KEY: b64(keys.current),
    ...(keys.previous ? { TOKEN_ENCRYPTION_KEY_PREVIOUS: b64(keys.previous) } : {}),
  });

  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  async function insert(realmId: string, access: string | null, refresh: string): Promise<void> {
    await db.query(
      `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, access_token_enc, access_token_expires_at, refresh_token_enc, refresh_token_expires_at, status, revision, updated_at)
       VALUES ($1, 'sandbox', $2, now() + interval '1 hour', $3, now() + interval '100 days', 'connected', 7, '2026-01-02T03:04:05Z')`,
      [realmId, access, refresh],
    );
  }
  const rows = async (): Promise<Map<string, Row>> =>
    new Map((await db.query<Row>('SELECT realm_id, access_token_enc, refresh_token_enc, revision, updated_at FROM quickbooks_oauth_tokens')).rows.map((r) => [r.realm_id, r]));

  it('re-seals every envelope the old or new key opens, leaves current ones alone, lists the unreadable and exits 78, then 0', async () => {
    const tokens = (realm: string): { access: string; refresh: string } => ({ access: `AT-${realm}-${randomBytes(6).toString('hex')}`, refresh: `RT-${realm}-${randomBytes(6).toString('hex')}` });
    const plain = new Map<string, { access: string | null; refresh: string }>();
    const put = async (realm: string, seal: (text: string, field: TokenField) => string | null, noAccess = false): Promise<void> => {
      const t = tokens(realm);
      plain.set(realm, { access: noAccess ? null : t.access, refresh: t.refresh });
      await insert(realm, noAccess ? null : seal(t.access, 'access_token'), seal(t.refresh, 'refresh_token') as string);
    };
    await put('1001', (t, f) => v2(OLD, t, '1001', f)); // under the old key
    await put('1002', (t, f) => sealV1(OLD, t, '1002', f)); // under the old key, before key ids
    await put('1003', (t, f) => v2(NEW, t, '1003', f)); // already current
    await put('1004', (t, f) => sealV1(NEW, t, '1004', f)); // the new key, but the old format
    await put('1005', (t, f) => v2(OLD, t, '1005', f), true); // no access token yet
    await put('1006', (t, f) => v2(STRANGER, t, '1006', f)); // a key nobody configured
    const before = await rows();

    const first = await runQbhealth(['rotate-key'], env({ current: NEW, previous: OLD }));
    expect(first.code, first.stderr).toBe(78);
    expect(first.stdout).toMatch(/^re-encrypted 4, already current 1, unreadable 1 \(TOKEN_ENCRYPTION_KEY has key id [0-9a-f]{8}\)$/m);
    for (const realm of ['1001', '1002', '1004', '1005']) expect(first.stdout).toContain(`realm ${realm}: re-encrypted`);
    expect(first.stderr).toMatch(/^realm 1006: unreadable: .*TOKEN_ENCRYPTION_KEY/m);
    expect(first.stderr).toContain('TOKEN_ENCRYPTION_KEY_PREVIOUS');
    const output = first.stdout + first.stderr;
    for (const secret of [b64(OLD), b64(NEW), b64(STRANGER), ...[...plain.values()].flatMap((t) => [t.access, t.refresh])]) {
      if (secret) expect(output).not.toContain(secret);
    }

    const after = await rows();
    const newOnly = new TokenCipher(NEW);
    for (const realm of ['1001', '1002', '1003', '1004', '1005']) {
      const row = after.get(realm)!;
      const expected = plain.get(realm)!;
      expect(newOnly.isCurrent(row.refresh_token_enc)).toBe(true);
      expect(newOnly.decrypt(row.refresh_token_enc, realm, 'refresh_token')).toBe(expected.refresh);
      if (expected.access === null) expect(row.access_token_enc).toBeNull();
      else expect(newOnly.decrypt(row.access_token_enc!, realm, 'access_token')).toBe(expected.access);
      // The tokens did not change, so neither do their revision and timestamp (a racing refresh must not think they did).
      expect([row.revision, row.updated_at.toISOString()]).toEqual([before.get(realm)!.revision, before.get(realm)!.updated_at.toISOString()]);
    }
    expect(after.get('1003')).toEqual(before.get('1003'));
    expect(after.get('1006')).toEqual(before.get('1006'));

    await db.query("DELETE FROM quickbooks_oauth_tokens WHERE realm_id = '1006'");
    const second = await runQbhealth(['rotate-key'], env({ current: NEW }));
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^re-encrypted 0, already current 5, unreadable 0 /m);
    after.delete('1006');
    expect(await rows()).toEqual(after);
  });

  it('waits for a refresh holding the row lock and re-seals the pair that refresh committed, not the one it replaced', async () => {
    await db.query('DELETE FROM quickbooks_oauth_tokens');
    await insert('2001', v2(OLD, 'AT-before', '2001', 'access_token'), v2(OLD, 'RT-before', '2001', 'refresh_token'));
    // The test's own connection plays the daemon in the middle of a refresh.
    await db.query('BEGIN');
    await db.query("SELECT 1 FROM quickbooks_oauth_tokens WHERE realm_id = '2001' FOR UPDATE");
    const rotating = spawnQbhealth(['rotate-key'], env({ current: NEW, previous: OLD }));
    try {
      // rotate-key is waiting on the row lock (not done, not failed).
      for (;;) {
        // Inside a transaction pg_stat_activity is a snapshot taken once; drop it to see now.
        await db.query('SELECT pg_stat_clear_snapshot()');
        const waiting = await db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'qbhealth' AND wait_event_type = 'Lock'",
        );
        if (waiting.rows[0]!.n > 0) break;
        if (rotating.child.exitCode !== null) throw new Error(`rotate-key ended while the row was locked: ${rotating.stdout()} ${rotating.stderr()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // The "refresh" commits a rotated pair, sealed under the old key by a daemon not yet restarted.
      await db.query("UPDATE quickbooks_oauth_tokens SET access_token_enc = $1, refresh_token_enc = $2, revision = revision + 1 WHERE realm_id = '2001'", [
        v2(OLD, 'AT-after', '2001', 'access_token'),
        v2(OLD, 'RT-after', '2001', 'refresh_token'),
      ]);
      await db.query('COMMIT');
    } catch (err) {
      await db.query('ROLLBACK');
      throw err;
    }
    const done = await rotating.exited;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toContain('re-encrypted 1, already current 0, unreadable 0');
    const row = (await rows()).get('2001')!;
    const newOnly = new TokenCipher(NEW);
    expect(newOnly.decrypt(row.refresh_token_enc, '2001', 'refresh_token')).toBe('RT-after');
    expect(newOnly.decrypt(row.access_token_enc!, '2001', 'access_token')).toBe('AT-after');
  });
});

describe('rotating the key without a reconnect, as the README says, with the real daemon', () => {
  let sim: Simulator;
  let db: TestDatabase;
  const REALM = '9341450001';

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await sim?.close();
    await db?.drop();
  });

  it('old key → both keys (probes pass, rotate-key while running) → new key alone (probes pass)', async () => {
    const oldEnv = { ...simulatorEnv(db.url, sim), TOKEN_ENCRYPTION_KEY: b64(OLD) };
    const imported = await runQbhealth(['import-tokens', '--realm-id', REALM], oldEnv, { stdin: sim.addRealm(REALM, 'Rotation Co') });
    expect(imported.code, imported.stderr).toBe(0);

    const rotatingEnv = { ...daemonEnv(db.url, sim), TOKEN_ENCRYPTION_KEY: b64(NEW), TOKEN_ENCRYPTION_KEY_PREVIOUS: b64(OLD) };
    const during = spawnDaemon(rotatingEnv);
    try {
      await during.waitFor('probe.succeeded', { count: 2 });
      const rotated = await runQbhealth(['rotate-key'], rotatingEnv);
      expect(rotated.code, rotated.stderr).toBe(0);
      expect(rotated.stdout).toMatch(/re-encrypted [01], already current [01], unreadable 0/);
      const probesSoFar = during.events('probe.succeeded').length;
      await during.waitFor('probe.succeeded', { count: probesSoFar + 1 });
      expect((await during.stop('SIGINT')).code).toBe(0);
      expect(during.events('probe.failed')).toEqual([]);
    } finally {
      await during.stop('SIGKILL');
    }

    const row = (await db.query<Row>('SELECT access_token_enc, refresh_token_enc FROM quickbooks_oauth_tokens WHERE realm_id = $1', [REALM])).rows[0]!;
    expect(new TokenCipher(NEW).isCurrent(row.refresh_token_enc)).toBe(true);
    expect(new TokenCipher(NEW).isCurrent(row.access_token_enc!)).toBe(true);

    const after = spawnDaemon({ ...daemonEnv(db.url, sim), TOKEN_ENCRYPTION_KEY: b64(NEW) });
    try {
      await after.waitFor('probe.succeeded', { count: 2 });
      expect(after.events('probe.failed')).toEqual([]);
      expect((await after.stop('SIGINT')).code).toBe(0);
      const everything = [during, after].flatMap((d) => d.lines.map((l) => JSON.stringify(l)).concat(d.stderr())).join('\n');
      for (const secret of [b64(OLD), b64(NEW), ...sim.issuedTokens()]) expect(everything).not.toContain(secret);
    } finally {
      await after.stop('SIGKILL');
    }
  });
});
