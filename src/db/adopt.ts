/**
 * Adoption: brings tables that already exist to the shape db/schema.ts declares, keeping every row
 * and every column the code does not know. The incident's emergency fix is one such table, but an
 * operator may have made `quickbooks_connection_health` with nullable columns, other columns
 * (`status` instead of `connected`), other types, or as another role; and any table can drift after
 * a migration created it. `migrate` runs the statements planned here inside the transaction of the
 * first migration it runs (and before re-applying them to repair), so the migrations themselves
 * find a table they know how to finish.
 *
 * Why not in 0001_initial_schema.sql: that file's checksum is recorded in every database that
 * applied it, and an applied migration that changes stops `migrate` and start-up (exit 65). The
 * migrations stay as released; this step, derived from the declarations, does what they cannot.
 *
 * What cannot be done without a human decision (a table owned by another role, values that do not
 * convert, keys that repeat, a hand-made NOT NULL column the code does not fill) is a blocker:
 * nothing changes, and `migrate` exits 65 with one line per blocker naming the object, the cause
 * and the SQL to run. `check-schema` plans the same way (read-only) to say whether `migrate` can fix
 * what it reports. Planning only reads; every count runs before anything is altered.
 *
 * Identifiers are interpolated into the SQL: PostgreSQL cannot take them as parameters. They are
 * the declared names of db/schema.ts or names quoted by the server's own quote_ident().
 */
import { sqlState, type Queryable } from './pool.js';
import { healthTable, migrationsTable, SCHEMA, type ColumnSpec, type TableSpec } from './schema.js';
import { compareSchema, indexServes, readLiveSchema, type LiveColumn, type LiveIndex } from './verify.js';

export interface AdoptionBlocker {
  /** `table t` or `column t.c`. */
  readonly object: string;
  readonly cause: string;
  /** Who runs what, ending with the exact SQL. */
  readonly fix: string;
}

export function describeBlocker(b: AdoptionBlocker): string {
  return `${b.object}: ${b.cause}; ${b.fix}`;
}

export interface AdoptionPlan {
  /** Run in order, in one transaction, before the migrations. Empty when every table conforms. */
  readonly statements: readonly string[];
  readonly blockers: readonly AdoptionBlocker[];
  /** One line per table adopted: rows kept and what changes. */
  readonly notes: readonly string[];
}

export interface AdoptionOptions {
  /**
   * The migrations will run (some are pending, or they are re-applied to repair): they alter every
   * table but migrations_applied, so the role must own those even where nothing else differs.
   */
  readonly migrationsWillRun: boolean;
  readonly declared?: readonly TableSpec[];
}

/**
 * Columns the migrations create only together with their table (CREATE TABLE), never with ADD
 * COLUMN: on an existing table nothing else would add them. The health table's are added here;
 * any other table without them is not this program's table.
 */
const CREATED_WITH_TABLE: Readonly<Record<string, readonly string[]>> = {
  quickbooks_oauth_tokens: ['realm_id'],
  quickbooks_alert_state: ['realm_id', 'kind'],
};

/** Values of a hand-made `status` column read as connected or not (case and spaces ignored). */
const STATUS_CONNECTED = ['pass', 'warn', 'ok', 'up', 'connected', 'healthy', 'success', 'true'];
const STATUS_FAILING = ['fail', 'error', 'down', 'disconnected', 'failed', 'failure', 'unhealthy', 'false'];
/** What `error` says on an adopted row that recorded no outcome at all (it becomes connected = false). */
export const UNKNOWN_OUTCOME = 'no outcome recorded (row adopted from a hand-made table by qbhealth migrate)';

/** SQLSTATEs of a conversion that the data or the types refuse (not a broken connection). */
const CONVERSION_REFUSED = /^(22|42846|42883|42804)/;

interface Session {
  role: string;
  schema: string;
  can_create: boolean;
  /** quote_literal of the zone hand-made `timestamp without time zone` values were written in. */
  legacy_zone: string;
}

interface TableInfo {
  table_name: string;
  owned: boolean;
  owner: string;
  has_primary_key: boolean;
}

interface NamedColumn extends LiveColumn {
  quoted: string;
}

const SESSION_SQL = `
  SELECT quote_ident(current_user) AS role, quote_ident(current_schema()) AS schema,
         has_schema_privilege(current_schema(), 'CREATE') AS can_create,
         -- Hand-made rows got DEFAULT NOW() cast to wall-clock time in the session's zone; sessions
         -- that set none use the database's, which is what reset_val reports (as 0001 does).
         (SELECT quote_literal(reset_val) FROM pg_settings WHERE name = 'TimeZone') AS legacy_zone`;

const TABLES_SQL = `
  SELECT c.relname AS table_name, pg_has_role(c.relowner, 'USAGE') AS owned,
         quote_ident(pg_get_userbyid(c.relowner)) AS owner,
         EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_primary_key
    FROM pg_class c
   WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
     AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])`;

const QUOTED_SQL = `
  SELECT a.attname AS column_name, quote_ident(a.attname) AS quoted
    FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`;

function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

export async function planAdoption(db: Queryable, opts: AdoptionOptions): Promise<AdoptionPlan> {
  const declared = opts.declared ?? SCHEMA;
  const session = (await db.query<Session>(SESSION_SQL)).rows[0] as Session;
  const tables = (await db.query<TableInfo>(TABLES_SQL, [declared.map((t) => t.name)])).rows;
  const live = await readLiveSchema(db, declared);
  const statements: string[] = [];
  const blockers: AdoptionBlocker[] = [];
  const notes: string[] = [];

  const missing = declared.filter((t) => !tables.some((i) => i.table_name === t.name)).map((t) => t.name);
  if (missing.length > 0 && !session.can_create) {
    blockers.push({
      object: `schema ${session.schema}`,
      cause: `role ${session.role} may not create tables in it (PostgreSQL 15 and later no longer let every role create in public), and ${missing.join(', ')} must be created`,
      fix: `run as the database owner or a superuser: GRANT CREATE ON SCHEMA ${session.schema} TO ${session.role};`,
    });
  }
  for (const table of declared) {
    const info = tables.find((i) => i.table_name === table.name);
    if (!info) continue;
    const planner = new TablePlanner(db, session, table, info, live.columns, live.indexes);
    const outcome = await planner.plan(opts.migrationsWillRun);
    statements.push(...outcome.statements);
    blockers.push(...outcome.blockers);
    if (outcome.note) notes.push(outcome.note);
  }
  return { statements, blockers, notes };
}

/** Runs a plan's statements on `db` (inside the caller's transaction). */
export async function applyAdoption(db: Queryable, plan: AdoptionPlan): Promise<void> {
  for (const statement of plan.statements) await db.query(statement);
}

interface ColumnState {
  notNull: boolean;
  hasDefault: boolean;
  /** Added by this plan: every row is NULL in it until backfilled. */
  added: boolean;
}

class TablePlanner {
  private readonly name: string;
  private readonly statements: string[] = [];
  private readonly blockers: AdoptionBlocker[] = [];
  /** For the operator's note: what adoption does, grouped. */
  private readonly converted: string[] = [];
  private readonly added: string[] = [];
  private readonly changes: string[] = [];
  private readonly madeNotNull: string[] = [];
  /** Set when the whole table must be moved aside: then nothing else about it matters. */
  private setAside: AdoptionBlocker | undefined;
  private readonly columns: Map<string, LiveColumn>;
  private readonly indexes: LiveIndex[];
  private readonly state = new Map<string, ColumnState>();
  private rows = 0;
  /** Where a health row's status is read from to derive `connected` (renamed when not ours). */
  private statusSource: string | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly session: Session,
    private readonly table: TableSpec,
    private readonly info: TableInfo,
    columns: readonly LiveColumn[],
    indexes: readonly LiveIndex[],
  ) {
    this.name = table.name;
    this.columns = new Map(columns.filter((c) => c.table_name === table.name).map((c) => [c.column_name, c]));
    this.indexes = indexes.filter((i) => i.table_name === table.name);
  }

  async plan(migrationsWillRun: boolean): Promise<{ statements: string[]; blockers: AdoptionBlocker[]; note?: string }> {
    const differs = compareSchema([this.table], [...this.columns.values()], this.indexes).length > 0;
    const altered = migrationsWillRun && this.name !== migrationsTable.name;
    if (!differs && !altered) return { statements: [], blockers: [] };
    if (!this.info.owned) {
      // Without ownership nothing can change here, and its rows may not even be readable.
      this.blockers.push({
        object: `table ${this.name}`,
        cause: `it is owned by role ${this.info.owner}, and only its owner may alter it (${this.session.role}, the role in DATABASE_URL, is not)`,
        fix: `run as a superuser: ALTER TABLE ${this.name} OWNER TO ${this.session.role}; (or run \`qbhealth migrate\` with DATABASE_URL as ${this.info.owner})`,
      });
      return { statements: [], blockers: this.blockers };
    }
    if (!differs) return { statements: [], blockers: [] };

    this.rows = Number((await this.db.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.name}`)).rows[0]?.n ?? 0);
    const quoted = new Map(
      (await this.db.query<{ column_name: string; quoted: string }>(QUOTED_SQL, [this.name])).rows.map((r) => [r.column_name, r.quoted]),
    );
    for (const [column, live] of this.columns) {
      this.state.set(column, { notNull: live.not_null, hasDefault: live.has_default, added: false });
    }
    if (this.name === healthTable.name) await this.setAsideForeignStatus();
    await this.convertTypes();
    await this.addMissingColumns();
    await this.fillDefaultsAndNulls();
    this.blockUndeclaredNotNull(quoted);
    await this.addUniqueKeys();

    if (this.setAside) return { statements: [], blockers: [this.setAside] };
    const parts = [
      ...(this.converted.length > 0 ? [`converted ${this.converted.join(', ')}`] : []),
      ...(this.added.length > 0 ? [`added ${this.added.join(', ')}`] : []),
      ...this.changes,
      ...(this.madeNotNull.length > 0 ? [`made NOT NULL ${this.madeNotNull.join(', ')}`] : []),
    ];
    const note =
      this.statements.length > 0 && this.blockers.length === 0
        ? `adopted ${this.name}: kept its ${plural(this.rows, 'row')}${parts.length > 0 ? `; ${parts.join('; ')}` : ''}`
        : undefined;
    return { statements: this.statements, blockers: this.blockers, ...(note ? { note } : {}) };
  }

  private spec(column: string): ColumnSpec | undefined {
    return (this.table.columns as Record<string, ColumnSpec | undefined>)[column];
  }

  private async count(sql: string): Promise<number> {
    return Number((await this.db.query<{ n: string }>(sql)).rows[0]?.n ?? 0);
  }

  private async freeName(base: string, taken: (name: string) => Promise<boolean>): Promise<string> {
    for (let i = 1; ; i++) {
      const name = i === 1 ? base : `${base}_${i}`;
      if (!(await taken(name))) return name;
    }
  }

  private async freeColumnName(base: string): Promise<string> {
    return this.freeName(base, async (n) => this.columns.has(n));
  }

  private async renameTableBlocker(cause: string): Promise<void> {
    if (this.setAside) return;
    const aside = await this.freeName(`${this.name}_legacy`, async (n) => (await this.db.query(`SELECT 1 FROM pg_class WHERE relname = $1`, [n])).rowCount !== 0);
    this.setAside = {
      object: `table ${this.name}`,
      cause,
      fix: `move it aside, and migrate creates the table afresh: ALTER TABLE ${this.name} RENAME TO ${aside};`,
    };
  }

  /**
   * Moves a column out of the way so migrate can add the declared one, keeping its values. The
   * monitor never writes the set-aside column, so it must not demand a value either.
   */
  private async renameColumnBlocker(column: string, cause: string): Promise<void> {
    const aside = await this.freeColumnName(`${column}_legacy`);
    const live = this.columns.get(column);
    const dropNotNull = live?.not_null && !live.has_default ? ` ALTER TABLE ${this.name} ALTER COLUMN ${aside} DROP NOT NULL;` : '';
    this.blockers.push({
      object: `column ${this.name}.${column}`,
      cause,
      fix: `keep it under another name, and migrate adds the column afresh: ALTER TABLE ${this.name} RENAME COLUMN ${column} TO ${aside};${dropNotNull}`,
    });
  }

  private isCreatedWithTable(column: string): boolean {
    return this.name === migrationsTable.name || (CREATED_WITH_TABLE[this.name] ?? []).includes(column);
  }

  /** A hand-made `status` with its own vocabulary is kept as status_legacy; 0001 adds ours (pass|warn|fail). */
  private async setAsideForeignStatus(): Promise<void> {
    if (!this.columns.has('status')) return;
    const foreign = await this.count(
      `SELECT count(*) AS n FROM ${this.name} WHERE status IS NOT NULL AND status::text NOT IN ('pass', 'warn', 'fail')`,
    );
    if (foreign === 0) {
      this.statusSource = 'status';
      return;
    }
    const aside = await this.freeColumnName('status_legacy');
    this.statements.push(`ALTER TABLE ${this.name} RENAME COLUMN status TO ${aside}`);
    // The monitor never writes the set-aside column, so it must not demand a value.
    if (this.columns.get('status')?.not_null) this.statements.push(`ALTER TABLE ${this.name} ALTER COLUMN ${aside} DROP NOT NULL`);
    this.changes.push(`status kept as ${aside} (it holds values other than pass|warn|fail)`);
    this.columns.delete('status');
    this.state.delete('status');
    this.statusSource = aside;
  }

  private conversion(column: string, from: string, to: string): string {
    // Wall-clock timestamps become instants in the zone they were written in (as 0001 does).
    if (to === 'timestamp with time zone' && /^timestamp(\(\d\))? without time zone$/.test(from)) {
      return `${column} AT TIME ZONE ${this.session.legacy_zone}`;
    }
    return `${column}::${to}`;
  }

  private async convertTypes(): Promise<void> {
    for (const [column, live] of [...this.columns]) {
      const spec = this.spec(column);
      if (!spec || spec.type === live.type) continue;
      const using = this.conversion(column, live.type, spec.type);
      try {
        await this.db.query(`SELECT count(${using}) FROM ${this.name}`);
      } catch (err) {
        if (!CONVERSION_REFUSED.test(sqlState(err) ?? '')) throw err;
        const cause = `it is ${live.type}, and its values cannot become ${spec.type} (${(err as Error).message})`;
        if (this.isCreatedWithTable(column)) {
          await this.renameTableBlocker(cause);
        } else {
          await this.renameColumnBlocker(column, cause);
        }
        continue;
      }
      this.statements.push(`ALTER TABLE ${this.name} ALTER COLUMN ${column} TYPE ${spec.type} USING ${using}`);
      this.converted.push(`${column} to ${spec.type}`);
      // The old default was cast for the old type (now()::timestamp): set the declared one again.
      const state = this.state.get(column);
      if (state && spec.default !== undefined && spec.default !== 'identity') state.hasDefault = false;
    }
  }

  private async addMissingColumns(): Promise<void> {
    for (const [column, spec] of Object.entries(this.table.columns as Record<string, ColumnSpec>)) {
      if (this.columns.has(column)) continue;
      if (this.name === healthTable.name && ['id', 'connected', 'checked_at', 'created_at', 'error'].includes(column)) {
        if (column === 'id') {
          // Numbers the existing rows from the new identity sequence.
          const key = this.info.has_primary_key ? '' : ' PRIMARY KEY';
          this.statements.push(`ALTER TABLE ${this.name} ADD COLUMN id bigint GENERATED BY DEFAULT AS IDENTITY${key}`);
          this.state.set(column, { notNull: true, hasDefault: true, added: true });
        } else {
          this.statements.push(`ALTER TABLE ${this.name} ADD COLUMN ${column} ${spec.type}`);
          this.state.set(column, { notNull: false, hasDefault: false, added: true });
        }
        this.added.push(column);
      } else if (this.isCreatedWithTable(column)) {
        await this.renameTableBlocker(`it has no column ${column}, which the migrations create only with the table (it was made by hand or for something else)`);
      } else if (spec.notNull && spec.default === undefined && this.rows > 0) {
        await this.renameTableBlocker(`it has no column ${column}, and the migrations add it NOT NULL with no value for the ${plural(this.rows, 'row')} there`);
      }
      // Anything else the migrations add, with their CHECK constraints.
    }
  }

  private async fillDefaultsAndNulls(): Promise<void> {
    const t = this.name;
    for (const [column, spec] of Object.entries(this.table.columns as Record<string, ColumnSpec>)) {
      const state = this.state.get(column);
      if (!state) continue;
      if (spec.default !== undefined && spec.default !== 'identity' && !state.hasDefault) {
        this.statements.push(`ALTER TABLE ${t} ALTER COLUMN ${column} SET DEFAULT ${spec.default}`);
        state.hasDefault = true;
      }
      if (spec.notNull && !state.notNull) {
        const nulls = state.added ? this.rows : await this.count(`SELECT count(*) AS n FROM ${t} WHERE ${column} IS NULL`);
        if (nulls > 0 && !(await this.backfill(column, spec, state, nulls))) continue;
        this.statements.push(`ALTER TABLE ${t} ALTER COLUMN ${column} SET NOT NULL`);
        this.madeNotNull.push(column);
      } else if (!spec.notNull && state.notNull) {
        if (this.indexes.some((i) => i.is_primary && i.columns.includes(column))) {
          await this.renameColumnBlocker(column, 'it is in the primary key, yet the code writes NULL into it');
          continue;
        }
        this.statements.push(`ALTER TABLE ${t} ALTER COLUMN ${column} DROP NOT NULL`);
        this.changes.push(`${column} allows NULL (the code writes NULL into it)`);
      }
      if (spec.default === 'identity' && !state.hasDefault) {
        this.statements.push(`ALTER TABLE ${t} ALTER COLUMN ${column} ADD GENERATED BY DEFAULT AS IDENTITY`);
        this.statements.push(`SELECT setval(pg_get_serial_sequence('${t}', '${column}'), coalesce(max(${column}), 0) + 1, false) FROM ${t}`);
        this.changes.push(`${column} numbered by an identity sequence`);
      }
    }
  }

  /** Fills the NULLs of a NOT NULL column; false (and a blocker) when nothing says what they were. */
  private async backfill(column: string, spec: ColumnSpec, state: ColumnState, nulls: number): Promise<boolean> {
    const t = this.name;
    const health = t === healthTable.name;
    if (health && column === 'connected') {
      await this.deriveConnected(state);
    } else if (health && (column === 'checked_at' || column === 'created_at')) {
      // A row's check and its insert are the same moment; with neither known, the adoption is
      // the latest it can have been.
      const other = column === 'checked_at' ? 'created_at' : 'checked_at';
      const source = this.state.has(other) ? `coalesce(${other}, now())` : 'now()';
      this.statements.push(`UPDATE ${t} SET ${column} = ${source} WHERE ${column} IS NULL`);
      this.changes.push(`${column} filled for ${plural(nulls, 'row')} from ${source === 'now()' ? 'the adoption time' : `${other} (or the adoption time)`}`);
    } else if (spec.default === 'identity' && !state.hasDefault) {
      this.statements.push(
        `UPDATE ${t} SET ${column} = n.id FROM (SELECT ctid AS row_ctid, (SELECT coalesce(max(${column}), 0) FROM ${t}) + row_number() OVER () AS id FROM ${t} WHERE ${column} IS NULL) n WHERE ${t}.ctid = n.row_ctid`,
      );
      this.changes.push(`${column} numbered for ${plural(nulls, 'row')}`);
    } else if (state.hasDefault) {
      this.statements.push(`UPDATE ${t} SET ${column} = DEFAULT WHERE ${column} IS NULL`);
      this.changes.push(`${column} set to its default for ${plural(nulls, 'row')}`);
    } else {
      this.blockers.push({
        object: `column ${t}.${column}`,
        cause: `${nulls} row${nulls === 1 ? ' has' : 's have'} none, the code needs one, and nothing says what it should be`,
        fix: `fill them in, or remove them: DELETE FROM ${t} WHERE ${column} IS NULL;`,
      });
      return false;
    }
    return true;
  }

  /** connected from status, error_code or error; a row with none of them recorded no outcome. */
  private async deriveConnected(state: ColumnState): Promise<void> {
    const t = this.name;
    const list = (values: readonly string[]): string => values.map((v) => `'${v}'`).join(', ');
    const clauses: string[] = [];
    // At planning time a set-aside status still has its old name.
    const derive = (status: string | undefined): string => {
      const parts: string[] = [];
      if (status) {
        parts.push(`WHEN lower(btrim(${status}::text)) IN (${list(STATUS_CONNECTED)}) THEN true`);
        parts.push(`WHEN lower(btrim(${status}::text)) IN (${list(STATUS_FAILING)}) THEN false`);
      }
      if (this.columns.has('error_code')) {
        parts.push(`WHEN error_code::text = 'ok' THEN true`, `WHEN nullif(btrim(error_code::text), '') IS NOT NULL THEN false`);
      }
      if (this.columns.has('error')) parts.push(`WHEN nullif(btrim(error::text), '') IS NOT NULL THEN false`);
      return parts.length > 0 ? `CASE ${parts.join(' ')} END` : 'NULL::boolean';
    };
    const pending = state.added ? 'true' : 'connected IS NULL';
    const planned = derive(this.statusSource === undefined ? undefined : 'status');
    const counts = (
      await this.db.query<{ derived: string; unknown: string }>(
        `SELECT count(*) FILTER (WHERE (${planned}) IS NOT NULL) AS derived, count(*) FILTER (WHERE (${planned}) IS NULL) AS unknown
           FROM ${t} WHERE ${pending}`,
      )
    ).rows[0];
    const derived = Number(counts?.derived ?? 0);
    const unknown = Number(counts?.unknown ?? 0);
    if (derived > 0) {
      this.statements.push(`UPDATE ${t} SET connected = ${derive(this.statusSource)} WHERE connected IS NULL`);
      clauses.push(`derived for ${plural(derived, 'row')} from ${[this.statusSource, ...['error_code', 'error'].filter((c) => this.columns.has(c))].filter(Boolean).join('/')}`);
    }
    if (unknown > 0) {
      // false, not true: a monitor must never claim a connection it has no evidence of; the row
      // says why in `error` (which is NULL on such a row, or connected would have been derived).
      this.statements.push(`UPDATE ${t} SET connected = false, error = '${UNKNOWN_OUTCOME}' WHERE connected IS NULL`);
      clauses.push(`false for ${plural(unknown, 'row')} that recorded no outcome (error says so)`);
    }
    this.changes.push(`connected ${clauses.join(', ')}`);
  }

  private blockUndeclaredNotNull(quoted: ReadonlyMap<string, string>): void {
    for (const live of this.columns.values()) {
      if (this.spec(live.column_name) || !live.not_null || live.has_default) continue;
      const name = quoted.get(live.column_name) ?? live.column_name;
      this.blockers.push({
        object: `column ${this.name}.${name}`,
        cause: 'it is NOT NULL without a default, and the monitor does not write it, so every insert would fail',
        fix: `let it be NULL (or give it a default): ALTER TABLE ${this.name} ALTER COLUMN ${name} DROP NOT NULL;`,
      });
    }
  }

  /** The keys ON CONFLICT needs; the migrations create them only with their tables (0001 also adds probe_id's). */
  private async addUniqueKeys(): Promise<void> {
    const t = this.name;
    for (const wanted of this.table.indexes) {
      if (!wanted.unique || this.indexes.some((i) => indexServes(i, wanted))) continue;
      if (!wanted.columns.every((c) => this.state.has(c))) continue;
      const cols = wanted.columns.join(', ');
      const repeated = await this.count(
        `SELECT count(*) AS n FROM (SELECT 1 FROM ${t} WHERE ${wanted.columns.map((c) => `${c} IS NOT NULL`).join(' AND ')} GROUP BY ${cols} HAVING count(*) > 1) d`,
      );
      if (repeated > 0) {
        const cause = `${repeated} value${repeated === 1 ? ' of (' + cols + ') repeats' : 's of (' + cols + ') repeat'}, and the code's ON CONFLICT (${cols}) needs them unique`;
        if (t === healthTable.name && wanted.columns.length === 1) {
          // probe_id: the rows are history, not to be deleted; their ids only have to stop clashing.
          await this.renameColumnBlocker(cols, cause);
        } else {
          this.blockers.push({
            object: `table ${t}`,
            cause,
            fix: `keep one row per key: DELETE FROM ${t} a USING ${t} b WHERE ${wanted.columns.map((c) => `a.${c} = b.${c}`).join(' AND ')} AND a.ctid < b.ctid;`,
          });
        }
        continue;
      }
      const index = await this.freeName(`${t}_${wanted.columns.join('_')}_key`, async (n) => (await this.db.query(`SELECT 1 FROM pg_class WHERE relname = $1`, [n])).rowCount !== 0);
      this.statements.push(`CREATE UNIQUE INDEX ${index} ON ${t} (${cols})`);
      this.changes.push(`unique index on (${cols}) added`);
    }
  }
}
