/**
 * The schema manifest: what the application that shares the database expects of it, written by
 * `qbhealth schema snapshot` from a known-good database and committed next to the application's
 * code. JSON in a stable order (schemas, tables and constraints sorted; columns in table order),
 * so a pull request shows exactly what changed. `format` and `version` say how to read it: a
 * manifest from a newer release is refused (exit 78) rather than half-understood.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { coerceError, ExitCode, OperatorError } from '../errors.js';

export const MANIFEST_FORMAT = 'qbhealth-schema-manifest';
export const MANIFEST_VERSION = 1;

export interface ManifestColumn {
  readonly name: string;
  /** As PostgreSQL's format_type() spells it, e.g. `timestamp with time zone`, `character varying(64)`. */
  readonly type: string;
  readonly notNull: boolean;
  /** A default, an identity or a generated expression: inserts that leave the column out rely on it. */
  readonly hasDefault: boolean;
}

export interface ManifestKey {
  readonly name: string;
  readonly columns: readonly string[];
}

export interface ManifestIndex {
  readonly name: string;
  /** Key columns or expressions, as pg_get_indexdef() spells them. */
  readonly columns: readonly string[];
  readonly unique: boolean;
  readonly method: string;
  /** A partial index's predicate. */
  readonly where?: string;
}

export interface ManifestTable {
  readonly schema: string;
  readonly name: string;
  readonly columns: readonly ManifestColumn[];
  readonly primaryKey: ManifestKey | null;
  readonly uniqueConstraints: readonly ManifestKey[];
  /** Indexes other than those backing the primary key and unique constraints. */
  readonly indexes: readonly ManifestIndex[];
}

export interface Manifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly version: typeof MANIFEST_VERSION;
  readonly tables: readonly ManifestTable[];
}

/** A table as an operator names it: `schema.table`, the schema left out when it is `public`. */
export function tableName(t: { readonly schema: string; readonly name: string }): string {
  return t.schema === 'public' ? t.name : `${t.schema}.${t.name}`;
}

const byName = <T extends { readonly name: string }>(a: T, b: T): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** The manifest in its stable order (so the same database always writes the same bytes). */
export function manifestOf(tables: readonly ManifestTable[]): Manifest {
  const sorted = [...tables]
    .map((t) => ({ ...t, uniqueConstraints: [...t.uniqueConstraints].sort(byName), indexes: [...t.indexes].sort(byName) }))
    .sort((a, b) => (a.schema === b.schema ? byName(a, b) : a.schema < b.schema ? -1 : 1));
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, tables: sorted };
}

export async function writeManifest(file: string, manifest: Manifest): Promise<void> {
  await writeFile(file, `${JSON.stringify(manifest, null, 2)}\n`);
}

/** A manifest that cannot be used as given: exit 78, one line naming the file and what is wrong. */
export class ManifestError extends OperatorError {
  constructor(file: string, problem: string, options?: { cause?: unknown }) {
    super(`schema manifest ${file}: ${problem}`, ExitCode.configInvalid, options);
    this.name = 'ManifestError';
  }
}

/** Reads and validates a manifest; every way it can be wrong is a ManifestError (exit 78). */
export async function readManifest(file: string): Promise<Manifest> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const e = coerceError(err) as NodeJS.ErrnoException;
    throw new ManifestError(file, `cannot be read (${e.code ?? e.message}); write one with \`qbhealth schema snapshot\``, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(file, `is not JSON (${coerceError(err).message})`, { cause: err });
  }
  return validateManifest(file, parsed);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

function validateManifest(file: string, value: unknown): Manifest {
  if (!isObject(value) || value.format !== MANIFEST_FORMAT) {
    throw new ManifestError(file, `is not a schema manifest (expected "format": "${MANIFEST_FORMAT}")`);
  }
  const version = value.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new ManifestError(file, `has no valid "version" (expected ${MANIFEST_VERSION})`);
  }
  if (version > MANIFEST_VERSION) {
    throw new ManifestError(file, `is format version ${version}, newer than this release reads (${MANIFEST_VERSION}); upgrade qbo-health-monitor or write the manifest with this release's \`qbhealth schema snapshot\``);
  }
  if (!Array.isArray(value.tables)) throw new ManifestError(file, 'has no "tables" list');
  const tables = value.tables.map((t, i) => validateTable(file, t, i));
  return { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, tables };
}

function validateTable(file: string, t: unknown, i: number): ManifestTable {
  const at = `tables[${i}]`;
  const bad = (what: string): never => {
    throw new ManifestError(file, `${at}: ${what}`);
  };
  if (!isObject(t) || typeof t.schema !== 'string' || typeof t.name !== 'string') return bad('needs "schema" and "name" strings');
  if (!Array.isArray(t.columns)) return bad('needs a "columns" list');
  const columns = t.columns.map((c, j): ManifestColumn => {
    if (!isObject(c) || typeof c.name !== 'string' || typeof c.type !== 'string' || typeof c.notNull !== 'boolean' || typeof c.hasDefault !== 'boolean') {
      return bad(`columns[${j}] needs "name", "type", "notNull" and "hasDefault"`);
    }
    return { name: c.name, type: c.type, notNull: c.notNull, hasDefault: c.hasDefault };
  });
  const key = (k: unknown, what: string): ManifestKey => {
    if (!isObject(k) || typeof k.name !== 'string' || !isStringArray(k.columns)) return bad(`${what} needs "name" and "columns"`);
    return { name: k.name, columns: k.columns };
  };
  const primaryKey = t.primaryKey === null || t.primaryKey === undefined ? null : key(t.primaryKey, 'primaryKey');
  const uniqueConstraints = (Array.isArray(t.uniqueConstraints) ? t.uniqueConstraints : []).map((k, j) => key(k, `uniqueConstraints[${j}]`));
  const indexes = (Array.isArray(t.indexes) ? t.indexes : []).map((x, j): ManifestIndex => {
    if (!isObject(x) || typeof x.name !== 'string' || !isStringArray(x.columns) || typeof x.unique !== 'boolean' || typeof x.method !== 'string') {
      return bad(`indexes[${j}] needs "name", "columns", "unique" and "method"`);
    }
    return { name: x.name, columns: x.columns, unique: x.unique, method: x.method, ...(typeof x.where === 'string' ? { where: x.where } : {}) };
  });
  return { schema: t.schema, name: t.name, columns, primaryKey, uniqueConstraints, indexes };
}
