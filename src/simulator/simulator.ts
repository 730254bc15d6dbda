/**
 * A loopback stand-in for Intuit's token, revoke, authorize and CompanyInfo endpoints, for the
 * demo, the end-to-end tests and the benchmarks. It issues and rotates tokens the way Intuit
 * does: every refresh rotates the refresh token and supersedes the old one (invalid_grant if it
 * is used again), access tokens expire (401 with an AUTHENTICATION fault), and a revoked app gets
 * invalid_grant. Scenarios switch its behaviour at run time; the monitor knows it only through
 * the endpoint overrides (QBO_TOKEN_URL, QBO_API_BASE_URL, QBO_REVOKE_URL, QBO_AUTHORIZE_URL).
 *
 * Control endpoints (loopback tooling, no credentials): `POST /_sim/scenario?name=S` switches the
 * scenario; `POST /_sim/realms?realm_id=R[&company=NAME]` registers a company, or registers it
 * afresh (un-revoked, earlier tokens dead), and answers its first refresh token as text/plain, for
 * `| qbhealth import-tokens --realm-id R`; `GET /_sim/state` reports scenario, counters and realms.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const SCENARIOS = [
  'healthy',
  'outage',
  'throttled',
  'slow',
  'revoked',
  'malformed',
  // CompanyInfo faults, for the fault-injection suite: a 500 with a SystemFault body, the
  // connection reset before any answer, no answer at all, a 200 carrying a Fault, a 50 MB body.
  'error500',
  'reset',
  'hang',
  'fault200',
  'huge',
  // Token endpoint transport faults (CompanyInfo stays healthy): the connection reset after the
  // request was read, and a request read but never answered.
  'tokenReset',
  'tokenHang',
] as const;
export type Scenario = (typeof SCENARIOS)[number];

export const TOKEN_PATH = '/oauth2/v1/tokens/bearer';
export const REVOKE_PATH = '/v2/oauth2/tokens/revoke';
export const AUTHORIZE_PATH = '/connect/oauth2';
export const SCENARIO_PATH = '/_sim/scenario';
export const REALMS_PATH = '/_sim/realms';
export const STATE_PATH = '/_sim/state';

export interface SimulatorOptions {
  port?: number;
  host?: string;
  clientId: string;
  clientSecret: string;
  /** Added to every answer. */
  latencyMs?: number;
  /** How long the `slow` scenario holds each answer. */
  slowMs?: number;
  /** See Simulator.refreshDelayMs. */
  refreshDelayMs?: number;
  accessTokenTtlSeconds?: number;
  refreshTokenTtlSeconds?: number;
  hardExpirySeconds?: number;
}

interface RealmState {
  companyName: string;
  refreshToken: string;
  superseded: Set<string>;
  accessToken: string | undefined;
  accessTokenExpiresAt: number;
  hardExpiresAt: number;
  revoked: boolean;
}

export interface SimulatorStats {
  refreshes: number;
  refreshFailures: number;
  apiCalls: number;
  codeExchanges: number;
  revocations: number;
  /** Requests received and not yet answered (latency and the slow scenario hold them). */
  inFlight: number;
}

export interface Simulator {
  readonly url: string;
  readonly tokenUrl: string;
  readonly revokeUrl: string;
  /** The consent page `qbhealth connect` sends the browser to (QBO_AUTHORIZE_URL). */
  readonly authorizeUrl: string;
  readonly stats: SimulatorStats;
  scenario: Scenario;
  latencyMs: number;
  /**
   * A refresh grant is processed at once (the pair rotates: the old refresh token is superseded)
   * but answered only after this delay, as when Intuit's answer is slow to come back. 0: at once.
   */
  refreshDelayMs: number;
  /** Registers a company (afresh if known); returns its first refresh token (what `import-tokens` takes). */
  addRealm(realmId: string, companyName: string): string;
  /** The registered companies, realm id to name. */
  realms(): ReadonlyMap<string, string>;
  /** A one-time authorization code, as Intuit's consent page would redirect with. */
  issueCode(realmId: string): string;
  /** Makes every access token stale now (as if an hour passed). */
  expireAccessTokens(): void;
  /** Tokens issued so far, for tests that scan logs and rows for plaintext. */
  issuedTokens(): string[];
  close(): Promise<void>;
}

const token = (prefix: string): string => `${prefix}${randomBytes(24).toString('base64url')}`;

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/html' : 'application/json',
    intuit_tid: `sim-${randomUUID()}`,
    ...headers,
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseForm(text: string, contentType: string | undefined): Record<string, string> {
  if (contentType?.includes('json')) return JSON.parse(text || '{}') as Record<string, string>;
  return Object.fromEntries(new URLSearchParams(text));
}

const authFault = (detail: string) => ({
  fault: { error: [{ message: 'message=AuthenticationFailed; errorCode=003200; statusCode=401', detail, code: '3200' }], type: 'AUTHENTICATION' },
  time: new Date().toISOString(),
});

export async function startSimulator(opts: SimulatorOptions): Promise<Simulator> {
  const realms = new Map<string, RealmState>();
  const codes = new Map<string, string>();
  const issued: string[] = [];
  const stats: SimulatorStats = { refreshes: 0, refreshFailures: 0, apiCalls: 0, codeExchanges: 0, revocations: 0, inFlight: 0 };
  const accessTtl = opts.accessTokenTtlSeconds ?? 3600;
  const refreshTtl = opts.refreshTokenTtlSeconds ?? 8_726_400;
  const hardTtl = opts.hardExpirySeconds ?? 5 * 365 * 86_400;
  const basic = `Basic ${Buffer.from(`${opts.clientId}:${opts.clientSecret}`).toString('base64')}`;
  const state = { scenario: 'healthy' as Scenario, latencyMs: opts.latencyMs ?? 0, refreshDelayMs: opts.refreshDelayMs ?? 0 };

  const issueTokens = (realm: RealmState, includeHard: boolean) => {
    if (realm.accessToken) realm.superseded.add(realm.accessToken);
    realm.superseded.add(realm.refreshToken);
    realm.refreshToken = token('RT1-sim-');
    realm.accessToken = token('AT-sim-');
    realm.accessTokenExpiresAt = Date.now() + accessTtl * 1000;
    issued.push(realm.refreshToken, realm.accessToken);
    return {
      token_type: 'bearer',
      access_token: realm.accessToken,
      refresh_token: realm.refreshToken,
      expires_in: accessTtl,
      x_refresh_token_expires_in: refreshTtl,
      ...(includeHard ? { x_refresh_token_hard_expires_in: Math.max(1, Math.round((realm.hardExpiresAt - Date.now()) / 1000)) } : {}),
    };
  };

  const findByRefresh = (value: string): RealmState | undefined => [...realms.values()].find((r) => r.refreshToken === value);

  async function handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = await readBody(req);
    if (state.scenario === 'tokenReset') return void req.socket.destroy();
    if (state.scenario === 'tokenHang') return;
    if (req.headers.authorization !== basic) return send(res, 401, { error: 'invalid_client' });
    const form = parseForm(text, req.headers['content-type']);
    const includeHard = req.headers['x-include-refresh-token-hard-expires-in'] === 'true';
    if (state.scenario === 'outage') return send(res, 503, '<html><body>Service Unavailable</body></html>');
    if (state.scenario === 'throttled') return send(res, 429, { error: 'rate_limit_exceeded' });
    if (form.grant_type === 'refresh_token') {
      const realm = findByRefresh(form.refresh_token ?? '');
      if (!realm || realm.revoked || state.scenario === 'revoked') {
        stats.refreshFailures++;
        return send(res, 400, { error: 'invalid_grant' });
      }
      stats.refreshes++;
      const issued = issueTokens(realm, includeHard);
      if (state.refreshDelayMs > 0) await new Promise((r) => setTimeout(r, state.refreshDelayMs));
      return send(res, 200, issued);
    }
    if (form.grant_type === 'authorization_code') {
      const realmId = codes.get(form.code ?? '');
      const realm = realmId ? realms.get(realmId) : undefined;
      if (!realm || !realmId) return send(res, 400, { error: 'invalid_grant', error_description: 'unknown or used code' });
      codes.delete(form.code ?? '');
      realm.revoked = false;
      stats.codeExchanges++;
      return send(res, 200, issueTokens(realm, includeHard));
    }
    return send(res, 400, { error: 'unsupported_grant_type' });
  }

  async function handleRevoke(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.headers.authorization !== basic) return send(res, 401, { error: 'invalid_client' });
    const form = parseForm(await readBody(req), req.headers['content-type']);
    if (state.scenario === 'outage') return send(res, 503, '<html><body>Service Unavailable</body></html>');
    const realm = [...realms.values()].find((r) => r.refreshToken === form.token || r.accessToken === form.token);
    if (realm) {
      realm.revoked = true;
      realm.accessToken = undefined;
      stats.revocations++;
    }
    return send(res, 200, '');
  }

  /** 50 MB of a JSON string, written as fast as the client reads; stops when the client hangs up. */
  function sendHuge(res: ServerResponse): void {
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    let left = 50;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(50 * chunk.length + 24), intuit_tid: `sim-${randomUUID()}` });
    res.write('{"CompanyInfo":{"x":"');
    const pump = (): void => {
      while (left > 0 && !res.destroyed) {
        left--;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      if (!res.destroyed) res.end('"}}');
    };
    pump();
  }

  function handleCompanyInfo(req: IncomingMessage, res: ServerResponse, realmId: string): void {
    stats.apiCalls++;
    const realm = realms.get(realmId);
    if (state.scenario === 'outage') return send(res, 503, '<html><body><h1>503 Service Unavailable</h1></body></html>');
    if (state.scenario === 'error500') {
      return send(res, 500, { Fault: { Error: [{ Message: 'An application error has occurred while processing your request', code: '10000' }], type: 'SystemFault' } });
    }
    if (state.scenario === 'reset') return void req.socket.destroy();
    if (state.scenario === 'hang') return;
    if (state.scenario === 'fault200') {
      return send(res, 200, { Fault: { Error: [{ Message: 'Object Not Found', Detail: 'Object Not Found : Something you\'re trying to use has been made inactive', code: '610' }], type: 'ValidationFault' } });
    }
    if (state.scenario === 'huge') return void sendHuge(res);
    if (state.scenario === 'throttled') {
      return send(res, 429, { Fault: { Error: [{ Message: 'message=ThrottleExceeded; errorCode=003001; statusCode=429', Detail: 'The request limit was reached.', code: '003001' }], type: 'ThrottleExceeded' } });
    }
    const bearer = req.headers.authorization?.replace(/^Bearer /, '');
    if (!realm || realm.revoked || state.scenario === 'revoked' || !bearer || bearer !== realm.accessToken) {
      return send(res, 401, authFault(realm && bearer && realm.superseded.has(bearer) ? 'Token revoked' : 'Token invalid'));
    }
    if (Date.now() >= realm.accessTokenExpiresAt) return send(res, 401, authFault('Token expired'));
    if (state.scenario === 'malformed') {
      res.writeHead(200, { 'content-type': 'application/json', intuit_tid: `sim-${randomUUID()}` });
      return void res.end('{"CompanyInfo":{"CompanyName":"Trunc');
    }
    return send(res, 200, {
      CompanyInfo: { CompanyName: realm.companyName, Id: '1', Country: 'US', SyncToken: '0' },
      time: new Date().toISOString(),
    });
  }

  function handleAuthorize(url: URL, res: ServerResponse): void {
    const redirect = url.searchParams.get('redirect_uri');
    const realmId = url.searchParams.get('realm_id') ?? [...realms.keys()][0];
    if (!redirect) return send(res, 400, '<html><body>redirect_uri is required</body></html>');
    if (!realmId || !realms.has(realmId)) {
      return send(res, 400, `<html><body>No such company at the simulator: register one with POST ${REALMS_PATH}?realm_id=NUMBER first</body></html>`);
    }
    const target = new URL(redirect);
    target.searchParams.set('code', issueCodeFor(realmId));
    target.searchParams.set('state', url.searchParams.get('state') ?? '');
    target.searchParams.set('realmId', realmId);
    res.writeHead(302, { location: target.toString() });
    res.end();
  }

  function handleAddRealm(url: URL, res: ServerResponse): void {
    const realmId = url.searchParams.get('realm_id') ?? '';
    if (!/^\d{1,32}$/.test(realmId)) return send(res, 400, { error: 'realm_id must be the numeric company (realm) id' });
    const company = url.searchParams.get('company') ?? realms.get(realmId)?.companyName ?? `Sandbox Company ${realmId}`;
    const refreshToken = addRealm(realmId, company);
    res.writeHead(201, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(refreshToken);
  }

  function addRealm(realmId: string, companyName: string): string {
    const refreshToken = token('RT1-sim-');
    issued.push(refreshToken);
    realms.set(realmId, {
      companyName,
      refreshToken,
      superseded: new Set(),
      accessToken: undefined,
      accessTokenExpiresAt: 0,
      hardExpiresAt: Date.now() + hardTtl * 1000,
      revoked: false,
    });
    return refreshToken;
  }

  function issueCodeFor(realmId: string): string {
    const code = token('AB11-code-');
    codes.set(code, realmId);
    return code;
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://simulator');
    stats.inFlight++;
    res.once('close', () => stats.inFlight--);
    const respond = async (): Promise<void> => {
      if (state.scenario === 'slow') await new Promise((r) => setTimeout(r, opts.slowMs ?? 60_000));
      else if (state.latencyMs > 0) await new Promise((r) => setTimeout(r, state.latencyMs));
      if (req.method === 'POST' && url.pathname === TOKEN_PATH) return handleToken(req, res);
      if (req.method === 'POST' && url.pathname === REVOKE_PATH) return handleRevoke(req, res);
      if (req.method === 'GET' && url.pathname === AUTHORIZE_PATH) return handleAuthorize(url, res);
      const api = /^\/v3\/company\/([^/]+)\/companyinfo\/([^/]+)$/.exec(url.pathname);
      if (req.method === 'GET' && api && api[1] === api[2]) return handleCompanyInfo(req, res, decodeURIComponent(api[1] ?? ''));
      if (url.pathname === REALMS_PATH && req.method === 'POST') return handleAddRealm(url, res);
      if (url.pathname === SCENARIO_PATH && req.method === 'POST') {
        const name = url.searchParams.get('name') as Scenario | null;
        if (!name || !SCENARIOS.includes(name)) return send(res, 400, { error: `scenario must be one of ${SCENARIOS.join(', ')}` });
        state.scenario = name;
        return send(res, 200, { scenario: name });
      }
      if (url.pathname === STATE_PATH) return send(res, 200, { scenario: state.scenario, latencyMs: state.latencyMs, refreshDelayMs: state.refreshDelayMs, stats, realms: [...realms.keys()] });
      return send(res, 404, { error: 'not found' });
    };
    respond().catch((err: unknown) => {
      // A simulator bug must be visible to the test or demo that drives it: answer 500 and say why.
      if (!res.headersSent) send(res, 500, { error: String(err) });
      else res.destroy(err as Error);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const host = opts.host ?? '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url,
    tokenUrl: `${url}${TOKEN_PATH}`,
    revokeUrl: `${url}${REVOKE_PATH}`,
    authorizeUrl: `${url}${AUTHORIZE_PATH}`,
    stats,
    get scenario() {
      return state.scenario;
    },
    set scenario(s: Scenario) {
      state.scenario = s;
    },
    get latencyMs() {
      return state.latencyMs;
    },
    set latencyMs(ms: number) {
      state.latencyMs = ms;
    },
    get refreshDelayMs() {
      return state.refreshDelayMs;
    },
    set refreshDelayMs(ms: number) {
      state.refreshDelayMs = ms;
    },
    addRealm,
    realms: () => new Map([...realms].map(([id, r]) => [id, r.companyName])),
    issueCode: issueCodeFor,
    expireAccessTokens() {
      for (const r of realms.values()) r.accessTokenExpiresAt = 0;
    },
    issuedTokens: () => [...issued],
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
