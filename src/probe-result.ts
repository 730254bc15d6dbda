/** How a probe ended, in the contract's `error_code` vocabulary. */
export const ErrorCode = {
  ok: 'ok',
  authInvalidGrant: 'auth_invalid_grant',
  authUnauthorized: 'auth_unauthorized',
  forbidden: 'forbidden',
  throttled: 'throttled',
  serverError: 'server_error',
  timeout: 'timeout',
  network: 'network',
  badResponse: 'bad_response',
  // Failures on the monitor's own side: results too, never a skipped probe.
  /** The configured TOKEN_ENCRYPTION_KEY cannot open this realm's stored tokens. */
  tokenUnreadable: 'token_unreadable',
  /** PostgreSQL could not serve the realm's tokens (unreachable, timed out, lock not granted, schema gap). */
  databaseUnavailable: 'database_unavailable',
  /** Anything unexpected in the probe path (a defect, or a library failing in a way not classified above). */
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** One probe of one realm: what gets recorded, escalated and served. Never holds a token. */
export interface ProbeResult {
  readonly probeId: string;
  readonly realmId: string;
  readonly checkedAt: Date;
  /** True only for error_code `ok` (the incident's column keeps its meaning). */
  readonly connected: boolean;
  readonly status: 'pass' | 'warn' | 'fail';
  readonly errorCode: ErrorCode;
  readonly error: string | undefined;
  readonly httpStatus: number | undefined;
  /**
   * The row's `latency_ms`: the CompanyInfo call (the retried one after a 401), or the whole probe
   * when it ended before any call was made.
   */
  readonly latencyMs: number;
  /**
   * The whole probe, token refresh and CompanyInfo included (`probe_duration_seconds`). Not a
   * column. Set by the prober on every result; absent only on results made elsewhere (lines an
   * earlier release left in the spool, fixtures).
   */
  readonly durationMs?: number;
  /** The CompanyInfo call alone (`qbhealth_companyinfo_duration_seconds`); absent when the probe ended before one. Not a column. */
  readonly companyInfoMs?: number;
  readonly intuitTid: string | undefined;
  /** The earlier of the rolling and the hard refresh-token expiry. */
  readonly refreshTokenExpiresAt: Date | undefined;
  readonly companyName: string | undefined;
}

/** A result read back from JSON (the fleet's view of realms another member probed); undefined when malformed. */
export function reviveProbeResult(raw: unknown): ProbeResult | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const checkedAt = new Date(String(r.checkedAt));
  if (typeof r.probeId !== 'string' || typeof r.realmId !== 'string' || Number.isNaN(checkedAt.getTime())) return undefined;
  return {
    ...(r as unknown as ProbeResult),
    checkedAt,
    refreshTokenExpiresAt: typeof r.refreshTokenExpiresAt === 'string' ? new Date(r.refreshTokenExpiresAt) : undefined,
  };
}
