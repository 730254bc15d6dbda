/**
 * No secret in any output when Intuit fails at the transport level, against the real daemon:
 * the token endpoint and the API each refusing the connection, resetting it, failing TLS and
 * hanging. intuit-oauth's axios error for such a failure carries the request config with
 * `Authorization: Basic base64(client_id:client_secret)` and the form body with the refresh token;
 * every log line, stderr, the rows and the webhook bodies are searched for every secret in each
 * of its forms (raw, URL-encoded, Base64, the Basic credential).
 */
import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/dev/embedded-postgres.js';
import type { Scenario, Simulator } from '../../src/simulator/simulator.js';
import { daemonEnv, spawnDaemon, webhookReceiver, type LogLine } from '../support/daemon.js';
import { realmsFixture } from '../support/realms.js';
import { dbPassword, expectNoSecrets, expectNothingLost } from './support.js';

const HEALTH_TOKEN = 'secrets-suite-health-token-0123456789';

interface Fault {
  /** Which endpoint fails; a token endpoint is reached only once an access token has expired. */
  readonly endpoint: 'token' | 'api';
  /** Endpoint overrides that make it fail (a port nobody listens on, https:// to a plain-HTTP port). */
  readonly env?: (sim: Simulator, refusedPort: number) => Record<string, string>;
  /** A simulator scenario that makes it fail, switched on after a first successful probe. */
  readonly scenario?: Scenario;
  /** A code the logged, reduced cause chain must still name, so the operator knows what happened. */
  readonly causeCode?: string;
  /** How the probe is classified. */
  readonly errorCode: 'network' | 'timeout';
}

const https = (url: string): string => url.replace(/^http:/, 'https:');

const faults: Array<[string, Fault]> = [
  ['token endpoint refusing the connection', { endpoint: 'token', env: (_sim, port) => ({ QBO_TOKEN_URL: `http://127.0.0.1:${port}/oauth2/v1/tokens/bearer` }), causeCode: 'ECONNREFUSED', errorCode: 'network' }],
  ['token endpoint resetting the connection', { endpoint: 'token', scenario: 'tokenReset', causeCode: 'ECONNRESET', errorCode: 'network' }],
  ['token endpoint failing TLS', { endpoint: 'token', env: (sim) => ({ QBO_TOKEN_URL: https(sim.tokenUrl) }), errorCode: 'network' }],
  ['token endpoint hanging', { endpoint: 'token', scenario: 'tokenHang', errorCode: 'timeout' }],
  ['API refusing the connection', { endpoint: 'api', env: (_sim, port) => ({ QBO_API_BASE_URL: `http://127.0.0.1:${port}` }), causeCode: 'ECONNREFUSED', errorCode: 'network' }],
  ['API resetting the connection', { endpoint: 'api', scenario: 'reset', errorCode: 'network' }],
  ['API failing TLS', { endpoint: 'api', env: (sim) => ({ QBO_API_BASE_URL: https(sim.url) }), errorCode: 'network' }],
  ['API hanging', { endpoint: 'api', scenario: 'hang', errorCode: 'timeout' }],
];

/** The `code` of each error in a logged `err` and its cause chain. */
function causeCodes(line: LogLine): unknown[] {
  const codes: unknown[] = [];
  for (let err = line.err as Record<string, unknown> | undefined; err; err = err.cause as Record<string, unknown> | undefined) codes.push(err.code);
  return codes;
}

describe('no secret in any output when Intuit fails at the transport level', () => {
  it.each(faults)('%s', async (_name, fault) => {
    const fx = await realmsFixture(1);
    const hook = await webhookReceiver();
    const env: Record<string, string> = {
      ...daemonEnv(fx.db.url, fx.sim),
      ALERT_WEBHOOK_URL: hook.url,
      ALERT_AFTER_FAILURES: '1',
      PROBE_TIMEOUT_MS: '1500',
      HEALTH_TOKEN,
      ...fault.env?.(fx.sim, await freePort()),
    };
    const daemon = spawnDaemon(env);
    try {
      let from = 0;
      if (fault.scenario !== undefined || fault.endpoint === 'token') {
        await daemon.waitFor('probe.succeeded');
        if (fault.scenario !== undefined) fx.sim.scenario = fault.scenario;
        // A stale access token: the API answers 401 and the daemon goes to the token endpoint.
        if (fault.endpoint === 'token') fx.sim.expireAccessTokens();
        from = daemon.lines.length;
      }
      const since = (line: LogLine): boolean => daemon.lines.indexOf(line) >= from;
      const failed = await daemon.waitFor('probe.failed', { where: since, timeoutMs: 30_000 });
      expect(failed.errorCode).toBe(fault.errorCode);
      const failures = [failed];
      if (fault.endpoint === 'token' && fault.scenario !== 'tokenHang') {
        failures.push(await daemon.waitFor('token.refresh_failed', { where: since, timeoutMs: 30_000 }));
      }
      if (fault.causeCode !== undefined) expect(failures.flatMap(causeCodes)).toContain(fault.causeCode);
      await hook.waitFor('alert.raised', undefined, 30_000);

      await daemon.stop('SIGINT');
      const row = (await fx.db.query('SELECT status, connected FROM quickbooks_connection_health WHERE probe_id = $1', [failed.probeId])).rows[0];
      expect(row).toMatchObject({ status: 'fail', connected: false });
      await expectNothingLost((t) => fx.db.query(t), env.SPOOL_DIR as string, [daemon], true);
      const rows = [
        ...(await fx.db.query('SELECT * FROM quickbooks_connection_health')).rows,
        ...(await fx.db.query('SELECT * FROM quickbooks_alert_state')).rows,
      ];
      expectNoSecrets([daemon], [...fx.sim.issuedTokens(), HEALTH_TOKEN, dbPassword(fx.db.url)], [JSON.stringify(rows), JSON.stringify(hook.bodies)]);
    } finally {
      await daemon.stop('SIGKILL');
      await hook.close();
      await fx.close();
    }
  }, 90_000);
});
