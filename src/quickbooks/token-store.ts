/**
 * quickbooks_oauth_tokens: one row per realm, tokens encrypted at rest, and the refresh protocol
 * that keeps rotating refresh tokens from being lost to a race:
 *  1. refresh only inside a transaction holding SELECT … FOR UPDATE on the realm's row;
 *  2. if the row's revision moved since the caller read it, another process already refreshed:
 *     use its token;
 *  3. persist the new pair (commit) before anyone uses it;
 *  4. on invalid_grant, release the lock and re-read the row once: if it rotated meanwhile (an
 *     import, a connect, another writer), use or refresh that instead; only a token that is still
 *     the one Intuit refused makes the realm `reconnect_required`.
 */
import type { QboEnvironment } from '../config.js';
import { inTransaction, isDatabaseUnavailable, withClient, type Pool, type Queryable } from '../db/pool.js';
import { tokensTable as T } from '../db/schema.js';
import { LogEvent, type Logger, type SecretRegistry } from '../log.js';
import type { TokenCipher } from './cipher.js';
import type { IntuitOAuth, TokenSet } from './oauth.js';
import { ErrorCode, IntuitFailure } from './outcome.js';

export type ConnectionStatus = 'connected' | 'reconnect_required' | 'disconnected';

export interface RealmTokens {
  readonly realmId: string;
  readonly environment: QboEnvironment;
  readonly accessToken: string | undefined;
  readonly accessTokenExpiresAt: Date | undefined;
  readonly refreshToken: string;
  readonly refreshTokenExpiresAt: Date | undefined;
  readonly refreshTokenHardExpiresAt: Date | undefined;
  readonly status: ConnectionStatus;
  readonly statusReason: string | undefined;
  readonly companyName: string | undefined;
  readonly revision: number;
}

export interface RealmSummary {
  readonly realmId: string;
  readonly status: ConnectionStatus;
}

/** An access token this close to expiry is refreshed first, so a probe never races the clock. */
export const ACCESS_TOKEN_MARGIN_MS = 120_000;

interface TokenRow {
  realm_id: string;
  environment: QboEnvironment;
  access_token_enc: string | null;
  access_token_expires_at: Date | null;
  refresh_token_enc: string;
  refresh_token_expires_at: Date | null;
  refresh_token_hard_expires_at: Date | null;
  status: ConnectionStatus;
  status_reason: string | null;
  company_name: string | null;
  revision: string;
}

/** What a token write sets (plus revision and updated_at); reads add company_name and revision. */
const WRITTEN_COLUMNS = [
  'realm_id',
  'environment',
  'access_token_enc',
  'access_token_expires_at',
  'refresh_token_enc',
  'refresh_token_expires_at',
  'refresh_token_hard_expires_at',
  'status',
  'status_reason',
] as const;
const COLUMNS = T.columnList([...WRITTEN_COLUMNS, 'company_name', 'revision']);

export class TokenStore {
  private readonly lastRead = new Map<string, RealmTokens>();

  constructor(
    private readonly pool: Pool,
    private readonly cipher: TokenCipher,
    private readonly oauth: IntuitOAuth,
    private readonly secrets: SecretRegistry,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {}

  private decode(row: TokenRow): RealmTokens {
    const accessToken = row.access_token_enc ? this.cipher.decrypt(row.access_token_enc, row.realm_id, 'access_token') : undefined;
    const refreshToken = this.cipher.decrypt(row.refresh_token_enc, row.realm_id, 'refresh_token');
    this.secrets.track(row.realm_id, [accessToken, refreshToken]);
    return {
      realmId: row.realm_id,
      environment: row.environment,
      accessToken,
      accessTokenExpiresAt: row.access_token_expires_at ?? undefined,
      refreshToken,
      refreshTokenExpiresAt: row.refresh_token_expires_at ?? undefined,
      refreshTokenHardExpiresAt: row.refresh_token_hard_expires_at ?? undefined,
      status: row.status,
      statusReason: row.status_reason ?? undefined,
      companyName: row.company_name ?? undefined,
      revision: Number(row.revision),
    };
  }

  private async select(db: Queryable, realmId: string, forUpdate: boolean): Promise<RealmTokens | undefined> {
    const result = await db.query<TokenRow>(
      `SELECT ${COLUMNS} FROM ${T.name} WHERE ${T.col('realm_id')} = $1${forUpdate ? ' FOR UPDATE' : ''}`,
      [realmId],
    );
    const row = result.rows[0];
    return row ? this.decode(row) : undefined;
  }

  /**
   * The realm's tokens. While PostgreSQL is unreachable, the copy read last is used as long as its
   * access token is still fresh, so probing (and spooling the results) goes on through an outage;
   * a refresh never happens without the database, because a rotated token must be stored first.
   */
  async get(realmId: string): Promise<RealmTokens | undefined> {
    let tokens: RealmTokens | undefined;
    try {
      tokens = await withClient(this.pool, (client) => this.select(client, realmId, false));
    } catch (err) {
      const cached = this.lastRead.get(realmId);
      if (!isDatabaseUnavailable(err) || !cached || !this.isFresh(cached)) throw err;
      this.log.warn({ event: LogEvent.dbReadFailed, realmId, err }, 'PostgreSQL unreachable: probing with the access token read earlier');
      return cached;
    }
    if (tokens) this.lastRead.set(realmId, tokens);
    else this.lastRead.delete(realmId);
    return tokens;
  }

  /** Realms to probe: every one not `disconnected` (or just `realmId`, whatever its status). */
  async listRealms(realmId?: string): Promise<RealmSummary[]> {
    const result = await this.pool.query<{ realm_id: string; status: ConnectionStatus }>(
      realmId === undefined
        ? `SELECT realm_id, status FROM ${T.name} WHERE status <> 'disconnected' ORDER BY realm_id`
        : `SELECT realm_id, status FROM ${T.name} WHERE realm_id = $1`,
      realmId === undefined ? [] : [realmId],
    );
    return result.rows.map((r) => ({ realmId: r.realm_id, status: r.status }));
  }

  private async write(db: Queryable, realmId: string, environment: QboEnvironment, tokens: TokenSet): Promise<number> {
    this.secrets.track(realmId, [tokens.accessToken, tokens.refreshToken]);
    const result = await db.query<{ revision: string }>(
      `${T.insert([...WRITTEN_COLUMNS, 'revision', 'updated_at'])}
       ON CONFLICT (realm_id) DO UPDATE SET
         environment = EXCLUDED.environment,
         access_token_enc = EXCLUDED.access_token_enc,
         access_token_expires_at = EXCLUDED.access_token_expires_at,
         refresh_token_enc = EXCLUDED.refresh_token_enc,
         refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
         refresh_token_hard_expires_at = COALESCE(EXCLUDED.refresh_token_hard_expires_at, ${T.name}.refresh_token_hard_expires_at),
         status = 'connected',
         status_reason = NULL,
         revision = ${T.name}.revision + 1,
         updated_at = EXCLUDED.updated_at
       RETURNING revision`,
      [
        realmId,
        environment,
        this.cipher.encrypt(tokens.accessToken, realmId, 'access_token'),
        tokens.accessTokenExpiresAt,
        this.cipher.encrypt(tokens.refreshToken, realmId, 'refresh_token'),
        tokens.refreshTokenExpiresAt,
        tokens.refreshTokenHardExpiresAt ?? null,
        'connected',
        null,
        1,
        this.now(),
      ],
    );
    return Number(result.rows[0]?.revision);
  }

  /** Stores a freshly issued token pair (import, connect): the realm becomes `connected`. */
  async save(realmId: string, environment: QboEnvironment, tokens: TokenSet): Promise<number> {
    return withClient(this.pool, (client) => this.write(client, realmId, environment, tokens));
  }

  /**
   * Records the company name CompanyInfo reported. It is a label, not a result: when PostgreSQL
   * cannot take it, that is logged and the probe goes on (the next probe tries again).
   */
  async setCompanyName(realmId: string, companyName: string): Promise<void> {
    try {
      await this.pool.query(`UPDATE ${T.name} SET company_name = $2 WHERE realm_id = $1 AND company_name IS DISTINCT FROM $2`, [realmId, companyName]);
    } catch (err) {
      if (!isDatabaseUnavailable(err)) throw err;
      this.log.warn({ event: LogEvent.dbWriteFailed, what: 'company name', realmId, err }, 'company name not saved yet: PostgreSQL unreachable');
      return;
    }
    const cached = this.lastRead.get(realmId);
    if (cached) this.lastRead.set(realmId, { ...cached, companyName });
  }

  async setStatus(realmId: string, status: ConnectionStatus, reason: string | undefined): Promise<void> {
    await this.writeStatus(this.pool, realmId, status, reason);
  }

  private async writeStatus(db: Queryable, realmId: string, status: ConnectionStatus, reason: string | undefined): Promise<void> {
    await db.query(`UPDATE ${T.name} SET status = $2, status_reason = $3, updated_at = $4 WHERE realm_id = $1`, [realmId, status, reason ?? null, this.now()]);
  }

  isFresh(tokens: RealmTokens): boolean {
    return (
      tokens.accessToken !== undefined &&
      tokens.accessTokenExpiresAt !== undefined &&
      tokens.accessTokenExpiresAt.getTime() - this.now().getTime() > ACCESS_TOKEN_MARGIN_MS
    );
  }

  /**
   * A usable access token for the realm, refreshing under the row lock when needed.
   * `staleRevision`: the revision whose access token was refused (401) and must not be reused.
   */
  async freshAccessToken(realmId: string, signal: AbortSignal, staleRevision?: number): Promise<RealmTokens> {
    const first = await this.lockedRefresh(realmId, signal, staleRevision);
    if (first.kind === 'ok') {
      this.lastRead.set(realmId, first.tokens);
      return first.tokens;
    }
    // invalid_grant. Re-read once, under the row lock again: a writer that queued behind our
    // refresh (an import, a connect, another process) has committed by the time we get it.
    const superseded = await withClient(this.pool, (client) =>
      inTransaction(client, async () => {
        const current = await this.select(client, realmId, true);
        if (current && current.refreshToken !== first.refusedToken) return true;
        await this.writeStatus(client, realmId, 'reconnect_required', first.failure.message);
        return false;
      }),
    );
    if (superseded) {
      this.log.warn(
        { event: LogEvent.tokenRefreshFailed, realmId, err: first.failure, recovered: true },
        'refresh token was superseded while refreshing; continuing with the newer one',
      );
      const second = await this.lockedRefresh(realmId, signal, staleRevision);
      if (second.kind === 'ok') {
        this.lastRead.set(realmId, second.tokens);
        return second.tokens;
      }
      await this.setStatus(realmId, 'reconnect_required', second.failure.message);
    }
    this.log.error(
      { event: LogEvent.tokenRefreshFailed, realmId, errorCode: first.failure.code, intuitTid: first.failure.intuitTid, err: first.failure },
      `realm ${realmId} needs reconnecting: run \`qbhealth connect\``,
    );
    throw first.failure;
  }

  private async lockedRefresh(
    realmId: string,
    signal: AbortSignal,
    staleRevision: number | undefined,
  ): Promise<{ kind: 'ok'; tokens: RealmTokens } | { kind: 'invalid_grant'; failure: IntuitFailure; refusedToken: string }> {
    return withClient(this.pool, (client) =>
      inTransaction(client, async () => {
        // Waiting for another refresher is bounded by what is left of the probe's deadline.
        await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${remainingMs(signal)}ms`]);
        const row = await this.select(client, realmId, true);
        if (!row) throw new IntuitFailure(ErrorCode.authInvalidGrant, `realm ${realmId} has no stored tokens; import or connect it`, undefined, undefined);
        const refusedHere = staleRevision !== undefined && row.revision === staleRevision;
        if (this.isFresh(row) && !refusedHere) return { kind: 'ok' as const, tokens: row };
        let issued: TokenSet;
        try {
          issued = await this.oauth.refresh(row.refreshToken, signal);
        } catch (err) {
          if (err instanceof IntuitFailure && err.code === ErrorCode.authInvalidGrant) {
            return { kind: 'invalid_grant' as const, failure: err, refusedToken: row.refreshToken };
          }
          this.log.warn({ event: LogEvent.tokenRefreshFailed, realmId, errorCode: (err as IntuitFailure).code, err }, 'token refresh failed');
          throw err;
        }
        // Persisted (committed by inTransaction) before it is returned for use.
        const revision = await this.write(client, realmId, row.environment, issued);
        this.log.info(
          {
            event: LogEvent.tokenRefreshed,
            realmId,
            revision,
            accessTokenExpiresAt: issued.accessTokenExpiresAt,
            refreshTokenExpiresAt: issued.refreshTokenExpiresAt,
            refreshTokenHardExpiresAt: issued.refreshTokenHardExpiresAt ?? row.refreshTokenHardExpiresAt,
            intuitTid: issued.intuitTid,
          },
          'access token refreshed',
        );
        return {
          kind: 'ok' as const,
          tokens: {
            ...row,
            accessToken: issued.accessToken,
            accessTokenExpiresAt: issued.accessTokenExpiresAt,
            refreshToken: issued.refreshToken,
            refreshTokenExpiresAt: issued.refreshTokenExpiresAt,
            refreshTokenHardExpiresAt: issued.refreshTokenHardExpiresAt ?? row.refreshTokenHardExpiresAt,
            status: 'connected' as const,
            revision,
          },
        };
      }),
    );
  }
}

function remainingMs(signal: AbortSignal): number {
  const deadline = (signal as AbortSignal & { deadlineAt?: number }).deadlineAt;
  return Math.max(100, deadline === undefined ? 10_000 : deadline - Date.now());
}

/** An AbortSignal that fires after `ms` and knows when (for lock timeouts). */
export function deadlineSignal(ms: number, parent?: AbortSignal): AbortSignal {
  const timeout = AbortSignal.timeout(ms);
  const signal = parent ? AbortSignal.any([timeout, parent]) : timeout;
  return Object.assign(signal, { deadlineAt: Date.now() + ms });
}
