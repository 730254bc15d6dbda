import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations } from '../src/db/migrate.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { runQbhealth } from './support/cli.js';

describe('qbhealth migrate / check-schema', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(() => db.drop());

  const env = () => ({ DATABASE_URL: db.url });
  const password = () => decodeURIComponent(new URL(db.url).password);

  it('migrate --status lists the pending migration, migrate applies it, check-schema then passes', async () => {
    const status = await runQbhealth(['migrate', '--status'], env());
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/^pending {2}0001_initial_schema\.sql$/m);

    const migrated = await runQbhealth(['migrate'], env());
    expect(migrated.stderr).not.toMatch(/"level":(50|60)/);
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/^applied 0001_initial_schema \(\d+ ms\)$/m);
    expect(migrated.stdout).toContain('schema verified');
    expect(migrated.stderr).toContain('"event":"migration.applied"');

    const check = await runQbhealth(['check-schema'], env());
    expect(check).toMatchObject({ code: 0, stdout: 'schema matches the code\n' });
    for (const r of [status, migrated, check]) expect(r.stdout + r.stderr).not.toContain(password());
  });

  it('check-schema names a dropped column and a dropped table, one line each, exit 65', async () => {
    await db.query('ALTER TABLE quickbooks_connection_health DROP COLUMN latency_ms');
    await db.query('DROP TABLE quickbooks_alert_state');
    const check = await runQbhealth(['check-schema'], env());
    expect(check.code).toBe(65);
    expect(check.stdout.trim().split('\n').sort()).toEqual([
      'missing column quickbooks_connection_health.latency_ms',
      'missing table quickbooks_alert_state',
    ]);
    expect(check.stderr).toContain('run `qbhealth migrate`');
  });

  it('migrate restores them, says so, and check-schema passes again', async () => {
    const migrated = await runQbhealth(['migrate'], env());
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toContain('no pending migrations');
    expect(migrated.stdout).toContain('re-applied the migrations');
    expect(migrated.stdout).toContain('missing table quickbooks_alert_state');
    expect(migrated.stderr).toContain('"event":"migration.reapplied"');
    expect((await runQbhealth(['check-schema'], env())).code).toBe(0);
  });

  it('refuses with 65, naming the file, when an applied migration no longer matches its checksum', async () => {
    await db.query(`UPDATE migrations_applied SET checksum = repeat('0', 64) WHERE version = '0001'`);
    const migrated = await runQbhealth(['migrate'], env());
    expect(migrated.code).toBe(65);
    expect(migrated.stderr).toMatch(/applied migration changed since it ran: \S*0001_initial_schema\.sql/);
    const status = await runQbhealth(['migrate', '--status'], env());
    expect(status.code).toBe(65);
    expect(status.stdout).toMatch(/^changed {2}0001_initial_schema\.sql$/m);
  });
});

describe('qbhealth migrate run five times at once', () => {
  it('ends with one set of rows in migrations_applied and a verified schema', async () => {
    const db = await createTestDatabase();
    try {
      const runs = await Promise.all(Array.from({ length: 5 }, () => runQbhealth(['migrate'], { DATABASE_URL: db.url })));
      expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0]);
      expect(runs.filter((r) => r.stdout.includes('applied 0001_initial_schema'))).toHaveLength(1);
      const rows = (await db.query('SELECT version, count(*)::int AS n FROM migrations_applied GROUP BY version ORDER BY version')).rows;
      expect(rows).toEqual((await loadMigrations()).map((m) => ({ version: m.version, n: 1 })));
      expect((await runQbhealth(['check-schema'], { DATABASE_URL: db.url })).code).toBe(0);
    } finally {
      await db.drop();
    }
  });
});

describe('qbhealth and an unusable database', () => {
  it('exits 75 when PostgreSQL is unreachable, saying what to check', async () => {
    const r = await runQbhealth(['check-schema'], { DATABASE_URL: 'postgres://monitor:pw-unused-1@127.0.0.1:9/none' });
    expect(r.code).toBe(75);
    expect(r.stderr).toMatch(/PostgreSQL is unreachable \(ECONNREFUSED/);
    // A command does not retry: it says what the caller should do instead of "this is retried".
    expect(r.stderr).toMatch(/Nothing was retried \(exit 75\): run `qbhealth check-schema` again once PostgreSQL is reachable/);
    expect(r.stderr).not.toContain('this is retried');
    expect(r.stderr).not.toContain('pw-unused-1');
  });

  it('exits 78 when PostgreSQL rejects the credentials, without echoing the password', async () => {
    const db = await createTestDatabase();
    try {
      const url = new URL(db.url);
      url.password = 'Wr0ng-Passw0rd-77';
      const r = await runQbhealth(['migrate'], { DATABASE_URL: url.toString() });
      expect(r.code).toBe(78);
      expect(r.stderr).toContain('PostgreSQL rejected the credentials in DATABASE_URL');
      expect(r.stderr).not.toContain('Wr0ng-Passw0rd-77');
    } finally {
      await db.drop();
    }
  });
});

describe('qbhealth usage', () => {
  it('--help lists every command', async () => {
    const r = await runQbhealth(['--help'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}migrate +apply pending/m);
    expect(r.stdout).toMatch(/^ {2}check-schema +compare/m);
  });

  it('<command> --help explains options and exit codes', async () => {
    const r = await runQbhealth(['migrate', '--help'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--status');
    expect(r.stdout).toMatch(/^ {2}65 {2}/m);
  });

  it.each([[['frobnicate']], [['migrate', '--force']], [[]]])('exits 2 with the help for %j', async (args) => {
    const r = await runQbhealth(args, {});
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: qbhealth');
  });
});
