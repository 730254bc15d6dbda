/**
 * Folding: how recorded results reach the rollups. Recording inserts raw rows only; a half hour is
 * folded once it is closed, that is once it ended more than a grace ago (longer than a probe may
 * take between its checked_at and its commit), by one aggregate over the raw rows of every realm
 * for that half hour; a day is summed from its half hours once it is complete (db/rollups.ts).
 * The one-row table quickbooks_health_rollup_fold says how far (`folded_until`): the dashboard
 * reads the rollups before it (the open day from its half hours) and the raw rows from it on
 * (db/dashboard-queries.ts), so a result shows at once and is counted once.
 *
 * Every fold writes with replace semantics from the raw rows, under one transaction-scoped
 * advisory lock taken before the statements that read the raw rows: two folders (fleet members, a
 * late result's re-fold, `qbhealth rollup --rebuild`) run one after the other, the second seeing
 * what the first committed, so a fold that read an older snapshot can never overwrite a newer one.
 *
 * A result whose half hour is already folded (a spool replay, a probe that ran past the grace) is
 * re-folded in the transaction that inserts it (db/health-queries.ts): `refoldLateResults`.
 * Half hours beginning before `raw_pruned_before` (the prune's cutoff: their raw rows may be
 * partly gone) are never folded again; their rollups are kept as they are.
 */
import pg from 'pg';
import { withCleanup } from '../errors.js';
import { withClient, type Queryable } from './pool.js';
import { DAY_SECONDS, FOLD_DAYS_SQL, foldHalfHoursSql, HALF_HOUR_SECONDS } from './rollups.js';
import { rollupFoldTable as F } from './schema.js';

const HALF_HOUR_MS = HALF_HOUR_SECONDS * 1000;
const DAY_MS = DAY_SECONDS * 1000;

/** The least grace a half hour is given before it is folded. */
export const MIN_FOLD_GRACE_MS = 120_000;

/**
 * How long after its end a half hour is folded: a result is stamped when its probe starts
 * (PROBE_TIMEOUT_MS before it can be recorded, at most) and committed by group commit after it, so
 * the probe's deadline plus two minutes.
 */
export function foldGraceMs(probeTimeoutMs: number): number {
  return probeTimeoutMs + MIN_FOLD_GRACE_MS;
}

/**
 * A fold catches up at most this much per transaction: a backlog (after downtime, or folds that
 * failed) is folded two hours at a time, each its own transaction, so no statement aggregates
 * more than four half hours of raw rows (a few hundred thousand rows for 2,000 realms), well
 * inside the pool's statement timeout.
 */
export const FOLD_SPAN_MS = 4 * HALF_HOUR_MS;

/** The advisory lock every folder takes (two int4 keys: 'qbhm', 'fold'). */
const LOCK_KEYS = [0x7162686d, 0x666f6c64] as const;
/** Waits for the fold lock (held until the transaction ends). */
export const FOLD_LOCK_SQL = `SELECT pg_advisory_xact_lock(${LOCK_KEYS[0]}, ${LOCK_KEYS[1]})`;
const TRY_LOCK_SQL = `SELECT pg_try_advisory_xact_lock(${LOCK_KEYS[0]}, ${LOCK_KEYS[1]}) AS locked`;

const floorTo = (ms: number, step: number): number => Math.floor(ms / step) * step;
const ceilTo = (ms: number, step: number): number => Math.ceil(ms / step) * step;

export interface FoldState {
  /** Half hours before it are in the rollups; null when the state row is missing (read as nothing folded today). */
  readonly foldedUntil: Date | null;
  /** Half hours beginning before it are not folded again (their raw rows may be pruned). */
  readonly rawPrunedBefore: Date | null;
  /** The database's clock, or the `now` given. */
  readonly now: Date;
}

const STATE_SQL = `SELECT f.${F.col('folded_until')} AS folded_until, f.${F.col('raw_pruned_before')} AS raw_pruned_before,
       coalesce($1::timestamptz, now()) AS now
  FROM (SELECT 1) AS one LEFT JOIN ${F.name} f ON f.${F.col('singleton')}`;

const ADVANCE_SQL = `INSERT INTO ${F.name} (${F.col('singleton')}, ${F.col('folded_until')}) VALUES (true, $1)
  ON CONFLICT (${F.col('singleton')}) DO UPDATE SET ${F.col('folded_until')} = greatest(${F.name}.${F.col('folded_until')}, EXCLUDED.${F.col('folded_until')})`;

export async function readFoldState(db: Queryable, now?: Date): Promise<FoldState> {
  const row = (await db.query<{ folded_until: Date | null; raw_pruned_before: Date | null; now: Date }>(STATE_SQL, [now ?? null])).rows[0];
  if (!row) throw new Error(`${F.name}: the state query returned no row`);
  return { foldedUntil: row.folded_until, rawPrunedBefore: row.raw_pruned_before, now: row.now };
}

/** The first half hour that may be folded again: none beginning before the prune's cutoff. */
export function firstRefoldable(state: FoldState): number {
  return state.rawPrunedBefore === null ? -Infinity : ceilTo(state.rawPrunedBefore.getTime(), HALF_HOUR_MS);
}

/**
 * Folds the half hours of [from, to) (half-hour boundaries) of `realmIds` (undefined: every
 * realm) from the raw rows, then sums again the days among them that are complete (ended by
 * `foldedUntil`): a day is written once, when its last half hour is folded (or one of its half
 * hours re-folded); the open day is read from its half hours (db/dashboard-queries.ts). Run under
 * the fold lock. Returns the half-hour rows written.
 */
export async function foldRange(db: Queryable, from: number, to: number, foldedUntil: number, realmIds?: readonly string[]): Promise<number> {
  if (to <= from) return 0;
  const realms = realmIds === undefined ? null : [...realmIds];
  const written = await db.query(foldHalfHoursSql('replace'), [new Date(from), new Date(to), realms]);
  await foldCompleteDays(db, floorTo(from, DAY_MS), Math.min(ceilTo(to, DAY_MS), floorTo(foldedUntil, DAY_MS)), realmIds);
  return written.rowCount ?? 0;
}

/** Sums the days of [fromDay, toDay) (day boundaries, complete days) from their half hours; returns the day rows written. */
export async function foldCompleteDays(db: Queryable, fromDay: number, toDay: number, realmIds?: readonly string[]): Promise<number> {
  if (toDay <= fromDay) return 0;
  return (await db.query(FOLD_DAYS_SQL, [new Date(fromDay), new Date(toDay), realmIds === undefined ? null : [...realmIds]])).rowCount ?? 0;
}

/** Runs `fn` in a transaction on `db`: a client of its own when `db` is a pool. */
export async function inFoldTransaction<T>(db: Queryable, fn: (client: Queryable) => Promise<T>): Promise<T> {
  if (db instanceof pg.Pool) return withClient(db, (client) => inFoldTransaction(client, fn));
  await db.query('BEGIN');
  return withCleanup(
    () => fn(db),
    (failed) => db.query(failed ? 'ROLLBACK' : 'COMMIT'),
  );
}

export interface FoldOptions {
  /** How long after its end a half hour is folded (foldGraceMs). */
  readonly graceMs: number;
  /** The fold's clock (tests); default the database's. */
  readonly now?: Date;
  /** Wait for a fold running elsewhere instead of leaving the work to it (a command, a test). */
  readonly wait?: boolean;
}

export interface FoldOutcome {
  /** Half hours folded (per realm: rollup rows written). */
  readonly halfHourRows: number;
  /** The watermark afterwards. */
  readonly foldedUntil: Date | null;
  /** Another folder held the lock: it does the work (the timer tries again). */
  readonly busy: boolean;
}

/**
 * Folds every closed half hour after the watermark (all of them after downtime, FOLD_SPAN_MS per
 * transaction) and moves the watermark. Safe to run anywhere, any number of times at once.
 */
export async function foldClosedPeriods(db: Queryable, opts: FoldOptions): Promise<FoldOutcome> {
  let halfHourRows = 0;
  for (;;) {
    const step = await inFoldTransaction(db, async (client) => {
      if (opts.wait) await client.query(FOLD_LOCK_SQL);
      else if (!(await client.query<{ locked: boolean }>(TRY_LOCK_SQL)).rows[0]?.locked) return { busy: true as const };
      const state = await readFoldState(client, opts.now);
      const closedUntil = floorTo(state.now.getTime() - opts.graceMs, HALF_HOUR_MS);
      // Without its state row, the fold starts with today (what 0007 does).
      const from = Math.max(state.foldedUntil?.getTime() ?? floorTo(closedUntil, DAY_MS), firstRefoldable(state));
      const to = Math.min(closedUntil, floorTo(from, HALF_HOUR_MS) + FOLD_SPAN_MS);
      if (to <= from) return { rows: 0, done: true, foldedUntil: state.foldedUntil };
      const rows = await foldRange(client, from, to, to);
      await client.query(ADVANCE_SQL, [new Date(to)]);
      return { rows, done: to >= closedUntil, foldedUntil: new Date(to) };
    });
    if ('busy' in step) return { halfHourRows, foldedUntil: null, busy: true };
    halfHourRows += step.rows;
    if (step.done) return { halfHourRows, foldedUntil: step.foldedUntil, busy: false };
  }
}

/** A result recorded for a half hour that may already be folded: its half hour ended this long ago. */
export const LATE_AFTER_MS = 60_000;

/**
 * Whether a result recorded now may belong to a half hour a fold has already read: its half hour
 * ended more than LATE_AFTER_MS ago. The grace (at least MIN_FOLD_GRACE_MS) exceeds it by a
 * minute, room for the insert's own time and for this host's clock against the database's.
 */
export function mayBeFolded(checkedAt: Date, nowMs: number): boolean {
  return floorTo(checkedAt.getTime(), HALF_HOUR_MS) + HALF_HOUR_MS <= nowMs - LATE_AFTER_MS;
}

/**
 * Re-folds the (realm, half hour) pairs of `results` (a batch just inserted in the caller's
 * transaction, on `client`) whose half hour is already folded, from the raw rows. Waits for the
 * fold lock, so its reads see every fold committed before. Returns the half-hour rows rewritten.
 */
export async function refoldLateResults(client: Queryable, results: ReadonlyArray<{ realm_id: string | null; checked_at: Date }>): Promise<number> {
  if (results.length === 0) return 0;
  await client.query(FOLD_LOCK_SQL);
  const state = await readFoldState(client);
  if (state.foldedUntil === null) return 0;
  const until = state.foldedUntil.getTime();
  const first = firstRefoldable(state);
  const late = results
    .map((r) => ({ realmId: r.realm_id, period: floorTo(r.checked_at.getTime(), HALF_HOUR_MS) }))
    .filter((r): r is { realmId: string; period: number } => r.realmId !== null && r.period < until && r.period >= first)
    .sort((a, b) => a.period - b.period);
  // Runs of nearby half hours, each re-folded by one statement (and its complete days by one more):
  // a replay batch covers a stretch of time, so this is one or two statements, not one per half hour.
  let rows = 0;
  let run: { from: number; last: number; realms: Set<string> } | undefined;
  const foldRun = async (): Promise<void> => {
    if (run) rows += await foldRange(client, run.from, run.last + HALF_HOUR_MS, until, [...run.realms].sort());
  };
  for (const r of late) {
    if (run && r.period - run.last <= REFOLD_GAP_MS) {
      run.last = r.period;
      run.realms.add(r.realmId);
      continue;
    }
    await foldRun();
    run = { from: r.period, last: r.period, realms: new Set([r.realmId]) };
  }
  await foldRun();
  return rows;
}

/** Late half hours this close are re-folded together (the half hours between them too, from the same raw rows). */
const REFOLD_GAP_MS = 2 * HALF_HOUR_MS;

/** The prune deleted raw rows before `cutoff`: half hours beginning before it are not folded again. */
export const RECORD_PRUNE_SQL = `UPDATE ${F.name} SET ${F.col('raw_pruned_before')} = greatest(coalesce(${F.col('raw_pruned_before')}, $1::timestamptz), $1::timestamptz)`;

