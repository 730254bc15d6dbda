/**
 * `qbhealth schema snapshot` and `qbhealth schema check`: the schema the application that shares
 * the database relies on, written down from a known-good database and checked before a deploy
 * (and by the daemon while it runs, SCHEMA_WATCH_*). Needs only DATABASE_URL; see README
 * "Schema watch" for the role to use.
 */
import path from 'node:path';
import { withClient } from '../db/pool.js';
import { ExitCode, OperatorError } from '../errors.js';
import { parseTableRef, readTables, type TableRef } from '../schema-watch/catalog.js';
import { describeResult, exitCodeOf, loadWatchInputs, matches, runSchemaCheck } from '../schema-watch/check.js';
import { describeDifference } from '../schema-watch/compare.js';
import { manifestOf, tableName, writeManifest } from '../schema-watch/manifest.js';
import { describeQueryProblem } from '../schema-watch/queries.js';
import { writeLine, type Command } from './command.js';
import { withDatabase } from './db-commands.js';

const snapshotCommand: Command = {
  name: 'snapshot',
  summary: 'write a manifest of tables as a known-good database has them (commit it with the application)',
  description:
    'Reads the named tables (or every table of --schema with --all) from the catalogs of the database in DATABASE_URL ' +
    '(staging, or production before a change) and writes a manifest: columns with type, NOT NULL and whether a default ' +
    'exists, the primary key, unique constraints and indexes. JSON in a stable order, for review in a pull request. ' +
    'Reads pg_catalog only: a role that owns none of the tables will do. Changes nothing.',
  options: {
    tables: { type: 'string', valueName: 'T,U', description: 'tables to include, comma-separated (schema.table, or a table in --schema)' },
    all: { type: 'boolean', description: 'every table of --schema' },
    schema: { type: 'string', valueName: 'NAME', description: 'schema of unqualified tables and of --all (default public)' },
    out: { type: 'string', valueName: 'FILE', description: 'write the manifest here (default: standard output)' },
  },
  exitCodes: [
    [0, 'manifest written'],
    [2, 'usage: neither --tables nor --all, or both'],
    [75, 'PostgreSQL unreachable; run it again'],
    [78, 'configuration invalid (DATABASE_URL), or a named table does not exist (nothing written)'],
  ],
  run: async (io, values) => {
    const schema = typeof values.schema === 'string' && values.schema !== '' ? values.schema : 'public';
    const list = typeof values.tables === 'string' ? values.tables.split(',').map((t) => t.trim()).filter(Boolean) : undefined;
    if ((list === undefined || list.length === 0) === !values.all) {
      throw new OperatorError('give the tables to snapshot with --tables T,U, or --all for every table of --schema (one of the two)', ExitCode.usage);
    }
    const refs: TableRef[] | undefined = list?.map((t) => parseTableRef(t, schema));
    return withDatabase(io, async (pool) => {
      const tables = await withClient(pool, (client) => readTables(client, refs ? { tables: refs } : { schemas: [schema] }));
      if (refs) {
        const found = new Set(tables.map(tableName));
        const missing = refs.map(tableName).filter((t) => !found.has(t));
        if (missing.length > 0) throw new OperatorError(`no such table in this database: ${missing.join(', ')} (nothing written)`, ExitCode.configInvalid);
      }
      if (tables.length === 0) throw new OperatorError(`schema ${schema} has no tables (nothing written)`, ExitCode.configInvalid);
      const manifest = manifestOf(tables);
      if (typeof values.out === 'string') {
        const file = path.resolve(io.cwd, values.out);
        await writeManifest(file, manifest);
        writeLine(io.stderr, io.secrets, `wrote ${file}: ${tables.length} table(s), ${tables.reduce((n, t) => n + t.columns.length, 0)} column(s)`);
      } else {
        io.stdout.write(`${JSON.stringify(manifest, null, 2)}\n`);
      }
      return ExitCode.ok;
    });
  },
};

const checkCommand: Command = {
  name: 'check',
  summary: 'check the live schema against a manifest and the application\'s queries (deploy step)',
  description:
    'Compares the tables in the manifest with the database in DATABASE_URL (one line per missing table, column, index ' +
    'or key, and per changed type or nullability; objects the manifest does not name are fine), and asks PostgreSQL to ' +
    'PREPARE each .sql file of --queries (one statement each, $1-style parameters allowed) in a read-only transaction ' +
    'that is rolled back: nothing is executed and nothing changes. Run it before every deployment.',
  options: {
    manifest: { type: 'string', valueName: 'FILE', description: 'manifest written by `qbhealth schema snapshot`' },
    queries: { type: 'string', valueName: 'DIR', description: 'directory of the application\'s .sql files (subdirectories too)' },
    json: { type: 'boolean', description: 'print the result as one JSON object (for tools)' },
  },
  exitCodes: [
    [0, 'the schema matches the manifest and every query prepares'],
    [2, 'usage: neither --manifest nor --queries'],
    [65, 'something is missing or changed, or a query no longer fits (one line each)'],
    [75, 'PostgreSQL unreachable, or a lock the check needs was busy; run it again'],
    [78, 'configuration invalid: DATABASE_URL, an unreadable or newer-format manifest, an unreadable queries directory, or a query file that is not one valid statement (nothing checked)'],
  ],
  run: async (io, values) => {
    const manifestFile = typeof values.manifest === 'string' ? path.resolve(io.cwd, values.manifest) : undefined;
    const queriesDir = typeof values.queries === 'string' ? path.resolve(io.cwd, values.queries) : undefined;
    if (manifestFile === undefined && queriesDir === undefined) throw new OperatorError('give --manifest FILE, --queries DIR, or both', ExitCode.usage);
    // Every input is read and validated before the database is asked anything.
    const inputs = await loadWatchInputs({ manifestFile, queriesDir });
    return withDatabase(io, async (pool) => {
      const result = await runSchemaCheck(pool, inputs);
      if (values.json) {
        const report = {
          ok: matches(result),
          tables: result.tables,
          queries: result.queries,
          differences: result.differences.map((d) => ({ ...d, text: describeDifference(d) })),
          queryProblems: result.queryProblems.map((p) => ({ ...p, text: describeQueryProblem(p) })),
          durationMs: result.durationMs,
        };
        io.stdout.write(`${JSON.stringify(report)}\n`);
        return exitCodeOf(result);
      }
      for (const line of describeResult(result)) writeLine(io.stdout, io.secrets, line);
      const checked = `${result.tables} table(s), ${result.queries} query file(s)`;
      if (matches(result)) {
        writeLine(io.stdout, io.secrets, `schema matches (${checked})`);
        return ExitCode.ok;
      }
      const n = result.differences.length + result.queryProblems.length;
      throw new OperatorError(`schema differs from what the application expects: ${n} problem(s) in ${checked}; nothing was changed`, ExitCode.schemaMismatch);
    });
  },
};

export const schemaCommand: Command = {
  name: 'schema',
  summary: 'snapshot the application\'s tables into a manifest, or check the live schema against it',
  description:
    'Schema watch for the application that shares the database: `snapshot` writes the expectation from a known-good ' +
    'database, `check` verifies the live database against it (and against the application\'s SQL) before a deploy. ' +
    'The daemon runs the same check on SCHEMA_WATCH_SCHEDULE when SCHEMA_WATCH_MANIFEST or SCHEMA_WATCH_QUERIES is set.',
  options: {},
  exitCodes: [],
  subcommands: [snapshotCommand, checkCommand],
  run: () => Promise.resolve(ExitCode.usage),
};
