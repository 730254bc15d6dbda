/**
 * AES-256-GCM for tokens at rest. Each value gets a fresh 12-byte IV; the realm and the field are
 * bound in as associated data, so an envelope copied to another row or column fails to decrypt
 * instead of silently handing one realm another's token.
 *
 * Envelopes: `v2.<kid>.<iv>.<tag>.<body>` (base64 parts), where `kid` names the key that sealed it
 * (a short hash of the key, never the key), so that during a key rotation each envelope is opened
 * with the right key and `qbhealth rotate-key` can tell which ones are still under the old key.
 * `v1.<iv>.<tag>.<body>` (no key id, written by earlier releases) is still read: with the current
 * key first, then the previous one. The tag must be the full 16 bytes: GCM accepts truncated tags,
 * and a 4-byte tag could be forged by trial.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { ExitCode, OperatorError } from '../errors.js';

const CURRENT_VERSION = 'v2';
const LEGACY_VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

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

/** The key id written into envelopes: 8 hex digits of a hash of the key (identifies, reveals nothing usable). */
export function keyId(key: Buffer): string {
  return createHash('sha256').update('qbhealth-kid\u0000').update(key).digest('hex').slice(0, 8);
}

interface Envelope {
  readonly kid: string | undefined;
  readonly iv: Buffer;
  readonly tag: Buffer;
  readonly body: Buffer;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function parseEnvelope(text: string): Envelope | undefined {
  const parts = text.split('.');
  let kid: string | undefined;
  let rest: string[];
  if (parts[0] === CURRENT_VERSION && parts.length === 5) {
    kid = parts[1];
    rest = parts.slice(2);
    if (!kid || !/^[0-9a-f]{8}$/.test(kid)) return undefined;
  } else if (parts[0] === LEGACY_VERSION && parts.length === 4) {
    rest = parts.slice(1);
  } else {
    return undefined;
  }
  const [iv, tag, body] = rest;
  if (iv === undefined || tag === undefined || body === undefined || ![iv, tag, body].every((p) => BASE64.test(p))) return undefined;
  const envelope = { kid, iv: Buffer.from(iv, 'base64'), tag: Buffer.from(tag, 'base64'), body: Buffer.from(body, 'base64') };
  // A short tag is refused before GCM sees it (GCM would verify only the bytes given).
  if (envelope.iv.length !== IV_BYTES || envelope.tag.length !== TAG_BYTES) return undefined;
  return envelope;
}

const aad = (realmId: string, field: TokenField): Buffer => Buffer.from(`${realmId}\u0000${field}`);

export class TokenCipher {
  private readonly currentKid: string;
  /** Every key this process may decrypt with, by key id: the current one first. */
  private readonly keys: ReadonlyMap<string, Buffer>;

  /**
   * `key` (TOKEN_ENCRYPTION_KEY) seals and opens; `previousKeys` (TOKEN_ENCRYPTION_KEY_PREVIOUS)
   * only open, so tokens sealed before a key rotation stay readable until `qbhealth rotate-key`
   * has re-sealed them.
   */
  constructor(
    private readonly key: Buffer,
    previousKeys: readonly Buffer[] = [],
  ) {
    if (key.length !== KEY_BYTES) throw new Error('TOKEN_ENCRYPTION_KEY must decode to 32 bytes');
    for (const previous of previousKeys) {
      if (previous.length !== KEY_BYTES) throw new Error('TOKEN_ENCRYPTION_KEY_PREVIOUS must decode to 32 bytes');
    }
    this.currentKid = keyId(key);
    const keys = new Map<string, Buffer>([[this.currentKid, key]]);
    for (const previous of previousKeys) {
      const kid = keyId(previous);
      if (!keys.has(kid)) keys.set(kid, previous);
    }
    this.keys = keys;
  }

  /** TOKEN_ENCRYPTION_KEY seals; TOKEN_ENCRYPTION_KEY_PREVIOUS, when set, also opens. */
  static fromConfig(config: Pick<Config, 'tokenEncryptionKey' | 'tokenEncryptionKeyPrevious'>): TokenCipher {
    return new TokenCipher(config.tokenEncryptionKey, config.tokenEncryptionKeyPrevious ? [config.tokenEncryptionKeyPrevious] : []);
  }

  /** The id of the key new envelopes are sealed with. */
  get keyId(): string {
    return this.currentKid;
  }

  encrypt(plaintext: string, realmId: string, field: TokenField): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(aad(realmId, field));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [CURRENT_VERSION, this.currentKid, iv.toString('base64'), cipher.getAuthTag().toString('base64'), body.toString('base64')].join('.');
  }

  /** True when the envelope is already sealed under the current key in the current format (nothing for rotate-key to do). */
  isCurrent(envelope: string): boolean {
    return parseEnvelope(envelope)?.kid === this.currentKid;
  }

  decrypt(envelope: string, realmId: string, field: TokenField): string {
    const parsed = parseEnvelope(envelope);
    if (!parsed) {
      throw new TokenUnreadableError(
        `the stored ${field} of realm ${realmId} is not a token envelope this release can read (damaged, or a truncated authentication tag)`,
        realmId,
        field,
      );
    }
    if (parsed.kid !== undefined) {
      const key = this.keys.get(parsed.kid);
      if (!key) {
        throw new TokenUnreadableError(
          `cannot decrypt the stored ${field} of realm ${realmId}: it was sealed under key id ${parsed.kid}, and TOKEN_ENCRYPTION_KEY is not the key the tokens were encrypted with ` +
            `(its key id is ${this.currentKid}${this.keys.size > 1 ? '; nor is TOKEN_ENCRYPTION_KEY_PREVIOUS' : ''}). ` +
            'Restore the original key (or set it as TOKEN_ENCRYPTION_KEY_PREVIOUS), or re-import the realm with `qbhealth import-tokens` / `qbhealth connect`',
          realmId,
          field,
        );
      }
      try {
        return open(key, parsed, realmId, field);
      } catch (err) {
        throw new TokenUnreadableError(
          `cannot decrypt the stored ${field} of realm ${realmId}: the envelope fails authentication under key id ${parsed.kid} (damaged, or moved from another realm or field); ` +
            're-import the realm with `qbhealth import-tokens` / `qbhealth connect`',
          realmId,
          field,
          { cause: err },
        );
      }
    }
    // v1 carries no key id: the current key, then the previous one (a wrong key fails authentication).
    const failures: unknown[] = [];
    for (const key of this.keys.values()) {
      try {
        return open(key, parsed, realmId, field);
      } catch (err) {
        failures.push(err);
      }
    }
    throw new TokenUnreadableError(
      `cannot decrypt the stored ${field} of realm ${realmId}: TOKEN_ENCRYPTION_KEY is not the key the tokens were encrypted with` +
        `${this.keys.size > 1 ? ', nor is TOKEN_ENCRYPTION_KEY_PREVIOUS' : ''} ` +
        '(restore the original key, or re-import the realm with `qbhealth import-tokens` / `qbhealth connect`)',
      realmId,
      field,
      { cause: new AggregateError(failures, 'no configured key authenticates this envelope') },
    );
  }
}

function open(key: Buffer, envelope: Envelope, realmId: string, field: TokenField): string {
  const decipher = createDecipheriv('aes-256-gcm', key, envelope.iv, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad(realmId, field));
  decipher.setAuthTag(envelope.tag);
  return Buffer.concat([decipher.update(envelope.body), decipher.final()]).toString('utf8');
}
