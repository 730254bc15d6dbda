import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { planAdoption } from '../src/db/adopt.js';
import { createPool } from '../src/db/pool.js';
import { loadMigrations, migrate, migrationStatus, MIGRATIONS_DIR, sha256 } from '../src/db/migrate.js';
import { healthTable } from '../src/db/schema.js';
import { describeProblem, verifySchema } from '../src/db/verify.js';
import { OperatorError } from '../src/errors.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';

const databases: TestDatabase[] = [];
afterEach(async () => {
  await Promise.all(databases.splice(0).map((db) => db.drop()));
});

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  databases.push(db);
  return db;
}

async function runMigrate(db: TestDatabase, dir?: string) {
  const capture = captureLog('info');
  const pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, capture.log);
  try {
    const report = await migrate(pool, capture.log, dir ? { dir } : {});
    return { report, capture };
  } finally {
    await pool.end();
  }
}

/** Everything a migration could change: columns, defaults, constraints, indexes, sequences, and every row's version. */
async function snapshot(db: TestDatabase): Promise<unknown> {
  const q = async (sql: string) => (await db.query(sql)).rows;
  return {
    columns: await q(`SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
                        FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`),
    constraints: await q(`SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS def
                            FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2`),
    indexes: await q(`SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2`),
    sequences: await q(`SELECT sequencename, data_type, last_value, max_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`),
    relfilenodes: await q(`SELECT relname, relfilenode FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1`),
    health: await q(`SELECT xmin::text, * FROM quickbooks_connection_health ORDER BY id`),
    migrations: await q(`SELECT xmin::text, * FROM migrations_applied ORDER BY version`),
  };
}

/** The incident's emergency fix, verbatim, plus the index it mentions having added. */
const INCIDENT_SQL = `
  CREATE TABLE quickbooks_connection_health (
      id SERIAL PRIMARY KEY,
      connected BOOLEAN NOT NULL,
      error TEXT,
      checked_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT NOW(),
      created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT NOW()
  );
  CREATE INDEX idx_qb_health_checked_at ON quickbooks_connection_health (checked_at);`;

describe('migrations', () => {
  it('migrate on a fresh database creates the schema the code declares and records each file', async () => {
    const db = await freshDatabase();
    const { report, capture } = await runMigrate(db);
    const files = await loadMigrations();
    expect(report.applied.map((a) => a.version)).toEqual(files.map((f) => f.version));
    expect(report.repaired).toEqual([]);
    expect(report.adopted).toEqual([]);
    expect(await verifySchema(db.client)).toEqual([]);
    // The declarations (defaults, NOT NULL, keys) say exactly what the migrations make: nothing to adopt.
    expect(await planAdoption(db.client, { migrationsWillRun: true })).toEqual({ statements: [], blockers: [], notes: [] });

    const rows = (await db.query('SELECT version, name, checksum, applied_at, execution_ms FROM migrations_applied ORDER BY version')).rows;
    const first = await readFile(path.join(MIGRATIONS_DIR, '0001_initial_schema.sql'), 'utf8');
    expect(rows[0]).toMatchObject({ version: '0001', name: 'initial_schema', checksum: sha256(first) });
    expect(rows[0].execution_ms).toBeGreaterThanOrEqual(0);
    expect(Math.abs(rows[0].applied_at.getTime() - Date.now())).toBeLessThan(60_000);
    expect(capture.byEvent('migration.applied').map((e) => e.version)).toEqual(files.map((f) => f.version));
  });

  it('a second migrate is a no-op', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    const before = await snapshot(db);
    const { report, capture } = await runMigrate(db);
    expect(report.applied).toEqual([]);
    expect(report.repaired).toEqual([]);
    expect(capture.byEvent('migration.applied')).toEqual([]);
    expect(await snapshot(db)).toEqual(before);
  });

  it('every migration re-run on a migrated database changes nothing', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    await db.query(
      `INSERT INTO quickbooks_connection_health (connected, error, realm_id, probe_id, status, error_code)
       VALUES (true, NULL, '9130', gen_random_uuid(), 'pass', 'ok'), (false, 'boom', '9130', gen_random_uuid(), 'fail', 'server_error')`,
    );
    const before = await snapshot(db);
    for (const migration of await loadMigrations()) {
      await db.query('BEGIN');
      await db.query(migration.sql);
      await db.query('COMMIT');
      expect(await snapshot(db), `re-running ${migration.file}`).toEqual(before);
    }
  });

  it.each([
    // Database default zone America/St_Johns (UTC-03:30 in December): wall-clock 04:00 there is 07:30Z.
    ['the server default zone', undefined, '2025-12-28T07:30:00.000Z'],
    ['a database-level zone', 'UTC', '2025-12-28T04:00:00.000Z'],
  ])('adopts the incident\'s hand-made table with its rows (%s)', async (_label, databaseZone, expectedInstant) => {
    const db = await freshDatabase();
    if (databaseZone) await db.query(`ALTER DATABASE ${db.name} SET timezone = '${databaseZone}'`);
    // The application that wrote these rows used fresh sessions, which see the database's zone.
    const app = new pg.Client({ connectionString: db.url });
    await app.connect();
    await app.query(INCIDENT_SQL);
    await app.query(`INSERT INTO quickbooks_connection_health (connected, error, checked_at, created_at)
                    VALUES (true, NULL, '2025-12-28 04:00:00', '2025-12-28 04:00:01'),
                           (false, 'QuickBooks token expired', '2025-12-28 04:05:00', '2025-12-28 04:05:01')`);
    await app.query(`INSERT INTO quickbooks_connection_health (connected) VALUES (true)`);
    await app.end();
    const legacy = (await db.query('SELECT id, connected, error FROM quickbooks_connection_health ORDER BY id')).rows;

    const { report } = await runMigrate(db);
    expect(report.applied.map((a) => a.version)).toContain('0001');
    expect(await verifySchema(db.client)).toEqual([]);

    const rows = (await db.query(`SELECT id, connected, error, checked_at, created_at, status FROM quickbooks_connection_health ORDER BY id`)).rows;
    expect(rows.map(({ id, connected, error }) => ({ id: Number(id), connected, error }))).toEqual(legacy);
    expect(rows[0].checked_at.toISOString()).toBe(expectedInstant);
    expect(rows[1].created_at.getTime() - rows[1].checked_at.getTime()).toBe(1000);
    expect(rows.map((r) => r.status)).toEqual(['pass', 'fail', 'pass']);
    // A row written by default "now" in the old table is still about now as an instant.
    expect(Math.abs(rows[2].checked_at.getTime() - Date.now())).toBeLessThan(60_000);

    const types = (await db.query(`SELECT column_name, data_type FROM information_schema.columns
                                    WHERE table_name = 'quickbooks_connection_health' AND column_name IN ('id', 'checked_at', 'created_at')
                                    ORDER BY 1`)).rows;
    expect(types).toEqual([
      { column_name: 'checked_at', data_type: 'timestamp with time zone' },
      { column_name: 'created_at', data_type: 'timestamp with time zone' },
      { column_name: 'id', data_type: 'bigint' },
    ]);
    const seq = (await db.query(`SELECT data_type FROM pg_sequences WHERE sequencename = 'quickbooks_connection_health_id_seq'`)).rows;
    expect(seq).toEqual([{ data_type: 'bigint' }]);
    // The hand-made checked_at index is reused, not duplicated.
    const onCheckedAt = (await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'quickbooks_connection_health'
                                           AND indexdef LIKE '%USING btree (checked_at)'`)).rows;
    expect(onCheckedAt).toEqual([{ indexname: 'idx_qb_health_checked_at' }]);
    // New rows continue the old id sequence and fit the new columns.
    const inserted = await db.query(healthTable.insert(['connected', 'realm_id', 'status', 'error_code'], 'RETURNING id'), [true, '4620', 'pass', 'ok']);
    expect(Number(inserted.rows[0].id)).toBe(4);
  });

  it('refuses an applied migration whose file changed, naming the file, and applies nothing', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qbhm-migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    const file = path.join(dir, '0001_initial_schema.sql');
    await writeFile(file, `${await readFile(file, 'utf8')}\n-- edited after release\n`);
    await writeFile(path.join(dir, '0999_later.sql'), 'CREATE TABLE later_thing (id int);');

    const failure = await runMigrate(db, dir).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(OperatorError);
    expect((failure as OperatorError).exitCode).toBe(65);
    expect((failure as OperatorError).message).toContain(file);
    expect((await db.query(`SELECT to_regclass('later_thing') AS t`)).rows[0].t).toBeNull();
  });

  it('refuses a migration file whose name would keep it from ever running', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qbhm-migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
    await writeFile(path.join(dir, '2-add-index.sql'), 'SELECT 1;');
    await expect(loadMigrations(dir)).rejects.toThrow(/must be named NNNN_name\.sql.*2-add-index\.sql/);
  });

  it('warns about versions in the database that this release does not know', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    await db.query(`INSERT INTO migrations_applied VALUES ('9001', 'from_the_future', 'abc', now(), 1)`);
    const { report, capture } = await runMigrate(db);
    expect(report.unknown.map((u) => u.version)).toEqual(['9001']);
    expect(capture.byEvent('migration.unknown')).toEqual([expect.objectContaining({ level: 40, versions: ['9001_from_the_future'] })]);
  });

  it('restores objects dropped after their migration ran, and says so', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    await db.query('DROP TABLE quickbooks_connection_health');
    await db.query('ALTER TABLE quickbooks_oauth_tokens DROP COLUMN revision');
    const { report, capture } = await runMigrate(db);
    expect(report.repaired.map(describeProblem)).toEqual([
      'missing table quickbooks_connection_health',
      'missing column quickbooks_oauth_tokens.revision',
    ]);
    expect(capture.byEvent('migration.reapplied')).toHaveLength(1);
    expect(await verifySchema(db.client)).toEqual([]);
  });

  it('status lists pending, then applied, then changed', async () => {
    const db = await freshDatabase();
    const capture = captureLog();
    const pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, capture.log);
    try {
      expect((await migrationStatus(pool)).pending.map((m) => m.file)).toContain('0001_initial_schema.sql');
      await migrate(pool, capture.log);
      const after = await migrationStatus(pool);
      expect([after.pending, after.changed]).toEqual([[], []]);
      await db.query(`UPDATE migrations_applied SET checksum = 'tampered' WHERE version = '0001'`);
      expect((await migrationStatus(pool)).changed.map((m) => m.file)).toEqual(['0001_initial_schema.sql']);
    } finally {
      await pool.end();
    }
  });
});
