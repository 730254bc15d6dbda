import pg from 'pg';
import { coerceError, ExitCode, OperatorError, withCleanup } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
/** A pool or a checked-out client: anything that runs a query. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

export interface PoolOptions {
  databaseUrl: string;
  applicationName: string;
  max?: number;
  /** How long a new connection may take before it counts as a failure. */
  connectionTimeoutMs?: number;
  /** Server-side bound on any one statement, so a stuck query cannot hold a probe cycle. */
  statementTimeoutMs?: number;
}

export function createPool(opts: PoolOptions, log: Logger): Pool {
  const pool = new pg.Pool({
    connectionString: opts.databaseUrl,
    application_name: opts.applicationName,
    max: opts.max ?? 4,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5000,
    idleTimeoutMillis: 30_000,
    ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
  });
  // An idle client whose server connection drops emits 'error' on the pool; without a listener
  // Node treats it as unhandled and the process dies. The next query reports the outage itself.
  const repeats = new RepeatLimiter();
  pool.on('error', (err) => {
    const admitted = repeats.admit('idle');
    if (admitted) log.warn({ event: LogEvent.dbConnectionError, err, ...admitted }, 'idle PostgreSQL connection failed (repeats are counted, not logged, for a minute)');
  });
  // A checked-out client whose connection drops between two statements emits 'error' with no
  // listener of the pool's (that one covers idle clients only), which Node turns into an uncaught
  // exception. The statement that follows fails on its own and is reported by its caller.
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      const admitted = repeats.admit('in-use');
      if (admitted) log.warn({ event: LogEvent.dbConnectionError, err, ...admitted }, 'PostgreSQL connection lost while in use (repeats are counted, not logged, for a minute)');
    });
  });
  return pool;
}

/** SQLSTATE codes we act on (never matched by message text). */
export const SqlState = {
  undefinedTable: '42P01',
  undefinedColumn: '42703',
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  invalidCatalogName: '3D000',
  cannotConnectNow: '57P03',
  adminShutdown: '57P01',
  crashShutdown: '57P02',
  readOnlyTransaction: '25006',
  queryCanceled: '57014',
  lockNotAvailable: '55P03',
  deadlockDetected: '40P01',
  serializationFailure: '40001',
} as const;

/**
 * A statement that lost a race or ran out of time (a statement or lock timeout, a deadlock, a
 * serialization failure): the same statement may well succeed on the next try.
 */
export function isTransientSqlError(err: unknown): boolean {
  const code = sqlState(err);
  return code === SqlState.queryCanceled || code === SqlState.lockNotAvailable || code === SqlState.deadlockDetected || code === SqlState.serializationFailure;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A statement refused because a table or column the code needs is missing (run `qbhealth migrate`). */
export function isSchemaGap(err: unknown): boolean {
  const code = sqlState(err);
  return code === SqlState.undefinedTable || code === SqlState.undefinedColumn;
}

/**
 * pg's own client-side failures (a dropped socket, a pool that could not connect in time) carry
 * no SQLSTATE; their messages are fixed strings in pg and pg-pool.
 */
const PG_CONNECTION_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Cannot use a pool after calling end)/;

/**
 * True when `err` says PostgreSQL could not be reached or talked to (network, shutdown, refused
 * login, missing database), as opposed to a statement that failed on a healthy connection.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const code = sqlState(err);
  if (code !== undefined && (NETWORK_CODES.has(code) || /^(08|28|57P)/.test(code) || code === SqlState.invalidCatalogName)) return true;
  if (!(err instanceof Error)) return false;
  // withClient wraps a failed connect in an OperatorError; the reason is its cause.
  return PG_CONNECTION_MESSAGES.test(err.message) || (err.cause !== undefined && err.cause !== err && isDatabaseUnavailable(err.cause));
}

/**
 * Turns a failure to reach PostgreSQL into an operator-facing error with the right exit code:
 * bad credentials or a missing database are configuration (78, PM2 must not loop on them);
 * anything else is temporary (75, PM2 retries with backoff).
 */
export function connectionFailure(thrown: unknown): OperatorError {
  const err = coerceError(thrown);
  const code = sqlState(err);
  if (code === SqlState.invalidPassword || code === SqlState.invalidAuthorization) {
    return new OperatorError(
      `PostgreSQL rejected the credentials in DATABASE_URL (${code}: ${err.message}). Fix the user or password in DATABASE_URL.`,
      ExitCode.configInvalid,
      { cause: err },
    );
  }
  if (code === SqlState.invalidCatalogName) {
    return new OperatorError(
      `The database named in DATABASE_URL does not exist (${err.message}). Create it (createdb) or fix DATABASE_URL.`,
      ExitCode.configInvalid,
      { cause: err },
    );
  }
  const reason = code && NETWORK_CODES.has(code) ? `${code}` : err.message;
  return new DatabaseUnreachableError(
    `PostgreSQL is unreachable (${reason}${reason === err.message ? '' : `: ${err.message}`}). Check that the server is up and that DATABASE_URL's host and port are right`,
    { cause: err },
  );
}

/**
 * PostgreSQL could not be reached (exit 75). Who retries differs: PM2 restarts the daemon, while a
 * `qbhealth` command does not retry at all; each caller says which (`retryAdvice`).
 */
export class DatabaseUnreachableError extends OperatorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.temporaryFailure, options);
    this.name = 'DatabaseUnreachableError';
  }
}

/** Runs `fn` with a client checked out of the pool, mapping a failure to connect to `connectionFailure`. */
export async function withClient<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  let client: PoolClient;
  try {
    client = await pool.connect();
  } catch (err) {
    throw connectionFailure(err);
  }
  try {
    const result = await fn(client);
    client.release();
    return result;
  } catch (err) {
    // A failed statement leaves the connection usable; anything else (a dropped socket, a
    // timeout mid-protocol) may not, so that client is destroyed rather than reused.
    client.release(isSqlError(err) ? undefined : coerceError(err));
    throw err;
  }
}

/** True for errors the server reported with a SQLSTATE (the connection itself is fine). */
export function isSqlError(err: unknown): boolean {
  return /^[0-9A-Z]{5}$/.test(sqlState(err) ?? '') && !NETWORK_CODES.has(sqlState(err) ?? '');
}

/** Runs `fn` inside BEGIN/COMMIT, rolling back (and rethrowing) on any failure. */
export async function inTransaction<T>(client: PoolClient, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  return withCleanup(fn, (failed) => client.query(failed ? 'ROLLBACK' : 'COMMIT'));
}
