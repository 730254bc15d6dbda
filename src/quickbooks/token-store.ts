/**
 * quickbooks_oauth_tokens: one row per realm, tokens encrypted at rest, and the refresh protocol
 * that keeps rotating refresh tokens from being lost to a race:
 *  1. refresh only inside a transaction holding SELECT … FOR UPDATE on the realm's row;
 *  2. if the row's revision moved since the caller read it, another process already refreshed:
 *     use its token;
 *  3. persist the new pair (commit) before anyone uses it;
 *  4. on invalid_grant, release the lock and re-read the row once: if it rotated meanwhile (an
 *     import, a connect, another writer), use or refresh that instead; only a token that is still
 *     the one Intuit refused makes the realm `reconnect_required`;
 *  5. once a refresh request is sent, its answer is awaited under a bound of its own
 *     (REFRESH_ANSWER_TIMEOUT_MS), not the probe's deadline, and the pair committed whatever became
 *     of the probe: the request has already spent the stored refresh token. A pair Intuit issued
 *     that PostgreSQL did not take is kept in memory and stored first thing when it can be;
 *  6. a `disconnected` realm is never refreshed.
 */
import type { QboEnvironment } from '../config.js';
import { inTransaction, isDatabaseUnavailable, withClient, type Pool, type Queryable } from '../db/pool.js';
import {
  lockTokenRowForUpdate,
  readMonitoredTokenRows,
  readRealmStatuses,
  readRotationStateForUpdate,
  readTokenRow,
  readTokenRowForUpdate,
  setTransactionLockTimeout,
  updateCompanyName,
  updateTokenStatus,
  upsertTokenPair,
  type ConnectionStatus,
  type TokenRow,
} from '../db/token-queries.js';
import { coerceError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger, type SecretRegistry } from '../log.js';
import { TokenUnreadableError, type TokenCipher } from './cipher.js';
import { raceSignal, type IntuitOAuth, type TokenSet } from './oauth.js';
import { ErrorCode, IntuitFailure } from './outcome.js';

/**
 * How long an answer to a sent refresh request is awaited, independent of the probe's deadline.
 * PM2's kill_timeout (ecosystem.config.js) leaves room for a probe's deadline plus this.
 */
export const REFRESH_ANSWER_TIMEOUT_MS = 15_000;

/** The realm was disconnected by an operator: it is not monitored, and its tokens are never refreshed. */
export class RealmDisconnectedError extends Error {
  constructor(
    readonly realmId: string,
    readonly how: 'disconnected' | 'removed' = 'disconnected',
  ) {
    super(
      how === 'removed'
        ? `realm ${realmId} has no stored tokens any more (removed from quickbooks_oauth_tokens); it is not monitored. Connect it with \`qbhealth connect\` or \`qbhealth import-tokens\``
        : `realm ${realmId} is disconnected (\`qbhealth disconnect\`); it is not monitored and its tokens are not refreshed. Reconnect it with \`qbhealth connect\` or \`qbhealth import-tokens\``,
    );
    this.name = 'RealmDisconnectedError';
  }
}

/** A pair Intuit issued that PostgreSQL has not stored yet. */
interface UnsavedPair {
  readonly realmId: string;
  readonly environment: QboEnvironment;
  readonly tokens: TokenSet;
  /**
   * The stored refresh token it replaces: the row is overwritten only while it still holds that
   * one. Undefined for an import, whose pair replaces whatever the row holds.
   */
  readonly from: string | undefined;
  readonly receivedAt: Date;
}

export type { ConnectionStatus };

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

export class TokenStore {
  private readonly lastRead = new Map<string, RealmTokens>();
  private readonly unsaved = new Map<string, UnsavedPair>();
  private readonly repeats = new RepeatLimiter();
  /**
   * The refresh under way for each realm, including one whose probe has given up waiting. A later
   * probe of the realm joins it rather than queueing for the row lock it holds: a slow token
   * endpoint is then reported as the timeout it is, not as a lock PostgreSQL would not grant.
   */
  private readonly refreshing = new Map<string, Promise<RealmTokens>>();

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

  private decodeIfAny(row: TokenRow | undefined): RealmTokens | undefined {
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
      tokens = await withClient(this.pool, async (client) => this.decodeIfAny(await readTokenRow(client, realmId)));
    } catch (err) {
      const cached = this.lastRead.get(realmId);
      if (!isDatabaseUnavailable(err) || !cached || !this.isFresh(cached)) throw err;
      // One line an outage (a minute), not one per realm per cycle.
      const admitted = this.repeats.admit('token-cache');
      if (admitted) this.log.warn({ event: LogEvent.dbReadFailed, realmId, err, ...admitted }, 'PostgreSQL unreachable: probing with the access tokens read earlier (repeats are counted, not logged, for a minute)');
      return cached;
    }
    if (tokens) this.lastRead.set(realmId, tokens);
    else this.lastRead.delete(realmId);
    return tokens;
  }

  /**
   * The monitored realms (not `disconnected`), and those whose envelopes this process's key cannot
   * open, with the reason (no token in it). Read once at start-up so a wrong key is reported at
   * once rather than realm by realm as probes come round.
   */
  async checkReadable(): Promise<{ realms: string[]; unreadable: Array<{ realmId: string; error: string }> }> {
    const rows = await readMonitoredTokenRows(this.pool);
    const unreadable: Array<{ realmId: string; error: string }> = [];
    for (const row of rows) {
      try {
        this.lastRead.set(row.realm_id, this.decode(row));
      } catch (err) {
        if (!(err instanceof TokenUnreadableError)) throw err;
        unreadable.push({ realmId: row.realm_id, error: err.message });
      }
    }
    return { realms: rows.map((r) => r.realm_id), unreadable };
  }

  /** Realms to probe: every one not `disconnected` (or just `realmId`, whatever its status). */
  async listRealms(realmId?: string): Promise<RealmSummary[]> {
    return readRealmStatuses(this.pool, realmId);
  }

  private async write(db: Queryable, realmId: string, environment: QboEnvironment, tokens: TokenSet): Promise<number> {
    this.secrets.track(realmId, [tokens.accessToken, tokens.refreshToken]);
    return upsertTokenPair(db, {
      realmId,
      environment,
      accessTokenEnc: this.cipher.encrypt(tokens.accessToken, realmId, 'access_token'),
      accessTokenExpiresAt: tokens.accessTokenExpiresAt,
      refreshTokenEnc: this.cipher.encrypt(tokens.refreshToken, realmId, 'refresh_token'),
      refreshTokenExpiresAt: tokens.refreshTokenExpiresAt,
      refreshTokenHardExpiresAt: tokens.refreshTokenHardExpiresAt,
      updatedAt: this.now(),
    });
  }

  /**
   * `qbhealth import-tokens`: refreshes an operator-supplied refresh token and stores the issued
   * pair under the realm's row lock, as the daemon's refresh does, so an import never races a
   * running daemon's rotation. Once Intuit has answered, the imported token is spent: a pair that
   * cannot be stored is retried while the command runs (`storeUnsaved`), never dropped silently.
   */
  async importRefreshToken(realmId: string, environment: QboEnvironment, refreshToken: string): Promise<TokenSet> {
    this.secrets.track(`import:${realmId}`, [refreshToken]);
    let received: UnsavedPair | undefined;
    try {
      return await withClient(this.pool, (client) =>
        inTransaction(client, async () => {
          // The existing row (if any) is locked without decrypting it: an import is how a realm
          // whose envelopes the key cannot open is mended.
          await lockTokenRowForUpdate(client, realmId);
          const issued = await this.oauth.refresh(refreshToken, AbortSignal.timeout(REFRESH_ANSWER_TIMEOUT_MS));
          received = { realmId, environment, tokens: issued, from: undefined, receivedAt: this.now() };
          await this.write(client, realmId, environment, issued);
          return issued;
        }),
      );
    } catch (err) {
      if (!received) throw err;
      this.unsaved.set(realmId, received);
      this.log.error({ event: LogEvent.tokenUnsaved, realmId, err }, `Intuit rotated the imported token but PostgreSQL did not store the new pair`);
      throw err;
    }
  }

  /** Stores a freshly issued token pair (import, connect): the realm becomes `connected`. */
  async save(realmId: string, environment: QboEnvironment, tokens: TokenSet): Promise<number> {
    return withClient(this.pool, (client) => this.write(client, realmId, environment, tokens));
  }

  /**
   * Records the company name CompanyInfo reported. It is a label, not a result: whatever keeps
   * PostgreSQL from taking it is logged and the probe goes on (the next probe tries again).
   */
  async setCompanyName(realmId: string, companyName: string): Promise<void> {
    try {
      await updateCompanyName(this.pool, realmId, companyName);
    } catch (err) {
      this.log.warn({ event: LogEvent.dbWriteFailed, what: 'company name', realmId, err }, 'company name not saved yet; the next successful probe tries again');
      return;
    }
    const cached = this.lastRead.get(realmId);
    if (cached) this.lastRead.set(realmId, { ...cached, companyName });
  }

  async setStatus(realmId: string, status: ConnectionStatus, reason: string | undefined): Promise<void> {
    await this.writeStatus(this.pool, realmId, status, reason);
  }

  private async writeStatus(db: Queryable, realmId: string, status: ConnectionStatus, reason: string | undefined): Promise<void> {
    await updateTokenStatus(db, realmId, status, reason, this.now());
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
    let work = this.refreshing.get(realmId);
    if (!work) {
      // A pair issued earlier and not stored yet comes first: the stored refresh token is spent.
      if (this.unsaved.has(realmId)) await this.storeUnsaved(realmId);
      const started = this.refreshProtocol(realmId, signal, staleRevision);
      this.refreshing.set(realmId, started);
      void started
        .finally(() => {
          if (this.refreshing.get(realmId) === started) this.refreshing.delete(realmId);
        })
        .catch((err: unknown) => {
          // The probe that started this refresh stopped waiting for it at its deadline, so this
          // failure has no other reader. (When the probe is still waiting, it gets the error too.)
          if (signal.aborted) this.log.warn({ event: LogEvent.tokenRefreshFailed, realmId, err }, 'a token refresh that outlived its probe failed');
        });
      work = started;
    }
    try {
      return await raceSignal(work, signal);
    } catch (err) {
      if (!signal.aborted || err instanceof IntuitFailure || err instanceof RealmDisconnectedError) throw err;
      throw new IntuitFailure(
        ErrorCode.timeout,
        `no usable access token for realm ${realmId} before the probe deadline (a refresh already sent to Intuit is still awaited and its tokens stored)`,
        undefined,
        undefined,
        { cause: coerceError(err) },
      );
    }
  }

  /**
   * Waits until every refresh under way has ended (stored, or kept in memory as unsaved), up to
   * `timeoutMs`; returns the realms whose refresh is still running then.
   */
  async settle(timeoutMs = Number.POSITIVE_INFINITY): Promise<string[]> {
    const until = Date.now() + timeoutMs;
    while (this.refreshing.size > 0 && Date.now() < until) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.min(until - Date.now(), 2 ** 31 - 1))));
      await Promise.race([Promise.allSettled([...this.refreshing.values()]), timedOut]);
      clearTimeout(timer);
    }
    return [...this.refreshing.keys()];
  }

  /** Realms whose refresh request may be sent and unanswered, or answered and not yet stored. */
  tokensAtRisk(): string[] {
    return [...new Set([...this.refreshing.keys(), ...this.unsaved.keys()])];
  }

  /** The rotated pair only this process holds for `realmId`, if any. */
  unsavedPair(realmId: string): TokenSet | undefined {
    return this.unsaved.get(realmId)?.tokens;
  }

  /** Realms whose rotated tokens only this process holds (PostgreSQL has not stored them yet). */
  unsavedRealms(): string[] {
    return [...this.unsaved.keys()];
  }

  /**
   * Stores the pairs Intuit issued that PostgreSQL did not take (or just `realmId`'s). A pair is
   * dropped only once stored, or when the row no longer holds the refresh token it replaces (an
   * import or connect wrote a newer pair). Throws the database failure when one cannot be stored.
   */
  async storeUnsaved(realmId?: string): Promise<number> {
    let stored = 0;
    for (const pending of realmId === undefined ? [...this.unsaved.values()] : [this.unsaved.get(realmId)].filter((p) => p !== undefined)) {
      const outcome = await withClient(this.pool, (client) =>
        inTransaction(client, async () => {
          const current = await readRotationStateForUpdate(client, pending.realmId);
          if (!current) return 'gone' as const;
          // An operator disconnected it meanwhile: storing the pair would revive it.
          if (current.status === 'disconnected' && pending.from !== undefined) return 'disconnected' as const;
          const held = pending.from === undefined ? undefined : this.cipher.decrypt(current.refresh_token_enc, pending.realmId, 'refresh_token');
          if (held !== undefined && held === pending.tokens.refreshToken) return 'already' as const;
          if (pending.from !== undefined && held !== pending.from) return 'superseded' as const;
          await this.write(client, pending.realmId, pending.environment, pending.tokens);
          return 'stored' as const;
        }),
      );
      this.unsaved.delete(pending.realmId);
      if (outcome === 'stored' || outcome === 'already') {
        stored++;
        this.log.info(
          { event: LogEvent.tokenRefreshed, realmId: pending.realmId, late: true, receivedAt: pending.receivedAt, refreshTokenExpiresAt: pending.tokens.refreshTokenExpiresAt },
          'rotated tokens kept in memory are now stored',
        );
      } else {
        this.log.warn(
          { event: LogEvent.tokenUnsaved, realmId: pending.realmId, outcome, receivedAt: pending.receivedAt },
          outcome === 'gone'
            ? 'rotated tokens kept in memory dropped: the realm was removed'
            : outcome === 'disconnected'
              ? 'rotated tokens kept in memory dropped: the realm was disconnected meanwhile'
              : 'rotated tokens kept in memory dropped: a newer pair was imported or connected meanwhile',
        );
      }
    }
    return stored;
  }

  /** The whole protocol (steps 1-4) for one realm, unbounded by the probe's deadline once a request is sent. */
  private async refreshProtocol(realmId: string, signal: AbortSignal, staleRevision: number | undefined): Promise<RealmTokens> {
    const first = await this.lockedRefresh(realmId, signal, staleRevision);
    if (first.kind === 'ok') {
      this.lastRead.set(realmId, first.tokens);
      return first.tokens;
    }
    // invalid_grant. Re-read once, under the row lock again: a writer that queued behind our
    // refresh (an import, a connect, another process) has committed by the time we get it.
    const superseded = await withClient(this.pool, (client) =>
      inTransaction(client, async () => {
        const current = this.decodeIfAny(await readTokenRowForUpdate(client, realmId));
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
    let received: UnsavedPair | undefined;
    try {
      return await this.lockedRefreshTransaction(realmId, signal, staleRevision, (pair) => (received = pair));
    } catch (err) {
      if (received) this.keepUnsaved(received, err);
      throw err;
    }
  }

  /** A pair Intuit issued that could not be committed: kept, never discarded while the process lives. */
  private keepUnsaved(pair: UnsavedPair, err: unknown): void {
    this.unsaved.set(pair.realmId, pair);
    this.lastRead.delete(pair.realmId);
    this.log.error(
      { event: LogEvent.tokenUnsaved, realmId: pair.realmId, err },
      `Intuit rotated realm ${pair.realmId}'s tokens but PostgreSQL did not store them; they are kept in memory and stored as soon as PostgreSQL takes them (stopping the monitor before then loses them and the realm must be reconnected)`,
    );
  }

  private async lockedRefreshTransaction(
    realmId: string,
    signal: AbortSignal,
    staleRevision: number | undefined,
    onReceived: (pair: UnsavedPair) => void,
  ): Promise<{ kind: 'ok'; tokens: RealmTokens } | { kind: 'invalid_grant'; failure: IntuitFailure; refusedToken: string }> {
    return withClient(this.pool, (client) =>
      inTransaction(client, async () => {
        // Waiting for another refresher is bounded by what is left of the probe's deadline.
        await setTransactionLockTimeout(client, remainingMs(signal));
        const row = this.decodeIfAny(await readTokenRowForUpdate(client, realmId));
        if (!row) throw new RealmDisconnectedError(realmId, 'removed');
        if (row.status === 'disconnected') throw new RealmDisconnectedError(realmId);
        const refusedHere = staleRevision !== undefined && row.revision === staleRevision;
        if (this.isFresh(row) && !refusedHere) return { kind: 'ok' as const, tokens: row };
        // Past the deadline no request is sent; once sent, its answer is awaited on its own bound.
        if (signal.aborted) throw new IntuitFailure(ErrorCode.timeout, `realm ${realmId}: the probe deadline passed while waiting for the token row lock`, undefined, undefined);
        let issued: TokenSet;
        try {
          issued = await this.oauth.refresh(row.refreshToken, AbortSignal.timeout(REFRESH_ANSWER_TIMEOUT_MS));
          onReceived({ realmId, environment: row.environment, tokens: issued, from: row.refreshToken, receivedAt: this.now() });
        } catch (err) {
          if (err instanceof IntuitFailure && err.code === ErrorCode.authInvalidGrant) {
            return { kind: 'invalid_grant' as const, failure: err, refusedToken: row.refreshToken };
          }
          if (err instanceof IntuitFailure && err.code === ErrorCode.timeout) {
            // Sent and unanswered within its own bound: Intuit may have rotated the pair anyway.
            this.log.error(
              { event: LogEvent.tokenRefreshFailed, realmId, errorCode: err.code, err },
              `no answer to realm ${realmId}'s token refresh within ${REFRESH_ANSWER_TIMEOUT_MS / 1000} s: if Intuit rotated the token meanwhile the stored one is spent, and the next refresh fails with invalid_grant (then reconnect with \`qbhealth connect\`)`,
            );
          } else {
            this.log.warn({ event: LogEvent.tokenRefreshFailed, realmId, errorCode: (err as IntuitFailure).code, err }, 'token refresh failed');
          }
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

/**
 * The lock wait's bound: what is left of the probe's deadline, less a margin so that PostgreSQL's
 * lock timeout (55P03: another process holds the row) is what the probe reports, not a bare deadline.
 */
function remainingMs(signal: AbortSignal): number {
  const deadline = (signal as AbortSignal & { deadlineAt?: number }).deadlineAt;
  return Math.max(50, deadline === undefined ? 10_000 : deadline - Date.now() - 100);
}
