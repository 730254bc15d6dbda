/**
 * `qbhealth rollup --rebuild`: recomputes the rollups from the raw rows, needed after a table was
 * adopted or the rollups arrived with an upgrade (history recorded before has none). And the check
 * that tells an operator so (`rollupCoverage`, `warnWhenRollupsIncomplete`).
 *
 * The same SQL as the fold (db/rollup-fold.ts, db/rollups.ts), over everything already folded
 * (before the watermark: later half hours are read from the raw rows anyway), one transaction per
 * realm and chunk of days under the fold lock, so no lock is held for long and no fold runs
 * meanwhile; it deletes the realm's rollups in the chunk and writes them again from the raw rows.
 * Running it again gives the same rollups.
 *
 * Rollups outlive the raw rows (ROLLUP_RETENTION_DAYS > HISTORY_RETENTION_DAYS), so a rebuild
 * must not shrink what pruning took from under them: half hours that begin before the prune's
 * cutoff or the oldest raw row (whose rows may have been partly pruned) are only filled when they
 * have no rollup, never replaced; periods without any raw row are left alone. Complete days are
 * the sums of their half hours (the open day has no row: it is read from its half hours).
 */
import { LogEvent, type Logger } from '../log.js';
import { inTransaction, withClient, type Pool, type PoolClient, type Queryable } from './pool.js';
import { firstRefoldable, foldCompleteDays, FOLD_LOCK_SQL, readFoldState } from './rollup-fold.js';
import { DAY_SECONDS, foldHalfHoursSql, HALF_HOUR_SECONDS } from './rollups.js';
import { dayRollupTable as D, halfHourRollupTable as HH, healthTable as H, rollupFoldTable as F } from './schema.js';

export const REBUILD_CHUNK_DAYS = 30;
/** How long a chunk waits for a fold in progress before giving up (exit 75, retried). */
const LOCK_WAIT = '30s';
const DAY_MS = DAY_SECONDS * 1000;

// Every realm in the raw rows, one index probe each on (realm_id, checked_at) instead of a scan.
const REALMS_SQL = `WITH RECURSIVE realms AS (
    (SELECT ${H.col('realm_id')} FROM ${H.name} WHERE ${H.col('realm_id')} IS NOT NULL ORDER BY ${H.col('realm_id')} LIMIT 1)
    UNION ALL
    SELECT (SELECT h.${H.col('realm_id')} FROM ${H.name} h WHERE h.${H.col('realm_id')} > realms.realm_id ORDER BY h.${H.col('realm_id')} LIMIT 1)
      FROM realms WHERE realms.realm_id IS NOT NULL)
  SELECT realm_id FROM realms WHERE realm_id IS NOT NULL`;

const REALM_RANGE_SQL = `SELECT min(${H.col('checked_at')}) AS first, max(${H.col('checked_at')}) AS last FROM ${H.name} WHERE ${H.col('realm_id')} = $1`;
const OLDEST_SQL = `SELECT min(${H.col('checked_at')}) AS oldest FROM ${H.name}`;
const COUNT_SQL = `SELECT count(*)::int AS n FROM ${H.name} WHERE ${H.col('realm_id')} = $1 AND ${H.col('checked_at')} >= $2 AND ${H.col('checked_at')} < $3`;

const DELETE_SQL = (table: string): string => `DELETE FROM ${table} WHERE realm_id = $1 AND period_start >= $2 AND period_start < $3`;

export interface RealmRebuild {
  readonly realmId: string;
  /** Raw rows read. */
  readonly rows: number;
  /** Rollup rows written. */
  readonly halfHours: number;
  readonly days: number;
  readonly from: Date;
  readonly to: Date;
}

export interface RebuildOutcome {
  readonly realms: readonly RealmRebuild[];
  /** The oldest raw row: periods starting before it were only filled where empty. */
  readonly oldestRaw: Date | null;
}

export interface RebuildOptions {
  readonly realmIds?: readonly string[];
  readonly chunkDays?: number;
  /** Told after each realm, for a command's progress lines. */
  readonly onRealm?: (r: RealmRebuild) => void;
}

const ceilTo = (at: number, seconds: number): number => Math.ceil(at / (seconds * 1000)) * seconds * 1000;
const floorTo = (at: Date, seconds: number): Date => new Date(Math.floor(at.getTime() / (seconds * 1000)) * seconds * 1000);

interface ChunkOutcome {
  rows: number;
  halfHours: number;
  days: number;
}

/** One realm's rollups of [from, to) from its raw rows, up to the watermark, in one transaction under the fold lock. */
async function rebuildChunk(client: PoolClient, realmId: string, from: number, to: number, oldest: Date): Promise<ChunkOutcome> {
  return inTransaction(client, async () => {
    await client.query(`SET LOCAL lock_timeout = '${LOCK_WAIT}'`);
    await client.query(FOLD_LOCK_SQL);
    const state = await readFoldState(client);
    const end = Math.min(to, state.foldedUntil?.getTime() ?? -Infinity);
    if (end <= from) return { rows: 0, halfHours: 0, days: 0 };
    // Half hours (and days) that may have lost raw rows to the prune are filled, never replaced.
    const intact = Math.max(firstRefoldable(state), ceilTo(oldest.getTime(), HALF_HOUR_SECONDS));
    const realm = [realmId];
    await client.query(DELETE_SQL(HH.name), [realmId, new Date(Math.max(from, intact)), new Date(end)]);
    await client.query(DELETE_SQL(D.name), [realmId, new Date(Math.max(from, ceilTo(intact, DAY_SECONDS))), new Date(end)]);
    const rows = (await client.query<{ n: number }>(COUNT_SQL, [realmId, new Date(from), new Date(end)])).rows[0]?.n ?? 0;
    const halfHours = (await client.query(foldHalfHoursSql('fill'), [new Date(from), new Date(end), realm])).rowCount ?? 0;
    // Complete days only: the open one (the watermark's) is read from its half hours.
    const days = await foldCompleteDays(client, from, Math.floor(end / DAY_MS) * DAY_MS, realm);
    return { rows, halfHours, days };
  });
}

/** Recomputes the rollups of every realm in the raw rows (or of `realmIds`) from those rows. */
export async function rebuildRollups(pool: Pool, log: Logger, opts: RebuildOptions = {}): Promise<RebuildOutcome> {
  const chunkMs = (opts.chunkDays ?? REBUILD_CHUNK_DAYS) * DAY_MS;
  return withClient(pool, async (client) => {
    const oldest = (await client.query<{ oldest: Date | null }>(OLDEST_SQL)).rows[0]?.oldest ?? null;
    const realmIds = opts.realmIds ?? (await client.query<{ realm_id: string }>(REALMS_SQL)).rows.map((r) => r.realm_id);
    const realms: RealmRebuild[] = [];
    for (const realmId of oldest === null ? [] : realmIds) {
      const range = (await client.query<{ first: Date | null; last: Date | null }>(REALM_RANGE_SQL, [realmId])).rows[0];
      if (!range?.first || !range.last) continue;
      const from = floorTo(range.first, DAY_SECONDS);
      const to = new Date(floorTo(range.last, DAY_SECONDS).getTime() + DAY_MS);
      let rows = 0;
      let halfHours = 0;
      let days = 0;
      for (let start = from.getTime(); start < to.getTime(); start += chunkMs) {
        const done = await rebuildChunk(client, realmId, start, Math.min(start + chunkMs, to.getTime()), oldest as Date);
        rows += done.rows;
        halfHours += done.halfHours;
        days += done.days;
      }
      const rebuilt = { realmId, rows, halfHours, days, from, to };
      log.info({ event: LogEvent.rollupRebuilt, ...rebuilt }, `rebuilt the rollups of realm ${realmId} from ${rows} raw row(s)`);
      opts.onRealm?.(rebuilt);
      realms.push(rebuilt);
    }
    return { realms, oldestRaw: oldest };
  });
}

export interface RollupCoverage {
  /** The oldest raw row with a realm, null when there is none. */
  readonly rawFrom: Date | null;
  /** The oldest day rollup, null when there is none. */
  readonly rollupsFrom: Date | null;
  /** Raw history older than the rollups: the dashboard misses it until `qbhealth rollup --rebuild`. */
  readonly incomplete: boolean;
}

/**
 * Where the rollups' coverage starts: their first half hour, or where folding started (the day
 * the rollups came in) while nothing is folded yet. Raw rows from there on are folded by the
 * daemons, or read as they are until then; older ones only `qbhealth rollup --rebuild` brings in.
 */
const COVERAGE_SQL = `SELECT
    (SELECT min(${H.col('checked_at')}) FROM ${H.name} WHERE ${H.col('realm_id')} IS NOT NULL) AS raw_from,
    LEAST((SELECT min(period_start) FROM ${HH.name}), (SELECT folded_until FROM ${F.name})) AS rollups_from`;

/** Whether the rollups cover the raw history (two index reads). */
export async function rollupCoverage(db: Queryable): Promise<RollupCoverage> {
  const row = (await db.query<{ raw_from: Date | null; rollups_from: Date | null }>(COVERAGE_SQL)).rows[0];
  const rawFrom = row?.raw_from ?? null;
  const rollupsFrom = row?.rollups_from ?? null;
  const incomplete = rawFrom !== null && (rollupsFrom === null || floorTo(rawFrom, HALF_HOUR_SECONDS).getTime() < rollupsFrom.getTime());
  return { rawFrom, rollupsFrom, incomplete };
}

/** What to tell an operator when raw history is missing from the rollups. */
export function describeIncompleteRollups(c: RollupCoverage): string {
  const since = c.rollupsFrom === null ? 'the rollups are empty' : `the rollups start at ${c.rollupsFrom.toISOString()}`;
  return `health history from ${c.rawFrom?.toISOString() ?? '?'} on is not in the rollups (${since}): the dashboard's history misses it until \`qbhealth rollup --rebuild\` is run`;
}

/**
 * At daemon start: a warning (`rollup.missing`) when raw history predates the rollups, as after an
 * upgrade or an adoption. Never throws: a failed check is logged (`rollup.check_failed`) and the
 * daemon carries on, since it changes nothing about probing or recording.
 */
export async function warnWhenRollupsIncomplete(db: Queryable, log: Logger): Promise<RollupCoverage | undefined> {
  let coverage: RollupCoverage;
  try {
    coverage = await rollupCoverage(db);
  } catch (err) {
    log.warn({ event: LogEvent.rollupCheckFailed, err }, 'could not check whether the rollups cover the health history');
    return undefined;
  }
  if (coverage.incomplete) {
    log.warn({ event: LogEvent.rollupMissing, rawFrom: coverage.rawFrom, rollupsFrom: coverage.rollupsFrom }, describeIncompleteRollups(coverage));
  }
  return coverage;
}
