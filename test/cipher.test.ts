import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyId, TokenCipher, TokenUnreadableError } from '../src/quickbooks/cipher.js';
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
    const parts = envelope.split('.');
    const flipped = Buffer.from(parts[parts.length - 1]!, 'base64');
    flipped[0] = flipped[0]! ^ 1;
    expect(() => cipher.decrypt([...parts.slice(0, -1), flipped.toString('base64')].join('.'), '123', 'refresh_token')).toThrow(TokenUnreadableError);
  });
});

/** An envelope as releases before key ids wrote it: `v1.<iv>.<tag>.<body>`. */
function sealV1(key: Buffer, plaintext: string, realmId: string, field: 'access_token' | 'refresh_token'): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(`${realmId}\u0000${field}`));
  const body = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return ['v1', iv.toString('base64'), c.getAuthTag().toString('base64'), body.toString('base64')].join('.');
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('envelope format and key rotation', () => {
  const OLD = Buffer.alloc(32, 7);
  const NEW = Buffer.alloc(32, 9);
  const TOKEN = 'RT1-rotating-refresh-token-77';

  it('rejects an authentication tag shorter than 16 bytes, even one that is a true prefix of the real tag', () => {
    const cipher = new TokenCipher(NEW);
    for (const envelope of [cipher.encrypt(TOKEN, '123', 'refresh_token'), sealV1(NEW, TOKEN, '123', 'refresh_token')]) {
      const parts = envelope.split('.');
      const tagAt = parts.length - 2;
      for (const bytes of [4, 8, 12, 15]) {
        const truncated = [...parts];
        truncated[tagAt] = Buffer.from(parts[tagAt]!, 'base64').subarray(0, bytes).toString('base64');
        const err = thrown(() => cipher.decrypt(truncated.join('.'), '123', 'refresh_token'));
        expect(err).toBeInstanceOf(TokenUnreadableError);
        expect((err as TokenUnreadableError).message).not.toContain(TOKEN);
      }
      expect(cipher.decrypt(envelope, '123', 'refresh_token')).toBe(TOKEN);
    }
  });

  it('writes v2 envelopes naming the key by an id that is stable, differs per key and reveals nothing of it', () => {
    const envelope = new TokenCipher(NEW).encrypt(TOKEN, '123', 'access_token');
    const [version, kid, iv, tag, body] = envelope.split('.');
    expect(version).toBe('v2');
    expect(kid).toMatch(/^[0-9a-f]{8}$/);
    expect(kid).toBe(keyId(NEW));
    expect(kid).toBe(new TokenCipher(NEW).keyId);
    expect(keyId(OLD)).not.toBe(kid);
    expect(Buffer.from(iv!, 'base64')).toHaveLength(12);
    expect(Buffer.from(tag!, 'base64')).toHaveLength(16);
    expect(body).toBeTruthy();
    for (const form of [NEW.toString('base64'), NEW.toString('hex')]) expect(envelope).not.toContain(form);
  });

  it('still opens v1 envelopes (no key id) written by earlier releases', () => {
    expect(new TokenCipher(NEW).decrypt(sealV1(NEW, TOKEN, '123', 'refresh_token'), '123', 'refresh_token')).toBe(TOKEN);
    expect(new TokenCipher(NEW, [OLD]).decrypt(sealV1(OLD, TOKEN, '123', 'refresh_token'), '123', 'refresh_token')).toBe(TOKEN);
    expect(thrown(() => new TokenCipher(NEW).decrypt(sealV1(OLD, TOKEN, '123', 'refresh_token'), '123', 'refresh_token'))).toBeInstanceOf(TokenUnreadableError);
  });

  it('opens envelopes sealed under TOKEN_ENCRYPTION_KEY_PREVIOUS, seals only under the current key, and says which are current', () => {
    const before = new TokenCipher(OLD).encrypt(TOKEN, '123', 'refresh_token');
    const during = new TokenCipher(NEW, [OLD]);
    expect(during.decrypt(before, '123', 'refresh_token')).toBe(TOKEN);
    expect(during.isCurrent(before)).toBe(false);
    expect(during.isCurrent(sealV1(NEW, TOKEN, '123', 'refresh_token'))).toBe(false);
    const resealed = during.encrypt(TOKEN, '123', 'refresh_token');
    expect(resealed.split('.')[1]).toBe(keyId(NEW));
    expect(during.isCurrent(resealed)).toBe(true);
    // After the rotation, the new key alone opens what was resealed...
    expect(new TokenCipher(NEW).decrypt(resealed, '123', 'refresh_token')).toBe(TOKEN);
    // ...and an envelope left under the old key is a typed failure naming both variables, without the token.
    const err = thrown(() => new TokenCipher(NEW).decrypt(before, '123', 'refresh_token')) as TokenUnreadableError;
    expect(err).toBeInstanceOf(TokenUnreadableError);
    expect(err).toMatchObject({ realmId: '123', field: 'refresh_token', exitCode: 78 });
    expect(err.message).toContain(keyId(OLD));
    expect(err.message).toMatch(/TOKEN_ENCRYPTION_KEY_PREVIOUS/);
    expect(err.message).not.toContain(TOKEN);
    // The previous key opens; it never authenticates an envelope moved to another realm.
    expect(thrown(() => during.decrypt(before, '456', 'refresh_token'))).toBeInstanceOf(TokenUnreadableError);
  });

  it('builds from the configuration: with and without TOKEN_ENCRYPTION_KEY_PREVIOUS', () => {
    const before = new TokenCipher(OLD).encrypt(TOKEN, '1', 'access_token');
    expect(TokenCipher.fromConfig({ tokenEncryptionKey: NEW, tokenEncryptionKeyPrevious: OLD }).decrypt(before, '1', 'access_token')).toBe(TOKEN);
    expect(thrown(() => TokenCipher.fromConfig({ tokenEncryptionKey: NEW, tokenEncryptionKeyPrevious: undefined }).decrypt(before, '1', 'access_token'))).toBeInstanceOf(
      TokenUnreadableError,
    );
    expect(() => new TokenCipher(NEW, [Buffer.alloc(16)])).toThrow(/TOKEN_ENCRYPTION_KEY_PREVIOUS/);
  });
});
