import { describe, expect, it } from 'vitest';
import { HealthState } from '../src/daemon/state.js';
import { HealthDocument } from '../src/http/server.js';
import type { ProbeResult } from '../src/probe/result.js';

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

  it('fails with monitor:staleness for a due realm without a result for 2 periods, or without a new one for 3', () => {
    const state = new HealthState();
    state.db = { reachable: true, checkedAt: new Date(now), error: undefined };
    state.schema = { verified: true, error: undefined };
    state.periodMs = 60_000;
    state.probeTimeoutMs = 10_000;
    state.expectRealms(['7'], new Date(now));
    const doc = new HealthDocument({ refreshTokenWarnDays: 14, version: '9.9.9' });
    const staleness = (at: number) => {
      state.lastTickAt = new Date(at);
      return (JSON.parse(doc.render(state, at).json) as { checks: Record<string, Array<Record<string, unknown>>> }).checks['monitor:staleness']?.[0];
    };
    // Due, no result yet: fine for 2 periods plus one probe deadline, then a failure naming it.
    expect(staleness(now + 120_000 + 10_000)).toMatchObject({ status: 'pass', observedValue: 0 });
    expect(staleness(now + 120_000 + 10_001)).toMatchObject({ status: 'fail', observedValue: 1, output: expect.stringContaining('7 (130 s)') });
    expect(state.stalledRealms(now + 130_001).map((s) => s.realmId)).toEqual(['7']);
    // A result ends it; none for 3 periods (plus a deadline) after it starts it again.
    state.observe(result('7', 'x', 'pass', 100));
    const seen = state.realms.get('7')?.observedAt.getTime() as number;
    expect(state.stalledRealms(seen + 190_000)).toEqual([]);
    expect(state.stalledRealms(seen + 190_001).map((s) => s.realmId)).toEqual(['7']);
    // A realm no longer listed is no longer due.
    state.retainRealms(new Set());
    expect(state.stalledRealms(seen + 500_000)).toEqual([]);
  });
});
