/**
 * Adoption of tables that exist before `migrate` first runs, whatever their shape, as operators
 * made them: nullable columns, other columns, other types, another owner. Rows are counted before
 * and after; where adoption cannot proceed, `migrate` and `check-schema` must say exactly what to
 * run, and nothing may change until it is run.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { UNKNOWN_OUTCOME } from '../src/db/adopt.js';
import { createPool } from '../src/db/pool.js';
import { migrate } from '../src/db/migrate.js';
import { healthTable } from '../src/db/schema.js';
import { verifySchema } from '../src/db/verify.js';
import { runQbhealth } from './support/cli.js';
import { adminUrl, createTestDatabase, type TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';

const databases: TestDatabase[] = [];
const roles: string[] = [];
afterEach(async () => {
  await Promise.all(databases.splice(0).map((db) => db.drop()));
  // Roles belong to the cluster, not to the dropped database.
  for (const role of roles.splice(0)) await asAdmin(`DROP ROLE IF EXISTS ${role}`);
});

async function asAdmin(sql: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(sql);
  } finally {
    await admin.end();
  }
}

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  databases.push(db);
  return db;
}

/** A login role that is not a superuser, and DATABASE_URL for it. */
async function appRole(db: TestDatabase): Promise<{ role: string; url: string }> {
  const role = `qbhm_app_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  await asAdmin(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
  roles.push(role);
  const url = new URL(db.url);
  url.username = role;
  url.password = password;
  return { role, url: url.toString() };
}

/** Arranges as the application that wrote the hand-made rows did: a fresh session in the database's zone. */
async function arrange(db: TestDatabase, sql: string): Promise<void> {
  const app = new pg.Client({ connectionString: db.url });
  await app.connect();
  try {
    await app.query(sql);
  } finally {
    await app.end();
  }
}

async function rowCount(db: TestDatabase): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM quickbooks_connection_health')).rows[0]!.n;
}

async function columnType(db: TestDatabase, column: string): Promise<string | undefined> {
  const rows = (await db.query(`SELECT data_type FROM information_schema.columns WHERE table_name = 'quickbooks_connection_health' AND column_name = $1`, [column])).rows;
  return rows[0]?.data_type as string | undefined;
}

async function runMigrate(db: TestDatabase) {
  const capture = captureLog('info');
  const pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, capture.log);
  try {
    return await migrate(pool, capture.log);
  } finally {
    await pool.end();
  }
}

/** What the monitor writes after adoption must go in: one probe result, as the recorder inserts it. */
async function insertProbeRow(db: TestDatabase): Promise<void> {
  await db.query(
    healthTable.insert(['probe_id', 'realm_id', 'connected', 'status', 'error_code', 'error', 'checked_at'], 'ON CONFLICT (probe_id) DO NOTHING'),
    ['6f1d2c1e-6b4b-4e43-9e5c-3b2a1f0e9d8c', '4620', true, 'pass', 'ok', null, new Date()],
  );
}

/** The SQL a blocker line ends with (one statement or a few). */
function sqlOf(line: string): string {
  const match = /: ((?:ALTER|GRANT|DELETE|UPDATE)\b.*;)/.exec(line);
  if (!match) throw new Error(`no SQL in: ${line}`);
  return match[1]!;
}

describe('adoption of a hand-made quickbooks_connection_health', () => {
  it('the incident table with nullable columns: migrate backfills every NULL and check-schema passes after it', async () => {
    const db = await freshDatabase();
    await arrange(
      db,
      `CREATE TABLE quickbooks_connection_health (
         id SERIAL PRIMARY KEY,
         connected BOOLEAN,
         error TEXT,
         checked_at TIMESTAMP WITHOUT TIME ZONE DEFAULT NOW(),
         created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT NOW()
       );
       INSERT INTO quickbooks_connection_health (connected, error, checked_at, created_at) VALUES
         (true,  NULL,                       '2025-12-28 04:00:00', '2025-12-28 04:00:01'),
         (false, 'QuickBooks token expired', '2025-12-28 04:05:00', '2025-12-28 04:05:00'),
         (NULL,  'invalid_grant',            '2025-12-28 04:10:00', NULL),
         (NULL,  NULL,                       NULL,                  '2025-12-28 04:15:00'),
         (true,  NULL,                       NULL,                  NULL);`,
    );
    expect(await rowCount(db)).toBe(5);

    const before = await runQbhealth(['check-schema'], { DATABASE_URL: db.url });
    expect(before.code).toBe(65);
    expect(before.stdout).toContain('column quickbooks_connection_health.connected must be NOT NULL');
    expect(before.stderr).toMatch(/; run `qbhealth migrate`\n$/);

    const migrated = await runQbhealth(['migrate'], { DATABASE_URL: db.url });
    expect(migrated.stderr).not.toMatch(/"level":(50|60)/);
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/^adopted quickbooks_connection_health: kept its 5 rows; .*connected derived for 1 row from error, false for 1 row that recorded no outcome/m);
    expect(await rowCount(db)).toBe(5);
    expect(await runQbhealth(['check-schema'], { DATABASE_URL: db.url })).toMatchObject({ code: 0, stdout: 'schema matches the code\n' });

    const rows = (await db.query(`SELECT id::int, connected, error, status, checked_at, created_at FROM quickbooks_connection_health ORDER BY id`)).rows;
    expect(rows.map((r) => [r.id, r.connected, r.status])).toEqual([
      [1, true, 'pass'],
      [2, false, 'fail'],
      [3, false, 'fail'],
      [4, false, 'fail'],
      [5, true, 'pass'],
    ]);
    expect(rows.map((r) => r.error)).toEqual([null, 'QuickBooks token expired', 'invalid_grant', UNKNOWN_OUTCOME, null]);
    // Wall-clock times in the server's zone (America/St_Johns, UTC-03:30) became instants; a
    // missing one of the pair is the other; with neither, the adoption time.
    expect(rows[2].checked_at.toISOString()).toBe('2025-12-28T07:40:00.000Z');
    expect(rows[2].created_at.toISOString()).toBe('2025-12-28T07:40:00.000Z');
    expect(rows[3].checked_at.toISOString()).toBe('2025-12-28T07:45:00.000Z');
    expect(Math.abs(rows[4].checked_at.getTime() - Date.now())).toBeLessThan(60_000);

    await insertProbeRow(db);
    expect(await rowCount(db)).toBe(6);
    const again = await runQbhealth(['migrate'], { DATABASE_URL: db.url });
    expect(again.code).toBe(0);
    expect(again.stdout).not.toContain('adopted');
  });

  it('a table with other columns (status, no connected, no created_at, extra columns): adopted, connected derived, extras kept', async () => {
    const db = await freshDatabase();
    await arrange(
      db,
      `CREATE TABLE quickbooks_connection_health (
         id bigserial PRIMARY KEY,
         realm text,
         status varchar(20) NOT NULL,
         message text,
         checked_at timestamptz NOT NULL DEFAULT now(),
         source text NOT NULL DEFAULT 'cron'
       );
       INSERT INTO quickbooks_connection_health (realm, status, message, checked_at) VALUES
         ('9130', 'connected',    NULL,           '2025-12-28T04:00:00Z'),
         ('9130', 'error',        'HTTP 401',     '2025-12-28T04:05:00Z'),
         ('9130', 'unknown',      NULL,           '2025-12-28T04:10:00Z'),
         ('9130', 'disconnected', 'token revoked','2025-12-28T04:15:00Z');`,
    );
    expect(await rowCount(db)).toBe(4);

    const report = await runMigrate(db);
    expect(report.adopted).toEqual([expect.stringMatching(/^adopted quickbooks_connection_health: kept its 4 rows; .*status kept as status_legacy/)]);
    expect(await rowCount(db)).toBe(4);
    expect(await verifySchema(db.client)).toEqual([]);

    const rows = (await db.query(`SELECT realm, message, source, status_legacy, connected, status, error, checked_at, created_at
                                    FROM quickbooks_connection_health ORDER BY id`)).rows;
    expect(rows.map((r) => [r.realm, r.message, r.source, r.status_legacy])).toEqual([
      ['9130', null, 'cron', 'connected'],
      ['9130', 'HTTP 401', 'cron', 'error'],
      ['9130', null, 'cron', 'unknown'],
      ['9130', 'token revoked', 'cron', 'disconnected'],
    ]);
    expect(rows.map((r) => [r.connected, r.status])).toEqual([
      [true, 'pass'],
      [false, 'fail'],
      [false, 'fail'],
      [false, 'fail'],
    ]);
    expect(rows.map((r) => r.error)).toEqual([null, null, UNKNOWN_OUTCOME, null]);
    expect(rows.map((r) => r.created_at.toISOString())).toEqual(rows.map((r) => r.checked_at.toISOString()));

    // The monitor writes neither status_legacy (NOT NULL by hand) nor source: its insert goes in.
    await insertProbeRow(db);
    expect(await rowCount(db)).toBe(5);
  });

  it('a table whose status already speaks pass|warn|fail keeps it, and connected comes from it', async () => {
    const db = await freshDatabase();
    await arrange(
      db,
      `CREATE TABLE quickbooks_connection_health (id serial PRIMARY KEY, status text, checked_at timestamp NOT NULL DEFAULT now());
       INSERT INTO quickbooks_connection_health (status) VALUES ('pass'), ('warn'), ('fail');`,
    );
    await runMigrate(db);
    expect(await rowCount(db)).toBe(3);
    expect(await verifySchema(db.client)).toEqual([]);
    const rows = (await db.query(`SELECT status, connected FROM quickbooks_connection_health ORDER BY id`)).rows;
    expect(rows).toEqual([
      { status: 'pass', connected: true },
      { status: 'warn', connected: true },
      { status: 'fail', connected: false },
    ]);
    expect(await columnType(db, 'status_legacy')).toBeUndefined();
  });

  it('drift after migrating (connected made nullable, a NULL written): migrate repairs it instead of looping', async () => {
    const db = await freshDatabase();
    await runMigrate(db);
    await db.query('ALTER TABLE quickbooks_connection_health ALTER COLUMN connected DROP NOT NULL');
    await db.query(`INSERT INTO quickbooks_connection_health (connected, status, error) VALUES (true, 'pass', NULL), (NULL, 'fail', 'boom')`);
    const report = await runMigrate(db);
    expect(report.repaired.length).toBeGreaterThan(0);
    expect(await rowCount(db)).toBe(2);
    expect(await verifySchema(db.client)).toEqual([]);
    expect((await db.query('SELECT connected FROM quickbooks_connection_health ORDER BY id')).rows).toEqual([{ connected: true }, { connected: false }]);
  });

  it('values that cannot convert and a NOT NULL column the monitor cannot fill: 65, one line each with its SQL, nothing changed; after the SQL, adopted', async () => {
    const db = await freshDatabase();
    await arrange(
      db,
      `CREATE TABLE quickbooks_connection_health (
         id serial PRIMARY KEY,
         connected text NOT NULL,
         error text,
         checked_at timestamp NOT NULL DEFAULT now(),
         origin text NOT NULL
       );
       INSERT INTO quickbooks_connection_health (connected, error, origin) VALUES ('true', NULL, 'cron'), ('maybe', 'odd answer', 'manual');`,
    );
    const env = { DATABASE_URL: db.url };

    const refused = await runQbhealth(['migrate'], env);
    expect(refused.code).toBe(65);
    const lines = refused.stderr.trim().split('\n');
    expect(lines).toEqual([
      'qbhealth migrate: column quickbooks_connection_health.connected: it is text, and its values cannot become boolean (invalid input syntax for type boolean: "maybe"); keep it under another name, and migrate adds the column afresh: ALTER TABLE quickbooks_connection_health RENAME COLUMN connected TO connected_legacy; ALTER TABLE quickbooks_connection_health ALTER COLUMN connected_legacy DROP NOT NULL;',
      'column quickbooks_connection_health.origin: it is NOT NULL without a default, and the monitor does not write it, so every insert would fail; let it be NULL (or give it a default): ALTER TABLE quickbooks_connection_health ALTER COLUMN origin DROP NOT NULL;',
    ]);
    // Nothing changed: no record table, same rows, same types.
    expect((await db.query(`SELECT to_regclass('migrations_applied') AS t`)).rows[0].t).toBeNull();
    expect(await rowCount(db)).toBe(2);
    expect(await columnType(db, 'connected')).toBe('text');
    expect(await columnType(db, 'checked_at')).toBe('timestamp without time zone');

    // check-schema names the same blockers and does not send the operator to a migrate that would refuse.
    const check = await runQbhealth(['check-schema'], env);
    expect(check.code).toBe(65);
    expect(check.stderr).toContain('`qbhealth migrate` cannot fix it until this is done:');
    expect(check.stderr).toContain(sqlOf(lines[0]!));
    expect(check.stderr).toContain(sqlOf(lines[1]!));
    expect(check.stderr).not.toMatch(/problems?\); run `qbhealth migrate`/);

    for (const line of lines) await db.query(sqlOf(line));
    const migrated = await runQbhealth(['migrate'], env);
    expect(migrated.code).toBe(0);
    expect(await rowCount(db)).toBe(2);
    const rows = (await db.query(`SELECT connected_legacy, connected, error, origin FROM quickbooks_connection_health ORDER BY id`)).rows;
    expect(rows).toEqual([
      { connected_legacy: 'true', connected: false, error: UNKNOWN_OUTCOME, origin: 'cron' },
      { connected_legacy: 'maybe', connected: false, error: 'odd answer', origin: 'manual' },
    ]);
    expect((await runQbhealth(['check-schema'], env)).code).toBe(0);
  });
});

describe('adoption and privileges (a role that is not a superuser)', () => {
  it('a table created by a superuser: migrate exits 65 with one line naming the owner and the ALTER TABLE … OWNER TO to run; after it, adopted', async () => {
    const db = await freshDatabase();
    const { role, url } = await appRole(db);
    // PostgreSQL 15+ no longer grants CREATE on public to every role; this one gets it, so that
    // ownership is the only thing in the way.
    await db.query(`GRANT CONNECT, CREATE ON DATABASE ${db.name} TO ${role}`);
    await db.query(`GRANT USAGE, CREATE ON SCHEMA public TO ${role}`);
    await db.query(`CREATE TABLE quickbooks_connection_health (
                      id SERIAL PRIMARY KEY, connected BOOLEAN NOT NULL, error TEXT,
                      checked_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT NOW(),
                      created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL DEFAULT NOW())`);
    await db.query(`INSERT INTO quickbooks_connection_health (connected, error) VALUES (true, NULL), (false, 'boom'), (true, NULL)`);

    const refused = await runQbhealth(['migrate'], { DATABASE_URL: url });
    expect(refused.code).toBe(65);
    expect(refused.stderr).toBe(
      `qbhealth migrate: table quickbooks_connection_health: it is owned by role postgres, and only its owner may alter it (${role}, the role in DATABASE_URL, is not); ` +
        `run as a superuser: ALTER TABLE quickbooks_connection_health OWNER TO ${role}; (or run \`qbhealth migrate\` with DATABASE_URL as postgres)\n`,
    );
    expect(await rowCount(db)).toBe(3);
    expect((await db.query(`SELECT to_regclass('migrations_applied') AS t`)).rows[0].t).toBeNull();

    const check = await runQbhealth(['check-schema'], { DATABASE_URL: url });
    expect(check.code).toBe(65);
    expect(check.stderr).toContain(`ALTER TABLE quickbooks_connection_health OWNER TO ${role};`);
    expect(check.stderr).not.toMatch(/problems?\); run `qbhealth migrate`/);

    await db.query(sqlOf(refused.stderr)); // as the superuser
    const migrated = await runQbhealth(['migrate'], { DATABASE_URL: url });
    expect(migrated.stderr).not.toMatch(/"level":(50|60)/);
    expect(migrated.code).toBe(0);
    expect(await rowCount(db)).toBe(3);
    expect(await runQbhealth(['check-schema'], { DATABASE_URL: url })).toMatchObject({ code: 0 });
  });

  it('a role without CREATE on schema public (PostgreSQL 15+ default): 65 with the GRANT to run, not a stack trace', async () => {
    const db = await freshDatabase();
    const { role, url } = await appRole(db);
    await db.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);

    const refused = await runQbhealth(['migrate'], { DATABASE_URL: url });
    expect(refused.code).toBe(65);
    const lines = refused.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^qbhealth migrate: schema public: role \S+ may not create tables in it .*; run as the database owner or a superuser: GRANT CREATE ON SCHEMA public TO \S+;$/);

    await db.query(sqlOf(lines[0]!));
    expect((await runQbhealth(['migrate'], { DATABASE_URL: url })).code).toBe(0);
    expect((await db.query(`SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relname = 'quickbooks_connection_health'`)).rows).toEqual([{ owner: role }]);
  });
});

describe('keys the code\'s ON CONFLICT clauses rely on', () => {
  it('check-schema names a dropped primary key of each upserted table; migrate restores them; repeated keys block with the DELETE to run', async () => {
    const db = await freshDatabase();
    const env = { DATABASE_URL: db.url };
    expect((await runQbhealth(['migrate'], env)).code).toBe(0);
    await db.query('ALTER TABLE quickbooks_oauth_tokens DROP CONSTRAINT quickbooks_oauth_tokens_pkey');
    await db.query('ALTER TABLE quickbooks_alert_state DROP CONSTRAINT quickbooks_alert_state_pkey');
    await db.query('ALTER TABLE migrations_applied DROP CONSTRAINT migrations_applied_pkey');

    const check = await runQbhealth(['check-schema'], env);
    expect(check.code).toBe(65);
    expect(check.stdout.trim().split('\n').sort()).toEqual([
      "missing primary key or unique constraint on migrations_applied (version) (the code's ON CONFLICT needs it)",
      "missing primary key or unique constraint on quickbooks_alert_state (realm_id, kind) (the code's ON CONFLICT needs it)",
      "missing primary key or unique constraint on quickbooks_oauth_tokens (realm_id) (the code's ON CONFLICT needs it)",
    ]);
    expect(check.stderr).toMatch(/; run `qbhealth migrate`\n$/);

    const repaired = await runQbhealth(['migrate'], env);
    expect(repaired.code).toBe(0);
    expect((await runQbhealth(['check-schema'], env)).code).toBe(0);

    // Now a key that repeats: the unique index cannot be built until one row per key is kept.
    const alertIndex = (await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'quickbooks_alert_state'`)).rows[0].indexname as string;
    await db.query(`DROP INDEX ${alertIndex}`);
    const alert = `('9130', 'quickbooks_api', 'critical', 'open', 3, now(), 'QuickBooks API failing')`;
    await db.query(`INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary) VALUES ${alert}, ${alert}`);
    const blocked = await runQbhealth(['migrate'], env);
    expect(blocked.code).toBe(65);
    expect(blocked.stderr).toBe(
      "qbhealth migrate: table quickbooks_alert_state: 1 value of (realm_id, kind) repeats, and the code's ON CONFLICT (realm_id, kind) needs them unique; " +
        'keep one row per key: DELETE FROM quickbooks_alert_state a USING quickbooks_alert_state b WHERE a.realm_id = b.realm_id AND a.kind = b.kind AND a.ctid < b.ctid;\n',
    );
    const checkBlocked = await runQbhealth(['check-schema'], env);
    expect(checkBlocked.code).toBe(65);
    expect(checkBlocked.stderr).toContain(sqlOf(blocked.stderr));
    await db.query(sqlOf(blocked.stderr));
    expect((await runQbhealth(['migrate'], env)).code).toBe(0);
    expect((await db.query('SELECT count(*)::int AS n FROM quickbooks_alert_state')).rows[0].n).toBe(1);
    expect((await runQbhealth(['check-schema'], env)).code).toBe(0);
  });
});
