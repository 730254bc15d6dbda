import { describe, expect, it } from 'vitest';
import { HealthState } from '../src/health/state.js';
import type { AlertState } from '../src/escalate/escalator.js';
import { HealthDocument } from '../src/http/server.js';
import type { ProbeResult } from '../src/probe-result.js';

const DAY = 86_400_000;
const now = Date.parse('2026-11-23T12:00:00Z');

function result(realmId: string, probeId: string, status: ProbeResult['status'], refreshDays: number): ProbeResult {
  return {
    probeId,
    realmId,
    checkedAt: new Date(now - 1000),
    connected: status === 'pass',
    status,
    errorCode: status === 'pass' ? 'ok' : 'server_error',
    error: status === 'pass' ? undefined : 'Intuit HTTP 503',
    httpStatus: status === 'pass' ? 200 : 503,
    latencyMs: 40,
    intuitTid: 'tid',
    refreshTokenExpiresAt: new Date(now + refreshDays * DAY),
    companyName: undefined,
  };
}

describe('/health document', () => {
  it('is valid application/health+json with one entry per realm, and follows each new result', () => {
    const state = new HealthState();
    state.db = { reachable: true, checkedAt: new Date(now), error: undefined };
    state.schema = { verified: true, error: undefined };
    state.lastTickAt = new Date(now);
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    state.observe(result('1', 'a', 'pass', 100));
    state.observe(result('2', 'b', 'pass', 10));
    const first = JSON.parse(doc.render(state, now).json) as { status: string; version: string; checks: Record<string, Array<Record<string, unknown>>> };
    expect(first.status).toBe('warn');
    expect(first.version).toBe('9.9.9');
    expect(first.checks['quickbooks:connection']?.map((c) => [c.componentId, c.status])).toEqual([['1', 'pass'], ['2', 'pass']]);
    expect(first.checks['quickbooks:refreshTokenExpiry']?.map((c) => [c.componentId, c.observedValue, c.status])).toEqual([['1', 100, 'pass'], ['2', 10, 'warn']]);
    expect(Object.keys(first.checks)).toEqual(['quickbooks:connection', 'quickbooks:refreshTokenExpiry', 'postgres:connection', 'postgres:schema', 'spool:pending', 'scheduler:lastTick', 'alerts:open', 'monitor:staleness']);

    state.observe(result('1', 'c', 'fail', 100));
    state.retainRealms(new Set(['1']));
    const second = doc.render(state, now);
    expect(second.status).toBe('fail');
    const parsed = JSON.parse(second.json) as typeof first;
    expect(parsed.checks['quickbooks:connection']).toEqual([expect.objectContaining({ componentId: '1', status: 'fail', output: 'Intuit HTTP 503' })]);
    // A day later the same result shows one day fewer.
    expect((JSON.parse(doc.render(state, now + DAY).json) as typeof first).checks['quickbooks:refreshTokenExpiry']?.[0]?.observedValue).toBe(99);
    state.shuttingDown = true;
    expect(JSON.parse(doc.render(state, now).json)).toMatchObject({ status: 'fail', output: 'shutting down' });
  });

  it('fails with monitor:staleness for a due realm without a result in 2 ticks, or without a new one in 3, counted in ticks', () => {
    const state = new HealthState();
    state.db = { reachable: true, checkedAt: new Date(now), error: undefined };
    state.schema = { verified: true, error: undefined };
    state.probeTimeoutMs = 10_000;
    state.expectRealms(['7'], new Date(now));
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    const tick = (at: number) => state.noteTick(new Date(at), new Date(at + 60_000));
    const staleness = (at: number) => (JSON.parse(doc.render(state, at).json) as { checks: Record<string, Array<Record<string, unknown>>> }).checks['monitor:staleness']?.[0];
    // Due, no result: a tick counts once its probes had their deadline; two such ticks fail it.
    tick(now + 60_000);
    tick(now + 120_000);
    expect(staleness(now + 130_000)).toMatchObject({ status: 'pass', observedValue: 0 });
    expect(staleness(now + 130_001)).toMatchObject({ status: 'fail', observedValue: 1, output: expect.stringContaining('7 (130 s)') });
    // A result ends it; three settled ticks after it without another start it again.
    state.observe({ ...result('7', 'x', 'pass', 100), checkedAt: new Date(now + 125_000) }, undefined, now + 125_000);
    expect(state.stalledRealms(now + 500_000)).toEqual([]);
    tick(now + 180_000);
    tick(now + 240_000);
    expect(state.stalledRealms(now + 500_000)).toEqual([]);
    tick(now + 300_000);
    expect(state.stalledRealms(now + 310_000)).toEqual([]);
    expect(state.stalledRealms(now + 310_001).map((s) => s.realmId)).toEqual(['7']);
    // A quiet schedule (no tick due for hours) raises nothing, however long it is.
    const quiet = new HealthState();
    quiet.expectRealms(['8'], new Date(now));
    quiet.observe({ ...result('8', 'y', 'pass', 100), checkedAt: new Date(now + 1000) }, undefined, now + 1000);
    quiet.noteTick(new Date(now), new Date(now + 16 * 3_600_000));
    expect(quiet.stalledRealms(now + 15 * 3_600_000)).toEqual([]);
    expect(quiet.live(now + 15 * 3_600_000).ok).toBe(true);
    // …but a due tick that does not come fails liveness.
    expect(quiet.live(now + 16 * 3_600_000 + 60_001)).toMatchObject({ ok: false, reason: expect.stringContaining('has not come') });
    // A realm no longer listed is no longer due.
    state.retainRealms(new Set());
    expect(state.stalledRealms(now + 900_000)).toEqual([]);
  });
});

type Doc = { status: string; output?: string; checks: Record<string, Array<Record<string, unknown>>> };

/** draft-inadarei-api-health-check's predefined component types; anything else must be a URI. */
const DRAFT_COMPONENT_TYPES = new Set(['component', 'datastore', 'system']);
const isUri = (text: string): boolean => /^[a-z][a-z0-9+.-]*:\S+$/i.test(text);

/** What a client of the draft would reject or misread, one line per problem (empty: none). */
function draftViolations(doc: Doc, now: number): string[] {
  const problems: string[] = [];
  if (!['pass', 'warn', 'fail'].includes(doc.status)) problems.push(`top-level status ${doc.status}`);
  if (doc.status !== 'pass' && !doc.output) problems.push(`top-level ${doc.status} without output`);
  for (const [key, list] of Object.entries(doc.checks)) {
    if (!/^[^:]+:[^:]+$/.test(key)) problems.push(`${key}: not component:measurement`);
    for (const [i, c] of list.entries()) {
      const at = `${key}[${i}]`;
      const type = c.componentType;
      if (typeof type !== 'string' || !(DRAFT_COMPONENT_TYPES.has(type) || isUri(type))) problems.push(`${at}: componentType ${JSON.stringify(type)}`);
      if ('observedValue' in c && (typeof c.observedUnit !== 'string' || c.observedUnit === '')) problems.push(`${at}: observedValue without observedUnit`);
      if (!['pass', 'warn', 'fail'].includes(String(c.status))) problems.push(`${at}: status ${String(c.status)}`);
      if (c.status !== 'pass' && (typeof c.output !== 'string' || c.output === '')) problems.push(`${at}: ${String(c.status)} without output`);
      if (c.status === 'pass' && 'output' in c) problems.push(`${at}: pass with output`);
      if ('time' in c) {
        const t = Date.parse(String(c.time));
        if (Number.isNaN(t)) problems.push(`${at}: time ${String(c.time)} is not a date-time`);
        else if (t > now) problems.push(`${at}: time ${String(c.time)} is in the future (not when the value was observed)`);
      }
    }
  }
  return problems;
}

const alert = (realmId: string, kind: AlertState['kind']): AlertState => ({
  realmId,
  kind,
  severity: 'critical',
  state: 'open',
  consecutiveFailures: 3,
  since: new Date(now - 60_000),
  lastNotifiedAt: new Date(now - 60_000),
  resolvedAt: undefined,
  summary: 'failing',
  lastError: undefined,
  intuitTid: undefined,
});

describe('/health as draft-inadarei-api-health-check clients read it', () => {
  it('every check has a draft componentType, a unit beside every value, an output on every non-pass, and a time no later than now', () => {
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });

    // Everything passing.
    const healthy = new HealthState();
    healthy.db = { reachable: true, checkedAt: new Date(now - 2000), error: undefined };
    healthy.schema = { verified: true, error: undefined };
    healthy.lastTickAt = new Date(now - 500);
    healthy.observe(result('1', 'a', 'pass', 100));
    const passing = JSON.parse(doc.render(healthy, now).json) as Doc;
    expect(passing.status).toBe('pass');
    expect(draftViolations(passing, now)).toEqual([]);

    // Every kind of trouble at once.
    const troubled = new HealthState();
    troubled.db = { reachable: false, checkedAt: new Date(now - 2000), error: undefined };
    troubled.schema = { verified: false, error: undefined };
    // Two ticks since realm 7 became due, then none: the scheduler has stopped.
    troubled.noteTick(new Date(now - 500_000), new Date(now - 440_000));
    troubled.noteTick(new Date(now - 440_000), new Date(now - 380_000));
    troubled.spoolPending = 4;
    troubled.openAlerts = () => [alert('2', 'quickbooks_api'), alert('', 'database')];
    troubled.probeTimeoutMs = 1000;
    // Realm 7 is due and has no result: stalled.
    troubled.expectRealms(['1', '2', '3', '4', '5', '6', '7'], new Date(now - 600_000));
    troubled.observe(result('1', 'a', 'pass', 100));
    troubled.observe({ ...result('2', 'b', 'fail', 100) });
    // Passing, but the refresh token expires within REFRESH_TOKEN_WARN_DAYS: a warn without a probe error.
    troubled.observe({ ...result('3', 'c', 'pass', 5), status: 'warn' });
    troubled.observe({ ...result('4', 'd', 'warn', 100), errorCode: 'throttled', error: 'Intuit throttled the request (HTTP 429)', httpStatus: 429 });
    troubled.observe({ ...result('5', 'e', 'fail', -2), errorCode: 'auth_unauthorized', error: 'Intuit HTTP 401' });
    troubled.observe(revoked('6', 'f'));
    const failing = JSON.parse(doc.render(troubled, now).json) as Doc;
    expect(failing.status).toBe('fail');
    expect(draftViolations(failing, now)).toEqual([]);
    for (const key of ['postgres:connection', 'postgres:schema', 'spool:pending', 'scheduler:lastTick', 'alerts:open', 'monitor:staleness']) {
      expect(failing.checks[key]?.[0]?.status, key).not.toBe('pass');
    }
    expect(failing.checks['quickbooks:connection']?.map((c) => c.status)).toEqual(['pass', 'fail', 'warn', 'warn', 'fail', 'fail']);
    expect(failing.checks['quickbooks:refreshTokenExpiry']?.map((c) => c.status)).toEqual(['pass', 'pass', 'warn', 'pass', 'fail', 'fail']);
    // The realm whose token nears its end says so where the probe itself had nothing to say.
    expect(failing.checks['quickbooks:connection']?.[2]?.output).toMatch(/refresh token expires in 5 days .*qbhealth connect --realm-id 3/);
    expect(failing.output).toMatch(/^quickbooks:connection 3 fail, 2 warn; quickbooks:refreshTokenExpiry 2 fail, 1 warn; postgres:connection 1 fail;/);
  });

  it('quickbooks:refreshTokenExpiry reads the token when the probe did (`time`), counts the days from now, and never shows the expiry instant as `time`', () => {
    const state = new HealthState();
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    const r = result('1', 'a', 'pass', 100);
    state.observe(r);
    const entry = (JSON.parse(doc.render(state, now).json) as Doc).checks['quickbooks:refreshTokenExpiry']?.[0];
    expect(entry).toMatchObject({ componentId: '1', componentType: 'system', observedValue: 100, observedUnit: 'd', status: 'pass', time: r.checkedAt.toISOString() });
    expect(entry).not.toHaveProperty('output');
  });

  it('a refresh token with less than a day left warns (0 d); one past its expiry fails', () => {
    const state = new HealthState();
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    const entry = (expiresAt: number) => {
      state.observe({ ...result('1', `p${expiresAt}`, 'pass', 0), refreshTokenExpiresAt: new Date(expiresAt) });
      return (JSON.parse(doc.render(state, now).json) as Doc).checks['quickbooks:refreshTokenExpiry']?.[0];
    };
    expect(entry(now + 3_600_000)).toMatchObject({ status: 'warn', observedValue: 0, output: expect.stringContaining('expires in 0 days') });
    expect(entry(now - 1000)).toMatchObject({ status: 'fail', observedValue: -1, output: expect.stringContaining('expired') });
  });

  it('a revoked refresh token (auth_invalid_grant, reconnect_required) is not "100 d pass": it fails with no value and says to reconnect', () => {
    const state = new HealthState();
    state.db = { reachable: true, checkedAt: new Date(now), error: undefined };
    state.schema = { verified: true, error: undefined };
    state.lastTickAt = new Date(now);
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    state.observe(revoked('42', 'x'));
    const parsed = JSON.parse(doc.render(state, now).json) as Doc;
    const entry = parsed.checks['quickbooks:refreshTokenExpiry']?.[0];
    expect(entry).toMatchObject({ componentId: '42', componentType: 'system', status: 'fail', output: expect.stringMatching(/^revoked: reconnect .*qbhealth connect --realm-id 42/) });
    expect(entry).not.toHaveProperty('observedValue');
    expect(parsed.checks['quickbooks:connection']?.[0]).toMatchObject({ status: 'fail', observedValue: 'auth_invalid_grant', observedUnit: 'error_code' });
    expect(parsed.status).toBe('fail');
    expect(draftViolations(parsed, now)).toEqual([]);

    // Reconnected: the next result has a live token again, and the days are back.
    state.observe(result('42', 'y', 'pass', 100));
    expect((JSON.parse(doc.render(state, now).json) as Doc).checks['quickbooks:refreshTokenExpiry']?.[0]).toMatchObject({ status: 'pass', observedValue: 100 });
  });
});

/** A realm whose refresh token Intuit refused: the stored expiry still says 100 days. */
function revoked(realmId: string, probeId: string): ProbeResult {
  return {
    ...result(realmId, probeId, 'fail', 100),
    errorCode: 'auth_invalid_grant',
    error: `realm ${realmId} needs reconnecting (invalid_grant): run \`qbhealth connect\``,
    httpStatus: 400,
  };
}
