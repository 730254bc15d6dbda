/**
 * What the probe metrics mean, with the real prober against the simulator: `probe_duration_seconds`
 * is the whole probe (a slow token refresh included), the CompanyInfo call alone is its own
 * histogram, and a refused refresh token has no lifetime series left.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HealthState } from '../src/health/state.js';
import { Metrics } from '../src/http/metrics.js';
import type { ProbeResult } from '../src/probe-result.js';
import { monitor, type Monitor } from './support/qbo.js';
import { realmsFixture, type Fixture } from './support/realms.js';

const REFRESH_DELAY_MS = 300;

/** The sample of `name` with these labels (undefined: no such series). */
async function sample(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name} in the registry`);
  const { values } = await metric.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want) && Object.keys(v.labels).every((k) => k in labels));
  return hit?.value;
}

/** A histogram's `_count` and `_sum`. */
async function histogram(metrics: Metrics, name: string): Promise<{ count: number; sum: number }> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name} in the registry`);
  const values = (await metric.get()).values as Array<{ value: number; metricName?: string }>;
  const pick = (suffix: string): number => values.find((v) => v.metricName === `${name}${suffix}`)?.value ?? Number.NaN;
  return { count: pick('_count'), sum: pick('_sum') };
}

describe('probe metrics from real probes', () => {
  let fx: Fixture;
  let m: Monitor;
  beforeAll(async () => {
    fx = await realmsFixture(1);
    m = monitor(fx.db, { tokenUrl: fx.sim.tokenUrl, revokeUrl: fx.sim.revokeUrl, apiBaseUrl: fx.sim.url });
  });
  afterAll(async () => {
    await m?.close();
    await fx?.close();
  });

  it(`probe_duration_seconds covers the token refresh (Intuit answering it after ${REFRESH_DELAY_MS} ms); the CompanyInfo call alone is its own histogram and the row's latency`, async () => {
    const realm = fx.realms[0] as string;
    fx.sim.refreshDelayMs = REFRESH_DELAY_MS;
    // Intuit refuses the access token (401): the probe refreshes, slowly, then calls CompanyInfo again.
    fx.sim.expireAccessTokens();
    const refreshesBefore = fx.sim.stats.refreshes;
    const started = performance.now();
    const { result } = await m.prober.probe(realm);
    const elapsedMs = performance.now() - started;
    fx.sim.refreshDelayMs = 0;
    expect(result.errorCode).toBe('ok');
    expect(fx.sim.stats.refreshes - refreshesBefore).toBe(1);

    const state = new HealthState();
    const metrics = new Metrics(state);
    state.observe(result);
    metrics.observe(result);
    const duration = await sample(metrics, 'probe_duration_seconds', { realm_id: realm });
    expect(duration).toBeGreaterThanOrEqual(REFRESH_DELAY_MS / 1000);
    expect(duration).toBeLessThanOrEqual(elapsedMs / 1000 + 0.001);
    // The CompanyInfo call alone (the retried one) excludes the refresh: the history row's latency_ms.
    const api = await histogram(metrics, 'qbhealth_companyinfo_duration_seconds');
    expect(api.count).toBe(1);
    expect(api.sum).toBeLessThan(REFRESH_DELAY_MS / 1000);
    expect(result.latencyMs).toBe(Math.round(api.sum * 1000));
    expect(result.latencyMs).toBeLessThan(REFRESH_DELAY_MS);
  });

  it('a probe without a refresh reports its whole duration too, and one that never reached CompanyInfo adds nothing to the CompanyInfo histogram', async () => {
    const realm = fx.realms[0] as string;
    const state = new HealthState();
    const metrics = new Metrics(state);
    const { result } = await m.prober.probe(realm);
    state.observe(result);
    metrics.observe(result);
    expect(await sample(metrics, 'probe_duration_seconds', { realm_id: realm })).toBe((result.durationMs ?? Number.NaN) / 1000);
    expect((await histogram(metrics, 'qbhealth_companyinfo_duration_seconds')).count).toBe(1);

    // Our own side failed before any call to Intuit (the realm's tokens cannot be read).
    const own: ProbeResult = { ...result, probeId: 'own', errorCode: 'database_unavailable', connected: false, status: 'fail', durationMs: 12, companyInfoMs: undefined };
    state.observe(own);
    metrics.observe(own);
    expect(await sample(metrics, 'probe_duration_seconds', { realm_id: realm })).toBe(0.012);
    expect((await histogram(metrics, 'qbhealth_companyinfo_duration_seconds')).count).toBe(1);
  });

  it('a refused refresh token (auth_invalid_grant: revoked, reconnect_required) leaves qbhealth_refresh_token_expiry_seconds instead of counting down its stored expiry', async () => {
    const realm = fx.realms[0] as string;
    const state = new HealthState();
    const metrics = new Metrics(state);
    const { result } = await m.prober.probe(realm);
    state.observe(result);
    metrics.observe(result);
    expect(await sample(metrics, 'qbhealth_refresh_token_expiry_seconds', { realm_id: realm })).toBeGreaterThan(86_400);

    const revoked: ProbeResult = { ...result, probeId: 'revoked', errorCode: 'auth_invalid_grant', connected: false, status: 'fail', error: 'needs reconnecting' };
    expect(revoked.refreshTokenExpiresAt?.getTime()).toBeGreaterThan(Date.now() + 86_400_000);
    state.observe(revoked);
    metrics.observe(revoked);
    expect(await sample(metrics, 'qbhealth_refresh_token_expiry_seconds', { realm_id: realm })).toBeUndefined();
    expect(await sample(metrics, 'probe_success', { realm_id: realm })).toBe(0);

    // Reconnected: the next passing probe has a live token again.
    state.observe(result);
    metrics.observe(result);
    expect(await sample(metrics, 'qbhealth_refresh_token_expiry_seconds', { realm_id: realm })).toBeGreaterThan(86_400);
  });
});
