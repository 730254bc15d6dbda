/** Named, parameterised queries on quickbooks_connection_health (identifiers from db/schema.ts). */
import { healthTable as H } from './schema.js';
import type { Queryable } from './pool.js';
import type { ProbeResult } from '../probe-result.js';

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

// Replays of the same probe (from the spool) are no-ops: probe_id is unique.
const INSERT_SQL = H.insert(INSERT_COLUMNS, `ON CONFLICT (${H.col('probe_id')}) DO NOTHING`);

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
  const result = await db.query(INSERT_SQL, rowValues(r));
  return result.rowCount === 1;
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

const INSERT_MANY_SQL =
  `INSERT INTO ${H.name} (${H.columnList(INSERT_COLUMNS)}) ` +
  `SELECT * FROM unnest(${INSERT_COLUMNS.map((c, i) => `$${i + 1}::${COLUMN_TYPES[c]}`).join(', ')}) ` +
  `ON CONFLICT (${H.col('probe_id')}) DO NOTHING`;

/** Inserts many results in one statement, in order; returns how many were new. */
export async function insertProbeResults(db: Queryable, results: readonly ProbeResult[]): Promise<number> {
  if (results.length === 0) return 0;
  const columns: unknown[][] = INSERT_COLUMNS.map(() => []);
  for (const r of results) rowValues(r).forEach((v, i) => columns[i]?.push(v));
  const result = await db.query(INSERT_MANY_SQL, columns);
  return result.rowCount ?? 0;
}
