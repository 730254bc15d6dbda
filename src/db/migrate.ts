/**
 * Applies sql/migrations/NNNN_name.sql in order, one transaction each, under a PostgreSQL
 * advisory lock so instances starting together never race; records each in
 * migrations_applied with its sha256; refuses (exit 65) when an applied file has changed; and
 * ends by verifying the schema, re-applying the idempotent migrations where objects the code
 * needs were dropped after being recorded.
 *
 * Tables that already exist (made by hand, or changed since) are adopted first (db/adopt.ts), in
 * the transaction of the first migration that runs: the released migration files, whose checksums
 * existing databases recorded, stay as they are. What adoption cannot do alone stops `migrate`
 * before anything changes (exit 65), one line per blocker with the SQL that clears it.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExitCode, OperatorError, withCleanup } from '../errors.js';
import { LogEvent, type Logger } from '../log.js';
import { applyAdoption, describeBlocker, planAdoption, type AdoptionPlan } from './adopt.js';
import { inTransaction, sqlState, SqlState, withClient, type Pool, type PoolClient, type Queryable } from './pool.js';
import { migrationsTable as M } from './schema.js';
import { describeProblem, verifySchema, type SchemaProblem } from './verify.js';

/** Where the SQL ships: `<package>/sql/migrations`, two levels above both src/db and dist/db. */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../sql/migrations/', import.meta.url));

const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;
const LOCK_SQL = `SELECT pg_advisory_lock(hashtextextended('qbo-health-monitor.migrate', 0))`;
const UNLOCK_SQL = `SELECT pg_advisory_unlock(hashtextextended('qbo-health-monitor.migrate', 0))`;
/** How long to wait for another instance's migration before giving up (exit 75, retried). */
const LOCK_WAIT = '120s';
/** How long one migration may wait for a table lock held by live traffic. */
const STATEMENT_LOCK_WAIT = '30s';

export interface Migration {
  readonly version: string;
  readonly name: string;
  readonly file: string;
  readonly sql: string;
  readonly checksum: string;
}

export interface AppliedMigration {
  readonly version: string;
  readonly name: string;
  readonly checksum: string;
  readonly applied_at: Date;
  readonly execution_ms: number;
}

export interface MigrationPlan {
  readonly applied: readonly Migration[];
  readonly pending: readonly Migration[];
  /** Applied migrations whose file no longer has the recorded checksum. */
  readonly changed: readonly Migration[];
  /** Versions recorded in the database that this code does not ship (a newer release ran). */
  readonly unknown: readonly AppliedMigration[];
}

export interface MigrateReport {
  readonly applied: ReadonlyArray<{ version: string; name: string; ms: number }>;
  /** Schema problems found after applying, which re-applying the migrations repaired. */
  readonly repaired: readonly SchemaProblem[];
  readonly unknown: readonly AppliedMigration[];
  /** One line per existing table brought to the declared shape: rows kept, what changed. */
  readonly adopted: readonly string[];
}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const entries = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const misnamed = entries.filter((f) => !FILE_PATTERN.test(f));
  if (misnamed.length > 0) {
    // A file that does not match is a migration that would silently never run.
    throw new OperatorError(
      `migration files must be named NNNN_name.sql (lower case): ${misnamed.map((f) => path.join(dir, f)).join(', ')}`,
      ExitCode.schemaMismatch,
    );
  }
  const migrations: Migration[] = [];
  for (const file of entries) {
    const [, version, name] = FILE_PATTERN.exec(file) as RegExpExecArray;
    const sql = await readFile(path.join(dir, file), 'utf8');
    if (migrations.some((m) => m.version === version)) {
      throw new OperatorError(`two migration files share version ${version} in ${dir}`, ExitCode.schemaMismatch);
    }
    migrations.push({ version: version as string, name: name as string, file, sql, checksum: sha256(sql) });
  }
  return migrations;
}

export function planMigrations(migrations: readonly Migration[], recorded: readonly AppliedMigration[]): MigrationPlan {
  const byVersion = new Map(recorded.map((r) => [r.version, r]));
  const known = new Set(migrations.map((m) => m.version));
  return {
    applied: migrations.filter((m) => byVersion.has(m.version)),
    pending: migrations.filter((m) => !byVersion.has(m.version)),
    changed: migrations.filter((m) => {
      const r = byVersion.get(m.version);
      return r !== undefined && r.checksum !== m.checksum;
    }),
    unknown: recorded.filter((r) => !known.has(r.version)),
  };
}

async function readApplied(db: Queryable): Promise<AppliedMigration[]> {
  const exists = await db.query<{ present: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS present`, [M.name]);
  if (!exists.rows[0]?.present) return [];
  const result = await db.query<AppliedMigration>(
    `SELECT ${M.columnList(['version', 'name', 'checksum', 'applied_at', 'execution_ms'])} FROM ${M.name} ORDER BY ${M.col('version')}`,
  );
  return result.rows;
}

/** applied / pending / changed / unknown, without taking the lock or changing anything. */
export async function migrationStatus(pool: Pool, dir: string = MIGRATIONS_DIR): Promise<MigrationPlan> {
  const migrations = await loadMigrations(dir);
  return withClient(pool, async (client) => planMigrations(migrations, await readApplied(client)));
}

function changedError(changed: readonly Migration[], dir: string): OperatorError {
  const files = changed.map((m) => path.join(dir, m.file)).join(', ');
  return new OperatorError(
    `applied migration changed since it ran: ${files}. Applied migrations are immutable: restore the file as released and put the change in a new migration.`,
    ExitCode.schemaMismatch,
  );
}

/**
 * Runs one migration in its own transaction; `adoption`, when given, runs first in the same one, so
 * a failure leaves the adopted table exactly as it was.
 */
async function runMigrationSql(client: PoolClient, migration: Migration, record: boolean, adoption?: AdoptionPlan): Promise<number> {
  const started = performance.now();
  await inTransaction(client, async () => {
    await client.query(`SET LOCAL lock_timeout = '${STATEMENT_LOCK_WAIT}'`);
    if (adoption) {
      try {
        await applyAdoption(client, adoption);
      } catch (err) {
        throw new OperatorError(`adopting the existing tables failed, nothing was changed: ${(err as Error).message}`, ExitCode.schemaMismatch, {
          cause: err,
        });
      }
    }
    try {
      await client.query(migration.sql);
    } catch (err) {
      throw new OperatorError(`migration ${migration.file} failed: ${(err as Error).message}`, ExitCode.schemaMismatch, {
        cause: err,
      });
    }
    if (record) {
      await client.query(M.insert(['version', 'name', 'checksum', 'applied_at', 'execution_ms'], ''), [
        migration.version,
        migration.name,
        migration.checksum,
        new Date(),
        Math.round(performance.now() - started),
      ]);
    }
  });
  return Math.round(performance.now() - started);
}

async function withMigrationLock<T>(client: PoolClient, fn: () => Promise<T>): Promise<T> {
  await client.query(`SET lock_timeout = '${LOCK_WAIT}'`);
  try {
    await client.query(LOCK_SQL);
  } catch (err) {
    if (sqlState(err) === SqlState.lockNotAvailable) {
      throw new OperatorError(
        `another instance has held the migration lock for over ${LOCK_WAIT}; retry when it finishes`,
        ExitCode.temporaryFailure,
        { cause: err },
      );
    }
    throw err;
  }
  await client.query('RESET lock_timeout');
  return withCleanup(fn, () => client.query(UNLOCK_SQL));
}

export interface MigrateOptions {
  dir?: string;
}

export async function migrate(pool: Pool, log: Logger, opts: MigrateOptions = {}): Promise<MigrateReport> {
  const dir = opts.dir ?? MIGRATIONS_DIR;
  const migrations = await loadMigrations(dir);
  return withClient(pool, (client) =>
    withMigrationLock(client, async () => {
      const plan = planMigrations(migrations, await readApplied(client));
      if (plan.changed.length > 0) throw changedError(plan.changed, dir);
      if (plan.unknown.length > 0) {
        log.warn(
          { event: LogEvent.migrationUnknown, versions: plan.unknown.map((u) => `${u.version}_${u.name}`) },
          'the database has migrations this release does not know: a newer release migrated it; run that release or check its notes before downgrading',
        );
      }

      const adopted: string[] = [];
      const applied: Array<{ version: string; name: string; ms: number }> = [];
      if (plan.pending.length > 0) {
        const adoption = await adoptionOrRefusal(client);
        adopted.push(...adoption.notes);
        await client.query(`
          CREATE TABLE IF NOT EXISTS ${M.name} (
            version      text PRIMARY KEY,
            name         text NOT NULL,
            checksum     text NOT NULL,
            applied_at   timestamptz NOT NULL DEFAULT now(),
            execution_ms integer NOT NULL
          )`);
        for (const [i, migration] of plan.pending.entries()) {
          const adopting = i === 0 && adoption.statements.length > 0 ? adoption : undefined;
          const ms = await runMigrationSql(client, migration, true, adopting);
          applied.push({ version: migration.version, name: migration.name, ms });
          log.info(
            { event: LogEvent.migrationApplied, version: migration.version, name: migration.name, ms, ...(adopting ? { adopted: adopting.notes } : {}) },
            `applied migration ${migration.file}`,
          );
        }
      }

      const repaired = await verifySchema(client);
      if (repaired.length > 0) {
        const adoption = await adoptionOrRefusal(client);
        adopted.push(...adoption.notes);
        log.warn(
          { event: LogEvent.migrationReapplied, problems: repaired.map(describeProblem) },
          'objects the code needs are missing or differ although their migrations are recorded; re-applying the idempotent migrations',
        );
        for (const [i, migration] of migrations.entries()) {
          await runMigrationSql(client, migration, false, i === 0 && adoption.statements.length > 0 ? adoption : undefined);
        }
        const remaining = await verifySchema(client);
        if (remaining.length > 0) {
          throw new OperatorError(
            `schema still differs from the code after migrating:\n${remaining.map(describeProblem).join('\n')}`,
            ExitCode.schemaMismatch,
          );
        }
      }
      return { applied, repaired, unknown: plan.unknown, adopted };
    }),
  );
}

/** The adoption the migrations about to run need, or exit 65 with one line per blocker. */
async function adoptionOrRefusal(client: PoolClient): Promise<AdoptionPlan> {
  const adoption = await planAdoption(client, { migrationsWillRun: true });
  if (adoption.blockers.length > 0) {
    throw new OperatorError(adoption.blockers.map(describeBlocker).join('\n'), ExitCode.schemaMismatch);
  }
  return adoption;
}
