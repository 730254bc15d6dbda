/**
 * One schema check, shared by `qbhealth schema check` and the daemon's watch: the manifest's
 * tables read from the catalogs and compared, and the query files prepared. Inputs are read and
 * validated first, so a bad manifest or queries directory stops it before anything is checked;
 * a query file PostgreSQL cannot parse stops it too, with only those files named: a verdict on
 * the schema from a partly unreadable expectation would be half a check.
 */
import { connectionFailure, isDatabaseUnavailable, sqlState, SqlState, withClient, type Pool } from '../db/pool.js';
import { coerceError, ExitCode, OperatorError } from '../errors.js';
import { readTables } from './catalog.js';
import { compareTables, describeDifference, objectOf, type Difference } from './compare.js';
import { readManifest, type Manifest } from './manifest.js';
import { checkQueries, describeQueryProblem, loadQueryFiles, QueriesError, type QueryFile, type QueryProblem } from './queries.js';

export interface WatchSources {
  /** SCHEMA_WATCH_MANIFEST / --manifest */
  readonly manifestFile?: string | undefined;
  /** SCHEMA_WATCH_QUERIES / --queries */
  readonly queriesDir?: string | undefined;
}

export interface WatchInputs {
  readonly manifest: Manifest | undefined;
  readonly queries: readonly QueryFile[];
}

export interface SchemaCheckResult {
  readonly tables: number;
  readonly queries: number;
  readonly differences: readonly Difference[];
  readonly queryProblems: readonly QueryProblem[];
  readonly durationMs: number;
}

/** Reads the manifest and the query files; any problem is a ManifestError or QueriesError (exit 78). */
export async function loadWatchInputs(sources: WatchSources): Promise<WatchInputs> {
  const manifest = sources.manifestFile === undefined ? undefined : await readManifest(sources.manifestFile);
  const queries = sources.queriesDir === undefined ? [] : await loadQueryFiles(sources.queriesDir);
  return { manifest, queries };
}

/** Compares and prepares on one connection; catalog reads and rolled-back PREPAREs only. */
export async function runSchemaCheck(pool: Pool, inputs: WatchInputs): Promise<SchemaCheckResult> {
  const started = performance.now();
  const { manifest, queries } = inputs;
  const { differences, queryProblems } = await withClient(pool, async (client) => {
    const live = manifest ? await readTables(client, { tables: manifest.tables }) : [];
    return { differences: manifest ? compareTables(manifest.tables, live) : [], queryProblems: await checkQueries(client, queries) };
  }).catch((err: unknown) => {
    throw notCheckedError(err);
  });
  const invalid = queryProblems.filter((p) => p.verdict === 'invalid');
  if (invalid.length > 0) {
    throw new QueriesError(
      `${invalid.length} query file(s) are not one valid SQL statement; fix them (nothing was reported about the schema):\n${invalid.map((p) => `  ${describeQueryProblem(p)}`).join('\n')}`,
    );
  }
  return { tables: manifest?.tables.length ?? 0, queries: queries.length, differences, queryProblems, durationMs: Math.round(performance.now() - started) };
}

/**
 * A check that did not happen is no verdict: PostgreSQL going away is exit 75 like not reaching it,
 * and so is a lock or statement timeout (a migration holding a table, a stuck catalog): run it again.
 */
function notCheckedError(err: unknown): unknown {
  if (err instanceof OperatorError) return err;
  if (isDatabaseUnavailable(err)) return connectionFailure(err);
  const code = sqlState(err);
  if (code === SqlState.lockNotAvailable || code === SqlState.queryCanceled) {
    return new OperatorError(
      `PostgreSQL did not answer the check in time (${code}: ${coerceError(err).message}); a migration or a long statement may hold a lock on the tables. Nothing was changed; run it again`,
      ExitCode.temporaryFailure,
      { cause: err },
    );
  }
  return err;
}

export function matches(result: SchemaCheckResult): boolean {
  return result.differences.length === 0 && result.queryProblems.length === 0;
}

/** One line per difference, then one per query that no longer fits. */
export function describeResult(result: SchemaCheckResult): string[] {
  return [...result.differences.map(describeDifference), ...result.queryProblems.map(describeQueryProblem)];
}

/** What is missing or changed, named (alert summaries): `table.column`, `table`, `query file`. */
export function driftObjects(result: SchemaCheckResult): string[] {
  return [...result.differences.map(objectOf), ...result.queryProblems.map((p) => `query ${p.file}`)];
}

export const exitCodeOf = (result: SchemaCheckResult): number => (matches(result) ? ExitCode.ok : ExitCode.schemaMismatch);
