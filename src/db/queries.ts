/** Named, parameterised queries on quickbooks_connection_health (identifiers from db/schema.ts). */
import { healthTable as H } from './schema.js';
import type { Queryable } from './pool.js';
import type { ProbeResult } from '../probe/result.js';

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

export async function insertProbeResult(db: Queryable, r: ProbeResult): Promise<boolean> {
  const result = await db.query(INSERT_SQL, [
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
  ]);
  return result.rowCount === 1;
}
