import { createServer } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freePort } from '../src/dev/embedded-postgres.js';
import { parseListenAddress, startCallbackServer } from '../src/quickbooks/callback-server.js';
import { ExitCode, OperatorError } from '../src/errors.js';
import { AUTHORIZE_PATH, startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth, spawnQbhealth, type RunningCli } from './support/cli.js';
import type { TestDatabase } from './support/db.js';
import { CLIENT_ID, CLIENT_SECRET, KEY_B64, migratedDatabase } from './support/qbo.js';

describe('the OAuth callback listener', () => {
  it('parses --listen addresses', () => {
    expect(parseListenAddress('127.0.0.1:8081')).toEqual({ host: '127.0.0.1', port: 8081 });
    expect(parseListenAddress('[::1]:9000')).toEqual({ host: '::1', port: 9000 });
    expect(parseListenAddress(':8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListenAddress('localhost:0')).toBeUndefined();
    expect(parseListenAddress('localhost')).toBeUndefined();
    expect(parseListenAddress('host:70000')).toBeUndefined();
  });

  it('runs the exchange once however often and however concurrently the callback arrives', async () => {
    const port = await freePort();
    let exchanges = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const server = await startCallbackServer({
      redirectUri: `http://127.0.0.1:${port}/cb`,
      state: 'the-state',
      exchange: async (p) => {
        exchanges++;
        await gate;
        return p.realmId;
      },
      describe: (realm) => `realm ${realm} connected`,
    });
    try {
      const callback = `http://127.0.0.1:${port}/cb?code=C1&state=the-state&realmId=4620816365`;
      const first = fetch(callback);
      await new Promise<void>((resolve) => {
        const poll = (): void => (server.exchanging ? resolve() : void setImmediate(poll));
        poll();
      });
      const repeats = Array.from({ length: 4 }, () => fetch(callback));
      open();
      const answers = await Promise.all([first, ...repeats]);
      const again = await fetch(callback);
      for (const r of [...answers, again]) {
        expect(r.status).toBe(200);
        expect(await r.text()).toContain('realm 4620816365 connected');
      }
      expect(exchanges).toBe(1);
      await expect(server.result).resolves.toBe('4620816365');
    } finally {
      await server.close();
    }
  });

  it('refuses a wrong state or path without starting an exchange, and reports each refusal', async () => {
    const port = await freePort();
    const rejected: string[] = [];
    let exchanges = 0;
    const server = await startCallbackServer({
      redirectUri: `http://127.0.0.1:${port}/oauth/callback`,
      state: 'right',
      exchange: async () => ++exchanges,
      describe: String,
      onRejected: (reason) => rejected.push(reason),
    });
    try {
      const base = `http://127.0.0.1:${port}`;
      expect((await fetch(`${base}/oauth/callback?code=C&state=wrong&realmId=1`)).status).toBe(400);
      expect((await fetch(`${base}/oauth/callback?code=C&realmId=1`)).status).toBe(400);
      expect((await fetch(`${base}/elsewhere?code=C&state=right&realmId=1`)).status).toBe(404);
      expect((await fetch(`${base}/oauth/callback?state=right&realmId=1`)).status).toBe(400);
      expect(exchanges).toBe(0);
      expect(server.exchanging).toBe(false);
      expect(rejected).toHaveLength(3);
      expect(rejected[0]).toMatch(/state that does not match/);
    } finally {
      await server.close();
    }
  });

  it('a declined consent ends the wait with exit 1 and the reason', async () => {
    const port = await freePort();
    const server = await startCallbackServer({ redirectUri: `http://127.0.0.1:${port}/cb`, state: 's', exchange: async () => 1, describe: String });
    try {
      const outcome = server.result.then(
        () => undefined,
        (err: unknown) => err,
      );
      const page = await fetch(`http://127.0.0.1:${port}/cb?error=access_denied&state=s`);
      expect(page.status).toBe(403);
      const failure = await outcome;
      expect(failure).toBeInstanceOf(OperatorError);
      expect(failure).toMatchObject({ exitCode: ExitCode.probeFailing, message: expect.stringContaining('access_denied') });
    } finally {
      await server.close();
    }
  });

  it('an https redirect URI without --listen is a configuration error naming the way out', async () => {
    await expect(
      startCallbackServer({ redirectUri: 'https://monitor.example.com/oauth/callback', state: 's', exchange: async () => 1, describe: String }),
    ).rejects.toMatchObject({ exitCode: ExitCode.configInvalid, message: expect.stringContaining('--listen') });
  });
});

const REALM = '4620816365';
const COMPANY = 'Craig\'s Design & Landscaping';

describe('qbhealth connect and disconnect against the simulator', () => {
  let sim: Simulator;
  let db: TestDatabase;
  let env: Record<string, string>;
  let redirectUri: string;

  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    sim.addRealm(REALM, COMPANY);
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await db?.drop();
    await sim?.close();
  });
  beforeEach(async () => {
    sim.scenario = 'healthy';
    sim.latencyMs = 0;
    redirectUri = `http://127.0.0.1:${await freePort()}/oauth/callback`;
    env = {
      DATABASE_URL: db.url,
      QBO_CLIENT_ID: CLIENT_ID,
      QBO_CLIENT_SECRET: CLIENT_SECRET,
      TOKEN_ENCRYPTION_KEY: KEY_B64,
      QBO_REDIRECT_URI: redirectUri,
      QBO_TOKEN_URL: sim.tokenUrl,
      QBO_REVOKE_URL: sim.revokeUrl,
      QBO_API_BASE_URL: sim.url,
      PROBE_TIMEOUT_MS: '5000',
    };
  });

  /** What the operator's browser does: open the printed URL (at the simulator's consent page), follow the redirect. */
  async function consent(cli: RunningCli): Promise<{ authorize: URL; callback: string }> {
    const [, printed] = await cli.waitForStdout(/^ {2}(https:\/\/\S+)$/m);
    await cli.waitForStdout(/^Waiting up to/m);
    const authorize = new URL(printed ?? '');
    const atSimulator = new URL(`${sim.url}${AUTHORIZE_PATH}${authorize.search}`);
    atSimulator.searchParams.set('realm_id', REALM);
    const redirect = await fetch(atSimulator, { redirect: 'manual' });
    expect(redirect.status).toBe(302);
    return { authorize, callback: redirect.headers.get('location') ?? '' };
  }

  const tokenRow = async () => (await db.query('SELECT status, company_name, revision, status_reason FROM quickbooks_oauth_tokens WHERE realm_id = $1', [REALM])).rows[0];

  it('connect prints the authorize URL, exchanges the code once for repeated callbacks, stores tokens and names the company', async () => {
    const cli = spawnQbhealth(['connect', '--timeout', '60'], env);
    const { authorize, callback } = await consent(cli);
    expect(authorize.origin + authorize.pathname).toBe('https://appcenter.intuit.com/connect/oauth2');
    expect(Object.fromEntries(authorize.searchParams)).toMatchObject({
      client_id: CLIENT_ID,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'com.intuit.quickbooks.accounting',
    });
    const state = authorize.searchParams.get('state') ?? '';
    expect(state.length).toBeGreaterThanOrEqual(32);

    const forged = new URL(callback);
    forged.searchParams.set('state', 'forged-state');
    expect((await fetch(forged)).status).toBe(400);

    // The exchange is held long enough for the browser's repeats to arrive while it runs.
    sim.latencyMs = 300;
    const pages = await Promise.all([fetch(callback), fetch(callback), fetch(callback)]);
    for (const page of pages) {
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('Craig&#39;s Design &amp; Landscaping');
    }
    const result = await cli.exited;
    expect(result.code).toBe(0);
    expect(sim.stats.codeExchanges).toBe(1);
    expect(result.stdout).toContain(`connected realm ${REALM} (sandbox): "${COMPANY}"`);
    expect(result.stdout).toMatch(/hard expiry in 18\d\d days/);
    expect(result.stderr).toMatch(/state that does not match/);
    expect(await tokenRow()).toMatchObject({ status: 'connected', company_name: COMPANY });

    const code = new URL(callback).searchParams.get('code') ?? '';
    const output = result.stdout + result.stderr;
    for (const secret of [code, CLIENT_SECRET, KEY_B64, ...sim.issuedTokens()]) expect(output).not.toContain(secret);

    // The stored tokens work: the realm probes healthy.
    expect((await runQbhealth(['probe', '--realm-id', REALM], env)).code).toBe(0);
  });

  it('connect with a code Intuit refuses stores nothing and exits 1', async () => {
    const before = await tokenRow();
    const cli = spawnQbhealth(['connect', '--timeout', '60'], env);
    const { callback } = await consent(cli);
    const spent = new URL(callback);
    spent.searchParams.set('code', 'AB11-code-never-issued');
    const page = await fetch(spent);
    expect(page.status).toBe(502);
    expect(await page.text()).toContain('Intuit refused the authorization code');
    const result = await cli.exited;
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Intuit refused the authorization code .*nothing was stored\. Run `qbhealth connect` again/);
    expect(await tokenRow()).toEqual(before);
  });

  it('connect gives up with exit 75 when no callback arrives, and with 2 for a bad option', async () => {
    const waited = await runQbhealth(['connect', '--timeout', '1'], env);
    expect(waited.code).toBe(ExitCode.temporaryFailure);
    expect(waited.stderr).toMatch(/no callback from Intuit within 1 s; run `qbhealth connect` again/);
    const bad = await runQbhealth(['connect', '--listen', 'nowhere'], env);
    expect(bad.code).toBe(ExitCode.usage);
    expect(bad.stderr).toMatch(/--listen must be HOST:PORT/);
  });

  it('connect says which port is taken (exit 75) instead of failing obscurely', async () => {
    const busy = createServer();
    const port = Number(new URL(redirectUri).port);
    await new Promise<void>((resolve) => busy.listen(port, '127.0.0.1', resolve));
    try {
      const r = await runQbhealth(['connect'], env);
      expect(r.code).toBe(ExitCode.temporaryFailure);
      expect(r.stderr).toContain(`127.0.0.1:${port} is already in use`);
    } finally {
      await new Promise((resolve) => busy.close(resolve));
    }
  });

  it('disconnect keeps the realm unchanged with exit 75 when Intuit cannot be reached', async () => {
    const before = await tokenRow();
    expect(before.status).toBe('connected');
    const unreachable = await runQbhealth(['disconnect', '--realm-id', REALM], { ...env, QBO_REVOKE_URL: `http://127.0.0.1:${await freePort()}/revoke` });
    expect(unreachable.code).toBe(ExitCode.temporaryFailure);
    expect(unreachable.stderr).toMatch(/Intuit did not revoke the tokens: .*ECONNREFUSED.*is unchanged/);
    sim.scenario = 'outage';
    const outage = await runQbhealth(['disconnect', '--realm-id', REALM], env);
    expect(outage.code).toBe(ExitCode.temporaryFailure);
    expect(outage.stderr).toMatch(/HTTP 503/);
    expect(await tokenRow()).toEqual(before);
    expect(sim.stats.revocations).toBe(0);
  });

  it('disconnect revokes at Intuit, marks the realm disconnected, and probing skips it', async () => {
    const r = await runQbhealth(['disconnect', '--realm-id', REALM], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`disconnected realm ${REALM} ("${COMPANY}"): tokens revoked at Intuit`);
    expect(sim.stats.revocations).toBe(1);
    expect(await tokenRow()).toMatchObject({ status: 'disconnected', status_reason: 'qbhealth disconnect: tokens revoked at Intuit' });
    const probe = await runQbhealth(['probe'], env);
    expect(probe.code).toBe(1);
    expect(probe.stderr).toMatch(/no realms to probe/);
    const again = await runQbhealth(['disconnect', '--realm-id', REALM], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already disconnected');
    expect(sim.stats.revocations).toBe(1);
    const unknown = await runQbhealth(['disconnect', '--realm-id', '123'], env);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('realm 123 is not known');
  });

  it('connect reconnects a disconnected realm', async () => {
    const cli = spawnQbhealth(['connect'], env);
    const { callback } = await consent(cli);
    expect((await fetch(callback)).status).toBe(200);
    expect((await cli.exited).code).toBe(0);
    expect(await tokenRow()).toMatchObject({ status: 'connected', status_reason: null });
    const skip = await runQbhealth(['disconnect', '--realm-id', REALM, '--skip-revoke'], env);
    expect(skip.code).toBe(0);
    expect(skip.stdout).toContain('not revoked at Intuit (--skip-revoke)');
    expect(sim.stats.revocations).toBe(1);
  });

  it('connect against the simulator needs only QBO_AUTHORIZE_URL: the printed URL, opened as is, completes it', async () => {
    const cli = spawnQbhealth(['connect', '--timeout', '60'], { ...env, QBO_AUTHORIZE_URL: sim.authorizeUrl });
    try {
      const [, printed] = await cli.waitForStdout(/^ {2}(https?:\/\/\S+)$/m);
      await cli.waitForStdout(/^Waiting up to/m);
      expect(printed?.startsWith(`${sim.authorizeUrl}?`)).toBe(true);
      // What a browser does with it: the simulator's consent page redirects to the waiting callback.
      const page = await fetch(printed ?? '');
      expect(page.status).toBe(200);
      expect(await page.text()).toContain(`(realm ${REALM}) is connected`);
      const result = await cli.exited;
      expect(result.code).toBe(0);
      expect(result.stdout).toContain(`connected realm ${REALM} (sandbox): "${COMPANY}"`);
      expect(await tokenRow()).toMatchObject({ status: 'connected' });
    } finally {
      // A failed assertion must not leave connect waiting on its port for the rest of the run.
      if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGKILL');
    }
  });

  it('an invalid QBO_AUTHORIZE_URL is a configuration error (78) naming it', async () => {
    const r = await runQbhealth(['connect', '--timeout', '1'], { ...env, QBO_AUTHORIZE_URL: 'appcenter.intuit.com/connect' });
    expect(r.code).toBe(ExitCode.configInvalid);
    expect(r.stderr).toMatch(/^ {2}QBO_AUTHORIZE_URL: must be an absolute http:\/\/ or https:\/\/ URL \(got "appcenter\.intuit\.com\/connect"\)$/m);
  });
});
