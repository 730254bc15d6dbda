/**
 * What a failed database operation means, in words an operator can act on: a schema gap (a
 * missing table or column: run `qbhealth migrate`) or the database itself (unreachable, or
 * refusing). The recorder reports its writes this way, and the daemon's database alert is raised
 * from these outcomes (escalate/database-alerts.ts).
 */
import { coerceError } from '../errors.js';
import { isDatabaseUnavailable, isSchemaGap, sqlState } from './pool.js';

/** What a database write told us, for escalation and readiness. */
export type DbOutcome =
  | { readonly ok: true }
  | { readonly ok: false; readonly kind: 'schema' | 'database'; readonly summary: string; readonly err: Error };

/**
 * A failed database operation in words an operator can act on; schema gaps name the missing
 * object. `operation` says what could not be done ('write' of results, 'read' of tokens or realms).
 */
export function describeDbFailure(thrown: unknown, operation: 'write' | 'read' = 'write'): DbOutcome & { ok: false } {
  const err = coerceError(thrown);
  const code = sqlState(err);
  const what = operation === 'write' ? 'record probe results' : "read the realms' tokens";
  if (isSchemaGap(err)) {
    return {
      ok: false,
      kind: 'schema',
      summary: `PostgreSQL cannot ${what}: ${err.message} (SQLSTATE ${code}). Run \`qbhealth migrate\` to restore the schema; results wait in the spool meanwhile`,
      err,
    };
  }
  const why = isDatabaseUnavailable(err) ? 'PostgreSQL is unreachable' : `PostgreSQL refused the ${operation}`;
  return { ok: false, kind: 'database', summary: `${why} (${code ? `${code}: ` : ''}${err.message}); results wait in the spool`, err };
}

