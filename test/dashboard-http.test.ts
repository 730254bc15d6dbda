/**
 * The dashboard's HTTP surface against a real PostgreSQL: who may see the page and its data when
 * HEALTH_TOKEN is set (Basic, Bearer, the sign-in cookie; never a token in the URL), the headers
 * that keep a browser strict (CSP, nosniff, no-referrer), company names from Intuit carried as
 * data and never as markup, and a database that cannot be read giving a page that says so.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HealthState } from '../src/health/state.js';
import { StatusReader, type StatusSource } from '../src/db/status.js';
import { Metrics } from '../src/http/metrics.js';
import { HealthServer } from '../src/http/server.js';
import { CONTENT_SECURITY_POLICY, escapeHtml } from '../src/http/dashboard-routes.js';
import type { DashboardData } from '../src/dashboard-model.js';
import type { ProbeResult } from '../src/probe-result.js';
import { createSilence, removeSilence } from '../src/db/silence-queries.js';
import { LogEvent } from '../src/log.js';
import { freePort } from '../src/dev/embedded-postgres.js';
import { captureLog, type CapturedLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const TOKEN = 'dashboard-token-for-tests-7f3a9c';
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const SCRIPT_NAME = '<script>alert("pwned")</script> Dental';
const ATTR_NAME = '"><img src=x onerror=alert(1)> Clinic';
const REALM_A = '4620816365000001';
const REALM_B = '4620816365000002';

let db: TestDatabase;
const servers: HealthServer[] = [];

beforeAll(async () => {
  db = await migratedDatabase();
  for (const [realm, company] of [
    [REALM_A, SCRIPT_NAME],
    [REALM_B, ATTR_NAME],
  ]) {
    await db.query(
      `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc, refresh_token_expires_at, refresh_token_hard_expires_at, status, company_name)
       VALUES ($1, 'production', 'v1:not-a-real-envelope', now() + interval '50 days', now() + interval '10 days', 'connected', $2)`,
      [realm, company],
    );
  }
});
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});
afterAll(async () => {
  await db?.drop();
});

function result(realmId: string, over: Partial<ProbeResult> = {}): ProbeResult {
  return {
    probeId: `probe-${realmId}-${Math.random()}`,
    realmId,
    checkedAt: new Date(),
    connected: true,
    status: 'pass',
    errorCode: 'ok',
    error: undefined,
    httpStatus: 200,
    latencyMs: 120,
    intuitTid: undefined,
    refreshTokenExpiresAt: undefined,
    companyName: undefined,
    ...over,
  };
}

function liveState(): HealthState {
  const state = new HealthState();
  state.lastTickAt = new Date();
  state.db = { reachable: true, checkedAt: new Date(), error: undefined };
  state.schema = { verified: true, error: undefined };
  state.observe(result(REALM_A));
  state.observe(result(REALM_B, { connected: false, status: 'fail', errorCode: 'server_error', error: 'Intuit answered 503', httpStatus: 503, intuitTid: 'tid-503-b' }));
  return state;
}

async function serve(opts: { healthToken?: string; status?: StatusSource; state?: HealthState } = {}): Promise<{ base: string; log: CapturedLog }> {
  const log = captureLog('debug');
  log.secrets.add(TOKEN);
  const state = opts.state ?? liveState();
  const server = new HealthServer(state, new Metrics(state), { healthToken: opts.healthToken, refreshTokenWarnDays: 14, version: 'test', status: opts.status }, log.log);
  servers.push(server);
  const bound = await server.listen('127.0.0.1', 0);
  return { base: `http://127.0.0.1:${bound.port}`, log };
}

const reader = (url: string, log: CapturedLog): StatusReader => new StatusReader(url, log.log, { connectionTimeoutMs: 1000 });

describe('with HEALTH_TOKEN set', () => {
  it('the page and its data answer 401 with a Basic challenge without the token, a wrong one, or the token in the query string', async () => {
    const { base } = await serve({ healthToken: TOKEN });
    const refused: Array<[string, Record<string, string>]> = [
      ['/', {}],
      ['/dashboard/data', {}],
      ['/dashboard/data', { authorization: basic('monitor', 'not-the-token-at-all') }],
      // The token as user name is not the password.
      ['/dashboard/data', { authorization: basic(TOKEN, '') }],
      ['/dashboard/data', { authorization: `Bearer ${TOKEN}x` }],
      ['/dashboard/data', { authorization: TOKEN }],
      ['/dashboard/data', { cookie: `qbhm_session=${TOKEN}` }],
      [`/dashboard/data?token=${TOKEN}`, {}],
      [`/dashboard/data?access_token=${TOKEN}`, {}],
      [`/?token=${TOKEN}`, {}],
      [`/?health_token=${TOKEN}`, {}],
    ];
    for (const [path, headers] of refused) {
      const res = await fetch(`${base}${path}`, { headers });
      expect(res.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe('Basic realm="qbo-health-monitor"');
      expect(res.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
      expect(await res.text()).not.toContain(TOKEN);
    }
    // The page's 401 is the sign-in form (shown when the browser's prompt is dismissed), with no data in it.
    const page = await (await fetch(`${base}/`)).text();
    expect(page).toContain('<form method="post" action="/dashboard/login">');
    expect(page).not.toContain(REALM_A);
    // JSON for the script.
    const data = await fetch(`${base}/dashboard/data`);
    expect(data.headers.get('content-type')).toMatch(/^application\/json/);
    expect(((await data.json()) as { error: string }).error).toMatch(/HEALTH_TOKEN required/);
  });

  it('answers 200 to HTTP Basic with any user name and the token as password, and to Bearer', async () => {
    const { base } = await serve({ healthToken: TOKEN });
    for (const authorization of [basic('monitor', TOKEN), basic('', TOKEN), basic('ops', TOKEN), `Bearer ${TOKEN}`, `bearer ${TOKEN}`]) {
      const page = await fetch(`${base}/`, { headers: { authorization } });
      expect(page.status, authorization).toBe(200);
      expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
      const data = await fetch(`${base}/dashboard/data`, { headers: { authorization } });
      expect(data.status).toBe(200);
      const body = await data.text();
      expect(body).not.toContain(TOKEN);
      expect((JSON.parse(body) as DashboardData).realms.map((r) => r.realmId)).toEqual([REALM_A, REALM_B]);
    }
  });

  it('the sign-in form sets an HttpOnly, SameSite=Strict cookie that holds no token and opens the data; a wrong token is refused and logged', async () => {
    const { base, log } = await serve({ healthToken: TOKEN });
    const form = (token: string, headers: Record<string, string> = {}): Promise<Response> =>
      fetch(`${base}/dashboard/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams({ token }).toString() });

    const wrong = await form('a-wrong-token-of-some-length');
    expect(wrong.status).toBe(403);
    expect(wrong.headers.get('set-cookie')).toBeNull();
    expect(await wrong.text()).toContain('That is not the token');
    expect(log.byEvent(LogEvent.dashboardLoginRefused)).toHaveLength(1);
    // A client trying token after token is refused each time, and logged once a minute, not per try.
    for (let i = 0; i < 20; i++) expect((await form(`guess-${i}-of-some-length`)).status).toBe(403);
    expect(log.byEvent(LogEvent.dashboardLoginRefused)).toHaveLength(1);

    const crossSite: Array<Record<string, string>> = [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site', origin: 'null' }, { 'sec-fetch-site': 'same-site' }, { origin: 'null' }];
    for (const headers of crossSite) {
      const refused = await form(TOKEN, headers);
      expect(refused.status, JSON.stringify(headers)).toBe(403);
      expect(refused.headers.get('set-cookie')).toBeNull();
    }
    // A browser's own form under Referrer-Policy: no-referrer: Origin null, Sec-Fetch-Site same-origin.
    expect((await form(TOKEN, { 'sec-fetch-site': 'same-origin', origin: 'null' })).status).toBe(303);

    const right = await form(TOKEN);
    expect(right.status).toBe(303);
    expect(right.headers.get('location')).toBe('/');
    const cookie = right.headers.get('set-cookie') ?? '';
    expect(cookie).toMatch(/^qbhm_session=v1\.\d+\.[\w-]+; Path=\/; Max-Age=43200; HttpOnly; SameSite=Strict$/);
    expect(cookie).not.toContain(TOKEN);
    const session = cookie.split(';')[0] as string;
    expect((await fetch(`${base}/dashboard/data`, { headers: { cookie: session } })).status).toBe(200);
    expect((await fetch(`${base}/`, { headers: { cookie: `other=1; ${session}` } })).status).toBe(200);
    // A forged or altered session is not one.
    expect((await fetch(`${base}/dashboard/data`, { headers: { cookie: `${session.slice(0, -2)}xx` } })).status).toBe(401);
    expect((await fetch(`${base}/dashboard/data`, { headers: { cookie: `qbhm_session=v1.99999999999999.${session.split('.')[2]}` } })).status).toBe(401);

    // Behind a TLS proxy the cookie is Secure.
    const https = await form(TOKEN, { 'x-forwarded-proto': 'https' });
    expect(https.headers.get('set-cookie')).toMatch(/; Secure$/);

    const out = await fetch(`${base}/dashboard/logout`, { method: 'POST', redirect: 'manual' });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/^qbhm_session=; Path=\/; Max-Age=0; HttpOnly; SameSite=Strict/);
    expect(log.lines.join('\n')).not.toContain(TOKEN);
  });
});

describe('headers and assets', () => {
  it('every dashboard response carries the CSP, nosniff and no-referrer; the script and stylesheet hold no data and are served to anyone', async () => {
    const { base } = await serve({ healthToken: TOKEN });
    const auth = { authorization: basic('x', TOKEN) };
    for (const [path, headers, status, type] of [
      ['/', auth, 200, 'text/html'],
      ['/dashboard/data', auth, 200, 'application/json'],
      ['/dashboard/app.js', {}, 200, 'text/javascript'],
      ['/dashboard/app.css', {}, 200, 'text/css'],
      ['/dashboard/nothing-here', auth, 404, 'text/plain'],
    ] as const) {
      const res = await fetch(`${base}${path}`, { headers });
      expect(res.status, path).toBe(status);
      expect(res.headers.get('content-type')).toContain(type);
      expect(res.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      const body = await res.text();
      if (path.startsWith('/dashboard/app')) expect(body).not.toContain(REALM_A);
    }
    // The page itself: no inline script or style for the policy to refuse, one script and one stylesheet of ours.
    const page = await (await fetch(`${base}/`, { headers: auth })).text();
    expect(page).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
    expect(page).not.toMatch(/\sstyle=|<style|\son[a-z]+=/i);
    expect(page.match(/<script[^>]*>/g)).toEqual(['<script type="module" src="dashboard/app.js">']);
    expect(page).not.toMatch(/https?:\/\//);
    // Assets revalidate by ETag.
    const js = await fetch(`${base}/dashboard/app.js`);
    const etag = js.headers.get('etag') ?? '';
    expect((await fetch(`${base}/dashboard/app.js`, { headers: { 'if-none-match': etag } })).status).toBe(304);
  });

  it('/dashboard redirects to the page at /, and other methods are refused', async () => {
    const { base } = await serve();
    const res = await fetch(`${base}/dashboard`, { redirect: 'manual' });
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe('/');
    expect((await fetch(`${base}/dashboard/data`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${base}/`, { method: 'DELETE' })).status).toBe(405);
    // Without HEALTH_TOKEN the page is public, as /status is.
    expect((await fetch(`${base}/`)).status).toBe(200);
  });
});

describe('data from PostgreSQL', () => {
  it('company names from Intuit are carried as JSON strings, never as markup, and the page holds none of them', async () => {
    const log = captureLog('debug');
    const { base } = await serve({ status: reader(db.url, log) });
    const data = (await (await fetch(`${base}/dashboard/data`)).json()) as DashboardData;
    expect(data.stored.error).toBeNull();
    expect(data.realms.find((r) => r.realmId === REALM_A)?.companyName).toBe(SCRIPT_NAME);
    expect(data.realms.find((r) => r.realmId === REALM_B)?.companyName).toBe(ATTR_NAME);
    const b = data.realms.find((r) => r.realmId === REALM_B);
    expect(b?.badge).toBe('fail');
    expect(b?.environment).toBe('production');
    expect(b?.lastError).toMatchObject({ errorCode: 'server_error', intuitTid: 'tid-503-b', httpStatus: 503 });
    expect(b?.refreshToken).toMatchObject({ revoked: false, rollingDaysLeft: 49, hardDaysLeft: 9 });
    const page = await (await fetch(`${base}/`)).text();
    expect(page).not.toContain('pwned');
    expect(page).not.toContain('onerror');
  });

  it('a realm a silence covers is shown silenced, with its state beneath and the silence listed', async () => {
    const silence = await createSilence(db.client, { realmId: REALM_B, kind: null, durationMs: 2 * 3_600_000, reason: 'Intuit maintenance <b>window</b>', createdBy: 'ops' });
    try {
      const { base } = await serve({ status: reader(db.url, captureLog('debug')) });
      const data = (await (await fetch(`${base}/dashboard/data`)).json()) as DashboardData;
      expect(data.realms.find((r) => r.realmId === REALM_B)).toMatchObject({ badge: 'silenced', state: 'fail', silencedUntil: silence.endsAt });
      // A passing realm is not shown silenced by a silence of another.
      expect(data.realms.find((r) => r.realmId === REALM_A)).toMatchObject({ badge: 'pass', silencedUntil: null });
      expect(data.silences).toEqual([expect.objectContaining({ id: silence.id, realmId: REALM_B, kind: null, reason: 'Intuit maintenance <b>window</b>', createdBy: 'ops' })]);
    } finally {
      await removeSilence(db.client, silence.id, 'ops');
    }
  });

  it('escapes what the server writes into HTML', () => {
    expect(escapeHtml(`${SCRIPT_NAME} & ${ATTR_NAME} 'x'`)).toBe(
      '&#60;script&#62;alert(&#34;pwned&#34;)&#60;/script&#62; Dental &#38; &#34;&#62;&#60;img src=x onerror=alert(1)&#62; Clinic &#39;x&#39;',
    );
  });

  it('a database that cannot be read gives the live state with the failure named, and a warn log with its event, not a crash', async () => {
    const port = await freePort();
    const down = `postgres://qbhealth:not-the-password@127.0.0.1:${port}/nowhere`;
    const state = liveState();
    state.db = { reachable: false, checkedAt: new Date(), error: `connect ECONNREFUSED 127.0.0.1:${port} (database nowhere)` };
    const { base, log } = await serve({ status: reader(down, captureLog('debug')), state });
    const res = await fetch(`${base}/dashboard/data`);
    expect(res.status).toBe(200);
    const data = (await res.json()) as DashboardData;
    expect(data.stored.readAt).toBeNull();
    expect(data.stored.error).toMatch(/^the history cannot be read from PostgreSQL \(failing since .+\); \/health shows why$/);
    // The live part is all there: both realms with their badges.
    expect(data.realms.map((r) => [r.realmId, r.badge])).toEqual([
      [REALM_A, 'pass'],
      [REALM_B, 'fail'],
    ]);
    expect(data.realms.every((r) => r.history === null)).toBe(true);
    // Without HEALTH_TOKEN the page is public: PostgreSQL's own words (hosts, databases) stay out of it.
    expect(data.system.postgres).toMatchObject({ reachable: false, error: 'PostgreSQL unreachable' });
    expect(JSON.stringify(data)).not.toContain('nowhere');
    const warned = log.byEvent(LogEvent.dbReadFailed);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 40, what: 'dashboard' });
    expect(warned[0]?.err).toBeDefined();
    // The page itself is still served.
    expect((await fetch(`${base}/`)).status).toBe(200);
  });

  it('with HEALTH_TOKEN, a viewer holding it sees PostgreSQL\'s own words for an unreachable database', async () => {
    const state = liveState();
    state.db = { reachable: false, checkedAt: new Date(), error: 'connect ECONNREFUSED 10.0.0.7:5432' };
    const { base } = await serve({ healthToken: TOKEN, state });
    const data = (await (await fetch(`${base}/dashboard/data`, { headers: { authorization: basic('x', TOKEN) } })).json()) as DashboardData;
    expect(data.system.postgres.error).toBe('connect ECONNREFUSED 10.0.0.7:5432');
    expect(data.stored.error).toMatch(/no database reader/);
  });
});
