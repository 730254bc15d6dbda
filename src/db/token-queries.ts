/**
 * Named, parameterised queries on quickbooks_oauth_tokens (identifiers from db/schema.ts's
 * `tokensTable`). Tokens pass through here only as AES-256-GCM envelopes: sealing and opening them,
 * and the refresh protocol itself — which statements share one transaction, when the realm's row
 * is locked, how long a lock is waited for — stay with the callers (quickbooks/token-store.ts,
 * cli/key-commands.ts), where they can be read as a whole. A function whose name ends in
 * `ForUpdate` takes the realm's row lock (`SELECT … FOR UPDATE`) and is only meaningful inside a
 * transaction (`inTransaction`), which then holds the lock until it ends; so is
 * `setTransactionLockTimeout`, whose bound lasts until that transaction ends. The upsert's
 * `ON CONFLICT (realm_id)` relies on the unique key schema.ts declares and `check-schema` verifies.
 * db/status.ts and db/fleet-queries.ts still read this table with SQL of their own.
 */
import type { QboEnvironment } from '../config.js';
import { tokensTable as T } from './schema.js';
import type { Queryable } from './pool.js';

/** quickbooks_oauth_tokens.status. */
export type ConnectionStatus = 'connected' | 'reconnect_required' | 'disconnected';

/** A token row as stored: the tokens still sealed. */
export interface TokenRow {
  realm_id: string;
  environment: QboEnvironment;
  access_token_enc: string | null;
  access_token_expires_at: Date | null;
  refresh_token_enc: string;
  refresh_token_expires_at: Date | null;
  refresh_token_hard_expires_at: Date | null;
  status: ConnectionStatus;
  status_reason: string | null;
  company_name: string | null;
  revision: string;
}

/** What a token write sets (plus revision and updated_at); reads add company_name and revision. */
const WRITTEN_COLUMNS = [
  'realm_id',
  'environment',
  'access_token_enc',
  'access_token_expires_at',
  'refresh_token_enc',
  'refresh_token_expires_at',
  'refresh_token_hard_expires_at',
  'status',
  'status_reason',
] as const;
const COLUMNS = T.columnList([...WRITTEN_COLUMNS, 'company_name', 'revision']);

const SELECT_ROW_SQL = `SELECT ${COLUMNS} FROM ${T.name} WHERE ${T.col('realm_id')} = $1`;

/** The realm's row, without a lock. */
export async function readTokenRow(db: Queryable, realmId: string): Promise<TokenRow | undefined> {
  return (await db.query<TokenRow>(SELECT_ROW_SQL, [realmId])).rows[0];
}

/** The realm's row, locked until the surrounding transaction ends. */
export async function readTokenRowForUpdate(tx: Queryable, realmId: string): Promise<TokenRow | undefined> {
  return (await tx.query<TokenRow>(`${SELECT_ROW_SQL} FOR UPDATE`, [realmId])).rows[0];
}

/**
 * Locks the realm's row (if there is one) until the surrounding transaction ends, reading nothing
 * from it: the envelopes may be ones this process's key cannot open.
 */
export async function lockTokenRowForUpdate(tx: Queryable, realmId: string): Promise<void> {
  await tx.query(`SELECT 1 FROM ${T.name} WHERE ${T.col('realm_id')} = $1 FOR UPDATE`, [realmId]);
}

/** What decides whether a rotated pair may still replace the stored one: locked until the surrounding transaction ends. */
export async function readRotationStateForUpdate(
  tx: Queryable,
  realmId: string,
): Promise<{ refresh_token_enc: string; revision: string; status: ConnectionStatus } | undefined> {
  const result = await tx.query<{ refresh_token_enc: string; revision: string; status: ConnectionStatus }>(
    `SELECT ${T.columnList(['refresh_token_enc', 'revision', 'status'])} FROM ${T.name} WHERE ${T.col('realm_id')} = $1 FOR UPDATE`,
    [realmId],
  );
  return result.rows[0];
}

/** Every monitored realm's row (not `disconnected`), by realm id. */
export async function readMonitoredTokenRows(db: Queryable): Promise<TokenRow[]> {
  return (await db.query<TokenRow>(`SELECT ${COLUMNS} FROM ${T.name} WHERE status <> 'disconnected' ORDER BY realm_id`)).rows;
}

/** Every monitored realm (not `disconnected`) by realm id, or just `realmId` whatever its status. */
export async function readRealmStatuses(db: Queryable, realmId?: string): Promise<Array<{ realmId: string; status: ConnectionStatus }>> {
  const result = await db.query<{ realm_id: string; status: ConnectionStatus }>(
    realmId === undefined
      ? `SELECT realm_id, status FROM ${T.name} WHERE status <> 'disconnected' ORDER BY realm_id`
      : `SELECT realm_id, status FROM ${T.name} WHERE realm_id = $1`,
    realmId === undefined ? [] : [realmId],
  );
  return result.rows.map((r) => ({ realmId: r.realm_id, status: r.status }));
}

/** A freshly issued pair, sealed, as written to the realm's row. */
export interface SealedTokenPair {
  readonly realmId: string;
  readonly environment: QboEnvironment;
  readonly accessTokenEnc: string;
  readonly accessTokenExpiresAt: Date;
  readonly refreshTokenEnc: string;
  readonly refreshTokenExpiresAt: Date;
  /** Undefined when Intuit did not send one: the stored hard expiry is kept. */
  readonly refreshTokenHardExpiresAt: Date | undefined;
  readonly updatedAt: Date;
}

const UPSERT_SQL = `${T.insert([...WRITTEN_COLUMNS, 'revision', 'updated_at'])}
       ON CONFLICT (realm_id) DO UPDATE SET
         environment = EXCLUDED.environment,
         access_token_enc = EXCLUDED.access_token_enc,
         access_token_expires_at = EXCLUDED.access_token_expires_at,
         refresh_token_enc = EXCLUDED.refresh_token_enc,
         refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
         refresh_token_hard_expires_at = COALESCE(EXCLUDED.refresh_token_hard_expires_at, ${T.name}.refresh_token_hard_expires_at),
         status = 'connected',
         status_reason = NULL,
         revision = ${T.name}.revision + 1,
         updated_at = EXCLUDED.updated_at
       RETURNING revision`;

/** Stores the pair (inserting the realm's row if needed): the realm becomes `connected` and its revision moves on. Returns the new revision. */
export async function upsertTokenPair(db: Queryable, pair: SealedTokenPair): Promise<number> {
  const result = await db.query<{ revision: string }>(UPSERT_SQL, [
    pair.realmId,
    pair.environment,
    pair.accessTokenEnc,
    pair.accessTokenExpiresAt,
    pair.refreshTokenEnc,
    pair.refreshTokenExpiresAt,
    pair.refreshTokenHardExpiresAt ?? null,
    'connected',
    null,
    1,
    pair.updatedAt,
  ]);
  return Number(result.rows[0]?.revision);
}

/** Records the company name CompanyInfo reported (no write when it is unchanged). */
export async function updateCompanyName(db: Queryable, realmId: string, companyName: string): Promise<void> {
  await db.query(`UPDATE ${T.name} SET company_name = $2 WHERE realm_id = $1 AND company_name IS DISTINCT FROM $2`, [realmId, companyName]);
}

export async function updateTokenStatus(db: Queryable, realmId: string, status: ConnectionStatus, reason: string | undefined, at: Date): Promise<void> {
  await db.query(`UPDATE ${T.name} SET status = $2, status_reason = $3, updated_at = $4 WHERE realm_id = $1`, [realmId, status, reason ?? null, at]);
}

/** Bounds every lock wait (such as a token row's) for the rest of the current transaction. */
export async function setTransactionLockTimeout(tx: Queryable, ms: number): Promise<void> {
  await tx.query(`SELECT set_config('lock_timeout', $1, true)`, [`${ms}ms`]);
}

/** Every realm with a token row, whatever its status, by realm id. */
export async function listTokenRealmIds(db: Queryable): Promise<string[]> {
  const result = await db.query<{ realm_id: string }>(`SELECT ${T.col('realm_id')} FROM ${T.name} ORDER BY ${T.col('realm_id')}`);
  return result.rows.map((r) => r.realm_id);
}

/** The realm's two envelopes, locked until the surrounding transaction ends. */
export async function readEnvelopesForUpdate(tx: Queryable, realmId: string): Promise<{ access_token_enc: string | null; refresh_token_enc: string } | undefined> {
  const result = await tx.query<{ access_token_enc: string | null; refresh_token_enc: string }>(
    `SELECT ${T.columnList(['access_token_enc', 'refresh_token_enc'])} FROM ${T.name} WHERE ${T.col('realm_id')} = $1 FOR UPDATE`,
    [realmId],
  );
  return result.rows[0];
}

/**
 * Replaces the realm's envelopes with the same tokens sealed anew. revision and updated_at describe
 * the tokens, which do not change here: a refresh racing a key rotation must not mistake re-sealed
 * envelopes for a token another process issued.
 */
export async function updateEnvelopes(tx: Queryable, realmId: string, accessTokenEnc: string | null, refreshTokenEnc: string): Promise<void> {
  await tx.query(`UPDATE ${T.name} SET ${T.col('access_token_enc')} = $2, ${T.col('refresh_token_enc')} = $3 WHERE ${T.col('realm_id')} = $1`, [
    realmId,
    accessTokenEnc,
    refreshTokenEnc,
  ]);
}
