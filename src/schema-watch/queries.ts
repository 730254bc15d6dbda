/**
 * The application's SQL as the expectation: each `.sql` file (one statement, `$1`-style
 * parameters allowed) is handed to PostgreSQL with `PREPARE` inside a read-only transaction that
 * is rolled back. PostgreSQL parses it and resolves every relation, column, function and type
 * against the live schema without executing anything; its own SQLSTATE and message are reported.
 * PostgreSQL is the parser: there is none of our own.
 *
 * Locks: preparing takes what parsing the statement takes (ACCESS SHARE on the tables a SELECT
 * reads, ROW EXCLUSIVE on an INSERT/UPDATE/DELETE target), the same locks the application's own
 * statements take, held for the milliseconds until the rollback. A short lock_timeout means the
 * check never waits in a lock queue (where it would hold up the application behind a migration).
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { isSqlError, sqlState, type PoolClient } from '../db/pool.js';
import { coerceError, ExitCode, OperatorError, withCleanup } from '../errors.js';

export interface QueryFile {
  /** Path relative to the queries directory, as reported. */
  readonly file: string;
  readonly text: string;
}

export interface QueryProblem {
  readonly file: string;
  readonly sqlState: string;
  readonly message: string;
  /** Where in the file PostgreSQL pointed, when it did. */
  readonly line?: number;
  /**
   * `mismatch`: the statement does not fit the live schema (a missing relation, column, function,
   * a changed type). `invalid`: the file itself is not one valid statement (a syntax error, two
   * statements): fix the file, the database is not at fault.
   */
  readonly verdict: 'mismatch' | 'invalid';
}

/** A queries directory that cannot be used as given: exit 78. */
export class QueriesError extends OperatorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, ExitCode.configInvalid, options);
    this.name = 'QueriesError';
  }
}

/** Every `.sql` file under `dir` (subdirectories too), in path order; an empty file is refused. */
export async function loadQueryFiles(dir: string): Promise<QueryFile[]> {
  let entries: string[];
  try {
    entries = (await readdir(dir, { recursive: true })).filter((f) => f.endsWith('.sql')).sort();
  } catch (err) {
    const e = coerceError(err) as NodeJS.ErrnoException;
    throw new QueriesError(`queries directory ${dir} cannot be read (${e.code ?? e.message})`, { cause: err });
  }
  const files: QueryFile[] = [];
  for (const file of entries) {
    let text: string;
    try {
      text = await readFile(path.join(dir, file), 'utf8');
    } catch (err) {
      const e = coerceError(err) as NodeJS.ErrnoException;
      throw new QueriesError(`query file ${path.join(dir, file)} cannot be read (${e.code ?? e.message})`, { cause: err });
    }
    if (text.trim().replace(/;+$/, '').trim() === '') throw new QueriesError(`query file ${path.join(dir, file)} is empty; it must hold one SQL statement`);
    files.push({ file, text });
  }
  return files;
}

/** PostgreSQL said the file is not one valid statement. */
const INVALID_STATES = new Set(['42601']);

function verdictOf(code: string): QueryProblem['verdict'] | undefined {
  if (INVALID_STATES.has(code)) return 'invalid';
  // Class 42 (undefined table/column/function/object, datatype mismatch, ambiguous column …) and
  // 0A000 (a construct the live server does not support) mean the statement no longer fits.
  if (code.startsWith('42') || code === '0A000') return 'mismatch';
  return undefined;
}

const LOCK_TIMEOUT = '2s';
const STATEMENT_TIMEOUT = '10s';

/**
 * Prepares every file on `client` inside one read-only transaction (a savepoint each), rolls it
 * all back, and returns the files PostgreSQL refused. A lock or statement timeout, or a lost
 * connection, is thrown: the check did not happen, which is not a verdict on the schema.
 */
export async function checkQueries(client: PoolClient, files: readonly QueryFile[]): Promise<QueryProblem[]> {
  const problems: QueryProblem[] = [];
  if (files.length === 0) return problems;
  await client.query('BEGIN READ ONLY');
  // Nothing was executed; the rollback also ends the locks parsing took. withCleanup keeps a
  // failed rollback from hiding the first failure.
  await withCleanup(async () => {
    await client.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'; SET LOCAL statement_timeout = '${STATEMENT_TIMEOUT}'`);
    for (const [i, f] of files.entries()) {
      const problem = await prepareOne(client, `qbhw_${i + 1}`, f);
      if (problem) problems.push(problem);
    }
  }, () => client.query('ROLLBACK'));
  return problems;
}

async function prepareOne(client: PoolClient, name: string, f: QueryFile): Promise<QueryProblem | undefined> {
  const prefix = `PREPARE ${name} AS\n`;
  await client.query('SAVEPOINT qbhw');
  try {
    // The extended protocol refuses a text holding more than one statement (42601), so a file
    // can never run a second statement of its own; and the transaction is read only.
    await client.query({ text: `${prefix}${f.text}`, queryMode: 'extended' } as pg.QueryConfig);
  } catch (err) {
    const code = sqlState(err);
    const verdict = code === undefined || !isSqlError(err) ? undefined : verdictOf(code);
    if (code === undefined || verdict === undefined) throw err;
    await client.query('ROLLBACK TO SAVEPOINT qbhw');
    const position = Number((err as { position?: unknown }).position);
    const line = Number.isInteger(position) && position > prefix.length ? f.text.slice(0, position - prefix.length - 1).split('\n').length : undefined;
    return { file: f.file, sqlState: code, message: coerceError(err).message, verdict, ...(line ? { line } : {}) };
  }
  // A prepared statement outlives the transaction (it belongs to the session): dropped here.
  await client.query(`DEALLOCATE ${name}; RELEASE SAVEPOINT qbhw`);
  return undefined;
}

export function describeQueryProblem(p: QueryProblem): string {
  return `query ${p.file}${p.line ? `:${p.line}` : ''}: ${p.verdict === 'invalid' ? 'not one valid statement' : 'does not fit the schema'} (${p.sqlState}: ${p.message})`;
}
