/**
 * The manifest against the live tables: one Difference per thing the application relies on that
 * is missing or changed. Objects the manifest does not name (new tables, columns, indexes) are
 * not differences: adding is how schemas grow ahead of the code that uses them.
 */
import { tableName, type ManifestIndex, type ManifestKey, type ManifestTable } from './manifest.js';

export type Difference =
  | { readonly kind: 'missing_table'; readonly table: string }
  | { readonly kind: 'missing_column'; readonly table: string; readonly column: string }
  | { readonly kind: 'type_changed'; readonly table: string; readonly column: string; readonly expected: string; readonly actual: string }
  | { readonly kind: 'nullability_changed'; readonly table: string; readonly column: string; readonly expectedNotNull: boolean }
  | { readonly kind: 'default_missing'; readonly table: string; readonly column: string }
  | { readonly kind: 'missing_primary_key'; readonly table: string; readonly columns: readonly string[] }
  | { readonly kind: 'missing_unique'; readonly table: string; readonly name: string; readonly columns: readonly string[] }
  | { readonly kind: 'missing_index'; readonly table: string; readonly name: string; readonly columns: readonly string[] };

/** The object a difference is about, as `table` or `table.column` (alert text, JSON output). */
export function objectOf(d: Difference): string {
  switch (d.kind) {
    case 'missing_table':
      return d.table;
    case 'missing_primary_key':
      return `${d.table} primary key`;
    case 'missing_unique':
    case 'missing_index':
      return `${d.table} ${d.name}`;
    default:
      return `${d.table}.${d.column}`;
  }
}

/** One line for an operator: what is missing or changed, named fully. */
export function describeDifference(d: Difference): string {
  switch (d.kind) {
    case 'missing_table':
      return `missing table ${d.table}`;
    case 'missing_column':
      return `missing column ${d.table}.${d.column}`;
    case 'type_changed':
      return `type changed: ${d.table}.${d.column} is ${d.actual}, expected ${d.expected}`;
    case 'nullability_changed':
      return d.expectedNotNull ? `nullability changed: ${d.table}.${d.column} accepts NULL, expected NOT NULL` : `nullability changed: ${d.table}.${d.column} is NOT NULL, expected nullable`;
    case 'default_missing':
      return `default missing: ${d.table}.${d.column} has no default, expected one (inserts that leave it out fail)`;
    case 'missing_primary_key':
      return `missing primary key on ${d.table} (${d.columns.join(', ')})`;
    case 'missing_unique':
      return `missing unique constraint ${d.name} on ${d.table} (${d.columns.join(', ')})`;
    case 'missing_index':
      return `missing index ${d.name} on ${d.table} (${d.columns.join(', ')})`;
  }
}

const sameColumns = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((c, i) => c === b[i]);

/** A unique constraint or index may be satisfied by any key on the same columns (names differ between environments). */
function hasKey(live: ManifestTable, columns: readonly string[]): boolean {
  const keys: ManifestKey[] = [...(live.primaryKey ? [live.primaryKey] : []), ...live.uniqueConstraints];
  const set = [...columns].sort();
  return (
    keys.some((k) => sameColumns([...k.columns].sort(), set)) ||
    live.indexes.some((x) => x.unique && x.where === undefined && sameColumns([...x.columns].sort(), set))
  );
}

/** An index matches by name, or by what it is (method, key columns in order, uniqueness, predicate). */
function hasIndex(live: ManifestTable, wanted: ManifestIndex): boolean {
  return live.indexes.some(
    (x) => x.name === wanted.name || (x.method === wanted.method && x.unique === wanted.unique && x.where === wanted.where && sameColumns(x.columns, wanted.columns)),
  );
}

export function compareTables(expected: readonly ManifestTable[], live: readonly ManifestTable[]): Difference[] {
  const liveByName = new Map(live.map((t) => [`${t.schema}\u0000${t.name}`, t]));
  const differences: Difference[] = [];
  for (const want of expected) {
    const table = tableName(want);
    const have = liveByName.get(`${want.schema}\u0000${want.name}`);
    if (!have) {
      differences.push({ kind: 'missing_table', table });
      continue;
    }
    const columns = new Map(have.columns.map((c) => [c.name, c]));
    for (const c of want.columns) {
      const h = columns.get(c.name);
      if (!h) {
        differences.push({ kind: 'missing_column', table, column: c.name });
        continue;
      }
      if (h.type !== c.type) differences.push({ kind: 'type_changed', table, column: c.name, expected: c.type, actual: h.type });
      if (h.notNull !== c.notNull) differences.push({ kind: 'nullability_changed', table, column: c.name, expectedNotNull: c.notNull });
      if (c.hasDefault && !h.hasDefault) differences.push({ kind: 'default_missing', table, column: c.name });
    }
    const pk = want.primaryKey;
    if (pk && !(have.primaryKey && sameColumns([...have.primaryKey.columns].sort(), [...pk.columns].sort()))) {
      differences.push({ kind: 'missing_primary_key', table, columns: pk.columns });
    }
    for (const u of want.uniqueConstraints) if (!hasKey(have, u.columns)) differences.push({ kind: 'missing_unique', table, name: u.name, columns: u.columns });
    for (const x of want.indexes) if (!hasIndex(have, x)) differences.push({ kind: 'missing_index', table, name: x.name, columns: x.columns });
  }
  return differences;
}
