/**
 * Reads tables as the manifest describes them, from pg_catalog only: no relation of the
 * application is opened or locked, and every role can read these catalogs, so a role that owns
 * nothing (and has no privilege on the tables) sees the same as the owner. information_schema is
 * not used because it hides the objects a role has no privilege on. Four statements whatever the
 * number of tables, all parameterised.
 */
import type { Queryable } from '../db/pool.js';
import type { ManifestColumn, ManifestIndex, ManifestKey, ManifestTable } from './manifest.js';

export interface TableRef {
  readonly schema: string;
  readonly name: string;
}

/** Ordinary and partitioned tables, by (schema, name) pairs or every table of some schemas. */
const TABLES_SQL = `SELECT c.oid::int8 AS oid, n.nspname::text AS schema, c.relname::text AS name
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p')
    AND ((n.nspname, c.relname) IN (SELECT s, t FROM unnest($1::text[], $2::text[]) AS x(s, t))
         OR n.nspname = ANY($3::text[]))`;

const COLUMNS_SQL = `SELECT a.attrelid::int8 AS oid, a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
    a.attnotnull AS not_null, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') AS has_default
  FROM pg_catalog.pg_attribute a
  WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
  ORDER BY a.attrelid, a.attnum`;

const KEYS_SQL = `SELECT con.conrelid::int8 AS oid, con.contype::text AS type, con.conname::text AS name,
    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.ord)::text[] AS columns
  FROM pg_catalog.pg_constraint con
  WHERE con.conrelid = ANY($1::oid[]) AND con.contype IN ('p', 'u')`;

/** Indexes not backing a constraint (those are the keys above). */
const INDEXES_SQL = `SELECT i.indrelid::int8 AS oid, ic.relname::text AS name, i.indisunique AS unique, am.amname::text AS method,
    ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k)::text[] AS columns,
    pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
  WHERE i.indrelid = ANY($1::oid[])
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))`;

interface TableRow {
  oid: string;
  schema: string;
  name: string;
}
interface ColumnRow {
  oid: string;
  name: string;
  type: string;
  not_null: boolean;
  has_default: boolean;
}
interface KeyRow {
  oid: string;
  type: 'p' | 'u';
  name: string;
  columns: string[];
}
interface IndexRow {
  oid: string;
  name: string;
  unique: boolean;
  method: string;
  columns: string[];
  predicate: string | null;
}

export interface CatalogSelection {
  /** These tables (those that exist are returned; the caller sees which are missing). */
  readonly tables?: readonly TableRef[];
  /** Every table of these schemas. */
  readonly schemas?: readonly string[];
}

/** The selected tables as they are now, in the manifest's shape; tables that do not exist are simply absent. */
export async function readTables(db: Queryable, selection: CatalogSelection): Promise<ManifestTable[]> {
  const refs = selection.tables ?? [];
  const tables = await db.query<TableRow>(TABLES_SQL, [refs.map((r) => r.schema), refs.map((r) => r.name), selection.schemas ?? []]);
  if (tables.rows.length === 0) return [];
  const oids = tables.rows.map((t) => t.oid);
  const columns = await db.query<ColumnRow>(COLUMNS_SQL, [oids]);
  const keys = await db.query<KeyRow>(KEYS_SQL, [oids]);
  const indexes = await db.query<IndexRow>(INDEXES_SQL, [oids]);
  const group = <R extends { oid: string }>(rows: readonly R[]): Map<string, R[]> => {
    const m = new Map<string, R[]>();
    for (const r of rows) m.set(r.oid, [...(m.get(r.oid) ?? []), r]);
    return m;
  };
  const columnsOf = group(columns.rows);
  const keysOf = group(keys.rows);
  const indexesOf = group(indexes.rows);
  return tables.rows.map((t): ManifestTable => {
    const tableKeys = keysOf.get(t.oid) ?? [];
    const asKey = (k: KeyRow): ManifestKey => ({ name: k.name, columns: k.columns });
    const pk = tableKeys.find((k) => k.type === 'p');
    return {
      schema: t.schema,
      name: t.name,
      columns: (columnsOf.get(t.oid) ?? []).map((c): ManifestColumn => ({ name: c.name, type: c.type, notNull: c.not_null, hasDefault: c.has_default })),
      primaryKey: pk ? asKey(pk) : null,
      uniqueConstraints: tableKeys.filter((k) => k.type === 'u').map(asKey),
      indexes: (indexesOf.get(t.oid) ?? []).map(
        (x): ManifestIndex => ({ name: x.name, columns: x.columns, unique: x.unique, method: x.method, ...(x.predicate ? { where: x.predicate } : {}) }),
      ),
    };
  });
}

/** `schema.table` or `table` (in `defaultSchema`), as operators type them on the command line. */
export function parseTableRef(text: string, defaultSchema: string): TableRef {
  const dot = text.indexOf('.');
  return dot < 0 ? { schema: defaultSchema, name: text } : { schema: text.slice(0, dot), name: text.slice(dot + 1) };
}
