/**
 * `qbhealth simulator --port N` as an operator rehearses with it: started on its own, its printed
 * QBO_* lines pasted into the monitor's environment, a company added through its control endpoint
 * and imported, a real probe passing against it, a revoked app reconnected, and Ctrl-C ending it
 * with exit 0. The client secret it accepts is never printed.
 */
import { createServer } from 'node:net';
import { parseEnv } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../src/errors.js';
import { freePort } from '../src/dev/embedded-postgres.js';
import { runQbhealth, spawnQbhealth, type RunningCli } from './support/cli.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, KEY_B64, migratedDatabase } from './support/qbo.js';

const REALM = '4620816365';
const KEYS = { QBO_CLIENT_ID: CLIENT_ID, QBO_CLIENT_SECRET: CLIENT_SECRET };

/** Processes that run until told to stop: killed after the tests, so a failed one leaves nothing behind. */
const running: RunningCli[] = [];
function simulator(args: string[], env: Record<string, string> = KEYS): RunningCli {
  const cli = spawnQbhealth(['simulator', ...args], env);
  running.push(cli);
  return cli;
}

/** The printed KEY=value lines, exactly as an operator would paste them into a .env file. */
function pastedEnv(stdout: string): Record<string, string> {
  const lines = stdout.split('\n').filter((l) => /^QBO_[A-Z_]+=\S+$/.test(l));
  return parseEnv(lines.join('\n')) as Record<string, string>;
}

describe('qbhealth simulator', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(async () => {
    for (const cli of running) if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL');
    await db?.drop();
  });

  it('prints the env to paste, serves import-tokens, probe and a reconnect after revoked, and exits 0 on SIGINT', async () => {
    const port = await freePort();
    const sim = simulator(['--port', String(port)]);
    await sim.waitForStdout(/^Ctrl-C \(SIGINT\) or SIGTERM stops it\.$/m);
    const base = `http://127.0.0.1:${port}`;
    const pasted = pastedEnv(sim.stdout());
    expect(pasted).toEqual({
      QBO_TOKEN_URL: `${base}/oauth2/v1/tokens/bearer`,
      QBO_API_BASE_URL: base,
      QBO_REVOKE_URL: `${base}/v2/oauth2/tokens/revoke`,
      QBO_AUTHORIZE_URL: `${base}/connect/oauth2`,
    });
    expect(sim.stdout()).toContain(`QBO_CLIENT_ID=${CLIENT_ID}`);
    expect(sim.stdout()).toContain(`curl -X POST '${base}/_sim/scenario?name=outage'`);

    // The printed way to add a company: its first refresh token, piped into import-tokens.
    const env = { DATABASE_URL: db.url, ...KEYS, TOKEN_ENCRYPTION_KEY: KEY_B64, PROBE_TIMEOUT_MS: '5000', ...pasted };
    const printedAdd = new RegExp(`curl -s -X POST '(${base}/_sim/realms\\?realm_id=)\\d+' \\| qbhealth import-tokens --realm-id \\d+`).exec(sim.stdout());
    expect(printedAdd).not.toBeNull();
    const added = await fetch(`${printedAdd?.[1] ?? ''}${REALM}&company=Harbour%20Dental`, { method: 'POST' });
    expect(added.status).toBe(201);
    const refreshToken = await added.text();
    const imported = await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: refreshToken });
    expect(imported.code, imported.stderr).toBe(0);
    const probe = await runQbhealth(['probe', '--realm-id', REALM], env);
    expect(probe.code, probe.stderr).toBe(0);
    expect(probe.stdout).toMatch(new RegExp(`^realm ${REALM}  PASS  ok .*"Harbour Dental"`, 'm'));

    // Revoked, then healthy again: the realm stays refused until it is reconnected.
    expect((await fetch(`${base}/_sim/scenario?name=revoked`, { method: 'POST' })).status).toBe(200);
    expect((await runQbhealth(['probe', '--realm-id', REALM], env)).stdout).toMatch(/FAIL {2}auth_invalid_grant/);
    expect((await fetch(`${base}/_sim/scenario?name=healthy`, { method: 'POST' })).status).toBe(200);
    expect((await runQbhealth(['probe', '--realm-id', REALM], env)).stdout).toMatch(/FAIL {2}auth_invalid_grant .*qbhealth connect/);
    const again = await fetch(`${base}/_sim/realms?realm_id=${REALM}`, { method: 'POST' });
    const reimported = await runQbhealth(['import-tokens', '--realm-id', REALM], env, { stdin: await again.text() });
    expect(reimported.code, reimported.stderr).toBe(0);
    expect((await runQbhealth(['probe', '--realm-id', REALM], env)).code).toBe(0);

    // `qbhealth connect` with the pasted lines only: the printed URL, opened as is, completes it.
    const connect = spawnQbhealth(['connect', '--timeout', '60'], { ...env, QBO_REDIRECT_URI: `http://127.0.0.1:${await freePort()}/oauth/callback` });
    running.push(connect);
    const [, authorizeUrl] = await connect.waitForStdout(/^ {2}(https?:\/\/\S+)$/m);
    await connect.waitForStdout(/^Waiting up to/m);
    expect(authorizeUrl?.startsWith(`${pasted.QBO_AUTHORIZE_URL}?`)).toBe(true);
    const page = await fetch(`${authorizeUrl ?? ''}&realm_id=${REALM}`);
    expect(page.status).toBe(200);
    const connected = await connect.exited;
    expect(connected.code, connected.stderr).toBe(0);
    expect(connected.stdout).toContain(`connected realm ${REALM} (sandbox): "Harbour Dental"`);

    sim.child.kill('SIGINT');
    const stopped = await sim.exited;
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toMatch(/^SIGINT: simulator stopped$/m);
    for (const secret of [CLIENT_SECRET, Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64'), refreshToken]) {
      expect(stopped.stdout + stopped.stderr).not.toContain(secret);
    }
  });

  it('stops with exit 0 on SIGTERM too', async () => {
    const sim = simulator(['--port', '0']);
    await sim.waitForStdout(/^QBO_AUTHORIZE_URL=http:\/\/127\.0\.0\.1:\d+\/connect\/oauth2$/m);
    sim.child.kill('SIGTERM');
    expect((await sim.exited).code).toBe(0);
  });

  it('exits 78 without the app keys, 2 on a bad option and 75 on a port in use, each with one plain line', async () => {
    const noKeys = await runQbhealth(['simulator'], {});
    expect(noKeys.code).toBe(ExitCode.configInvalid);
    expect(noKeys.stderr).toMatch(/^ {2}QBO_CLIENT_ID: is required/m);
    expect(noKeys.stderr).toMatch(/^ {2}QBO_CLIENT_SECRET: is required/m);

    const badPort = await runQbhealth(['simulator', '--port', '70000'], KEYS);
    expect(badPort.code).toBe(ExitCode.usage);
    expect(badPort.stderr).toContain('--port must be a port number from 0 to 65535 (got "70000")');

    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as { port: number }).port;
      const taken = await runQbhealth(['simulator', '--port', String(port)], KEYS);
      expect(taken.code).toBe(ExitCode.temporaryFailure);
      expect(taken.stderr).toContain(`127.0.0.1:${port} is already in use: pick another --port`);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });
});
