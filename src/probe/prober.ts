/**
 * Probes one realm: a fresh access token (refreshed under the row lock when needed), then
 * CompanyInfo; a 401 refreshes once and retries once. Everything, refresh included, runs under one
 * deadline (PROBE_TIMEOUT_MS). Intuit's answers become a classified ProbeResult; failures of our
 * own side (database, key) are thrown for the caller to escalate, never folded into a result.
 */
import { randomUUID } from 'node:crypto';
import { fetchCompanyInfo, type CompanyInfo } from '../quickbooks/api.js';
import { ErrorCode, IntuitFailure } from '../quickbooks/outcome.js';
import { deadlineSignal, type RealmTokens, type TokenStore } from '../quickbooks/token-store.js';
import { LogEvent, type Logger, type SecretRegistry } from '../log.js';
import type { ProbeResult } from './result.js';

export interface ProberOptions {
  readonly apiBaseUrl: string;
  readonly probeTimeoutMs: number;
  readonly refreshTokenWarnDays: number;
}

const DAY_MS = 86_400_000;

export class Prober {
  constructor(
    private readonly store: TokenStore,
    private readonly opts: ProberOptions,
    private readonly log: Logger,
    private readonly secrets: SecretRegistry,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async probeRealm(realmId: string, cancel?: AbortSignal): Promise<ProbeResult> {
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
      if (!tokens) {
        throw new IntuitFailure(ErrorCode.authInvalidGrant, `realm ${realmId} has no stored tokens: run \`qbhealth import-tokens\` or \`qbhealth connect\``, undefined, undefined);
      }
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
      if (!(err instanceof IntuitFailure)) throw err;
      return this.result(realmId, checkedAt, started, apiMs, tokens, err, undefined);
    }
    if (info.companyName !== tokens.companyName) await this.store.setCompanyName(realmId, info.companyName);
    return this.result(realmId, checkedAt, started, apiMs, tokens, undefined, info);
  }

  private result(
    realmId: string,
    checkedAt: Date,
    started: number,
    apiMs: number | undefined,
    tokens: RealmTokens | undefined,
    failure: IntuitFailure | undefined,
    info: CompanyInfo | undefined,
  ): ProbeResult {
    const expiries = [tokens?.refreshTokenExpiresAt, tokens?.refreshTokenHardExpiresAt].filter((d): d is Date => d !== undefined);
    const refreshTokenExpiresAt = expiries.length > 0 ? new Date(Math.min(...expiries.map((d) => d.getTime()))) : undefined;
    const expiringSoon =
      refreshTokenExpiresAt !== undefined && refreshTokenExpiresAt.getTime() - this.now().getTime() < this.opts.refreshTokenWarnDays * DAY_MS;
    const code = failure?.code ?? ErrorCode.ok;
    const result: ProbeResult = {
      probeId: randomUUID(),
      realmId,
      checkedAt,
      connected: code === ErrorCode.ok,
      status: code === ErrorCode.ok ? (expiringSoon ? 'warn' : 'pass') : code === ErrorCode.throttled ? 'warn' : 'fail',
      errorCode: code,
      error: failure ? this.secrets.scrub(failure.message) : undefined,
      httpStatus: failure?.httpStatus ?? info?.httpStatus,
      latencyMs: Math.round(apiMs ?? performance.now() - started),
      intuitTid: failure?.intuitTid ?? info?.intuitTid,
      refreshTokenExpiresAt,
      companyName: info?.companyName ?? tokens?.companyName,
    };
    if (failure) {
      this.log.warn(
        { event: LogEvent.probeFailed, probeId: result.probeId, realmId, errorCode: code, httpStatus: result.httpStatus, intuitTid: result.intuitTid, latencyMs: result.latencyMs, err: failure },
        `probe failed: ${result.error}`,
      );
    } else {
      this.log.info(
        { event: LogEvent.probeSucceeded, probeId: result.probeId, realmId, status: result.status, latencyMs: result.latencyMs, intuitTid: result.intuitTid, refreshTokenExpiresAt },
        'probe succeeded',
      );
    }
    return result;
  }
}
