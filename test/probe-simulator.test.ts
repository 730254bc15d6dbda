import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth } from './support/cli.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, KEY_B64, migratedDatabase, monitor, simulatorEnv } from './support/qbo.js';

const REALM = '9130357766';

describe('against the Intuit simulator over HTTP', () => {
  let sim: Simulator;
  let db: TestDatabase;
  let env: Record<string, string>;
  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, accessTokenTtlSeconds: 3600 });
    db = await migratedDatabase();
    env = {
      ...simulatorEnv(db.url, sim),
      PROBE_TIMEOUT_MS: '3000',
    };
  });
  afterAll(async () => {
    await db.drop();
    await sim.close();
  });

  it('import-tokens reads the token from stdin, refreshes it and stores the pair encrypted', async () => {
    const first = sim.addRealm(REALM, 'Sandbox Company_US_1');
    const r = await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: `${first}\n` });
    expect(r.stderr).not.toMatch(/"level":(50|60)/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^imported realm ${REALM} \\(sandbox\\)`, 'm'));
    expect(r.stdout).toMatch(/hard expiry in 18\d\d days/);
    expect(sim.stats.refreshes).toBe(1);
    const row = (await db.query('SELECT status, revision, refresh_token_hard_expires_at FROM quickbooks_oauth_tokens WHERE realm_id = $1', [REALM])).rows[0];
    expect(row).toMatchObject({ status: 'connected', revision: '1' });
    expect(row.refresh_token_hard_expires_at).toBeInstanceOf(Date);
  });

  it('probe records a passing row per realm and prints one line each, exit 0', async () => {
    const r = await runQbhealth(['probe'], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^realm ${REALM}  PASS  ok  \\d+ ms  http 200  "Sandbox Company_US_1"  intuit_tid sim-`, 'm'));
    const rows = (await db.query('SELECT connected, status, error_code, http_status, realm_id, intuit_tid, probe_id FROM quickbooks_connection_health')).rows;
    expect(rows).toEqual([expect.objectContaining({ connected: true, status: 'pass', error_code: 'ok', http_status: 200, realm_id: REALM })]);
    expect(rows[0].intuit_tid).toMatch(/^sim-/);
    expect(sim.stats.refreshes).toBe(1);
  });

  it('an expired access token is refreshed (rotation persisted) and the probe passes', async () => {
    sim.expireAccessTokens();
    const before = (await db.query('SELECT refresh_token_enc, revision FROM quickbooks_oauth_tokens')).rows[0];
    const r = await runQbhealth(['probe', '--realm-id', REALM], env);
    expect(r.code).toBe(0);
    expect(sim.stats.refreshes).toBe(2);
    const after = (await db.query('SELECT refresh_token_enc, revision FROM quickbooks_oauth_tokens')).rows[0];
    expect(after.revision).toBe(String(Number(before.revision) + 1));
    expect(after.refresh_token_enc).not.toBe(before.refresh_token_enc);
    expect(r.stderr).toContain('"event":"token.refreshed"');
  });

  it('an outage is recorded as server_error with exit 1', async () => {
    sim.scenario = 'outage';
    try {
      const r = await runQbhealth(['probe'], env);
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/FAIL {2}server_error .*http 503/);
      const last = (await db.query('SELECT connected, status, error_code, error FROM quickbooks_connection_health ORDER BY id DESC LIMIT 1')).rows[0];
      expect(last).toMatchObject({ connected: false, status: 'fail', error_code: 'server_error' });
      expect(last.error).toContain('HTTP 503 (text/html');
      expect(last.error).not.toContain('<html>');
    } finally {
      sim.scenario = 'healthy';
    }
  });

  it('no issued token, nor the client secret, appears in the database, the output or the logs', async () => {
    const m = monitor(db, { tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl, apiBaseUrl: sim.url });
    try {
      sim.expireAccessTokens();
      await m.prober.probeRealm(REALM);
      const everything = [
        JSON.stringify((await db.query('SELECT * FROM quickbooks_oauth_tokens')).rows),
        JSON.stringify((await db.query('SELECT * FROM quickbooks_connection_health')).rows),
        m.capture.lines.join('\n'),
        (await runQbhealth(['probe'], { ...env, LOG_LEVEL: 'trace' })).stderr,
      ].join('\n');
      expect(sim.issuedTokens().length).toBeGreaterThan(4);
      for (const value of [...sim.issuedTokens(), CLIENT_SECRET, KEY_B64]) expect(everything).not.toContain(value);
    } finally {
      await m.close();
    }
  });
});
