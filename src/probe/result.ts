import type { ErrorCode } from '../quickbooks/outcome.js';

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
  readonly latencyMs: number;
  readonly intuitTid: string | undefined;
  /** The earlier of the rolling and the hard refresh-token expiry. */
  readonly refreshTokenExpiresAt: Date | undefined;
  readonly companyName: string | undefined;
}
