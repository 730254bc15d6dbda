/**
 * Named queries on quickbooks_alert_state and quickbooks_alert_outbox (identifiers from
 * db/schema.ts). Alert state is changed only inside a transaction holding the subject's rows
 * `FOR UPDATE`, and every notification the change makes is written to the outbox in that same
 * transaction: a transition and its notification commit together or not at all.
 */
import type { AlertKind, AlertNotification, AlertState } from '../alert.js';
import { alertsTable as A, outboxTable as O } from './schema.js';
import type { Queryable } from './pool.js';

const STATE_COLUMNS = [
  'realm_id',
  'kind',
  'severity',
  'state',
  'consecutive_failures',
  'since',
  'last_notified_at',
  'resolved_at',
  'summary',
  'last_error',
  'intuit_tid',
] as const;

interface AlertRow {
  realm_id: string;
  kind: AlertKind;
  severity: AlertState['severity'];
  state: AlertState['state'];
  consecutive_failures: number;
  since: Date;
  last_notified_at: Date | null;
  resolved_at: Date | null;
  summary: string;
  last_error: string | null;
  intuit_tid: string | null;
}

function stateOf(r: AlertRow): AlertState {
  return {
    realmId: r.realm_id,
    kind: r.kind,
    severity: r.severity,
    state: r.state,
    consecutiveFailures: r.consecutive_failures,
    since: r.since,
    lastNotifiedAt: r.last_notified_at ?? undefined,
    resolvedAt: r.resolved_at ?? undefined,
    summary: r.summary,
    lastError: r.last_error ?? undefined,
    intuitTid: r.intuit_tid ?? undefined,
  };
}

/** The database's clock and the alert states of `subjects` (no lock: for deciding whether anything changes). */
export async function readAlertStates(db: Queryable, subjects: readonly string[]): Promise<{ now: Date; states: AlertState[] }> {
  const { rows } = await db.query<AlertRow & { db_now: Date }>(
    `SELECT now() AS db_now, ${STATE_COLUMNS.map((c) => `a.${c}`).join(', ')}
       FROM (SELECT 1) one
       LEFT JOIN ${A.name} a ON a.realm_id = ANY($1::text[]) AND (a.state = 'open' OR a.consecutive_failures > 0)`,
    [subjects],
  );
  return { now: rows[0]?.db_now ?? new Date(), states: rows.filter((r) => r.kind !== null).map(stateOf) };
}

/**
 * Inside a transaction: the subject's rows for `kinds`, locked (rows a failure needs are created
 * first, quiet, so that two members failing the same subject at once serialise on the row), and
 * the database's clock.
 */
export async function lockAlertStates(tx: Queryable, subject: string, kinds: readonly AlertKind[], create: readonly AlertKind[]): Promise<{ now: Date; states: AlertState[] }> {
  if (create.length > 0) {
    await tx.query(
      `INSERT INTO ${A.name} (realm_id, kind, severity, state, consecutive_failures, since, summary)
       SELECT $1, k, 'warning', 'resolved', 0, now(), '' FROM unnest($2::text[]) AS k
       ON CONFLICT (realm_id, kind) DO NOTHING`,
      [subject, create],
    );
  }
  const { rows } = await tx.query<AlertRow & { db_now: Date }>(
    `SELECT now() AS db_now, ${A.columnList(STATE_COLUMNS)} FROM ${A.name} WHERE realm_id = $1 AND kind = ANY($2::text[]) ORDER BY kind FOR UPDATE`,
    [subject, kinds],
  );
  const now = rows[0]?.db_now ?? (await tx.query<{ now: Date }>('SELECT now() AS now')).rows[0]?.now ?? new Date();
  return { now, states: rows.map(stateOf) };
}

/**
 * Inside a transaction: those of the open alerts `keys` that no other transaction holds, locked
 * (SKIP LOCKED: a member releasing a silenced alert never waits, and never doubles, another's work).
 */
export async function lockOpenAlertStatesSkipLocked(tx: Queryable, keys: ReadonlyArray<{ realmId: string; kind: string }>): Promise<AlertState[]> {
  if (keys.length === 0) return [];
  const { rows } = await tx.query<AlertRow>(
    `SELECT ${A.columnList(STATE_COLUMNS)} FROM ${A.name}
      WHERE state = 'open' AND (realm_id, kind) IN (SELECT * FROM unnest($1::text[], $2::text[]))
      ORDER BY realm_id, kind FOR UPDATE SKIP LOCKED`,
    [keys.map((k) => k.realmId), keys.map((k) => k.kind)],
  );
  return rows.map(stateOf);
}

const UPSERT_SQL = `${A.insert([...STATE_COLUMNS, 'updated_at'])} ON CONFLICT (realm_id, kind) DO UPDATE SET ${[...STATE_COLUMNS, 'updated_at']
  .filter((c) => c !== 'realm_id' && c !== 'kind')
  .map((c) => `${c} = EXCLUDED.${c}`)
  .join(', ')}`;

export async function writeAlertState(tx: Queryable, s: AlertState, now: Date): Promise<void> {
  await tx.query(UPSERT_SQL, [
    s.realmId,
    s.kind,
    s.severity,
    s.state,
    s.consecutiveFailures,
    s.since,
    s.lastNotifiedAt ?? null,
    s.resolvedAt ?? null,
    s.summary,
    s.lastError ?? null,
    s.intuitTid ?? null,
    now,
  ]);
}

/** Every open alert, fleet-wide. */
export async function openAlertStates(db: Queryable): Promise<AlertState[]> {
  const { rows } = await db.query<AlertRow>(`SELECT ${A.columnList(STATE_COLUMNS)} FROM ${A.name} WHERE state = 'open' ORDER BY realm_id, kind`);
  return rows.map(stateOf);
}

/** Subjects with an open alert or a running failure count. */
export async function subjectsWithState(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ realm_id: string }>(`SELECT DISTINCT realm_id FROM ${A.name} WHERE state = 'open' OR consecutive_failures > 0`);
  return rows.map((r) => r.realm_id);
}

// ---- outbox ----------------------------------------------------------------------------------

export async function insertNotification(tx: Queryable, n: AlertNotification): Promise<void> {
  await tx.query(`${O.insert(['notification_id', 'dedup_key', 'event', 'body', 'created_by'])}`, [n.notificationId, n.dedupKey, n.event, JSON.stringify(n), n.instance]);
}

export interface ClaimedNotification {
  readonly notificationId: string;
  readonly attempts: number;
  readonly body: AlertNotification;
}

/**
 * Claims up to `limit` notifications due for delivery, oldest first, for `claimMs` (database clock).
 * A notification waits while an older one of the same alert is undelivered, so that a receiver
 * never sees an alert resolved before it was raised.
 */
export async function claimNotifications(db: Queryable, instanceId: string, limit: number, claimMs: number): Promise<ClaimedNotification[]> {
  const { rows } = await db.query<{ seq: string; notification_id: string; attempts: number; body: AlertNotification }>(
    `WITH due AS (
       SELECT o.seq FROM ${O.name} o
        WHERE o.delivered_at IS NULL
          AND o.next_attempt_at <= now()
          AND (o.claimed_until IS NULL OR o.claimed_until < now())
          AND NOT EXISTS (SELECT 1 FROM ${O.name} e WHERE e.dedup_key = o.dedup_key AND e.delivered_at IS NULL AND e.seq < o.seq)
        ORDER BY o.seq
        LIMIT $2
        FOR UPDATE SKIP LOCKED
     )
     UPDATE ${O.name} o SET claimed_by = $1, claimed_until = now() + make_interval(secs => $3::double precision / 1000), attempts = o.attempts + 1
       FROM due WHERE o.seq = due.seq
     RETURNING o.seq, o.notification_id, o.attempts, o.body`,
    [instanceId, limit, claimMs],
  );
  // RETURNING keeps no order: delivery goes oldest first.
  return rows.sort((a, b) => Number(a.seq) - Number(b.seq)).map((r) => ({ notificationId: r.notification_id, attempts: r.attempts, body: r.body }));
}

export async function markDelivered(db: Queryable, notificationId: string, instanceId: string): Promise<void> {
  await db.query(`UPDATE ${O.name} SET delivered_at = now(), delivered_by = $2, claimed_by = NULL, claimed_until = NULL, last_error = NULL WHERE notification_id = $1`, [notificationId, instanceId]);
}

/**
 * A delivery that gave up, or a claim handed back: released, and due again after `retryInMs`. Only
 * while the claim is still `instanceId`'s: one that expired may be another member's by now.
 */
export async function markUndelivered(db: Queryable, notificationId: string, instanceId: string, error: string, retryInMs: number): Promise<void> {
  await db.query(
    `UPDATE ${O.name} SET claimed_by = NULL, claimed_until = NULL, last_error = $3, next_attempt_at = now() + make_interval(secs => $4::double precision / 1000)
      WHERE notification_id = $1 AND claimed_by = $2 AND delivered_at IS NULL`,
    [notificationId, instanceId, error, retryInMs],
  );
}

/** Undelivered notifications, and the age of the oldest (seconds). */
export async function outboxBacklog(db: Queryable): Promise<{ pending: number; oldestAgeSeconds: number | undefined }> {
  const { rows } = await db.query<{ pending: string; oldest: number | null }>(
    `SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at))::float8 AS oldest FROM ${O.name} WHERE delivered_at IS NULL`,
  );
  return { pending: Number(rows[0]?.pending ?? 0), oldestAgeSeconds: rows[0]?.oldest ?? undefined };
}

/** Delivered notifications older than `days` (the daily prune). */
export async function pruneOutbox(db: Queryable, days: number): Promise<number> {
  const result = await db.query(`DELETE FROM ${O.name} WHERE delivered_at < now() - make_interval(days => $1)`, [days]);
  return result.rowCount ?? 0;
}
