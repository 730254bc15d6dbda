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
