/** Error plumbing shared by every component: exit codes of the contract and typed failures. */

/** Exit codes (ARCHITECTURE.md, contract: exit codes). */
export const ExitCode = {
  ok: 0,
  probeFailing: 1,
  usage: 2,
  schemaMismatch: 65,
  temporaryFailure: 75,
  configInvalid: 78,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** Anything thrown becomes an Error, so `err` in a log line always has a message and a stack. */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  return new Error(typeof thrown === 'string' ? thrown : `non-error thrown: ${String(thrown)}`);
}

/**
 * A failure whose message is written for the operator (what is wrong, what to do) and which
 * carries the exit code a command ends with. The CLI prints the message without a stack.
 */
export class OperatorError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'OperatorError';
  }
}

/**
 * Runs `work`, then `cleanup` whatever happened. A cleanup failure after a work failure must not
 * hide the first error (a `finally` that throws would), so both travel in an AggregateError.
 */
export async function withCleanup<T>(work: () => Promise<T>, cleanup: (failed: boolean) => Promise<unknown>): Promise<T> {
  let result: T;
  try {
    result = await work();
  } catch (err) {
    try {
      await cleanup(true);
    } catch (cleanupErr) {
      throw new AggregateError(
        [err, cleanupErr],
        `${coerceError(err).message} (and cleanup failed: ${coerceError(cleanupErr).message})`,
      );
    }
    throw err;
  }
  await cleanup(false);
  return result;
}

/** How deep a cause chain (and how many AggregateError members) is followed when reducing. */
const MAX_CAUSE_DEPTH = 5;
const MAX_AGGREGATED = 10;
const MAX_MESSAGE = 1000;

/**
 * What is kept of an error raised inside a library: its name, message, code and HTTP status, and
 * its cause chain reduced the same way. Library errors carry far more: an axios error (through
 * intuit-oauth) holds the request config with `Authorization: Basic base64(client_id:secret)`, the
 * raw request header text and the form body with the refresh token; a pg error the row's values.
 * None of that may reach a log line, a row or an alert, so it is dropped where the error is caught.
 */
export class ReducedError extends Error {
  /** The original's class (AxiosError, DOMException …), for the reader of the log line. */
  readonly type: string;
  readonly code: string | number | undefined;
  readonly status: number | undefined;
  /** An AggregateError's members, reduced. */
  readonly errors: readonly ReducedError[] | undefined;

  constructor(
    essentials: ErrorEssentials,
    options: { cause?: ReducedError; errors?: readonly ReducedError[] } = {},
  ) {
    const { type, name, message, code, status } = essentials;
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.type = type;
    this.name = name;
    this.code = code;
    this.status = status;
    this.errors = options.errors;
    // The frames would be where it was reduced, not where it happened: misleading, so none.
    this.stack = `${name}: ${message}`;
  }
}

/** The fields safe to keep of any error-like value, whoever raised it. */
export interface ErrorEssentials {
  readonly type: string;
  readonly name: string;
  readonly message: string;
  readonly code: string | number | undefined;
  readonly status: number | undefined;
}

export function errorEssentials(value: unknown): ErrorEssentials {
  if (typeof value !== 'object' || value === null) {
    const text = typeof value === 'string' ? value : `non-error thrown: ${String(value)}`;
    return { type: typeof value, name: 'Error', message: text.slice(0, MAX_MESSAGE), code: undefined, status: undefined };
  }
  const e = value as { name?: unknown; message?: unknown; code?: unknown; status?: unknown; statusCode?: unknown; httpStatus?: unknown; response?: unknown };
  const responseStatus = typeof e.response === 'object' && e.response !== null ? (e.response as { status?: unknown }).status : undefined;
  const status = [e.status, e.statusCode, e.httpStatus, responseStatus].find((s): s is number => typeof s === 'number' && Number.isInteger(s));
  const name = typeof e.name === 'string' && e.name !== '' ? e.name : 'Error';
  return {
    type: value instanceof ReducedError ? value.type : (value.constructor?.name ?? 'Object'),
    name,
    message: (typeof e.message === 'string' ? e.message : '').slice(0, MAX_MESSAGE),
    code: typeof e.code === 'string' || typeof e.code === 'number' ? e.code : undefined,
    status,
  };
}

/**
 * A library's error (or anything thrown) reduced to a ReducedError: name, message, code, status,
 * its `cause` chain and an AggregateError's `errors` reduced alike. Keep this, never the original,
 * as the `cause` of our own errors.
 */
export function reduceError(thrown: unknown, depth = 0, ancestors = new Set<unknown>()): ReducedError {
  // A cause chain that loops back to an error on the way here ends there.
  ancestors.add(thrown);
  const next = (value: unknown): ReducedError | undefined =>
    value === undefined || value === null || ancestors.has(value) || depth >= MAX_CAUSE_DEPTH ? undefined : reduceError(value, depth + 1, ancestors);
  const source = typeof thrown === 'object' && thrown !== null ? (thrown as { cause?: unknown; errors?: unknown }) : {};
  const errors = Array.isArray(source.errors)
    ? source.errors.slice(0, MAX_AGGREGATED).map(next).filter((e): e is ReducedError => e !== undefined)
    : undefined;
  const reduced = new ReducedError(errorEssentials(thrown), { cause: next(source.cause), errors });
  ancestors.delete(thrown);
  return reduced;
}
