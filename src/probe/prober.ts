/**
 * Probes one realm: a fresh access token (refreshed under the row lock when needed), then
 * CompanyInfo; a 401 refreshes once and retries once. Everything, refresh included, runs under one
 * deadline (PROBE_TIMEOUT_MS). Every probe ends as a classified ProbeResult, whatever failed:
 * Intuit's answers, and our own side too (a key that cannot open the tokens, PostgreSQL unable to
 * serve them, anything unexpected), so a realm's history never has a hole and every failure
 * reaches escalation. The one exception is a realm an operator disconnected meanwhile: it is no
 * longer monitored, and RealmDisconnectedError says so.
 */
import { randomUUID } from 'node:crypto';
import { isDatabaseUnavailable, isSchemaGap, isSqlError, sqlState, SqlState } from '../db/pool.js';
import { coerceError } from '../errors.js';
import { fetchCompanyInfo, type CompanyInfo } from '../quickbooks/api.js';
import { TokenUnreadableError } from '../quickbooks/cipher.js';
import { ErrorCode, IntuitFailure } from '../quickbooks/outcome.js';
import { deadlineSignal } from '../deadline.js';
import { RealmDisconnectedError, type RealmTokens, type TokenStore } from '../quickbooks/token-store.js';
import { LogEvent, type Logger, type SecretRegistry } from '../log.js';
import type { ProbeResult } from '../probe-result.js';

export interface ProberOptions {
  readonly apiBaseUrl: string;
  readonly probeTimeoutMs: number;
  readonly refreshTokenWarnDays: number;
}

const DAY_MS = 86_400_000;

/** A probe's result and, for a failure of our own side, what caused it (kept in memory only, for escalation). */
export interface ProbeOutcome {
  readonly result: ProbeResult;
  /** The PostgreSQL failure behind `database_unavailable`, or the error behind `token_unreadable` / `internal`. */
  readonly cause?: Error;
}

type Failure = { readonly code: Exclude<ErrorCode, 'ok'>; readonly message: string; readonly httpStatus?: number | undefined; readonly intuitTid?: string | undefined; readonly err: Error };

/** Anything a probe can throw, in the contract's error_code vocabulary. */
export function classifyProbeFailure(thrown: unknown): Failure {
  // A failed statement whose ROLLBACK failed too (withCleanup): the first failure is the cause.
  if (thrown instanceof AggregateError && thrown.errors.length > 0) {
    const first = classifyProbeFailure(thrown.errors[0]);
    return { ...first, message: `${first.message} (and the ROLLBACK after it failed too)` };
  }
  if (thrown instanceof IntuitFailure) return { code: thrown.code, message: thrown.message, httpStatus: thrown.httpStatus, intuitTid: thrown.intuitTid, err: thrown };
  const err = coerceError(thrown);
  if (thrown instanceof TokenUnreadableError) {
    return { code: ErrorCode.tokenUnreadable, message: err.message, err };
  }
  // A lock not granted in time (55P03), a cancelled statement (57014), a read-only server, a
  // dropped table: PostgreSQL could not serve the realm's tokens. All SQL failures land here, so
  // none is mistaken for a defect in the monitor.
  if (isDatabaseUnavailable(err) || isSchemaGap(err) || isSqlError(err)) {
    const held = sqlState(err) === SqlState.lockNotAvailable ? " (another process held the realm's token row lock: a slow refresh, or a stuck session)" : '';
    return { code: ErrorCode.databaseUnavailable, message: `PostgreSQL could not serve this realm's tokens: ${err.message}${held}`, err };
  }
  return { code: ErrorCode.internal, message: `unexpected failure in the probe: ${err.name}: ${err.message}`, err };
}

export class Prober {
  constructor(
    private readonly store: TokenStore,
    private readonly opts: ProberOptions,
    private readonly log: Logger,
    private readonly secrets: SecretRegistry,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async probeRealm(realmId: string, cancel?: AbortSignal): Promise<ProbeResult> {
    return (await this.probe(realmId, cancel)).result;
  }

  async probe(realmId: string, cancel?: AbortSignal): Promise<ProbeOutcome> {
    const checkedAt = this.now();
    const started = performance.now();
    const signal = deadlineSignal(this.opts.probeTimeoutMs, cancel);
    let tokens: RealmTokens | undefined;
    let info: CompanyInfo | undefined;
    let apiMs: number | undefined;
    const callApi = async (t: RealmTokens): Promise<CompanyInfo> => {
      const t0 = performance.now();
      try {
        return await fetchCompanyInfo({ baseUrl: this.opts.apiBaseUrl, realmId, accessToken: t.accessToken ?? '', signal });
      } finally {
        apiMs = performance.now() - t0;
      }
    };
    try {
      tokens = await this.store.get(realmId);
      // Disconnected or deleted since it was listed: no longer monitored, so no result and no alert.
      if (!tokens) throw new RealmDisconnectedError(realmId, 'removed');
      if (tokens.status === 'disconnected') throw new RealmDisconnectedError(realmId);
      if (tokens.status === 'reconnect_required') {
        throw new IntuitFailure(
          ErrorCode.authInvalidGrant,
          `realm ${realmId} needs reconnecting (${tokens.statusReason ?? 'refresh token refused'}): run \`qbhealth connect\``,
          undefined,
          undefined,
        );
      }
      if (!this.store.isFresh(tokens)) tokens = await this.store.freshAccessToken(realmId, signal);
      try {
        info = await callApi(tokens);
      } catch (err) {
        if (!(err instanceof IntuitFailure) || err.code !== ErrorCode.authUnauthorized) throw err;
        // The access token was refused before its expiry (revoked, or rotated elsewhere): once.
        tokens = await this.store.freshAccessToken(realmId, signal, tokens.revision);
        info = await callApi(tokens);
      }
    } catch (err) {
      if (err instanceof RealmDisconnectedError) throw err;
      const failure = classifyProbeFailure(err);
      const result = this.result(realmId, checkedAt, started, apiMs, tokens, failure, undefined);
      return failure.err instanceof IntuitFailure ? { result } : { result, cause: failure.err };
    }
    // A label, not a result: setCompanyName logs its own failure and never fails the probe.
    if (info.companyName !== tokens.companyName) await this.store.setCompanyName(realmId, info.companyName);
    return { result: this.result(realmId, checkedAt, started, apiMs, tokens, undefined, info) };
  }

  private result(
    realmId: string,
    checkedAt: Date,
    started: number,
    apiMs: number | undefined,
    tokens: RealmTokens | undefined,
    failure: Failure | undefined,
    info: CompanyInfo | undefined,
  ): ProbeResult {
    const expiries = [tokens?.refreshTokenExpiresAt, tokens?.refreshTokenHardExpiresAt].filter((d): d is Date => d !== undefined);
    const refreshTokenExpiresAt = expiries.length > 0 ? new Date(Math.min(...expiries.map((d) => d.getTime()))) : undefined;
    const expiringSoon =
      refreshTokenExpiresAt !== undefined && refreshTokenExpiresAt.getTime() - this.now().getTime() < this.opts.refreshTokenWarnDays * DAY_MS;
    const code = failure?.code ?? ErrorCode.ok;
    // The whole probe, token refresh included: what probe_duration_seconds reports.
    const durationMs = performance.now() - started;
    const result: ProbeResult = {
      probeId: randomUUID(),
      realmId,
      checkedAt,
      connected: code === ErrorCode.ok,
      status: code === ErrorCode.ok ? (expiringSoon ? 'warn' : 'pass') : code === ErrorCode.throttled ? 'warn' : 'fail',
      errorCode: code,
      error: failure ? this.secrets.scrub(failure.message) : undefined,
      httpStatus: failure?.httpStatus ?? info?.httpStatus,
      latencyMs: Math.round(apiMs ?? durationMs),
      durationMs: Math.round(durationMs),
      ...(apiMs === undefined ? {} : { companyInfoMs: Math.round(apiMs) }),
      intuitTid: failure?.intuitTid ?? info?.intuitTid,
      refreshTokenExpiresAt,
      companyName: info?.companyName ?? tokens?.companyName,
    };
    if (failure) {
      // A defect gets its stack in the log line (never in the row); expected failures do not.
      const level = code === ErrorCode.internal || code === ErrorCode.tokenUnreadable ? 'error' : 'warn';
      this.log[level](
        {
          event: LogEvent.probeFailed,
          probeId: result.probeId,
          realmId,
          errorCode: code,
          httpStatus: result.httpStatus,
          intuitTid: result.intuitTid,
          latencyMs: result.latencyMs,
          durationMs: result.durationMs,
          err: failure.err,
        },
        `probe failed: ${result.error}`,
      );
    } else {
      this.log.info(
        { event: LogEvent.probeSucceeded, probeId: result.probeId, realmId, status: result.status, latencyMs: result.latencyMs, durationMs: result.durationMs, intuitTid: result.intuitTid, refreshTokenExpiresAt },
        'probe succeeded',
      );
    }
    return result;
  }
}
