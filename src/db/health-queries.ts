/**
 * Named, parameterised queries on quickbooks_connection_health (identifiers from db/schema.ts).
 * Recording inserts the results and updates the rollups (db/rollups.ts) in one statement: what
 * the INSERT actually inserted is what the rollups count, so a replayed result (ON CONFLICT DO
 * NOTHING) is never counted twice, and a missing rollup table fails the write like a missing
 * column does (the results wait in the spool, `qbhealth migrate` restores it).
 */
import { healthTable as H } from './schema.js';
import type { Queryable } from './pool.js';
import type { ProbeResult } from '../probe-result.js';
import { rollupCtes, ROLLUP_SOURCE_COLUMNS, singleRollupCtes } from './rollups.js';

const INSERT_COLUMNS = [
  'probe_id',
  'realm_id',
  'connected',
  'status',
  'error_code',
  'error',
  'http_status',
  'latency_ms',
  'intuit_tid',
  'refresh_token_expires_at',
  'checked_at',
] as const;

function rowValues(r: ProbeResult): unknown[] {
  return [
    r.probeId,
    r.realmId,
    r.connected,
    r.status,
    r.errorCode,
    r.error ?? null,
    r.httpStatus ?? null,
    r.latencyMs,
    r.intuitTid ?? null,
    r.refreshTokenExpiresAt ?? null,
    r.checkedAt,
  ];
}

export async function insertProbeResult(db: Queryable, r: ProbeResult): Promise<boolean> {
  return (await insertProbeResults(db, [r])) === 1;
}

/** Postgres array types of INSERT_COLUMNS, for the one-round-trip batch insert. */
const COLUMN_TYPES: Record<(typeof INSERT_COLUMNS)[number], string> = {
  probe_id: 'uuid[]',
  realm_id: 'text[]',
  connected: 'boolean[]',
  status: 'text[]',
  error_code: 'text[]',
  error: 'text[]',
  http_status: 'integer[]',
  latency_ms: 'integer[]',
  intuit_tid: 'text[]',
  refresh_token_expires_at: 'timestamptz[]',
  checked_at: 'timestamptz[]',
};

/**
 * The results alone, as they were inserted before rollups existed; replays of the same probe
 * (from the spool) are no-ops: probe_id is unique. The `rollup_recording_overhead` benchmark
 * measures recording against it.
 */
export const INSERT_RESULTS_ONLY_SQL =
  `INSERT INTO ${H.name} (${H.columnList(INSERT_COLUMNS)}) ` +
  `SELECT * FROM unnest(${INSERT_COLUMNS.map((c, i) => `$${i + 1}::${COLUMN_TYPES[c]}`).join(', ')}) ` +
  `ON CONFLICT (${H.col('probe_id')}) DO NOTHING`;

/** The results and their rollups: what was inserted, aggregated and added to the rollups. */
const RECORD_SQL = `WITH inserted AS (${INSERT_RESULTS_ONLY_SQL} RETURNING ${ROLLUP_SOURCE_COLUMNS}),
  ${rollupCtes('inserted', 'add')}
SELECT count(*)::int AS inserted FROM inserted`;

/** The same for one result (the common case: a result recorded as its probe ends), without aggregating. */
const RECORD_ONE_SQL = `WITH inserted AS (${INSERT_RESULTS_ONLY_SQL} RETURNING ${ROLLUP_SOURCE_COLUMNS}),
  ${singleRollupCtes('inserted', `($${INSERT_COLUMNS.indexOf('error_code') + 1}::text[])[1]`)}
SELECT count(*)::int AS inserted FROM inserted`;

/** The parameters of INSERT_RESULTS_ONLY_SQL (and of recording): one array per column. */
export function resultColumns(results: readonly ProbeResult[]): unknown[][] {
  const columns: unknown[][] = INSERT_COLUMNS.map(() => []);
  for (const r of results) rowValues(r).forEach((v, i) => columns[i]?.push(v));
  return columns;
}

/** Inserts many results in one statement, in order, and adds them to the rollups; returns how many were new. */
export async function insertProbeResults(db: Queryable, results: readonly ProbeResult[]): Promise<number> {
  if (results.length === 0) return 0;
  // Named: PostgreSQL plans each once per connection, not at every result.
  const statement = results.length === 1 ? { name: 'qbhealth-record-one', text: RECORD_ONE_SQL } : { name: 'qbhealth-record-many', text: RECORD_SQL };
  const result = await db.query<{ inserted: number }>({ ...statement, values: resultColumns(results) });
  return result.rows[0]?.inserted ?? 0;
}
