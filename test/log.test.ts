import { describe, expect, it } from 'vitest';
import { LogEvent, REDACTED, SecretRegistry } from '../src/log.js';
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

