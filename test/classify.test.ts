import nock from 'nock';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fetchCompanyInfo } from '../src/quickbooks/api.js';
import { IntuitOAuth } from '../src/quickbooks/oauth.js';
import { IntuitFailure } from '../src/quickbooks/outcome.js';
import { deadlineSignal } from '../src/deadline.js';

const BASE = 'https://sandbox-quickbooks.api.intuit.com';
const TOKEN_URL = 'https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer';
const REALM = '9130357766';
const PATH = `/v3/company/${REALM}/companyinfo/${REALM}?minorversion=75`;
const ACCESS = 'eyJsecret-access-token-value';
const TID = { intuit_tid: '1-6744d8c1-abcdef' };

beforeAll(() => nock.disableNetConnect());
afterEach(() => nock.cleanAll());
afterAll(() => nock.enableNetConnect());

async function classify(reply: (scope: nock.Interceptor) => nock.Scope, timeoutMs = 2000): Promise<IntuitFailure | 'ok'> {
  reply(nock(BASE).get(PATH).matchHeader('authorization', `Bearer ${ACCESS}`));
  try {
    await fetchCompanyInfo({ baseUrl: BASE, realmId: REALM, accessToken: ACCESS, signal: deadlineSignal(timeoutMs) });
    return 'ok';
  } catch (err) {
    if (err instanceof IntuitFailure) return err;
    throw err;
  }
}

const fault = (type: string, code: string, message: string, detail: string) => ({ Fault: { Error: [{ Message: message, Detail: detail, code }], type } });

describe('CompanyInfo classification', () => {
  it('ok: 200 with CompanyInfo', async () => {
    reply200();
    const info = await fetchCompanyInfo({ baseUrl: BASE, realmId: REALM, accessToken: ACCESS, signal: deadlineSignal(2000) });
    expect(info).toEqual({ companyName: 'Sandbox Company_US_1', httpStatus: 200, intuitTid: TID.intuit_tid });
    function reply200() {
      nock(BASE).get(PATH).reply(200, { CompanyInfo: { CompanyName: 'Sandbox Company_US_1' } }, TID);
    }
  });

  it.each([
    ['lower-case fault 401', (s: nock.Interceptor) => s.reply(401, { fault: { error: [{ message: 'message=AuthenticationFailed; errorCode=003200; statusCode=401', detail: 'Token expired', code: '3200' }], type: 'AUTHENTICATION' } }, TID), 'auth_unauthorized', 401, /AUTHENTICATION: 3200 .*Token expired/],
    ['403 authorization fault', (s: nock.Interceptor) => s.reply(403, fault('AuthorizationFault', '3100', 'message=ApplicationAuthorizationFailed', 'not authorized'), TID), 'forbidden', 403, /AuthorizationFault/],
    ['429 throttle fault', (s: nock.Interceptor) => s.reply(429, fault('ThrottleExceeded', '003001', 'message=ThrottleExceeded', 'limit reached'), TID), 'throttled', 429, /ThrottleExceeded/],
    ['500 JSON', (s: nock.Interceptor) => s.reply(500, { error: 'internal' }, TID), 'server_error', 500, /HTTP 500 \(application\/json/],
    ['503 HTML page', (s: nock.Interceptor) => s.reply(503, '<html><body>Service Unavailable</body></html>', { 'content-type': 'text/html', ...TID }), 'server_error', 503, /HTTP 503 \(text\/html, \d+ bytes\)/],
    ['200 carrying a Fault', (s: nock.Interceptor) => s.reply(200, fault('ValidationFault', '2020', 'Required param missing', 'minorversion'), TID), 'bad_response', 200, /ValidationFault: 2020/],
    ['truncated JSON', (s: nock.Interceptor) => s.reply(200, '{"CompanyInfo":{"CompanyNa', { 'content-type': 'application/json', ...TID }), 'bad_response', 200, /not valid JSON/],
    ['200 without CompanyInfo', (s: nock.Interceptor) => s.reply(200, { QueryResponse: {} }, TID), 'bad_response', 200, /without CompanyInfo/],
    ['a 50 MB body', (s: nock.Interceptor) => s.reply(200, Buffer.alloc(50 * 1024 * 1024, 32), TID), 'bad_response', 200, /body over 1048576 bytes/],
    ['connection reset', (s: nock.Interceptor) => s.replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })), 'network', undefined, /ECONNRESET/],
  ])('%s', async (_name, reply, code, status, message) => {
    const failure = await classify(reply);
    expect(failure).toBeInstanceOf(IntuitFailure);
    const f = failure as IntuitFailure;
    expect([f.code, f.httpStatus]).toEqual([code, status]);
    expect(f.message).toMatch(message);
    expect(f.message).not.toContain(ACCESS);
    expect(f.message).not.toContain('<html>');
    if (status !== undefined) expect(f.intuitTid).toBe(TID.intuit_tid);
  });

  it('a hung endpoint ends as timeout within the deadline', async () => {
    // Without the deadline the delayed reply would arrive and classify as bad_response.
    const failure = await classify((s) => s.delay(20_000).reply(200, {}), 300);
    expect((failure as IntuitFailure).code).toBe('timeout');
  });
});

describe('token endpoint classification (intuit-oauth)', () => {
  const oauth = new IntuitOAuth({
    clientId: 'cid',
    clientSecret: 'the-client-secret-1',
    environment: 'sandbox',
    redirectUri: 'http://localhost:8080/oauth/callback',
    tokenUrl: TOKEN_URL,
    revokeUrl: 'https://developer.api.intuit.com/v2/oauth2/tokens/revoke',
  });
  const REFRESH = 'RT1-secret-refresh-value-000';
  const refresh = (timeoutMs = 2000) => oauth.refresh(REFRESH, deadlineSignal(timeoutMs)).then(() => 'ok' as const, (err: unknown) => err as IntuitFailure);
  const token = () => nock('https://oauth.platform.intuit.com').post('/oauth2/v1/tokens/bearer');

  it('ok: rotated pair with rolling and hard expiry as instants (hard expiry requested)', async () => {
    token()
      .matchHeader('x-include-refresh-token-hard-expires-in', 'true')
      .reply(200, { access_token: 'AT-new-secret-1', refresh_token: 'RT-new-secret-1', expires_in: 3600, x_refresh_token_expires_in: 8726400, x_refresh_token_hard_expires_in: 157680000, token_type: 'bearer' }, TID);
    const before = Date.now();
    const set = await oauth.refresh(REFRESH, deadlineSignal(2000));
    expect(set.refreshToken).toBe('RT-new-secret-1');
    expect(set.accessTokenExpiresAt.getTime() - before).toBeGreaterThanOrEqual(3600_000 - 50);
    expect(Math.round((set.refreshTokenExpiresAt.getTime() - before) / 86_400_000)).toBe(101);
    expect(Math.round((set.refreshTokenHardExpiresAt!.getTime() - before) / 86_400_000)).toBe(1825);
    expect(set.intuitTid).toBe(TID.intuit_tid);
  });

  it.each([
    ['400 invalid_grant', () => token().reply(400, { error: 'invalid_grant' }, TID), 'auth_invalid_grant', /invalid_grant.*qbhealth connect/],
    ['401 invalid_client', () => token().reply(401, { error: 'invalid_client' }, TID), 'auth_unauthorized', /QBO_CLIENT_ID and QBO_CLIENT_SECRET/],
    ['429', () => token().reply(429, { error: 'rate' }, TID), 'throttled', /HTTP 429/],
    ['503, not retried', () => token().reply(503, 'down', TID), 'server_error', /HTTP 503/],
    ['200 without tokens', () => token().reply(200, { token_type: 'bearer' }, TID), 'bad_response', /without access_token/],
    ['connection refused', () => token().replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })), 'network', /ECONNREFUSED/],
  ])('%s', async (_name, arrange, code, message) => {
    arrange();
    const failure = await refresh();
    expect(failure).toBeInstanceOf(IntuitFailure);
    expect((failure as IntuitFailure).code).toBe(code);
    expect((failure as IntuitFailure).message).toMatch(message);
    expect((failure as IntuitFailure).message).not.toContain(REFRESH);
    expect((failure as IntuitFailure).message).not.toContain('the-client-secret-1');
    expect(nock.isDone()).toBe(true);
  });

  it('a hung token endpoint ends as timeout within the deadline', async () => {
    token().delay(20_000).reply(200, {});
    expect((await refresh(300)) as IntuitFailure).toMatchObject({ code: 'timeout' });
  });
});
