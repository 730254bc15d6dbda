import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import OAuthClient from 'intuit-oauth';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { ReducedError } from '../src/errors.js';
import { LogEvent, REDACTED, SecretRegistry } from '../src/log.js';
import { fetchCompanyInfo } from '../src/quickbooks/api.js';
import { IntuitOAuth } from '../src/quickbooks/oauth.js';
import { IntuitFailure } from '../src/quickbooks/outcome.js';
import { captureLog } from './support/log.js';

describe('logger', () => {
  it('writes one JSON object a line with the event and the error under err', () => {
    const { log, lines } = captureLog('info');
    log.error({ event: LogEvent.dbWriteFailed, err: new Error('connection terminated') }, 'insert failed');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0] as string);
    expect(line).toMatchObject({ event: 'db.write_failed', level: 50, levelName: 'error', msg: 'insert failed' });
    expect(line.err).toMatchObject({ type: 'Error', message: 'connection terminated' });
    expect(typeof line.time).toBe('string');
  });

  it('censors token, secret and key fields at any depth our log objects reach', () => {
    const { log, lines } = captureLog('info');
    log.info({
      event: 'token.refreshed',
      access_token: 'a1',
      refreshToken: 'r1',
      response: { body: { refresh_token: 'r2', x_refresh_token_expires_in: 8726400 }, headers: { authorization: 'Bearer b1' } },
      config: { clientSecret: 's1', tokenEncryptionKey: 'k1', databaseUrl: 'postgres://u:p@h/d' },
    });
    const line = JSON.parse(lines[0] as string);
    expect(line.access_token).toBe(REDACTED);
    expect(line.refreshToken).toBe(REDACTED);
    expect(line.response.body.refresh_token).toBe(REDACTED);
    expect(line.response.body.x_refresh_token_expires_in).toBe(8726400);
    expect(line.response.headers.authorization).toBe(REDACTED);
    expect(line.config).toEqual({ clientSecret: REDACTED, tokenEncryptionKey: REDACTED, databaseUrl: REDACTED });
  });

  it('scrubs known secret values wherever they appear, messages and stacks included', () => {
    const capture = captureLog('info');
    const token = 'AB11xyzRefreshTokenValue9000';
    capture.secrets.add(token, 'quote"d-secret');
    const err = new Error(`Intuit said no to ${token}`);
    capture.log.warn({ event: LogEvent.tokenRefreshFailed, err, note: { deep: { deeper: { text: `x ${token} y` } } } }, `failed for ${token}`);
    capture.log.warn({ event: 'x', value: 'has quote"d-secret inside' });
    expect(capture.lines.join('\n')).not.toContain(token);
    expect(capture.lines.join('\n')).not.toContain('quote\\"d-secret');
    expect(capture.lines[0]).toContain(`Intuit said no to ${REDACTED}`);
  });

  it('scrubs the longest secret at each position, adjacent and overlapping ones included', () => {
    const secrets = new SecretRegistry();
    secrets.add('abcdef', 'abcdefghij', 'zzzzzz');
    expect(secrets.scrub('x abcdefghij y abcdefQ zzzzzzabcdef .')).toBe(`x ${REDACTED} y ${REDACTED}Q ${REDACTED}${REDACTED} .`);
    expect(secrets.scrub('abcde short values and nothing else')).toBe('abcde short values and nothing else');
    expect(secrets.scrub('ends with abcdef')).toBe(`ends with ${REDACTED}`);
  });

  it('keeps a realm\'s current and previous tokens only, so the registry does not grow with rotations', () => {
    const secrets = new SecretRegistry();
    secrets.add('client-secret-value');
    const gen = (n: number): [string, string] => [`access-token-${n}-xxxxxxxx`, `refresh-token-${n}-yyyyyyyy`];
    for (let n = 1; n <= 50; n++) secrets.track('9130357766', gen(n));
    secrets.track('9130357766', gen(50)); // re-reading the same pair changes nothing
    expect(secrets.size).toBe(1 + 4);
    const line = `${gen(50).join(' ')} ${gen(49).join(' ')} client-secret-value`;
    expect(secrets.scrub(line)).toBe(Array(5).fill(REDACTED).join(' '));
    // Generations before the previous one are no longer known (they are dead at Intuit).
    expect(secrets.scrub(gen(48)[0])).toBe(gen(48)[0]);
    // A value shared with a pinned secret stays while either holds it.
    secrets.add(gen(50)[0]);
    for (let n = 51; n <= 53; n++) secrets.track('9130357766', gen(n));
    expect(secrets.scrub(gen(50)[0])).toBe(REDACTED);
  });
});


const CLIENT_ID = 'ABunitClientId0042';
const CLIENT_SECRET = 'unit-client-secret-Zq8vX3';
const BASIC = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
const REFRESH_TOKEN = 'AB11RefreshTokenUnitTest0000000000000000000001';

/** A loopback port nobody listens on: connecting to it is refused at once. */
async function refusedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function oauthAgainst(tokenUrl: string): IntuitOAuth {
  return new IntuitOAuth({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://localhost/cb', tokenUrl, revokeUrl: tokenUrl });
}

async function rejection(work: Promise<unknown>): Promise<unknown> {
  return work.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
}

/** Every key present anywhere in a parsed log line. */
function keysDeep(value: unknown, into = new Set<string>()): Set<string> {
  if (typeof value !== 'object' || value === null) return into;
  for (const [key, child] of Object.entries(value)) {
    into.add(key);
    keysDeep(child, into);
  }
  return into;
}

const LEAKY_KEYS = ['config', 'headers', 'Authorization', 'request', 'response', '_header', 'data', 'authResponse', 'body'];

describe('errors from libraries in log lines', () => {
  it('a token endpoint refusing the connection: the cause is kept reduced, without the request config, its Basic credential or the refresh token', async () => {
    const oauth = oauthAgainst(`http://127.0.0.1:${await refusedPort()}/oauth2/v1/tokens/bearer`);
    const failure = await rejection(oauth.refresh(REFRESH_TOKEN, AbortSignal.timeout(5000)));
    expect(failure).toBeInstanceOf(IntuitFailure);
    // Reduced where it is caught: what is stored or alerted on can hold nothing more.
    const cause = (failure as Error).cause;
    expect(cause).toBeInstanceOf(ReducedError);
    expect(Object.keys(cause as object).sort()).toEqual(['code', 'errors', 'name', 'status', 'type']);
    expect(cause).toMatchObject({ type: 'AxiosError', code: 'ECONNREFUSED' });

    // As the daemon's logger sees it, knowing the raw secret (as it does from the configuration).
    const capture = captureLog('info');
    capture.secrets.add(CLIENT_SECRET);
    capture.log.warn({ event: LogEvent.tokenRefreshFailed, err: failure }, 'token refresh failed');
    const text = capture.lines.join('\n');
    expect(text).not.toContain(BASIC);
    expect(text).not.toContain(REFRESH_TOKEN);
    const line = capture.events()[0] as { err: Record<string, unknown> };
    expect(line.err).toMatchObject({ type: 'IntuitFailure', code: 'network', cause: { type: 'AxiosError', code: 'ECONNREFUSED', message: expect.stringContaining('ECONNREFUSED') } });
    for (const key of LEAKY_KEYS) expect(keysDeep(line), key).not.toContain(key);
  });

  it('the logger reduces a raw axios error itself (any path that logs one unreduced), without its stack', async () => {
    oauthAgainst('http://127.0.0.1:1/unused'); // turns intuit-oauth's retries off for this process
    const client = new OAuthClient({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, environment: 'sandbox', redirectUri: 'http://localhost/cb', logging: false });
    const axiosError = (await rejection(
      client.loadResponse({
        url: `http://127.0.0.1:${await refusedPort()}/oauth2/v1/tokens/bearer`,
        method: 'POST',
        headers: { Authorization: `Basic ${BASIC}`, 'Content-Type': 'application/x-www-form-urlencoded' },
        data: `grant_type=refresh_token&refresh_token=${REFRESH_TOKEN}`,
      }),
    )) as Error & { config?: unknown };
    expect(axiosError.config, 'a raw axios error, carrying its request config').toBeDefined();

    const capture = captureLog('info');
    capture.log.error({ event: LogEvent.tokenRefreshFailed, err: axiosError }, 'raw');
    capture.log.error({ event: LogEvent.tokenRefreshFailed, err: new AggregateError([axiosError, new Error('cleanup failed', { cause: axiosError })], 'both failed') }, 'aggregate');
    capture.log.error(axiosError, 'as the merging object');
    const text = capture.lines.join('\n');
    expect(text).not.toContain(BASIC);
    expect(text).not.toContain(REFRESH_TOKEN);
    const [raw, aggregate, merged] = capture.events() as Array<{ err: Record<string, unknown> }>;
    expect(raw?.err).toEqual({ type: 'AxiosError', name: 'Error', message: expect.stringContaining('ECONNREFUSED'), code: 'ECONNREFUSED', cause: expect.objectContaining({ code: 'ECONNREFUSED' }) });
    expect(merged?.err).toEqual(raw?.err);
    expect(aggregate?.err).toMatchObject({
      type: 'AggregateError',
      message: 'both failed',
      errors: [{ type: 'AxiosError', code: 'ECONNREFUSED' }, { type: 'Error', message: 'cleanup failed', cause: { type: 'AxiosError', code: 'ECONNREFUSED' } }],
    });
    // Our own errors keep their stack; a library's does not.
    expect((aggregate?.err.errors as Array<Record<string, unknown>>)[1]?.stack).toEqual(expect.stringContaining('log.test.ts'));
    for (const line of [raw, aggregate, merged]) for (const key of LEAKY_KEYS) expect(keysDeep(line), key).not.toContain(key);
  });

  it('fetch and pg errors: name, message, code and status only; a cause cycle ends', async () => {
    const failure = await rejection(
      fetchCompanyInfo({ baseUrl: `http://127.0.0.1:${await refusedPort()}`, realmId: '9130357766', accessToken: 'eyJ-access-token-unit-0001', signal: AbortSignal.timeout(5000) }),
    );
    expect(failure).toBeInstanceOf(IntuitFailure);
    expect((failure as Error).cause).toBeInstanceOf(ReducedError);
    expect((failure as Error).cause).toMatchObject({ type: 'TypeError', message: 'fetch failed', cause: { code: 'ECONNREFUSED' } });

    const client = new pg.Client({ host: '127.0.0.1', port: await refusedPort(), user: 'monitor', password: 'pg-password-unit-0001', database: 'x' });
    const pgError = await rejection(client.connect());
    const cyclic = new Error('outer');
    Object.assign(cyclic, { cause: new Error('inner', { cause: cyclic }) });

    const capture = captureLog('info');
    capture.log.warn({ event: LogEvent.probeFailed, err: failure }, 'fetch');
    capture.log.warn({ event: LogEvent.dbConnectionError, err: pgError }, 'pg');
    capture.log.warn({ event: 'x', err: cyclic }, 'cycle');
    capture.log.warn({ event: 'x', err: { message: 'a plain object', config: { headers: { Authorization: `Basic ${BASIC}` } }, status: 502 } }, 'object');
    expect(capture.lines.join('\n')).not.toContain(BASIC);
    const [fetched, pgLine, cycle, plain] = capture.events() as Array<{ err: Record<string, unknown> }>;
    expect(fetched?.err).toMatchObject({ type: 'IntuitFailure', code: 'network', cause: { type: 'TypeError', cause: { code: 'ECONNREFUSED' } } });
    expect(pgLine?.err).toMatchObject({ code: 'ECONNREFUSED' });
    expect(Object.keys(pgLine?.err ?? {}).sort()).toEqual(['code', 'message', 'name', 'type']);
    expect(cycle?.err).toMatchObject({ message: 'outer', cause: { message: 'inner' } });
    expect((cycle?.err.cause as Record<string, unknown>).cause).toBeUndefined();
    expect(plain?.err).toEqual({ type: 'Object', name: 'Error', message: 'a plain object', status: 502 });
  });
});

describe('derived forms of secrets', () => {
  it('scrubs the Basic credential and the encoded forms of configuration secrets, from what parseConfig hands back', () => {
    const secret = 'cl/ient+sec=ret&7Hq2';
    const key = Buffer.alloc(32, 9);
    const parsed = parseConfig(
      {
        DATABASE_URL: 'postgres://monitor:p%40ss%2Fw0rd-4471@db.internal:5432/clinic',
        QBO_CLIENT_ID: CLIENT_ID,
        QBO_CLIENT_SECRET: secret,
        TOKEN_ENCRYPTION_KEY: key.toString('base64'),
        HEALTH_TOKEN: 'health/token+0123456789',
      },
      'full',
    );
    expect(parsed.ok).toBe(true);
    const capture = captureLog('info');
    capture.secrets.add(...parsed.secrets);
    const basic = Buffer.from(`${CLIENT_ID}:${secret}`).toString('base64');
    const forms = [
      secret,
      basic,
      Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(secret)}`).toString('base64'),
      encodeURIComponent(secret),
      'p@ss/w0rd-4471',
      'p%40ss%2Fw0rd-4471',
      key.toString('hex'),
      key.toString('base64url'),
      encodeURIComponent('health/token+0123456789'),
    ];
    capture.log.warn({ event: 'x', header: `Authorization: Basic ${basic}\r\n`, form: `client_secret=${encodeURIComponent(secret)}` }, forms.join(' | '));
    const text = capture.lines.join('\n');
    for (const form of forms) expect(text, form).not.toContain(form);
    expect(JSON.parse(capture.lines[0] as string).header).toBe(`Authorization: Basic ${REDACTED}\r\n`);
  });

  it('addCredentialPair registers the secret and its Basic credential', () => {
    const secrets = new SecretRegistry();
    secrets.addCredentialPair(CLIENT_ID, CLIENT_SECRET);
    expect(secrets.scrub(`Basic ${BASIC} and ${CLIENT_SECRET}`)).toBe(`Basic ${REDACTED} and ${REDACTED}`);
  });

  it('tells apart many tokens that share their first characters (as Intuit\'s JWE access tokens do)', () => {
    const secrets = new SecretRegistry();
    const header = 'eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..';
    const access = (realm: number, n: number): string => `${header}${String(realm).padStart(4, '0')}-${n}-${'q'.repeat(realm % 7)}`;
    for (let realm = 0; realm < 300; realm++) for (let n = 1; n <= 3; n++) secrets.track(String(realm), [access(realm, n)]);
    expect(secrets.size).toBe(600);
    expect(secrets.scrub(`a ${access(17, 3)} b ${access(17, 2)} c ${access(17, 1)} d ${header}0017 e`)).toBe(`a ${REDACTED} b ${REDACTED} c ${access(17, 1)} d ${header}0017 e`);
  });

  it('scrubs a tracked token URL-encoded and in Base64, and forgets those forms with the token', () => {
    const secrets = new SecretRegistry();
    const gen = (n: number): string => `AB11/token+${n}=xxxxxxxxxxxxxxxx`;
    secrets.track('9130357766', [gen(1)]);
    const forms = (n: number): string[] => [gen(n), encodeURIComponent(gen(n)), Buffer.from(gen(n)).toString('base64')];
    expect(forms(1).map((f) => secrets.scrub(`refresh_token=${f}&x`))).toEqual(forms(1).map(() => `refresh_token=${REDACTED}&x`));
    for (let n = 2; n <= 3; n++) secrets.track('9130357766', [gen(n)]);
    expect(secrets.size).toBe(2);
    for (const form of forms(1)) expect(secrets.scrub(form)).toBe(form);
    for (const form of forms(3)) expect(secrets.scrub(form)).toBe(REDACTED);
  });
});
