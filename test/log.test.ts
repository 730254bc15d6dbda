import { describe, expect, it } from 'vitest';
import { LogEvent, REDACTED } from '../src/log.js';
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
});
