/**
 * The QuickBooks Online API call that proves a connection works: CompanyInfo, with fetch. The body
 * is read up to a bound (a proxy's 50 MB error page must not fill memory), Intuit's `Fault` and
 * `fault` shapes are both understood, even inside a 200, and `intuit_tid` is kept for support.
 */
import { reduceError } from '../errors.js';
import { ErrorCode, IntuitFailure, classifyStatus, transportCode } from './outcome.js';

export const MINOR_VERSION = 75;
export const MAX_BODY_BYTES = 1024 * 1024;

export interface CompanyInfo {
  readonly companyName: string;
  readonly httpStatus: number;
  readonly intuitTid: string | undefined;
}

interface FaultError {
  Message?: string;
  message?: string;
  Detail?: string;
  detail?: string;
  code?: string;
}

interface Fault {
  Error?: FaultError[];
  error?: FaultError[];
  type?: string;
}

export function companyInfoUrl(baseUrl: string, realmId: string): string {
  const realm = encodeURIComponent(realmId);
  return `${baseUrl}/v3/company/${realm}/companyinfo/${realm}?minorversion=${MINOR_VERSION}`;
}

async function readBounded(response: Response, limit: number): Promise<Buffer> {
  const reader = response.body?.getReader();
  if (!reader) return Buffer.alloc(0);
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new IntuitFailure(
        ErrorCode.badResponse,
        `Intuit answered HTTP ${response.status} with a body over ${limit} bytes; not read further`,
        response.status,
        response.headers.get('intuit_tid') ?? undefined,
      );
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/** "AUTHENTICATION 3200: message=AuthenticationFailed; … — Token expired" from either Fault shape. */
export function describeFault(fault: Fault): string {
  const errors = fault.Error ?? fault.error ?? [];
  const parts = errors.map((e) => {
    const message = e.Message ?? e.message ?? '';
    const detail = e.Detail ?? e.detail ?? '';
    return [e.code, message, detail && detail !== message ? `— ${detail}` : ''].filter(Boolean).join(' ');
  });
  return [fault.type, parts.join('; ')].filter(Boolean).join(': ').slice(0, 500);
}

function faultCode(fault: Fault, status: number): Exclude<ErrorCode, 'ok'> {
  const type = (fault.type ?? '').toUpperCase();
  const codes = (fault.Error ?? fault.error ?? []).map((e) => String(e.code ?? ''));
  if (type === 'AUTHENTICATION' || codes.includes('3200') || codes.includes('3201')) return ErrorCode.authUnauthorized;
  if (type === 'AUTHORIZATIONFAULT' || type === 'AUTHORIZATION' || codes.includes('3100')) return ErrorCode.forbidden;
  if (codes.includes('3001') || codes.includes('003001') || type === 'THROTTLEEXCEEDED') return ErrorCode.throttled;
  if (status >= 400) return classifyStatus(status);
  // A Fault inside a 200 (ValidationFault, SystemFault …): the API answered but not with data.
  return type === 'SYSTEMFAULT' ? ErrorCode.serverError : ErrorCode.badResponse;
}

export async function fetchCompanyInfo(opts: {
  baseUrl: string;
  realmId: string;
  accessToken: string;
  signal: AbortSignal;
  maxBodyBytes?: number;
}): Promise<CompanyInfo> {
  let response: Response;
  try {
    response = await fetch(companyInfoUrl(opts.baseUrl, opts.realmId), {
      headers: { Authorization: `Bearer ${opts.accessToken}`, Accept: 'application/json' },
      signal: opts.signal,
    });
  } catch (err) {
    throw transportFailure(err, opts.signal);
  }
  const tid = response.headers.get('intuit_tid') ?? undefined;
  let bytes: Buffer;
  try {
    bytes = await readBounded(response, opts.maxBodyBytes ?? MAX_BODY_BYTES);
  } catch (err) {
    throw transportFailure(err, opts.signal);
  }

  let body: Record<string, unknown> | undefined;
  try {
    body = bytes.length > 0 ? (JSON.parse(bytes.toString('utf8')) as Record<string, unknown>) : undefined;
  } catch {
    // Unparseable is itself the finding: classified by status below, never with the raw body.
    body = undefined;
  }
  const fault = (body?.Fault ?? body?.fault) as Fault | undefined;
  if (fault && typeof fault === 'object') {
    throw new IntuitFailure(faultCode(fault, response.status), `Intuit HTTP ${response.status}: ${describeFault(fault)}`, response.status, tid);
  }
  if (!response.ok) {
    const kind = response.headers.get('content-type')?.split(';')[0] ?? 'no content-type';
    throw new IntuitFailure(classifyStatus(response.status), `Intuit HTTP ${response.status} (${kind}, ${bytes.length} bytes)`, response.status, tid);
  }
  const info = body?.CompanyInfo as { CompanyName?: unknown } | undefined;
  if (body === undefined || typeof info?.CompanyName !== 'string') {
    throw new IntuitFailure(
      ErrorCode.badResponse,
      body === undefined
        ? `Intuit HTTP ${response.status}: body is not valid JSON (${bytes.length} bytes)`
        : `Intuit HTTP ${response.status}: JSON without CompanyInfo.CompanyName`,
      response.status,
      tid,
    );
  }
  return { companyName: info.CompanyName, httpStatus: response.status, intuitTid: tid };
}

/** fetch's error, classified; kept as a reduced cause only (undici's errors may carry the request). */
function transportFailure(err: unknown, signal: AbortSignal): IntuitFailure {
  if (err instanceof IntuitFailure) return err;
  const cause = reduceError(err);
  if (signal.aborted) return new IntuitFailure(ErrorCode.timeout, 'Intuit API: no answer before the probe deadline', undefined, undefined, { cause });
  const code = transportCode(err);
  return new IntuitFailure(ErrorCode.network, `Intuit API unreachable: ${code ?? cause.message}`, undefined, undefined, { cause });
}
