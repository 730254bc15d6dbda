/** Commands that need only PostgreSQL: `migrate` and `check-schema` (DATABASE_URL suffices). */
import { parseConfig, type DatabaseConfig } from '../config.js';
import { createPool, withClient, type Pool } from '../db/pool.js';
import { describeBlocker, planAdoption } from '../db/adopt.js';
import { migrate, migrationStatus, MIGRATIONS_DIR } from '../db/migrate.js';
import { describeProblem, verifySchema } from '../db/verify.js';
import { describeIncompleteRollups, rollupCoverage } from '../db/rollup-rebuild.js';
import { ExitCode, OperatorError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { pino } from 'pino';
import { writeLine, type CliIO, type Command } from './command.js';
import { configProblemsError } from './errors.js';


/**
 * Runs `fn` with a pool on DATABASE_URL, closed after. `moreProblems`: the command's own
 * configuration problems, reported with DATABASE_URL's in one list (exit 78).
 */
export async function withDatabase(
  io: CliIO,
  fn: (pool: Pool, log: Logger, config: DatabaseConfig) => Promise<number>,
  moreProblems: readonly string[] = [],
): Promise<number> {
  const parsed = parseConfig(io.env, 'database', io.cwd);
  io.secrets.add(...parsed.secrets);
  if (!parsed.ok || moreProblems.length > 0) throw configProblemsError([...(parsed.ok ? [] : parsed.problems), ...moreProblems]);
  // Log events go to stderr as JSON lines; stdout carries the human summary.
  const log = createLogger({ level: parsed.config.logLevel, secrets: io.secrets, destination: pino.destination({ dest: 2, sync: true }) });
  const pool = createPool({ databaseUrl: parsed.config.databaseUrl, applicationName: 'qbhealth', max: 2 }, log);
  try {
    return await fn(pool, log, parsed.config);
  } finally {
    await pool.end();
  }
}

export const migrateCommand: Command = {
  name: 'migrate',
  summary: 'apply pending schema migrations, then verify the schema matches the code',
  description:
    'Applies sql/migrations/NNNN_name.sql in order, one transaction each, under an advisory lock (safe to run from ' +
    'several hosts at once). Refuses when an applied migration file has changed. Tables that already exist (made by ' +
    'hand, or changed since) are adopted: rows and extra columns kept, missing columns added and filled where they can ' +
    'be derived. Ends by verifying the schema; objects dropped after their migration ran are restored by re-applying ' +
    'the idempotent migrations. The role in DATABASE_URL must own the tables. Needs only DATABASE_URL.',
  options: { status: { type: 'boolean', description: 'list applied, pending and changed migrations; change nothing' } },
  exitCodes: [
    [0, 'migrated (or nothing to do) and the schema matches the code'],
    [65, 'an applied migration file changed, a migration failed, the schema still differs, or something blocks adoption (one line each, with the SQL that clears it)'],
    [75, 'PostgreSQL unreachable or the migration lock is busy; retry'],
    [78, 'configuration invalid (DATABASE_URL)'],
  ],
  run: (io, values) =>
    withDatabase(io, async (pool, log) => {
      if (values.status) return printStatus(io, pool);
      const report = await migrate(pool, log);
      for (const line of report.adopted) writeLine(io.stdout, io.secrets, line);
      for (const a of report.applied) writeLine(io.stdout, io.secrets, `applied ${a.version}_${a.name} (${a.ms} ms)`);
      if (report.applied.length === 0) writeLine(io.stdout, io.secrets, 'no pending migrations');
      if (report.repaired.length > 0) {
        writeLine(io.stdout, io.secrets, 're-applied the migrations to restore objects that had been dropped:');
        for (const p of report.repaired) writeLine(io.stdout, io.secrets, `  ${describeProblem(p)}`);
      }
      for (const u of report.unknown) {
        writeLine(io.stdout, io.secrets, `warning: the database has migration ${u.version}_${u.name}, which this release does not know`);
      }
      writeLine(io.stdout, io.secrets, 'schema verified: it matches the code');
      // After an upgrade that brought the rollups, or an adoption: say what the dashboard misses.
      const rollups = await rollupCoverage(pool);
      if (rollups.incomplete) writeLine(io.stdout, io.secrets, `note: ${describeIncompleteRollups(rollups)}`);
      return ExitCode.ok;
    }),
};

async function printStatus(io: CliIO, pool: Pool): Promise<number> {
  const plan = await migrationStatus(pool);
  const changed = new Set(plan.changed.map((m) => m.version));
  for (const m of plan.applied) {
    writeLine(io.stdout, io.secrets, `${changed.has(m.version) ? 'changed' : 'applied'}  ${m.file}`);
  }
  for (const m of plan.pending) writeLine(io.stdout, io.secrets, `pending  ${m.file}`);
  for (const u of plan.unknown) writeLine(io.stdout, io.secrets, `unknown  ${u.version}_${u.name}.sql (not in ${MIGRATIONS_DIR})`);
  if (plan.changed.length > 0) {
    writeLine(io.stderr, io.secrets, 'an applied migration file changed: restore it as released; put the change in a new migration');
    return ExitCode.schemaMismatch;
  }
  return ExitCode.ok;
}

export const checkSchemaCommand: Command = {
  name: 'check-schema',
  summary: 'compare the live database with the schema the code needs (for deploy pipelines)',
  description:
    'Checks every table, column, type, NOT NULL, default and index the code uses, and the primary keys and unique ' +
    'constraints its ON CONFLICT clauses need, against the database in DATABASE_URL, and prints one line per ' +
    'difference. Then says whether `qbhealth migrate` can fix them, or what must be done first (with the SQL). ' +
    'Changes nothing. Run it before every deployment. Needs only DATABASE_URL.',
  options: {},
  exitCodes: [
    [0, 'the schema matches the code'],
    [65, 'something is missing or different (one line each); run `qbhealth migrate`, after the SQL printed for anything it cannot fix'],
    [75, 'PostgreSQL unreachable; retry'],
    [78, 'configuration invalid (DATABASE_URL)'],
  ],
  run: (io) =>
    withDatabase(io, async (pool) => {
      const problems = await withClient(pool, (client) => verifySchema(client));
      if (problems.length === 0) {
        writeLine(io.stdout, io.secrets, 'schema matches the code');
        return ExitCode.ok;
      }
      for (const p of problems) writeLine(io.stdout, io.secrets, describeProblem(p));
      const differs = `schema differs from the code (${problems.length} problem${problems.length === 1 ? '' : 's'})`;
      // The same plan `migrate` would make, read-only: never recommend a migrate that would refuse.
      const adoption = await withClient(pool, (client) => planAdoption(client, { migrationsWillRun: true }));
      if (adoption.blockers.length === 0) throw new OperatorError(`${differs}; run \`qbhealth migrate\``, ExitCode.schemaMismatch);
      throw new OperatorError(
        `${differs}, and \`qbhealth migrate\` cannot fix it until this is done:\n${adoption.blockers.map(describeBlocker).join('\n')}\nthen run \`qbhealth migrate\``,
        ExitCode.schemaMismatch,
      );
    }),
};
