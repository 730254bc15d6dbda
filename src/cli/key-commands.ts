/**
 * `qbhealth rotate-key`: re-seals every stored token envelope under the current
 * TOKEN_ENCRYPTION_KEY, opening each with that key or TOKEN_ENCRYPTION_KEY_PREVIOUS, so the key
 * can change without a single realm having to reconnect.
 */
import { inTransaction, SqlState, sqlState, withClient, type Pool } from '../db/pool.js';
import { listTokenRealmIds, readEnvelopesForUpdate, setTransactionLockTimeout, updateEnvelopes } from '../db/token-queries.js';
import { ExitCode } from '../errors.js';
import { TokenCipher, TokenUnreadableError } from '../quickbooks/cipher.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { databaseFailure } from './qbo-commands.js';
import { withRuntime } from './runtime.js';

/**
 * How long to wait for a realm's row lock. The daemon holds it while Intuit answers a refresh
 * (bounded well below this), and the pair it commits must be the one re-sealed, not overwritten.
 */
const LOCK_WAIT_MS = 60_000;

type Outcome = { kind: 'reencrypted' | 'current' | 'gone' } | { kind: 'unreadable'; problem: string } | { kind: 'busy' };

/** One realm, under the same row lock the daemon refreshes under. */
async function resealRealm(pool: Pool, cipher: TokenCipher, io: CliIO, realmId: string): Promise<Outcome> {
  try {
    return await withClient(pool, (client) =>
      inTransaction(client, async () => {
        await setTransactionLockTimeout(client, LOCK_WAIT_MS);
        const row = await readEnvelopesForUpdate(client, realmId);
        if (!row) return { kind: 'gone' as const };
        let access: string | null;
        let refresh: string;
        try {
          access = row.access_token_enc === null ? null : cipher.decrypt(row.access_token_enc, realmId, 'access_token');
          refresh = cipher.decrypt(row.refresh_token_enc, realmId, 'refresh_token');
        } catch (err) {
          if (!(err instanceof TokenUnreadableError)) throw err;
          return { kind: 'unreadable' as const, problem: err.message };
        }
        io.secrets.add(access ?? undefined, refresh);
        if ((row.access_token_enc === null || cipher.isCurrent(row.access_token_enc)) && cipher.isCurrent(row.refresh_token_enc)) {
          return { kind: 'current' as const };
        }
        // Same tokens, sealed anew: revision and updated_at stay as they are (see updateEnvelopes).
        await updateEnvelopes(client, realmId, access === null ? null : cipher.encrypt(access, realmId, 'access_token'), cipher.encrypt(refresh, realmId, 'refresh_token'));
        return { kind: 'reencrypted' as const };
      }),
    );
  } catch (err) {
    // A refresh that outlasted LOCK_WAIT_MS: this realm is left as it was and counted, and the
    // command ends with 75 so the operator runs it again.
    if (sqlState(err) === SqlState.lockNotAvailable) return { kind: 'busy' };
    throw err;
  }
}

export const rotateKeyCommand: Command = {
  name: 'rotate-key',
  summary: 're-encrypt every stored token under the current TOKEN_ENCRYPTION_KEY',
  description:
    'Opens each realm\'s stored tokens with TOKEN_ENCRYPTION_KEY or TOKEN_ENCRYPTION_KEY_PREVIOUS and seals them again ' +
    'under TOKEN_ENCRYPTION_KEY, each realm in a transaction holding its token row (as the daemon does when it ' +
    'refreshes), so a refresh running meanwhile is waited for, never overwritten. Safe to run while the daemon runs and ' +
    'to run again. To change the key without reconnecting anyone: set TOKEN_ENCRYPTION_KEY_PREVIOUS to the old key and ' +
    'TOKEN_ENCRYPTION_KEY to the new one, restart the daemon, run `qbhealth rotate-key` until it exits 0, then remove ' +
    'TOKEN_ENCRYPTION_KEY_PREVIOUS and restart again.',
  options: {},
  exitCodes: [
    [0, 'every realm\'s tokens are sealed under TOKEN_ENCRYPTION_KEY (re-encrypted now or already)'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable, or a realm stayed locked by a refresh; run it again'],
    [78, 'some realms\' tokens open with neither key (listed; restore the key or reconnect them), or configuration invalid'],
  ],
  run: (io) =>
    withRuntime(io, async ({ config, pool }) => {
      const cipher = TokenCipher.fromConfig(config);
      const counts = { reencrypted: 0, current: 0, unreadable: 0, busy: 0 };
      try {
        const realms = await listTokenRealmIds(pool);
        for (const realmId of realms) {
          const outcome = await resealRealm(pool, cipher, io, realmId);
          if (outcome.kind === 'gone') continue;
          counts[outcome.kind]++;
          if (outcome.kind === 'reencrypted') writeLine(io.stdout, io.secrets, `realm ${realmId}: re-encrypted`);
          if (outcome.kind === 'unreadable') writeLine(io.stderr, io.secrets, `realm ${realmId}: unreadable: ${outcome.problem}`);
          if (outcome.kind === 'busy') writeLine(io.stderr, io.secrets, `realm ${realmId}: its token row stayed locked for ${LOCK_WAIT_MS / 1000} s (a refresh in progress); left as it was`);
        }
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
      writeLine(
        io.stdout,
        io.secrets,
        `re-encrypted ${counts.reencrypted}, already current ${counts.current}, unreadable ${counts.unreadable}` +
          `${counts.busy > 0 ? `, busy ${counts.busy}` : ''} (TOKEN_ENCRYPTION_KEY has key id ${cipher.keyId})`,
      );
      if (counts.unreadable > 0) {
        writeLine(
          io.stderr,
          io.secrets,
          `${counts.unreadable} realm(s) open with neither TOKEN_ENCRYPTION_KEY nor TOKEN_ENCRYPTION_KEY_PREVIOUS: set the key they were sealed with as ` +
            'TOKEN_ENCRYPTION_KEY_PREVIOUS and run this again, or reconnect them (`qbhealth connect` / `qbhealth import-tokens`)',
        );
        return ExitCode.configInvalid;
      }
      if (counts.busy > 0) return ExitCode.temporaryFailure;
      return ExitCode.ok;
    }),
};
