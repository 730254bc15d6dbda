import { describe, expect, it } from 'vitest';
import { TokenCipher } from '../src/quickbooks/cipher.js';
import { OperatorError } from '../src/errors.js';

describe('token encryption at rest', () => {
  const cipher = new TokenCipher(Buffer.alloc(32, 1));
  const TOKEN = 'RT1-plaintext-refresh-token-42';

  it('round-trips with a fresh IV each time and no plaintext in the envelope', () => {
    const a = cipher.encrypt(TOKEN, '123', 'refresh_token');
    const b = cipher.encrypt(TOKEN, '123', 'refresh_token');
    expect(a).not.toBe(b);
    expect(a).not.toContain(TOKEN);
    expect(cipher.decrypt(a, '123', 'refresh_token')).toBe(TOKEN);
  });

  it('a wrong key is a clear error naming TOKEN_ENCRYPTION_KEY, without the token', () => {
    const envelope = cipher.encrypt(TOKEN, '123', 'refresh_token');
    const err = (() => {
      try {
        new TokenCipher(Buffer.alloc(32, 2)).decrypt(envelope, '123', 'refresh_token');
      } catch (e) {
        return e as OperatorError;
      }
      throw new Error('expected decrypt to fail');
    })();
    expect(err).toBeInstanceOf(OperatorError);
    expect(err.exitCode).toBe(78);
    expect(err.message).toMatch(/TOKEN_ENCRYPTION_KEY is not the key the tokens were encrypted with/);
    expect(err.message).not.toContain(TOKEN);
  });

  it('an envelope moved to another realm or field does not decrypt (tag verified)', () => {
    const envelope = cipher.encrypt(TOKEN, '123', 'refresh_token');
    expect(() => cipher.decrypt(envelope, '456', 'refresh_token')).toThrow(OperatorError);
    expect(() => cipher.decrypt(envelope, '123', 'access_token')).toThrow(OperatorError);
    const [v, iv, tag, body] = envelope.split('.');
    const flipped = Buffer.from(body!, 'base64');
    flipped[0] = flipped[0]! ^ 1;
    expect(() => cipher.decrypt([v, iv, tag, flipped.toString('base64')].join('.'), '123', 'refresh_token')).toThrow(OperatorError);
  });
});
