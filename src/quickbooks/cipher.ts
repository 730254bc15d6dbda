/**
 * AES-256-GCM for tokens at rest. Each value gets a fresh 12-byte IV; the realm and the field are
 * bound in as associated data, so an envelope copied to another row or column fails to decrypt
 * instead of silently handing one realm another's token.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ExitCode, OperatorError } from '../errors.js';

const VERSION = 'v1';

export type TokenField = 'access_token' | 'refresh_token';

/**
 * A stored envelope this process cannot open: the key is not the one it was sealed with, or the
 * envelope is damaged. Exit 78 for the CLI; for the daemon a probe result `token_unreadable`.
 */
export class TokenUnreadableError extends OperatorError {
  constructor(
    message: string,
    readonly realmId: string,
    readonly field: TokenField,
    options?: { cause?: unknown },
  ) {
    super(message, ExitCode.configInvalid, options);
    this.name = 'TokenUnreadableError';
  }
}

export class TokenCipher {
  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('TOKEN_ENCRYPTION_KEY must decode to 32 bytes');
  }

  encrypt(plaintext: string, realmId: string, field: TokenField): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(`${realmId}\u0000${field}`));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, iv.toString('base64'), cipher.getAuthTag().toString('base64'), body.toString('base64')].join('.');
  }

  decrypt(envelope: string, realmId: string, field: TokenField): string {
    const [version, iv, tag, body] = envelope.split('.');
    if (version !== VERSION || !iv || !tag || body === undefined) {
      throw new TokenUnreadableError(`the stored ${field} of realm ${realmId} is not a token envelope this release can read`, realmId, field);
    }
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64'));
      decipher.setAAD(Buffer.from(`${realmId}\u0000${field}`));
      decipher.setAuthTag(Buffer.from(tag, 'base64'));
      return Buffer.concat([decipher.update(Buffer.from(body, 'base64')), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new TokenUnreadableError(
        `cannot decrypt the stored ${field} of realm ${realmId}: TOKEN_ENCRYPTION_KEY is not the key the tokens were encrypted with ` +
          '(restore the original key, or re-import the realm with `qbhealth import-tokens` / `qbhealth connect`)',
        realmId,
        field,
        { cause: err },
      );
    }
  }
}
