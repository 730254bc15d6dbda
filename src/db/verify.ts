/**
 * Compares the declared schema (db/schema.ts) with the live database: every table, column, type,
 * NOT NULL, default and index the code relies on, the primary keys and unique constraints its
 * `ON CONFLICT` clauses need, and columns the code does not know that would make its inserts
 * fail. Used by `qbhealth check-schema`, by `migrate` after it applies, and by the daemon at start.
 */
import type { Queryable } from './pool.js';
import { SCHEMA, type TableSpec } from './schema.js';

export type SchemaProblem =
  | { kind: 'missing_table'; table: string }
  | { kind: 'missing_column'; table: string; column: string }
  | { kind: 'type_mismatch'; table: string; column: string; expected: string; actual: string }
  | { kind: 'nullable'; table: string; column: string }
  | { kind: 'not_nullable'; table: string; column: string }
  | { kind: 'missing_default'; table: string; column: string }
  | { kind: 'undeclared_not_null'; table: string; column: string }
  | { kind: 'missing_index'; table: string; columns: readonly string[]; unique: boolean; where?: string };

export function describeProblem(p: SchemaProblem): string {
  switch (p.kind) {
    case 'missing_table':
      return `missing table ${p.table}`;
    case 'missing_column':
      return `missing column ${p.table}.${p.column}`;
    case 'type_mismatch':
      return `type mismatch ${p.table}.${p.column}: expected ${p.expected}, found ${p.actual}`;
    case 'nullable':
      return `column ${p.table}.${p.column} must be NOT NULL`;
    case 'not_nullable':
      return `column ${p.table}.${p.column} must allow NULL (the code writes NULL into it)`;
    case 'missing_default':
      return `column ${p.table}.${p.column} has no default (the code's inserts rely on one)`;
    case 'undeclared_not_null':
      return `column ${p.table}.${p.column} is NOT NULL without a default, and the code does not write it: every insert would fail`;
    case 'missing_index':
      return p.unique
        ? `missing primary key or unique constraint on ${p.table} (${p.columns.join(', ')}) (the code's ON CONFLICT needs it)`
        : `missing index on ${p.table} (${p.columns.join(', ')})${p.where ? ` WHERE ${p.where}` : ''}`;
  }
}

export interface LiveColumn {
  table_name: string;
  column_name: string;
  type: string;
  not_null: boolean;
  /** A DEFAULT, an identity or a generated expression: an insert that leaves it out still gets a value. */
  has_default: boolean;
  is_identity: boolean;
}

export interface LiveIndex {
  table_name: string;
  columns: string[];
  is_unique: boolean;
  is_primary: boolean;
  /** A partial index's predicate as pg_get_expr prints it; null for a whole-table index. */
  predicate: string | null;
}

export interface LiveSchema {
  readonly columns: readonly LiveColumn[];
  readonly indexes: readonly LiveIndex[];
}

const COLUMNS_SQL = `
  SELECT c.relname AS table_name, a.attname AS column_name,
         format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
         (a.atthasdef OR a.attidentity <> '') AS has_default, a.attidentity <> '' AS is_identity
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
   WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     AND c.relkind IN ('r', 'p')
     AND c.relname = ANY($1::text[])`;

// Only valid indexes on plain columns count, a partial one only where a partial one is declared
// with the same predicate: a broken index, or a partial one in place of a whole one, cannot serve
// the queries (or ON CONFLICT) that depend on it. A deferrable unique constraint (not
// indimmediate) cannot be an ON CONFLICT arbiter, so it does not count as unique.
const INDEXES_SQL = `
  SELECT t.relname AS table_name, i.indisunique AND i.indimmediate AS is_unique, i.indisprimary AS is_primary,
         pg_get_expr(i.indpred, i.indrelid) AS predicate,
         array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                ORDER BY k.ord)::text[] AS columns
    FROM pg_index i
    JOIN pg_class t ON t.oid = i.indrelid
   WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     AND t.relname = ANY($1::text[])
     AND i.indisvalid AND i.indexprs IS NULL`;

export async function readLiveSchema(db: Queryable, declared: readonly TableSpec[] = SCHEMA): Promise<LiveSchema> {
  const names = declared.map((t) => t.name);
  const columns = await db.query<LiveColumn>(COLUMNS_SQL, [names]);
  const indexes = await db.query<LiveIndex>(INDEXES_SQL, [names]);
  return { columns: columns.rows, indexes: indexes.rows };
}

/**
 * A predicate compared as text: pg_get_expr adds casts of literals (`'pass'::text`), parentheses
 * and line breaks that the declaration, written as the queries write it, does not have.
 */
function samePredicate(live: string | null, declared: string | undefined): boolean {
  const plain = (p: string): string => p.replace(/::text\b/g, '').replace(/[()]/g, ' ').replace(/\s+/g, ' ').trim();
  if (live === null || declared === undefined) return live === null && declared === undefined;
  return plain(live) === plain(declared);
}

/** True when a live index serves `wanted`: same columns (any order for a unique arbiter, in order for a scan) and predicate. */
export function indexServes(live: LiveIndex, wanted: { readonly columns: readonly string[]; readonly unique?: boolean; readonly where?: string }): boolean {
  if (!samePredicate(live.predicate, wanted.where)) return false;
  if (!wanted.unique) return live.columns.join(',') === wanted.columns.join(',');
  return live.is_unique && live.columns.length === wanted.columns.length && wanted.columns.every((c) => live.columns.includes(c));
}

export function compareSchema(declared: readonly TableSpec[], columns: readonly LiveColumn[], indexes: readonly LiveIndex[]): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  for (const table of declared) {
    const live = new Map(columns.filter((c) => c.table_name === table.name).map((c) => [c.column_name, c]));
    if (live.size === 0) {
      problems.push({ kind: 'missing_table', table: table.name });
      continue;
    }
    for (const [column, spec] of Object.entries(table.columns)) {
      const found = live.get(column);
      if (!found) problems.push({ kind: 'missing_column', table: table.name, column });
      else if (found.type !== spec.type) {
        problems.push({ kind: 'type_mismatch', table: table.name, column, expected: spec.type, actual: found.type });
      } else {
        if (spec.notNull && !found.not_null) problems.push({ kind: 'nullable', table: table.name, column });
        if (!spec.notNull && found.not_null) problems.push({ kind: 'not_nullable', table: table.name, column });
        if (spec.default !== undefined && !found.has_default) problems.push({ kind: 'missing_default', table: table.name, column });
      }
    }
    for (const found of live.values()) {
      if (!(found.column_name in table.columns) && found.not_null && !found.has_default) {
        problems.push({ kind: 'undeclared_not_null', table: table.name, column: found.column_name });
      }
    }
    const liveIndexes = indexes.filter((i) => i.table_name === table.name);
    for (const wanted of table.indexes) {
      if (!liveIndexes.some((i) => indexServes(i, wanted))) {
        problems.push({ kind: 'missing_index', table: table.name, columns: wanted.columns, unique: wanted.unique ?? false, ...(wanted.where ? { where: wanted.where } : {}) });
      }
    }
  }
  return problems;
}

export async function verifySchema(db: Queryable, declared: readonly TableSpec[] = SCHEMA): Promise<SchemaProblem[]> {
  const live = await readLiveSchema(db, declared);
  return compareSchema(declared, live.columns, live.indexes);
}
