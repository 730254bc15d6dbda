/** Commands that talk to QuickBooks: import-tokens, probe (connect and disconnect are in connect-commands). */
import { insertProbeResult } from '../db/health-queries.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import type { ProbeResult } from '../probe-result.js';
import pRetry from 'p-retry';
import { RealmDisconnectedError, type TokenStore } from '../quickbooks/token-store.js';
import type { TokenSet } from '../quickbooks/oauth.js';
import { ErrorCode, IntuitFailure } from '../quickbooks/outcome.js';
import { connectionFailure, isDatabaseUnavailable, isSchemaGap } from '../db/pool.js';
import { forEachLimited } from '../for-each-limited.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { withRuntime } from './runtime.js';

export const realmOption = { type: 'string', valueName: 'ID', description: 'the QuickBooks company (realm) ID' } as const;

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8').trim();
}

export function requireRealm(values: Readonly<Record<string, string | boolean | undefined>>, command: string): string {
  const realm = values['realm-id'];
  if (typeof realm !== 'string' || !/^\d{1,32}$/.test(realm)) {
    throw new OperatorError(`--realm-id is required and must be the numeric company ID (see \`qbhealth ${command} --help\`)`, ExitCode.usage);
  }
  return realm;
}

export const days = (d: Date | undefined): string => (d ? `${Math.floor((d.getTime() - Date.now()) / 86_400_000)} days (${d.toISOString()})` : 'unknown');

/** Intuit unreachable, slow, overloaded or throttling is worth retrying (75); a refusal is not (1). */
export function intuitExitCode(failure: IntuitFailure): ExitCode {
  const temporary: readonly string[] = [ErrorCode.timeout, ErrorCode.network, ErrorCode.serverError, ErrorCode.throttled];
  return temporary.includes(failure.code) ? ExitCode.temporaryFailure : ExitCode.probeFailing;
}

/**
 * Database failures are ours, not Intuit's: a schema gap ends the command with 65, an unreachable
 * PostgreSQL with 75 (78 for refused credentials). Anything else is not a database failure.
 */
export function databaseFailure(err: unknown): OperatorError | undefined {
  if (err instanceof OperatorError) return err;
  if (isSchemaGap(err)) {
    return new OperatorError(`the database schema is incomplete (${(err as Error).message}); run \`qbhealth migrate\``, ExitCode.schemaMismatch, { cause: err });
  }
  return isDatabaseUnavailable(err) ? connectionFailure(err) : undefined;
}

export const importTokensCommand: Command = {
  name: 'import-tokens',
  summary: 'store a realm\'s refresh token (read from stdin) and verify it with a refresh',
  description:
    'Reads a QuickBooks refresh token from standard input (never from the command line, where `ps` would show it), ' +
    'refreshes it once to prove it works and to learn its expiry, and stores the rotated pair encrypted under ' +
    'TOKEN_ENCRYPTION_KEY, under the realm\'s row lock (as a running daemon refreshes). The refresh rotates the token: ' +
    'a copy another application still uses stops working, so import only a token nothing else uses. ' +
    'Example: `qbhealth import-tokens --realm-id 9130357766 < refresh-token.txt`.',
  options: { 'realm-id': realmOption },
  exitCodes: [
    [0, 'imported; the realm is connected'],
    [1, 'Intuit refused the token (the line says why)'],
    [2, 'usage: --realm-id missing or not numeric, or nothing on stdin'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL or Intuit unreachable; retry (when Intuit already rotated the token, the line says to reconnect instead)'],
    [78, 'configuration invalid'],
  ],
  run: (io, values) => {
    const realmId = requireRealm(values, 'import-tokens');
    return withRuntime(io, async ({ oauth, store, config }) => {
      const refreshToken = await readStdin(io.stdin);
      if (!refreshToken) throw new OperatorError('no refresh token on standard input', ExitCode.usage);
      io.secrets.add(refreshToken);
      let tokens;
      try {
        tokens = await store.importRefreshToken(realmId, config.qboEnvironment, refreshToken);
      } catch (err) {
        if (err instanceof IntuitFailure) throw new OperatorError(`Intuit refused the refresh token: ${err.message}`, intuitExitCode(err), { cause: err });
        if (!store.unsavedRealms().includes(realmId)) throw databaseFailure(err) ?? err;
        tokens = await storeImportedPair(store, realmId, err);
      }
      writeLine(io.stdout, io.secrets, `imported realm ${realmId} (${config.qboEnvironment})`);
      writeLine(io.stdout, io.secrets, `  refresh token expires in ${days(tokens.refreshTokenExpiresAt)}`);
      writeLine(io.stdout, io.secrets, `  hard expiry in ${days(tokens.refreshTokenHardExpiresAt)}`);
      return ExitCode.ok;
    });
  },
};

/**
 * Intuit rotated the imported token but PostgreSQL did not take the new pair: the imported token is
 * spent, so the pair is retried for a while (PostgreSQL restarting, a lock) before giving up with
 * a line that says exactly what was lost.
 */
async function storeImportedPair(store: TokenStore, realmId: string, first: unknown): Promise<TokenSet> {
  const pair = store.unsavedPair(realmId);
  await storeKeptPairs(store, [realmId], first);
  if (!pair) throw coerceError(first);
  return pair;
}

/** Retries storing rotated pairs only this process holds; gives up (75) naming what is lost. */
async function storeKeptPairs(store: TokenStore, realms: readonly string[], first?: unknown): Promise<void> {
  try {
    await pRetry(() => store.storeUnsaved(), { retries: 5, minTimeout: 500, maxTimeout: 8000 });
  } catch (err) {
    throw new OperatorError(
      `Intuit rotated the refresh token of realm(s) ${realms.join(', ')}, but PostgreSQL did not store the new pair (${first ? `${coerceError(first).message}; then ` : ''}${coerceError(err).message}). ` +
        `The stored token is now spent: reconnect with \`qbhealth connect\` once PostgreSQL is back`,
      ExitCode.temporaryFailure,
      { cause: err },
    );
  }
}

function formatResult(r: ProbeResult): string {
  const parts = [
    `realm ${r.realmId}`,
    r.status.toUpperCase(),
    r.errorCode,
    `${r.latencyMs} ms`,
    r.httpStatus ? `http ${r.httpStatus}` : undefined,
    r.companyName ? `"${r.companyName}"` : undefined,
    r.intuitTid ? `intuit_tid ${r.intuitTid}` : undefined,
    r.error ? `: ${r.error}` : undefined,
  ];
  return parts.filter(Boolean).join('  ');
}

export const probeCommand: Command = {
  name: 'probe',
  summary: 'probe every connected realm now, record each result, print one line per realm',
  description:
    'Probes each realm that is not disconnected (or only --realm-id): refreshes its access token when needed, calls ' +
    'CompanyInfo, records the result in quickbooks_connection_health, and prints one line per realm.',
  options: { 'realm-id': { ...realmOption, description: 'probe only this realm' } },
  exitCodes: [
    [0, 'every probed realm is connected'],
    [1, 'at least one realm is failing (its line says why), or there is no realm to probe'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; retry'],
    [78, 'configuration invalid'],
  ],
  run: (io, values) =>
    withRuntime(io, async ({ store, prober, pool, config }) => {
      const only = values['realm-id'] === undefined ? undefined : requireRealm(values, 'probe');
      try {
        const realms = await store.listRealms(only);
        if (realms.length === 0) {
          writeLine(io.stderr, io.secrets, only ? `realm ${only} is not known: import or connect it first` : 'no realms to probe: run `qbhealth import-tokens` or `qbhealth connect`');
          return ExitCode.probeFailing;
        }
        // A disconnected realm is never refreshed by any path: probing it would revive it.
        if (realms[0]?.status === 'disconnected') {
          writeLine(io.stderr, io.secrets, new RealmDisconnectedError(realms[0].realmId).message);
          return ExitCode.probeFailing;
        }
        const results: ProbeResult[] = [];
        let ours: OperatorError | undefined;
        await forEachLimited(realms, config.probeConcurrency, async (realm) => {
          let outcome;
          try {
            outcome = await prober.probe(realm.realmId);
          } catch (err) {
            // Disconnected or removed since it was listed: not probed, and said so.
            if (!(err instanceof RealmDisconnectedError)) throw err;
            writeLine(io.stderr, io.secrets, err.message);
            return;
          }
          const { result, cause } = outcome;
          await insertProbeResult(pool, result);
          results.push(result);
          // PostgreSQL failing the token read is ours to fix (65, 75), not the connection's (1).
          if (cause) ours ??= databaseFailure(cause);
        });
        results.sort((a, b) => a.realmId.localeCompare(b.realmId));
        for (const r of results) writeLine(io.stdout, io.secrets, formatResult(r));
        // A refresh that outlived its probe is awaited, and a pair PostgreSQL did not take is
        // retried, before the command ends: exiting would lose the only live token.
        await store.settle();
        const kept = store.unsavedRealms();
        if (kept.length > 0) await storeKeptPairs(store, kept);
        if (ours) throw ours;
        return results.every((r) => r.connected) ? ExitCode.ok : ExitCode.probeFailing;
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
    }),
};
