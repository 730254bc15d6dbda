/**
 * What a probe result means for escalation, per realm and alert kind: which alert it counts
 * towards, at which severity, raised at once or at the threshold, and what the summary tells the
 * operator to do. A success resolves the realm's QuickBooks alerts. Failures of PostgreSQL
 * (`database_unavailable`) are not the realm's and are escalated by the caller as a database outcome.
 */
import { ErrorCode } from '../quickbooks/outcome.js';
import type { ProbeResult } from '../probe/result.js';
import type { Escalator } from './escalator.js';

const DAY_MS = 86_400_000;

export function tokenUnreadableSummary(realmId: string): string {
  return (
    `TOKEN_ENCRYPTION_KEY cannot open realm ${realmId}'s stored tokens, so it cannot be probed: set TOKEN_ENCRYPTION_KEY to the key they were ` +
    'stored with (or TOKEN_ENCRYPTION_KEY_PREVIOUS during a key rotation) and restart, or re-import the realm with `qbhealth import-tokens` / `qbhealth connect`'
  );
}

export function escalateProbeResult(escalator: Escalator, r: ProbeResult, refreshTokenWarnDays: number, now = Date.now()): void {
  const realm = r.realmId;
  const detail = { lastError: r.error, intuitTid: r.intuitTid };
  if (r.errorCode === ErrorCode.databaseUnavailable) return;
  if (r.errorCode === ErrorCode.tokenUnreadable) {
    escalator.fail(realm, 'quickbooks_auth', { severity: 'critical', immediate: true, summary: tokenUnreadableSummary(realm), ...detail });
    return;
  }
  if (r.errorCode === ErrorCode.internal) {
    escalator.fail(realm, 'quickbooks_api', {
      severity: 'critical',
      summary: `the monitor itself failed to probe realm ${realm} in {count} consecutive probes (internal: ${r.error ?? 'unknown'}); the probe.failed log lines carry the stack: report it`,
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
      summary: `QuickBooks refused realm ${realm}'s refresh token (invalid_grant): the app was disconnected, or the token expired or was superseded. Reconnect with \`qbhealth connect\``,
      ...detail,
    });
  } else if (r.errorCode === ErrorCode.authUnauthorized || r.errorCode === ErrorCode.forbidden) {
    escalator.fail(realm, 'quickbooks_auth', {
      severity: 'critical',
      summary: `Intuit refused realm ${realm}'s credentials in {count} consecutive probes (${r.errorCode}): check QBO_CLIENT_ID/QBO_CLIENT_SECRET and the app's scopes, or reconnect with \`qbhealth connect\``,
      ...detail,
    });
  } else {
    escalator.fail(realm, 'quickbooks_api', {
      severity: r.errorCode === ErrorCode.throttled ? 'warning' : 'critical',
      summary: `QuickBooks API failing for realm ${realm}: {count} consecutive probes failed (${r.errorCode}${r.error ? `: ${r.error}` : ''})`,
      ...detail,
    });
  }
  if (r.refreshTokenExpiresAt) {
    const days = (r.refreshTokenExpiresAt.getTime() - now) / DAY_MS;
    if (days < refreshTokenWarnDays) {
      escalator.fail(realm, 'refresh_token_expiry', {
        severity: days < 1 ? 'critical' : 'warning',
        immediate: true,
        summary: `realm ${realm}'s refresh token expires in ${Math.max(0, Math.floor(days))} day(s) (${r.refreshTokenExpiresAt.toISOString()}): reconnect with \`qbhealth connect\` before then`,
      });
    } else {
      escalator.succeed(realm, 'refresh_token_expiry');
    }
  }
}
