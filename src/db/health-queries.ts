/**
 * Named, parameterised queries on quickbooks_connection_health (identifiers from db/schema.ts).
 * Recording inserts the raw rows only: the rollups are folded from them once their half hour is
 * closed (db/rollup-fold.ts). A result whose half hour may already be folded (a spool replay, a
 * probe that outlasted the grace) is inserted and its half hour re-folded from the raw rows in one
 * transaction: a replayed result (ON CONFLICT DO NOTHING) is never counted twice, and a failed
 * re-fold leaves it in the spool to be replayed again.
 */
import { healthTable as H } from './schema.js';
import type { Queryable } from './pool.js';
import type { ProbeResult } from '../probe-result.js';
import { inFoldTransaction, mayBeFolded, refoldLateResults } from './rollup-fold.js';

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
 * The results; replays of the same probe (from the spool) are no-ops: probe_id is unique. What
 * recording costs, the same statement as before rollups existed (`rollup_recording_overhead`).
 */
export const INSERT_RESULTS_ONLY_SQL =
  `INSERT INTO ${H.name} (${H.columnList(INSERT_COLUMNS)}) ` +
  `SELECT * FROM unnest(${INSERT_COLUMNS.map((c, i) => `$${i + 1}::${COLUMN_TYPES[c]}`).join(', ')}) ` +
  `ON CONFLICT (${H.col('probe_id')}) DO NOTHING`;

/** The parameters of INSERT_RESULTS_ONLY_SQL: one array per column. */
export function resultColumns(results: readonly ProbeResult[]): unknown[][] {
  const columns: unknown[][] = INSERT_COLUMNS.map(() => []);
  for (const r of results) rowValues(r).forEach((v, i) => columns[i]?.push(v));
  return columns;
}

/**
 * Inserts many results in one statement, in order; returns how many were new. When one of them
 * may belong to a half hour already folded, the half hours of the batch are re-folded in the same
 * transaction (rare: a spool replay, a late commit), unless the batch inserted nothing new (an
 * earlier replay of it committed, and re-folded, them). Re-folding a half hour whose results were
 * all there already changes nothing: it is computed from the raw rows.
 */
export async function insertProbeResults(db: Queryable, results: readonly ProbeResult[], now: number = Date.now()): Promise<number> {
  if (results.length === 0) return 0;
  // Named: PostgreSQL plans it once per connection, not at every result.
  const insert = { name: 'qbhealth-record', text: INSERT_RESULTS_ONLY_SQL, values: resultColumns(results) };
  if (!results.some((r) => mayBeFolded(r.checkedAt, now))) return (await db.query(insert)).rowCount ?? 0;
  return inFoldTransaction(db, async (client) => {
    const inserted = (await client.query(insert)).rowCount ?? 0;
    if (inserted > 0) await refoldLateResults(client, results.map((r) => ({ realm_id: r.realmId, checked_at: r.checkedAt })));
    return inserted;
  });
}
