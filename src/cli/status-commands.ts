/** `qbhealth status` (the at-a-glance report) and `qbhealth prune` (retention); both need only DATABASE_URL. */
import { pruneHistory, PRUNE_BATCH } from '../db/prune.js';
import { loadStatusSnapshot, needsAttention, parseSince, type OpenAlert, type RealmStatus, type StatusReport } from '../db/status.js';
import { ExitCode, OperatorError } from '../errors.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { withDatabase } from './db-commands.js';
import { memberTtlFromEnv, renderFleetSection } from './fleet-commands.js';
import { ago } from './format.js';
import { silenceLines } from './silence-commands.js';
import { databaseFailure, realmOption, requireRealm } from './qbo-commands.js';

function span(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${Number(seconds.toFixed(1))}s`;
}

const STATE_TEXT: Record<RealmStatus['state'], string> = {
  pass: 'PASS',
  warn: 'WARN (throttled)',
  fail: 'FAIL',
  reconnect_required: 'RECONNECT REQUIRED',
  disconnected: 'DISCONNECTED',
  unknown: 'UNKNOWN (never probed)',
};

const expiry = (days: number | null, at: string | null, kind: string): string =>
  days === null || at === null ? `${kind} unknown` : `${days < 0 ? `expired ${-days} days ago` : `${days} days left`} (${kind}, ${at.slice(0, 10)})`;

function alertLine(a: OpenAlert, now: string): string {
  const silenced = a.silenced ? ` SILENCED (silence ${a.silenceId ?? '?'}: recorded, not notified)` : '';
  return `${a.severity.toUpperCase()} ${a.kind} since ${ago(a.since, now)} (${a.consecutiveFailures} failure(s))${silenced}: ${a.summary}`;
}

function renderRealm(r: RealmStatus, report: StatusReport, window: string): string[] {
  const now = report.generatedAt;
  const lines = [`realm ${r.realmId}${r.companyName ? `  ${r.companyName}` : ''}${r.environment ? `  (${r.environment})` : ''}`];
  const row = (label: string, text: string): void => {
    lines.push(`  ${label.padEnd(14)} ${text}`);
  };
  const last = r.lastProbe;
  const lastText = last ? `last probe ${ago(last.at, now)}: ${last.errorCode ?? last.status}${last.latencyMs !== null ? `, ${last.latencyMs} ms` : ''}` : 'no probe recorded';
  row('state', `${STATE_TEXT[r.state]}  ${lastText}${r.connectionReason && r.state !== 'pass' ? `  (${r.connectionReason})` : ''}`);
  const p = r.probes;
  row(
    'uptime',
    r.uptimePercent === null
      ? `no probes in the last ${window}`
      : `${r.uptimePercent}% over ${window} (${p.up} of ${p.total} probes up${p.warned ? `, ${p.warned} throttled` : ''}${p.failed ? `, ${p.failed} failed` : ''})`,
  );
  row('latency', r.latencyMs ? `p50 ${r.latencyMs.p50} ms  p95 ${r.latencyMs.p95} ms` : 'no probes in the window');
  const e = r.lastError;
  row(
    'last error',
    e
      ? [`${ago(e.at, now)}:`, e.errorCode ?? e.status, e.httpStatus ? `(http ${e.httpStatus})` : undefined, e.intuitTid ? `intuit_tid ${e.intuitTid}` : undefined, e.error ? `- ${e.error}` : undefined]
          .filter(Boolean)
          .join(' ')
      : 'none recorded',
  );
  row(
    'refresh token',
    r.refreshToken.revoked
      ? 'revoked: reconnect with `qbhealth connect`'
      : `${expiry(r.refreshToken.rollingDaysLeft, r.refreshToken.rollingExpiresAt, 'rolling')}  ${expiry(r.refreshToken.hardDaysLeft, r.refreshToken.hardExpiresAt, 'hard')}`,
  );
  if (r.alerts.length === 0) row('open alerts', 'none');
  r.alerts.forEach((a, i) => row(i === 0 ? 'open alerts' : '', alertLine(a, now)));
  row('timeline', `|${r.timeline}|  ${window} ago -> now, ${span(report.bucketSeconds)} per mark`);
  return lines;
}

export function renderStatus(report: StatusReport, window: string): string {
  const now = report.generatedAt;
  const lines = [
    `QuickBooks connection health at ${now} (window: last ${window})`,
    report.lastProbeAt ? `newest probe recorded ${ago(report.lastProbeAt, now)}` : 'no probe recorded yet: is the daemon running? (`pm2 status`)',
    '',
  ];
  if (report.realms.length === 0) lines.push('no realms: connect one with `qbhealth connect` or `qbhealth import-tokens`', '');
  for (const r of report.realms) lines.push(...renderRealm(r, report, window), '');
  lines.push(`timeline: ${report.timelineLegend}`);
  if (report.unattributedProbes > 0) lines.push(`${report.unattributedProbes} probe(s) in the window have no realm_id (written before the upgrade) and are not counted above`);
  lines.push(report.systemAlerts.length === 0 ? 'system alerts: none' : 'system alerts:');
  for (const a of report.systemAlerts) lines.push(`  ${alertLine(a, now)}`);
  lines.push(report.silences.length === 0 ? 'silences: none active' : 'silences (alerts they cover are recorded, not notified):');
  if (report.silences.length > 0) lines.push(...silenceLines(report.silences, new Date(now), '  '));
  lines.push('', ...renderFleetSection(report.fleet));
  return lines.join('\n');
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'each realm at a glance: state, uptime, latency, last error, token expiry, alerts, timeline',
  description:
    'Reads the recorded history (nothing is probed) and shows, per realm: its current state, uptime over the window ' +
    '(pass and throttled probes count as up), p50/p95 latency, the last error with its intuit_tid, the days left on ' +
    'the refresh token (rolling and 5-year hard), open alerts, and a timeline of the window in 48 marks (+ passed, ' +
    '~ throttled, ! some failed, x all failed, . no probe); alerts a silence covers are marked SILENCED, and the ' +
    'active silences listed (`qbhealth silence`). Then the fleet: the daemons sharing the database, live or ' +
    'down against FLEET_MEMBER_TTL_MS, as `qbhealth fleet` lists them. Needs only DATABASE_URL. The daemon serves the ' +
    'same JSON at GET /status.',
  options: {
    'realm-id': { ...realmOption, description: 'only this realm' },
    since: { type: 'string', valueName: 'WINDOW', description: 'the window: 90m, 24h (default), 7d, 2w, or an ISO instant' },
    json: { type: 'boolean', description: 'print the report as JSON (the same document as GET /status)' },
  },
  exitCodes: [
    [0, 'every realm is passing (or throttled) and no alert is open'],
    [1, 'a realm is failing or needs reconnecting, an alert is open, or there is no realm'],
    [2, 'usage: a bad --since or --realm-id'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; retry'],
    [78, 'configuration invalid (DATABASE_URL, FLEET_MEMBER_TTL_MS, FLEET_HEARTBEAT_MS)'],
  ],
  run: (io, values) => {
    const { ttlMs, problems } = memberTtlFromEnv(io.env);
    const realmId = values['realm-id'] === undefined ? undefined : requireRealm(values, 'status');
    const window = typeof values.since === 'string' ? values.since : '24h';
    const now = new Date();
    let since: Date;
    try {
      since = parseSince(window, now);
    } catch (err) {
      throw new OperatorError(`${(err as Error).message} (see \`qbhealth status --help\`)`, ExitCode.usage, { cause: err });
    }
    return withDatabase(io, async (pool) => {
      let report: StatusReport;
      try {
        report = await loadStatusSnapshot(pool, { since, now, realmId, fleetMemberTtlMs: ttlMs });
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
      if (realmId !== undefined && report.realms.length === 0) {
        throw new OperatorError(`realm ${realmId} is not known (no token row, no history in the window); run \`qbhealth status\` to list realms`, ExitCode.probeFailing);
      }
      writeLine(io.stdout, io.secrets, values.json ? JSON.stringify(report, null, 2) : renderStatus(report, window));
      return needsAttention(report) || report.realms.length === 0 ? ExitCode.probeFailing : ExitCode.ok;
    }, problems);
  },
};

export const pruneCommand: Command = {
  name: 'prune',
  summary: 'delete health history older than HISTORY_RETENTION_DAYS (rollups: ROLLUP_RETENTION_DAYS), in short batches',
  description:
    'Deletes quickbooks_connection_health rows checked more than HISTORY_RETENTION_DAYS (default 90) days ago, in ' +
    'batches of --batch-size rows, each its own short statement on the checked_at index, so a large backlog never ' +
    'holds long locks; then the rollups (the dashboard\'s history) of periods more than ROLLUP_RETENTION_DAYS ' +
    '(default 400) days ago, the same way: deleting raw rows never touches them. Logs `history.pruned` with the ' +
    'counts. The daemon runs the same prune daily at 03:17. Needs only DATABASE_URL.',
  options: {
    'batch-size': { type: 'string', valueName: 'N', description: `rows per DELETE (default ${PRUNE_BATCH})` },
  },
  exitCodes: [
    [0, 'pruned (possibly nothing)'],
    [2, 'usage: a bad --batch-size'],
    [65, 'the health table is missing; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; retry (rows deleted so far stay deleted)'],
    [78, 'configuration invalid (DATABASE_URL, HISTORY_RETENTION_DAYS, ROLLUP_RETENTION_DAYS)'],
  ],
  run: (io, values) => {
    const batchText = values['batch-size'];
    const batchSize = batchText === undefined ? PRUNE_BATCH : Number(batchText);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
      throw new OperatorError(`--batch-size must be a whole number from 1 to 1000000, not "${String(batchText)}"`, ExitCode.usage);
    }
    return withDatabase(io, async (pool, log, config) => {
      try {
        const outcome = await pruneHistory(pool, config.historyRetentionDays, log, { batchSize, rollupRetentionDays: config.rollupRetentionDays });
        writeLine(
          io.stdout,
          io.secrets,
          `pruned ${outcome.deleted} row(s) checked before ${outcome.cutoff.toISOString()} (HISTORY_RETENTION_DAYS=${config.historyRetentionDays}) in ${outcome.batches} batch(es)`,
        );
        writeLine(
          io.stdout,
          io.secrets,
          `pruned ${outcome.rollups.deleted} rollup row(s) of periods before ${outcome.rollups.cutoff.toISOString()} (ROLLUP_RETENTION_DAYS=${config.rollupRetentionDays})`,
        );
        return ExitCode.ok;
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
    });
  },
};
