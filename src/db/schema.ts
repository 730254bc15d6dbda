/**
 * The tables, columns, types and indexes the code relies on, declared once. Queries take their
 * identifiers from here (`healthTable.name`, `healthTable.columnList([...])`), and
 * `verifySchema` compares these same declarations with the live database, so the code and its
 * schema check cannot drift apart: a column the code uses is a column the check demands.
 */

/** Types as PostgreSQL's `format_type()` spells them. */
export type PgType =
  | 'bigint'
  | 'integer'
  | 'text'
  | 'boolean'
  | 'uuid'
  | 'jsonb'
  | 'timestamp with time zone';

export interface ColumnSpec {
  readonly type: PgType;
  readonly notNull?: boolean;
}

export interface TableSpec<C extends string = string> {
  readonly name: string;
  readonly columns: Readonly<Record<C, ColumnSpec>>;
  /** Indexes the queries depend on, by their column lists (name-independent, so hand-made equivalents count). */
  readonly indexes: ReadonlyArray<{ readonly columns: readonly C[]; readonly unique?: boolean }>;
}

export class Table<C extends string> implements TableSpec<C> {
  constructor(
    readonly name: string,
    readonly columns: Readonly<Record<C, ColumnSpec>>,
    readonly indexes: ReadonlyArray<{ readonly columns: readonly NoInfer<C>[]; readonly unique?: boolean }> = [],
  ) {}

  /** A column name, checked against the declaration at compile time. */
  col(column: C): C {
    return column;
  }

  /** `a, b, c` for the given columns. */
  columnList(columns: readonly C[]): string {
    return columns.join(', ');
  }

  /** `INSERT INTO t (a, b) VALUES ($1, $2)` with optional trailing clause. */
  insert(columns: readonly C[], tail = ''): string {
    const params = columns.map((_, i) => `$${i + 1}`).join(', ');
    return `INSERT INTO ${this.name} (${this.columnList(columns)}) VALUES (${params})${tail ? ` ${tail}` : ''}`;
  }
}

const timestamptz = { type: 'timestamp with time zone' } as const;
const timestamptzNotNull = { type: 'timestamp with time zone', notNull: true } as const;

export const migrationsTable = new Table('migrations_applied', {
  version: { type: 'text', notNull: true },
  name: { type: 'text', notNull: true },
  checksum: { type: 'text', notNull: true },
  applied_at: timestamptzNotNull,
  execution_ms: { type: 'integer', notNull: true },
});

/** The incident's table: its five original columns keep their meaning for existing readers. */
export const healthTable = new Table(
  'quickbooks_connection_health',
  {
    id: { type: 'bigint', notNull: true },
    connected: { type: 'boolean', notNull: true },
    error: { type: 'text' },
    checked_at: timestamptzNotNull,
    created_at: timestamptzNotNull,
    realm_id: { type: 'text' },
    probe_id: { type: 'uuid' },
    status: { type: 'text' },
    error_code: { type: 'text' },
    http_status: { type: 'integer' },
    latency_ms: { type: 'integer' },
    intuit_tid: { type: 'text' },
    refresh_token_expires_at: timestamptz,
  },
  [{ columns: ['checked_at'] }, { columns: ['realm_id', 'checked_at'] }, { columns: ['probe_id'], unique: true }],
);

export const tokensTable = new Table('quickbooks_oauth_tokens', {
  realm_id: { type: 'text', notNull: true },
  environment: { type: 'text', notNull: true },
  access_token_enc: { type: 'text' },
  access_token_expires_at: timestamptz,
  refresh_token_enc: { type: 'text', notNull: true },
  refresh_token_expires_at: timestamptz,
  refresh_token_hard_expires_at: timestamptz,
  status: { type: 'text', notNull: true },
  status_reason: { type: 'text' },
  company_name: { type: 'text' },
  revision: { type: 'bigint', notNull: true },
  created_at: timestamptzNotNull,
  updated_at: timestamptzNotNull,
});

/** One row per (realm, kind); realm_id is '' for system-wide kinds (database, schema). */
export const alertsTable = new Table('quickbooks_alert_state', {
  realm_id: { type: 'text', notNull: true },
  kind: { type: 'text', notNull: true },
  severity: { type: 'text', notNull: true },
  state: { type: 'text', notNull: true },
  consecutive_failures: { type: 'integer', notNull: true },
  since: timestamptzNotNull,
  last_notified_at: timestamptz,
  resolved_at: timestamptz,
  summary: { type: 'text', notNull: true },
  last_error: { type: 'text' },
  intuit_tid: { type: 'text' },
  updated_at: timestamptzNotNull,
});

/** Every table the code uses; `check-schema` verifies exactly these. */
export const SCHEMA: readonly TableSpec[] = [migrationsTable, healthTable, tokensTable, alertsTable];
