/**
 * What the dashboard reads from PostgreSQL, in one snapshot: each realm's stored facts (company,
 * environment, connection status, last error, refresh-token expiry, open alerts) from the
 * `qbhealth status` report, its 90 days of bars from the rollups (and the raw rows not yet folded
 * into them: db/dashboard-queries.ts), the incidents of 90 days and the silences in force. Run
 * through StatusSource.read, on the status reader's own small pool, so a page polling it cannot
 * take the connections probes are recorded with.
 */
import type { DashboardHistory, Incident, Silence } from '../dashboard-model.js';
import { readDashboardHistory } from './dashboard-queries.js';
import { readIncidents } from './incident-queries.js';
import type { Queryable } from './pool.js';
import { listSilences } from './silence-queries.js';
import { loadStatus, type StatusReport } from './status.js';

/** The incident history the page shows. */
export const INCIDENT_DAYS = 90;

/**
 * The status report's own window is not shown (the bars come from the rollups): it is kept short,
 * so its raw-row scan stays a few minutes of rows whatever the history's size.
 */
const FACTS_WINDOW_MS = 10 * 60_000;

export interface StoredDashboard {
  /** The instant the reads were made for. */
  readonly readAt: Date;
  readonly status: StatusReport;
  readonly history: DashboardHistory;
  readonly incidents: readonly Incident[];
  readonly silences: readonly Silence[];
}

export async function loadStoredDashboard(db: Queryable, opts: { now: Date }): Promise<StoredDashboard> {
  const now = opts.now;
  // One statement at a time: `db` is a single client in a snapshot.
  const status = await loadStatus(db, { since: new Date(now.getTime() - FACTS_WINDOW_MS), now, width: 1 });
  const history = await readDashboardHistory(db, { now, realmIds: status.realms.map((r) => r.realmId) });
  const incidents = await readIncidents(db, { days: INCIDENT_DAYS, now });
  const silences = await listSilences(db, { now });
  return { readAt: now, status, history, incidents, silences };
}
