/**
 * What a probe result means for escalation, per realm and alert kind: which alert it counts
 * towards, at which severity, raised at once or at the threshold, and what the summary tells the
 * operator to do. A success resolves the realm's QuickBooks alerts. Failures of PostgreSQL
 * (`database_unavailable`) are not the realm's and are escalated by the caller as a database outcome.
 *
 * Throttling (429) is not an outage: Intuit answered, and asked us to slow down. A throttled probe
 * neither counts towards nor resolves a `quickbooks_api` or `quickbooks_auth` alert; consecutive
 * throttled probes raise a `quickbooks_throttled` warning of their own at ALERT_AFTER_FAILURES,
 * resolved by the next probe that is not throttled. /health shows such a realm `warn`, `status`
 * counts it as up, and probe_success is 1.
 */
import { describeDbFailure, type DbOutcome } from '../db/failure.js';
import { isDatabaseUnavailable, isSchemaGap } from '../db/pool.js';
import { ErrorCode } from '../quickbooks/outcome.js';
import type { ProbeResult } from '../probe-result.js';
import type { Escalator } from './escalator.js';

const DAY_MS = 86_400_000;

export function tokenUnreadableSummary(realmId: string, companyName?: string): string {
  return (
    `TOKEN_ENCRYPTION_KEY cannot open the stored tokens of ${realmLabel(realmId, companyName)}, so it cannot be probed: set TOKEN_ENCRYPTION_KEY to the key they were ` +
    'stored with (or TOKEN_ENCRYPTION_KEY_PREVIOUS during a key rotation) and restart, or re-import the realm with `qbhealth import-tokens` / `qbhealth connect`'
  );
}

/** "realm 9130357766 (Acme Ltd)": the company is named when known. */
export function realmLabel(realmId: string, companyName: string | undefined): string {
  return companyName ? `realm ${realmId} (${companyName})` : `realm ${realmId}`;
}

/**
 * Routes a probe's outcome: PostgreSQL unreachable or missing a table is the whole system's,
 * carried by the member's database (or schema) alert, not the realm's; everything else is the
 * realm's own (escalateProbeResult).
 */
export function escalateOutcome(
  outcome: { readonly result: ProbeResult; readonly cause?: Error | undefined },
  escalator: Pick<Escalator, 'fail' | 'succeed'>,
  noteDatabase: (outcome: DbOutcome) => void,
  refreshTokenWarnDays: number,
): void {
  const { result, cause } = outcome;
  if (result.errorCode === ErrorCode.databaseUnavailable && (isDatabaseUnavailable(cause) || isSchemaGap(cause))) {
    noteDatabase(describeDbFailure(cause, 'read'));
    return;
  }
  // A lock or statement timeout, a refused COMMIT on a reachable database: this realm's own.
  escalateProbeResult(escalator, result, refreshTokenWarnDays);
}

/** The `monitor_stalled` summary: the scheduler runs but this realm is not being probed. */
export function stalledSummary(s: { readonly realmId: string; readonly sinceMs: number; readonly lastResultAt: Date | undefined }): string {
  const seconds = Math.round(s.sinceMs / 1000);
  return s.lastResultAt
    ? `no probe result for realm ${s.realmId} in the last 3 scheduler ticks (${seconds} s; the last result at ${s.lastResultAt.toISOString()}): the scheduler runs but this realm is not being probed. Look for scheduler.tick_failed, scheduler.overlap and lease lines, and at \`qbhealth fleet\``
    : `no probe result for realm ${s.realmId} in the 2 scheduler ticks since it became due (${seconds} s): the scheduler runs but this realm is not being probed. Look for scheduler.tick_failed, scheduler.overlap and lease lines, and at \`qbhealth fleet\``;
}

export function escalateProbeResult(escalator: Pick<Escalator, 'fail' | 'succeed'>, r: ProbeResult, refreshTokenWarnDays: number, now = Date.now()): void {
  const realm = r.realmId;
  const label = realmLabel(realm, r.companyName);
  const detail = { lastError: r.error, intuitTid: r.intuitTid, errorCode: r.errorCode, subject: label };
  if (r.errorCode === ErrorCode.databaseUnavailable) {
    // Reaching here, PostgreSQL answers but not for this realm's tokens (a lock held elsewhere, a
    // statement timeout, a refused COMMIT): a per-realm database alert, after the threshold.
    escalator.fail(realm, 'database', {
      severity: 'critical',
      summary: `PostgreSQL could not serve the tokens of ${label} in {count} consecutive probes (${r.error ?? 'database error'}). Look for the session holding its row in pg_stat_activity / pg_locks`,
      ...detail,
    });
    return;
  }
  escalator.succeed(realm, 'database');
  if (r.errorCode === ErrorCode.throttled) {
    escalator.fail(realm, 'quickbooks_throttled', {
      severity: 'warning',
      summary: `Intuit is throttling ${label}: {count} consecutive probes answered 429 (the connection works; lower PROBE_CONCURRENCY or the schedule if it persists)`,
      ...detail,
    });
    return;
  }
  escalator.succeed(realm, 'quickbooks_throttled');
  if (r.errorCode === ErrorCode.tokenUnreadable) {
    escalator.fail(realm, 'quickbooks_auth', { severity: 'critical', immediate: true, summary: tokenUnreadableSummary(realm, r.companyName), ...detail });
    return;
  }
  if (r.errorCode === ErrorCode.internal) {
    escalator.fail(realm, 'quickbooks_api', {
      severity: 'critical',
      summary: `the monitor itself failed to probe ${label} in {count} consecutive probes (internal: ${r.error ?? 'unknown'}); the probe.failed log lines carry the stack: report it`,
      ...detail,
    });
    return;
  }
  if (r.errorCode === ErrorCode.ok) {
    escalator.succeed(realm, 'quickbooks_api');
    escalator.succeed(realm, 'quickbooks_auth');
  } else if (r.errorCode === ErrorCode.authInvalidGrant) {
    escalator.fail(realm, 'quickbooks_auth', {
      severity: 'critical',
      immediate: true,
      summary: `QuickBooks refused the refresh token of ${label} (invalid_grant): the app was disconnected, or the token expired or was superseded. Reconnect with \`qbhealth connect\``,
      ...detail,
    });
  } else if (r.errorCode === ErrorCode.authUnauthorized || r.errorCode === ErrorCode.forbidden) {
    escalator.fail(realm, 'quickbooks_auth', {
      severity: 'critical',
      summary: `Intuit refused the credentials of ${label} in {count} consecutive probes (${r.errorCode}): check QBO_CLIENT_ID/QBO_CLIENT_SECRET and the app's scopes, or reconnect with \`qbhealth connect\``,
      ...detail,
    });
  } else {
    escalator.fail(realm, 'quickbooks_api', {
      severity: 'critical',
      summary: `QuickBooks API failing for ${label}: {count} consecutive probes failed (${r.errorCode}${r.error ? `: ${r.error}` : ''})`,
      ...detail,
    });
  }
  if (r.refreshTokenExpiresAt) {
    const days = (r.refreshTokenExpiresAt.getTime() - now) / DAY_MS;
    if (days < refreshTokenWarnDays) {
      escalator.fail(realm, 'refresh_token_expiry', {
        severity: days < 1 ? 'critical' : 'warning',
        immediate: true,
        subject: label,
        summary: `the refresh token of ${label} expires in ${Math.max(0, Math.floor(days))} day(s) (${r.refreshTokenExpiresAt.toISOString()}): reconnect with \`qbhealth connect\` before then`,
      });
    } else {
      escalator.succeed(realm, 'refresh_token_expiry');
    }
  }
}
