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
    expect(Object.keys(first.checks)).toEqual(['quickbooks:connection', 'quickbooks:refreshTokenExpiry', 'postgres:connection', 'postgres:schema', 'spool:pending', 'scheduler:lastTick', 'alerts:open']);

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
});
