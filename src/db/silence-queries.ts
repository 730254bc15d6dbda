/**
 * Named queries on quickbooks_alert_silences: create, end early (remove), and read the silences
 * active at an instant. Times are the database's clock unless the caller gives one, so every
 * member of a fleet and the `qbhealth silence` command agree on when a silence starts and ends.
 */
import type { AlertKind } from '../alert.js';
import type { Silence } from '../dashboard-model.js';
import type { Queryable } from './pool.js';
import { silencesTable as S } from './schema.js';

const COLUMNS = ['id', 'realm_id', 'kind', 'starts_at', 'ends_at', 'reason', 'created_by', 'created_at', 'removed_at', 'removed_by'] as const;

interface SilenceRow {
  id: string;
  realm_id: string | null;
  kind: string | null;
  starts_at: Date;
  ends_at: Date;
  reason: string;
  created_by: string;
  created_at: Date;
  removed_at: Date | null;
  removed_by: string | null;
}

/** A silence as the escalation matches it (instants as dates). */
export interface ActiveSilence {
  readonly id: string;
  readonly realmId: string | null;
  readonly kind: string | null;
  readonly startsAt: Date;
  readonly endsAt: Date;
}

/** Whether silence `s` matches alerts of `kind` about `subject` (a realm id, or a system subject). */
export function silenceCovers(s: { readonly realmId: string | null; readonly kind: string | null }, subject: string, kind: string): boolean {
  return (s.realmId === null || s.realmId === subject) && (s.kind === null || s.kind === kind);
}

/** A silence row, for the command that created or removed it. */
export interface SilenceRecord extends Silence {
  readonly createdAt: string;
  readonly removedAt: string | null;
  readonly removedBy: string | null;
}

const modelOf = (r: SilenceRow): Silence => ({
  id: r.id,
  realmId: r.realm_id,
  kind: r.kind,
  startsAt: r.starts_at.toISOString(),
  endsAt: r.ends_at.toISOString(),
  reason: r.reason,
  createdBy: r.created_by,
});

const recordOf = (r: SilenceRow): SilenceRecord => ({
  ...modelOf(r),
  createdAt: r.created_at.toISOString(),
  removedAt: r.removed_at?.toISOString() ?? null,
  removedBy: r.removed_by,
});

export interface NewSilence {
  /** null: every realm (then `kind` is set). */
  readonly realmId: string | null;
  /** null: every kind of the realm. */
  readonly kind: AlertKind | null;
  readonly durationMs: number;
  readonly reason: string;
  /** The OS user who asked for it. */
  readonly createdBy: string;
}

/** A silence from now (the database's clock) for `durationMs`. */
export async function createSilence(db: Queryable, s: NewSilence): Promise<SilenceRecord> {
  const { rows } = await db.query<SilenceRow>(
    `INSERT INTO ${S.name} (realm_id, kind, starts_at, ends_at, reason, created_by)
     VALUES ($1, $2, now(), now() + make_interval(secs => $3::double precision / 1000), $4, $5)
     RETURNING ${S.columnList(COLUMNS)}`,
    [s.realmId, s.kind, s.durationMs, s.reason, s.createdBy],
  );
  return recordOf(rows[0] as SilenceRow);
}

export type RemoveOutcome =
  | { readonly outcome: 'removed'; readonly silence: SilenceRecord }
  /** Already removed, or already over: nothing changed. */
  | { readonly outcome: 'not_active'; readonly silence: SilenceRecord }
  | { readonly outcome: 'unknown' };

/** Ends a silence now, if it is active; the alerts it held back are then notified (escalate/silences.ts). */
export async function removeSilence(db: Queryable, id: string, removedBy: string): Promise<RemoveOutcome> {
  const removed = await db.query<SilenceRow>(
    `UPDATE ${S.name} SET removed_at = now(), removed_by = $2
      WHERE id = $1::bigint AND removed_at IS NULL AND ends_at > now()
      RETURNING ${S.columnList(COLUMNS)}`,
    [id, removedBy],
  );
  if (removed.rows[0]) return { outcome: 'removed', silence: recordOf(removed.rows[0]) };
  const found = await db.query<SilenceRow>(`SELECT ${S.columnList(COLUMNS)} FROM ${S.name} WHERE id = $1::bigint`, [id]);
  return found.rows[0] ? { outcome: 'not_active', silence: recordOf(found.rows[0]) } : { outcome: 'unknown' };
}

const ACTIVE_SQL = `SELECT ${S.columnList(COLUMNS)} FROM ${S.name}
  WHERE removed_at IS NULL AND starts_at <= COALESCE($1::timestamptz, now()) AND ends_at > COALESCE($1::timestamptz, now())
  ORDER BY ends_at, id`;

/** The silences active at `now` (default: the database's clock), ending soonest first: the dashboard's and `silence --list`'s. */
export async function listSilences(db: Queryable, opts: { readonly now?: Date } = {}): Promise<Silence[]> {
  const { rows } = await db.query<SilenceRow>(ACTIVE_SQL, [opts.now ?? null]);
  return rows.map(modelOf);
}

/** The silences active at `at` (default: the database's clock), as the escalation matches them. */
export async function activeSilences(db: Queryable, at?: Date): Promise<ActiveSilence[]> {
  const { rows } = await db.query<SilenceRow>(ACTIVE_SQL, [at ?? null]);
  return rows.map((r) => ({ id: r.id, realmId: r.realm_id, kind: r.kind, startsAt: r.starts_at, endsAt: r.ends_at }));
}

/** Silences that ended (expired or removed) more than `days` ago (the daily prune). */
export async function pruneSilences(db: Queryable, days: number, now?: Date): Promise<number> {
  const result = await db.query(
    `DELETE FROM ${S.name} WHERE LEAST(ends_at, COALESCE(removed_at, ends_at)) < COALESCE($2::timestamptz, now()) - make_interval(days => $1)`,
    [days, now ?? null],
  );
  return result.rowCount ?? 0;
}
