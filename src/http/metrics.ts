/**
 * Prometheus metrics (prom-client). Probe metrics carry blackbox-exporter names
 * (`probe_success`, `probe_duration_seconds`, `probe_http_status_code`) so existing dashboards
 * and alert rules apply; the monitor's own use a `qbhealth_` prefix. Gauges of state (spool,
 * alerts, database) are read from memory when scraped. The exposition passes Prometheus' own
 * linter (`promtool check metrics`): base units (seconds), `_total` on counters only, help on all.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProbeResult } from '../probe-result.js';
import type { HealthState } from '../health/state.js';
import { ErrorCode } from '../quickbooks/outcome.js';

/**
 * prom-client's defaults include three gauges named like counters, which promtool flags. Each is
 * the sum of a gauge that stays (`nodejs_active_handles`, `nodejs_active_requests`,
 * `nodejs_active_resources`, by `type`): `sum(nodejs_active_handles)` is the same number.
 */
const MISNAMED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export class Metrics {
  readonly registry = new Registry();
  private readonly success: Gauge<'realm_id'>;
  private readonly duration: Gauge<'realm_id'>;
  private readonly companyInfoDuration: Histogram;
  private readonly httpStatus: Gauge<'realm_id'>;
  private readonly probes: Counter<'realm_id' | 'status'>;
  private readonly failures: Counter<'realm_id' | 'error_code'>;
  private readonly refreshLeft: Gauge<'realm_id'>;
  readonly spooled: Counter;
  readonly replayed: Counter;
  readonly ticks: Counter<'outcome'>;

  constructor(state: HealthState) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
    // The per-realm gauges are set from the state when scraped: the fleet's view (each realm's
    // last result, whichever member took it), so every member serves the same values and a realm
    // that moved to another member leaves no stale series here.
    const realmGauge = (name: string, help: string, value: (r: ProbeResult, now: number) => number | undefined): Gauge<'realm_id'> =>
      new Gauge({
        name,
        help,
        labelNames: ['realm_id'],
        registers,
        collect() {
          this.reset();
          const now = Date.now();
          for (const { realmId, last } of state.realms.values()) {
            const v = value(last, now);
            if (v !== undefined) this.set({ realm_id: realmId }, v);
          }
        },
      });
    // Throttled (warn) counts as up, as in /health and `status`: Intuit answered and asked us to slow down.
    this.success = realmGauge('probe_success', 'Whether the last probe of the realm found the connection up (1; throttled counts as up) or failing (0)', (r) => (r.status === 'fail' ? 0 : 1));
    this.duration = realmGauge(
      'probe_duration_seconds',
      'Duration of the last probe of the realm in seconds, the whole probe: token refresh (when one was needed) and CompanyInfo',
      (r) => (r.durationMs ?? r.latencyMs) / 1000,
    );
    this.companyInfoDuration = new Histogram({
      name: 'qbhealth_companyinfo_duration_seconds',
      help: 'Duration of the CompanyInfo API call alone in seconds (no token refresh), across realms; the latency_ms of the history rows',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.httpStatus = realmGauge('probe_http_status_code', 'HTTP status of the last CompanyInfo answer (0: none)', (r) => r.httpStatus ?? 0);
    this.probes = new Counter({ name: 'qbhealth_probes_total', help: 'Probes run, by result status', labelNames: ['realm_id', 'status'], registers });
    this.failures = new Counter({ name: 'qbhealth_probe_failures_total', help: 'Failed probes by error_code', labelNames: ['realm_id', 'error_code'], registers });
    this.refreshLeft = realmGauge(
      'qbhealth_refresh_token_expiry_seconds',
      'Seconds until the refresh token expires (the earlier of the rolling and the 5-year hard expiry); no series for a realm whose refresh token was refused (revoked: reconnect it)',
      // A refused refresh token (revoked, or rotated and lost) has no lifetime left to count down,
      // whatever its stored expiry says: the realm must be reconnected.
      (r, now) => (r.errorCode === ErrorCode.authInvalidGrant || !r.refreshTokenExpiresAt ? undefined : Math.round((r.refreshTokenExpiresAt.getTime() - now) / 1000)),
    );
    this.spooled = new Counter({ name: 'qbhealth_spool_appended_total', help: 'Results written to the spool because PostgreSQL could not take them', registers });
    this.replayed = new Counter({ name: 'qbhealth_spool_replayed_total', help: 'Spooled results replayed into PostgreSQL (read back from the spool and in the table; torn lines skipped are not counted)', registers });
    this.ticks = new Counter({ name: 'qbhealth_scheduler_ticks_total', help: 'Scheduler ticks by outcome', labelNames: ['outcome'], registers });
    new Gauge({
      name: 'qbhealth_spool_pending',
      help: 'Results waiting in the spool',
      registers,
      collect() {
        this.set(state.spoolPending);
      },
    });
    new Gauge({
      name: 'qbhealth_alerts_open',
      help: 'Open alerts by kind and severity',
      labelNames: ['kind', 'severity'],
      registers,
      collect() {
        this.reset();
        for (const a of state.openAlerts()) this.inc({ kind: a.kind, severity: a.severity });
      },
    });
    new Gauge({
      name: 'qbhealth_fleet_members',
      help: 'Members of the fleet (daemons sharing the database) by state: live, or down (heartbeat older than FLEET_MEMBER_TTL_MS)',
      labelNames: ['state'],
      registers,
      collect() {
        const members = state.fleet?.members ?? [];
        this.set({ state: 'live' }, members.filter((m) => m.live).length);
        this.set({ state: 'down' }, members.filter((m) => !m.live).length);
      },
    });
    new Gauge({
      name: 'qbhealth_realms_held',
      help: 'Realms whose lease this member holds at the last heartbeat (probing them now)',
      registers,
      collect() {
        this.set(state.fleet?.members.find((m) => m.instanceId === state.fleet?.self)?.realmsHeld ?? 0);
      },
    });
    new Gauge({
      name: 'qbhealth_database_up',
      help: 'Whether PostgreSQL was reachable at the last check',
      registers,
      collect() {
        this.set(state.db.reachable ? 1 : 0);
      },
    });
    new Gauge({
      name: 'qbhealth_scheduler_last_tick_timestamp_seconds',
      help: 'When the scheduler last started a probe cycle, in seconds since the Unix epoch (0: not yet)',
      registers,
      collect() {
        this.set(state.lastTickAt ? state.lastTickAt.getTime() / 1000 : 0);
      },
    });
  }

  /** Label values seen per realm on the counters, so a forgotten realm's series can all be removed. */
  private readonly seen = new Map<string, { statuses: Set<string>; codes: Set<string> }>();

  observe(r: ProbeResult): void {
    const realm = { realm_id: r.realmId };
    let seen = this.seen.get(r.realmId);
    if (!seen) this.seen.set(r.realmId, (seen = { statuses: new Set(), codes: new Set() }));
    seen.statuses.add(r.status);
    if (r.status === 'fail') seen.codes.add(r.errorCode);
    if (r.companyInfoMs !== undefined) this.companyInfoDuration.observe(r.companyInfoMs / 1000);
    this.probes.inc({ ...realm, status: r.status });
    if (r.status === 'fail') this.failures.inc({ ...realm, error_code: r.errorCode });
  }

  /** A realm no longer probed (disconnected, removed) leaves every per-realm series. */
  forget(realmId: string): void {
    for (const g of [this.success, this.duration, this.httpStatus, this.refreshLeft]) g.remove({ realm_id: realmId });
    const seen = this.seen.get(realmId);
    for (const status of seen?.statuses ?? []) this.probes.remove({ realm_id: realmId, status });
    for (const code of seen?.codes ?? []) this.failures.remove({ realm_id: realmId, error_code: code });
    this.seen.delete(realmId);
  }
}
