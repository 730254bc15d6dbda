/**
 * Named queries on quickbooks_alert_events, the history of alert transitions. Each transition the
 * escalation makes is one row, written in the transaction that changed the alert state (and wrote
 * its outbox notification, if any), so the history, the state and the notifications never disagree.
 * An incident is one (realm_id, kind, since): `since` is the alert state's, the first failure of
 * the run that raised it, the same on every row of the incident.
 */
import { isSystemSubject, type AlertEvent, type AlertKind, type Severity } from '../alert.js';
import type { Incident } from '../dashboard-model.js';
import { LogEvent, type Logger } from '../log.js';
import type { Queryable } from './pool.js';
import { alertEventsTable as E, alertsTable as A } from './schema.js';
import { pruneSilences } from './silence-queries.js';

/**
 * Alert history is kept this many days at least (and never less than HISTORY_RETENTION_DAYS): a
 * year of incidents and a little more, so that last year's maintenance window can be compared.
 */
export const ALERT_HISTORY_RETENTION_DAYS = 400;

export interface AlertEventRecord {
  readonly realmId: string;
  readonly kind: AlertKind;
  /** What was notified (or would have been, for a held-back one). */
  readonly event: AlertEvent;
  readonly severity: Severity;
  readonly since: Date;
  readonly at: Date;
  readonly consecutiveFailures: number;
  readonly summary: string;
  readonly lastError: string | null;
  readonly errorCode: string | null;
  readonly intuitTid: string | null;
  readonly reason: string | null;
  /** The outbox row it made; null when nothing was notified. */
  readonly notificationId: string | null;
  /** Held back because of a silence (silenceId names it, when one was active). */
  readonly silenced: boolean;
  readonly silenceId: string | null;
  readonly instance: string;
}

const INSERT_COLUMNS = [
  'realm_id',
  'kind',
  'event',
  'severity',
  'since',
  'at',
  'consecutive_failures',
  'summary',
  'last_error',
  'error_code',
  'intuit_tid',
  'reason',
  'notification_id',
  'silenced',
  'silence_id',
  'instance',
] as const;

const INSERT_SQL = E.insert([...INSERT_COLUMNS]);

/** Inside the transaction that made the transition. */
export async function insertAlertEvent(tx: Queryable, e: AlertEventRecord): Promise<void> {
  await tx.query(INSERT_SQL, [
    e.realmId,
    e.kind,
    e.event,
    e.severity,
    e.since,
    e.at,
    e.consecutiveFailures,
    e.summary,
    e.lastError,
    e.errorCode,
    e.intuitTid,
    e.reason,
    e.notificationId,
    e.silenced,
    e.silenceId,
    e.instance,
  ]);
}

/**
 * Like insertAlertEvent, unless the same transition (subject, kind, since, instance, event and
 * instant) is there already: for rows written after the fact and retried (a member's database alerts).
 */
export async function insertAlertEventOnce(tx: Queryable, e: AlertEventRecord): Promise<void> {
  await tx.query(
    `INSERT INTO ${E.name} (${INSERT_COLUMNS.join(', ')})
     SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamptz, $6::timestamptz, $7::integer, $8::text, $9::text, $10::text, $11::text, $12::text, $13::uuid, $14::boolean, $15::bigint, $16::text
      WHERE NOT EXISTS (SELECT 1 FROM ${E.name}
                         WHERE realm_id = $1 AND kind = $2 AND since = $5 AND instance = $16 AND event = $3 AND at = $6)`,
    [
      e.realmId,
      e.kind,
      e.event,
      e.severity,
      e.since,
      e.at,
      e.consecutiveFailures,
      e.summary,
      e.lastError,
      e.errorCode,
      e.intuitTid,
      e.reason,
      e.notificationId,
      e.silenced,
      e.silenceId,
      e.instance,
    ],
  );
}

/** What an incident told so far: whether anything was notified, and whether a silence held something back. */
export interface IncidentSoFar {
  notified: boolean;
  held: boolean;
}

export const incidentKey = (kind: string, since: Date): string => `${kind}\u0000${since.getTime()}`;

/** Per (kind, since) of `subject`, what its incident told so far (incidents without a row are absent). */
export async function incidentsSoFar(tx: Queryable, subject: string, incidents: ReadonlyArray<{ kind: string; since: Date }>): Promise<Map<string, IncidentSoFar>> {
  const found = new Map<string, IncidentSoFar>();
  if (incidents.length === 0) return found;
  const { rows } = await tx.query<{ kind: string; since: Date; notified: boolean; held: boolean }>(
    `SELECT e.kind, e.since, bool_or(e.notification_id IS NOT NULL) AS notified, bool_or(e.silenced AND e.notification_id IS NULL) AS held
       FROM ${E.name} e JOIN unnest($2::text[], $3::timestamptz[]) AS i(kind, since) ON e.kind = i.kind AND e.since = i.since
      WHERE e.realm_id = $1
      GROUP BY e.kind, e.since`,
    [subject, incidents.map((i) => i.kind), incidents.map((i) => i.since)],
  );
  for (const r of rows) found.set(incidentKey(r.kind, r.since), { notified: r.notified, held: r.held });
  return found;
}

export interface HeldAlert {
  readonly realmId: string;
  readonly kind: AlertKind;
  readonly since: Date;
  /** Something of the incident was notified before (then it goes out as a reminder, else as raised). */
  readonly notifiedBefore: boolean;
}

/**
 * Open alerts whose last transition a silence held back: what must be notified once no silence
 * covers them. Without `only`, every such alert (read without a lock, to choose what to lock);
 * with it, just those (re-read after locking them, on a fresh snapshot).
 */
export async function heldOpenAlerts(db: Queryable, only?: ReadonlyArray<{ realmId: string; kind: string }>): Promise<HeldAlert[]> {
  const { rows } = await db.query<{ realm_id: string; kind: AlertKind; since: Date; notified_before: boolean }>(
    `SELECT a.realm_id, a.kind, a.since,
            EXISTS (SELECT 1 FROM ${E.name} n WHERE n.realm_id = a.realm_id AND n.kind = a.kind AND n.since = a.since AND n.notification_id IS NOT NULL) AS notified_before
       FROM ${A.name} a
       JOIN LATERAL (SELECT e.silenced, e.notification_id FROM ${E.name} e
                      WHERE e.realm_id = a.realm_id AND e.kind = a.kind AND e.since = a.since
                      ORDER BY e.id DESC LIMIT 1) last ON true
      WHERE a.state = 'open' AND last.silenced AND last.notification_id IS NULL
        AND ($1::text[] IS NULL OR (a.realm_id, a.kind) IN (SELECT * FROM unnest($1::text[], $2::text[])))
      ORDER BY a.realm_id, a.kind`,
    [only ? only.map((o) => o.realmId) : null, only ? only.map((o) => o.kind) : null],
  );
  return rows.map((r) => ({ realmId: r.realm_id, kind: r.kind, since: r.since, notifiedBefore: r.notified_before }));
}

interface IncidentRow {
  realm_id: string;
  kind: string;
  since: Date;
  raised_at: Date | null;
  resolved_at: Date | null;
  cause: string | null;
  error_code: string | null;
  critical: boolean;
  notifications: number;
  silenced: boolean;
  member: string | null;
  now: Date;
}

/**
 * Kinds each fleet member raises for itself (its own view of PostgreSQL): their incidents are one
 * per member, told apart by `instance`, though they share the subject and the dedupKey.
 */
const MEMBER_KINDS = ['database', 'schema'];

const INCIDENTS_SQL = `WITH bounds AS (SELECT COALESCE($1::timestamptz, now()) AS now),
  incidents AS (
    SELECT e.realm_id, e.kind, e.since, CASE WHEN e.realm_id = '' AND e.kind = ANY($3::text[]) THEN e.instance END AS member
      FROM ${E.name} e, bounds b
     WHERE e.at >= b.now - make_interval(days => $2) AND e.at <= b.now
    UNION
    SELECT a.realm_id, a.kind, a.since, NULL FROM ${A.name} a WHERE a.state = 'open'
  )
  SELECT i.realm_id, i.kind, i.since, i.member,
         min(e.at) FILTER (WHERE e.event = 'alert.raised') AS raised_at,
         max(e.at) FILTER (WHERE e.event = 'alert.resolved') AS resolved_at,
         (array_agg(e.summary ORDER BY e.id) FILTER (WHERE e.event <> 'alert.resolved'))[1] AS cause,
         (array_agg(e.error_code ORDER BY e.id) FILTER (WHERE e.error_code IS NOT NULL))[1] AS error_code,
         bool_or(e.severity = 'critical') AS critical,
         count(e.notification_id)::int AS notifications,
         bool_or(e.silenced) AS silenced,
         (SELECT now FROM bounds) AS now
    FROM incidents i
    JOIN ${E.name} e ON e.realm_id = i.realm_id AND e.kind = i.kind AND e.since = i.since AND (i.member IS NULL OR e.instance = i.member)
   WHERE e.at <= (SELECT now FROM bounds)
   GROUP BY i.realm_id, i.kind, i.since, i.member`;

/**
 * Incidents of the last `days` (default 90) up to `now` (default: the database's clock): those
 * raised, notified or resolved in the window, and every one still open; newest first. An
 * incident raised before its history was kept (an alert open across the upgrade) starts at its
 * first failure. A member's own database and schema alerts are one incident per member (`instance`).
 */
export async function readIncidents(db: Queryable, opts: { readonly days?: number; readonly now?: Date } = {}): Promise<Incident[]> {
  const { rows } = await db.query<IncidentRow>(INCIDENTS_SQL, [opts.now ?? null, opts.days ?? 90, MEMBER_KINDS]);
  return rows
    .map((r): Incident => {
      const raisedAt = r.raised_at ?? r.since;
      return {
        realmId: isSystemSubject(r.realm_id) ? null : r.realm_id,
        kind: r.kind,
        severity: r.critical ? 'critical' : 'warning',
        raisedAt: raisedAt.toISOString(),
        resolvedAt: r.resolved_at?.toISOString() ?? null,
        durationMs: Math.max(0, (r.resolved_at ?? r.now).getTime() - raisedAt.getTime()),
        cause: r.cause ?? '',
        errorCode: r.error_code,
        notifications: r.notifications,
        silenced: r.silenced,
        ...(r.member === null ? {} : { instance: r.member }),
      };
    })
    .sort((a, b) => b.raisedAt.localeCompare(a.raisedAt) || a.kind.localeCompare(b.kind));
}

/**
 * Deletes alert history older than `days`, in batches of `batchSize` rows, except the incidents
 * still open (their history is kept until they resolve, then ages out).
 */
export async function pruneAlertEvents(db: Queryable, days: number, opts: { readonly now?: Date; readonly batchSize?: number } = {}): Promise<number> {
  const batchSize = opts.batchSize ?? 5000;
  let deleted = 0;
  for (;;) {
    const result = await db.query(
      `DELETE FROM ${E.name} WHERE id IN (
         SELECT e.id FROM ${E.name} e
          WHERE e.at < COALESCE($2::timestamptz, now()) - make_interval(days => $1)
            AND NOT EXISTS (SELECT 1 FROM ${A.name} a WHERE a.realm_id = e.realm_id AND a.kind = e.kind AND a.since = e.since AND a.state = 'open')
          ORDER BY e.at LIMIT $3)`,
      [days, opts.now ?? null, batchSize],
    );
    const n = result.rowCount ?? 0;
    deleted += n;
    if (n < batchSize) return deleted;
  }
}

/**
 * The daily prune's part for alerts: history older than ALERT_HISTORY_RETENTION_DAYS (or the probe
 * history's retention, if longer) and silences that ended that long ago.
 */
export async function pruneAlertHistory(
  db: Queryable,
  historyRetentionDays: number,
  log: Logger,
  opts: { readonly now?: Date; readonly batchSize?: number } = {},
): Promise<{ events: number; silences: number; retentionDays: number }> {
  const retentionDays = Math.max(ALERT_HISTORY_RETENTION_DAYS, historyRetentionDays);
  const events = await pruneAlertEvents(db, retentionDays, opts);
  const silences = await pruneSilences(db, retentionDays, opts.now);
  log.info({ event: LogEvent.alertHistoryPruned, events, silences, retentionDays }, `pruned ${events} alert event(s) and ${silences} silence(s) older than ${retentionDays} days`);
  return { events, silences, retentionDays };
}
