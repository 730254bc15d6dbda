/** How a probe ended, in the contract's `error_code` vocabulary. */

// The vocabulary is the result's (src/probe-result.ts); Intuit's answers are classified into it here.
import { ErrorCode } from '../probe-result.js';
export { ErrorCode };

/** A classified failure of a call to Intuit (token endpoint or API). Never carries a token. */
export class IntuitFailure extends Error {
  constructor(
    readonly code: Exclude<ErrorCode, 'ok'>,
    message: string,
    readonly httpStatus: number | undefined,
    readonly intuitTid: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'IntuitFailure';
  }
}

/** Status → code, for responses that are not a success. */
export function classifyStatus(status: number): Exclude<ErrorCode, 'ok'> {
  if (status === 401) return ErrorCode.authUnauthorized;
  if (status === 403) return ErrorCode.forbidden;
  if (status === 429) return ErrorCode.throttled;
  if (status === 408 || status === 504) return ErrorCode.timeout;
  if (status >= 500) return ErrorCode.serverError;
  return ErrorCode.badResponse;
}

const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'ERR_SOCKET_CONNECTION_TIMEOUT',
]);

/** TLS failures (a proxy that speaks plain HTTP, an expired or unknown certificate) are the network path's too. */
const TLS_ERROR_CODE = /^(EPROTO|ERR_SSL_|ERR_TLS_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|UNABLE_TO_(VERIFY|GET)_)/;

/** The errno-like code of a transport error, looking through `cause` chains (fetch wraps them). */
export function transportCode(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && (NETWORK_ERROR_CODES.has(code) || TLS_ERROR_CODE.test(code))) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}
