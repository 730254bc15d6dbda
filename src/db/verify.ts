/**
 * Compares the declared schema (db/schema.ts) with the live database: every table, column, type,
 * NOT NULL and index the code relies on. Used by `qbhealth check-schema`, by `migrate` after it
 * applies, and by the daemon at start.
 */
import type { Queryable } from './pool.js';
import { SCHEMA, type TableSpec } from './schema.js';

export type SchemaProblem =
  | { kind: 'missing_table'; table: string }
  | { kind: 'missing_column'; table: string; column: string }
  | { kind: 'type_mismatch'; table: string; column: string; expected: string; actual: string }
  | { kind: 'nullable'; table: string; column: string }
  | { kind: 'missing_index'; table: string; columns: readonly string[]; unique: boolean };

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
    case 'missing_index':
      return `missing ${p.unique ? 'unique ' : ''}index on ${p.table} (${p.columns.join(', ')})`;
  }
}

interface LiveColumn {
  table_name: string;
  column_name: string;
  type: string;
  not_null: boolean;
}

interface LiveIndex {
  table_name: string;
  columns: string[];
  is_unique: boolean;
}

const COLUMNS_SQL = `
  SELECT c.relname AS table_name, a.attname AS column_name,
         format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
   WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     AND c.relkind IN ('r', 'p')
     AND c.relname = ANY($1::text[])`;

// Only plain, valid, non-partial indexes count: a partial or broken index cannot serve the
// queries (or ON CONFLICT) that depend on it.
const INDEXES_SQL = `
  SELECT t.relname AS table_name, i.indisunique AS is_unique,
         array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                ORDER BY k.ord)::text[] AS columns
    FROM pg_index i
    JOIN pg_class t ON t.oid = i.indrelid
   WHERE t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     AND t.relname = ANY($1::text[])
     AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL`;

export function compareSchema(
  declared: readonly TableSpec[],
  columns: readonly LiveColumn[],
  indexes: readonly LiveIndex[],
): SchemaProblem[] {
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
      } else if (spec.notNull && !found.not_null) problems.push({ kind: 'nullable', table: table.name, column });
    }
    const liveIndexes = indexes.filter((i) => i.table_name === table.name);
    for (const wanted of table.indexes) {
      const unique = wanted.unique ?? false;
      const present = liveIndexes.some(
        (i) => (i.is_unique || !unique) && i.columns.join(',') === wanted.columns.join(','),
      );
      if (!present) problems.push({ kind: 'missing_index', table: table.name, columns: wanted.columns, unique });
    }
  }
  return problems;
}

export async function verifySchema(db: Queryable, declared: readonly TableSpec[] = SCHEMA): Promise<SchemaProblem[]> {
  const names = declared.map((t) => t.name);
  const columns = await db.query<LiveColumn>(COLUMNS_SQL, [names]);
  const indexes = await db.query<LiveIndex>(INDEXES_SQL, [names]);
  return compareSchema(declared, columns.rows, indexes.rows);
}
