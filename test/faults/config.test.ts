/**
 * Bad configurations against the real daemon: each exits 78 before touching anything, names its
 * variable on stderr and in `config.invalid`, and never echoes a secret it was given.
 */
import { describe, expect, it } from 'vitest';
import { CLIENT_ID, KEY_B64 } from '../support/qbo.js';
import { spawnDaemon } from '../support/daemon.js';

const SECRET = 'cfg-secret-Zq81x0pL';
const GOOD: Record<string, string> = {
  DATABASE_URL: `postgres://monitor:${SECRET}@127.0.0.1:1/clinic`,
  QBO_CLIENT_ID: CLIENT_ID,
  QBO_CLIENT_SECRET: `${SECRET}-client`,
  TOKEN_ENCRYPTION_KEY: KEY_B64,
};

// [what is wrong, the variables changed, the variable the error must name]
const MATRIX: Array<[string, Record<string, string | undefined>, string]> = [
  ['DATABASE_URL missing', { DATABASE_URL: undefined }, 'DATABASE_URL'],
  ['DATABASE_URL not a URL', { DATABASE_URL: `not a url ${SECRET}` }, 'DATABASE_URL'],
  ['DATABASE_URL of another scheme', { DATABASE_URL: `mysql://u:${SECRET}@h/db` }, 'DATABASE_URL'],
  ['QBO_CLIENT_ID missing', { QBO_CLIENT_ID: undefined }, 'QBO_CLIENT_ID'],
  ['QBO_CLIENT_SECRET missing', { QBO_CLIENT_SECRET: undefined }, 'QBO_CLIENT_SECRET'],
  ['QBO_ENVIRONMENT unknown', { QBO_ENVIRONMENT: 'staging' }, 'QBO_ENVIRONMENT'],
  ['QBO_REDIRECT_URI not http(s)', { QBO_REDIRECT_URI: 'ftp://example.com/cb' }, 'QBO_REDIRECT_URI'],
  ['TOKEN_ENCRYPTION_KEY missing', { TOKEN_ENCRYPTION_KEY: undefined }, 'TOKEN_ENCRYPTION_KEY'],
  ['TOKEN_ENCRYPTION_KEY too short', { TOKEN_ENCRYPTION_KEY: Buffer.from(`${SECRET}-key`).toString('base64') }, 'TOKEN_ENCRYPTION_KEY'],
  ['TOKEN_ENCRYPTION_KEY not base64', { TOKEN_ENCRYPTION_KEY: `!!${SECRET}!!${SECRET}!!` }, 'TOKEN_ENCRYPTION_KEY'],
  ['PROBE_SCHEDULE invalid', { PROBE_SCHEDULE: 'every minute' }, 'PROBE_SCHEDULE'],
  ['PROBE_SCHEDULE out of range', { PROBE_SCHEDULE: '61 * * * *' }, 'PROBE_SCHEDULE'],
  ['PROBE_TIMEOUT_MS not a number', { PROBE_TIMEOUT_MS: 'ten seconds' }, 'PROBE_TIMEOUT_MS'],
  ['PROBE_TIMEOUT_MS zero', { PROBE_TIMEOUT_MS: '0' }, 'PROBE_TIMEOUT_MS'],
  ['PROBE_CONCURRENCY zero', { PROBE_CONCURRENCY: '0' }, 'PROBE_CONCURRENCY'],
  ['ALERT_WEBHOOK_URL not a URL', { ALERT_WEBHOOK_URL: `hooks.slack.com/services/${SECRET}` }, 'ALERT_WEBHOOK_URL'],
  ['ALERT_AFTER_FAILURES negative', { ALERT_AFTER_FAILURES: '-1' }, 'ALERT_AFTER_FAILURES'],
  ['ALERT_REPEAT_MINUTES too small', { ALERT_REPEAT_MINUTES: '0.001' }, 'ALERT_REPEAT_MINUTES'],
  ['REFRESH_TOKEN_WARN_DAYS not a number', { REFRESH_TOKEN_WARN_DAYS: 'two weeks' }, 'REFRESH_TOKEN_WARN_DAYS'],
  ['PORT out of range', { PORT: '70000' }, 'PORT'],
  ['HEALTH_TOKEN too short', { HEALTH_TOKEN: 'shortsecret' }, 'HEALTH_TOKEN'],
  ['MIGRATE_ON_START not a boolean', { MIGRATE_ON_START: 'sometimes' }, 'MIGRATE_ON_START'],
  ['HISTORY_RETENTION_DAYS zero', { HISTORY_RETENTION_DAYS: '0' }, 'HISTORY_RETENTION_DAYS'],
  ['LOG_LEVEL unknown', { LOG_LEVEL: 'verbose' }, 'LOG_LEVEL'],
  ['QBO_TOKEN_URL not a URL', { QBO_TOKEN_URL: 'intuit token endpoint' }, 'QBO_TOKEN_URL'],
];

describe('bad configuration: the daemon exits 78, naming the variable', () => {
  it.each(MATRIX)('%s', async (_what, change, variable) => {
    const env: Record<string, string> = { ...GOOD };
    for (const [k, v] of Object.entries(change)) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    const daemon = spawnDaemon(env);
    const exit = await daemon.exited;
    expect(exit.code).toBe(78);
    const invalid = daemon.events('config.invalid');
    expect(invalid).toHaveLength(1);
    expect(JSON.stringify(invalid[0]?.problems)).toContain(variable);
    expect(daemon.stderr()).toMatch(new RegExp(`^ {2}${variable}: `, 'm'));
    expect(daemon.stderr()).not.toMatch(/\n\s+at /); // no stack trace
    const everything = daemon.lines.map((l) => JSON.stringify(l)).join('\n') + daemon.stderr();
    for (const secret of [SECRET, KEY_B64, 'shortsecret']) expect(everything).not.toContain(secret);
    expect(daemon.events('daemon.started')).toEqual([]);
  });

  it('reports every problem at once', async () => {
    const daemon = spawnDaemon({ PORT: 'x', LOG_LEVEL: 'loud' });
    expect((await daemon.exited).code).toBe(78);
    for (const variable of ['DATABASE_URL', 'QBO_CLIENT_ID', 'QBO_CLIENT_SECRET', 'TOKEN_ENCRYPTION_KEY', 'PORT', 'LOG_LEVEL']) {
      expect(daemon.stderr()).toMatch(new RegExp(`^ {2}${variable}: `, 'm'));
    }
  });
});
