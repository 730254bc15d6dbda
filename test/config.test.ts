import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { INTUIT_API_BASE_URL, INTUIT_TOKEN_URL, parseConfig, readEnvironment, type Env } from '../src/config.js';
import { runQbhealth } from './support/cli.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const SECRET = 'client-secret-Zq8vX3nPw';
const VALID: Env = {
  DATABASE_URL: 'postgres://monitor:db-pass-4471@db.internal:5432/clinic',
  QBO_CLIENT_ID: 'ABcdClientId',
  QBO_CLIENT_SECRET: SECRET,
  TOKEN_ENCRYPTION_KEY: KEY,
};

function problemsFor(env: Env): string[] {
  const result = parseConfig(env, 'full', '/srv/qbhm');
  if (result.ok) throw new Error('expected the configuration to be rejected');
  return [...result.problems];
}

describe('configuration', () => {
  it('applies the documented defaults', () => {
    const result = parseConfig(VALID, 'full', '/srv/qbhm');
    if (!result.ok) throw new Error(result.problems.join('\n'));
    const c = result.config;
    expect(c).toMatchObject({
      qboEnvironment: 'sandbox',
      qboRedirectUri: 'http://localhost:8080/oauth/callback',
      probeSchedule: '* * * * *',
      probeTimeoutMs: 10_000,
      probeConcurrency: 4,
      alertWebhookUrl: undefined,
      alertAfterFailures: 3,
      alertRepeatMinutes: 60,
      refreshTokenWarnDays: 14,
      host: '0.0.0.0',
      port: 8080,
      healthToken: undefined,
      spoolDir: '/srv/qbhm/var/spool',
      migrateOnStart: true,
      historyRetentionDays: 90,
      logLevel: 'info',
      qboTokenUrl: INTUIT_TOKEN_URL,
      qboApiBaseUrl: INTUIT_API_BASE_URL.sandbox,
    });
    expect(c.tokenEncryptionKey).toHaveLength(32);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('picks the production API host for the production environment', () => {
    const result = parseConfig({ ...VALID, QBO_ENVIRONMENT: 'production' }, 'full');
    expect(result.ok && result.config.qboApiBaseUrl).toBe(INTUIT_API_BASE_URL.production);
  });

  it('reports every missing required variable at once, one line each', () => {
    const problems = problemsFor({});
    expect(problems.map((p) => p.split(':')[0])).toEqual(['DATABASE_URL', 'QBO_CLIENT_ID', 'QBO_CLIENT_SECRET', 'TOKEN_ENCRYPTION_KEY']);
    for (const p of problems) expect(p).toMatch(/is required; .+/);
  });

  it('treats blank values as missing', () => {
    expect(problemsFor({ ...VALID, QBO_CLIENT_ID: '   ' })).toEqual([expect.stringMatching(/^QBO_CLIENT_ID: is required/)]);
  });

  it.each([
    ['PROBE_SCHEDULE', 'every minute', /^PROBE_SCHEDULE: must be a cron expression of 5 fields/],
    ['PROBE_SCHEDULE', '61 * * * *', /^PROBE_SCHEDULE: must be a cron expression/],
    ['PROBE_SCHEDULE', '* * * *', /^PROBE_SCHEDULE: must be a cron expression/],
    ['PORT', 'http', /^PORT: must be a whole number from 0 to 65535 \(got "http"\)/],
    ['PORT', '70000', /^PORT: must be a whole number from 0 to 65535/],
    ['PORT', '-1', /^PORT: must be a whole number/],
    ['PORT', '80.5', /^PORT: must be a whole number/],
    ['QBO_TOKEN_URL', 'not a url', /^QBO_TOKEN_URL: must be an absolute http:\/\/ or https:\/\/ URL \(got "not a url"\)/],
    ['QBO_API_BASE_URL', 'ftp://intuit.example', /^QBO_API_BASE_URL: must be an absolute http/],
    ['QBO_REDIRECT_URI', '/oauth/callback', /^QBO_REDIRECT_URI: must be an absolute http/],
    ['QBO_ENVIRONMENT', 'staging', /^QBO_ENVIRONMENT: must be one of sandbox, production \(got "staging"\)/],
    ['LOG_LEVEL', 'verbose', /^LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent/],
    ['MIGRATE_ON_START', 'maybe', /^MIGRATE_ON_START: must be true or false/],
    ['PROBE_TIMEOUT_MS', '0', /^PROBE_TIMEOUT_MS: must be a whole number from 100 to 600000/],
    ['PROBE_CONCURRENCY', '0', /^PROBE_CONCURRENCY: must be a whole number from 1 to 256/],
    ['ALERT_AFTER_FAILURES', 'three', /^ALERT_AFTER_FAILURES: must be a whole number/],
    ['ALERT_REPEAT_MINUTES', '0', /^ALERT_REPEAT_MINUTES: must be a number from 0.05 to 10080/],
    ['ALERT_REPEAT_MINUTES', '1,5', /^ALERT_REPEAT_MINUTES: must be a number/],
    ['REFRESH_TOKEN_WARN_DAYS', '-3', /^REFRESH_TOKEN_WARN_DAYS: must be a whole number/],
    ['HISTORY_RETENTION_DAYS', '0', /^HISTORY_RETENTION_DAYS: must be a whole number/],
    ['TOKEN_ENCRYPTION_KEY', Buffer.alloc(16, 1).toString('base64'), /^TOKEN_ENCRYPTION_KEY: must be 32 random bytes in base64.*\(got 16 bytes\)/],
    ['TOKEN_ENCRYPTION_KEY', 'not*base64!', /^TOKEN_ENCRYPTION_KEY: must be 32 random bytes.*\(got a value that is not base64\)/],
    ['DATABASE_URL', 'mysql://root:pw@localhost/db', /^DATABASE_URL: must start with postgres:\/\/ or postgresql:\/\/ \(got scheme "mysql:"\)/],
    ['DATABASE_URL', 'localhost:5432', /^DATABASE_URL: must start with postgres/],
    ['HEALTH_TOKEN', 'short', /^HEALTH_TOKEN: must be at least 16 characters/],
    ['ALERT_WEBHOOK_URL', 'hooks.slack.com/services/T0/B0/XYZ', /^ALERT_WEBHOOK_URL: must be an absolute http:\/\/ or https:\/\/ URL$/],
  ])('rejects %s=%j with a line naming it', (name, value, expected) => {
    const problems = problemsFor({ ...VALID, [name]: value });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(expected);
  });

  it('accepts 6-field cron expressions and port 0 (ephemeral)', () => {
    const result = parseConfig({ ...VALID, PROBE_SCHEDULE: '*/10 * * * * *', PORT: '0' }, 'full');
    expect(result.ok && [result.config.probeSchedule, result.config.port]).toEqual(['*/10 * * * * *', 0]);
  });

  it('never echoes a secret, even an invalid one', () => {
    const secrets = {
      DATABASE_URL: 'mysql://root:Sup3rSecretDbPw@localhost/db',
      QBO_CLIENT_SECRET: SECRET,
      TOKEN_ENCRYPTION_KEY: 'VGhpc0lzQVNlY3JldEtleQ==',
      HEALTH_TOKEN: 'tiny-secret',
      ALERT_WEBHOOK_URL: 'hooks.slack.com/services/T0/B0/WebhookSecretPart',
    };
    const result = parseConfig({ ...VALID, ...secrets, PORT: 'x' }, 'full');
    expect(result.ok).toBe(false);
    const text = result.ok ? '' : result.problems.join('\n');
    expect(text.split('\n')).toHaveLength(5);
    for (const value of [...Object.values(secrets), 'Sup3rSecretDbPw', 'WebhookSecretPart']) expect(text).not.toContain(value);
    // The secrets are handed back so the logger can scrub them wherever they show up.
    expect(result.secrets).toEqual(expect.arrayContaining([SECRET, secrets.TOKEN_ENCRYPTION_KEY, secrets.HEALTH_TOKEN]));
  });

  it('needs only DATABASE_URL for the database commands', () => {
    const result = parseConfig({ DATABASE_URL: VALID.DATABASE_URL }, 'database');
    expect(result.ok && result.config.databaseUrl).toBe(VALID.DATABASE_URL);
    expect(result.secrets).toContain('db-pass-4471');
    const missing = parseConfig({}, 'database');
    expect(missing.ok ? [] : missing.problems).toEqual([expect.stringMatching(/^DATABASE_URL: is required/)]);
  });

  it('reads a .env file in the working directory, the environment taking precedence', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'qbhm-env-'));
    writeFileSync(path.join(dir, '.env'), 'DATABASE_URL=postgres://from-file/db\nPORT=9090\n# comment\nLOG_LEVEL="debug"\n');
    const env = readEnvironment({ PORT: '7070' }, dir);
    expect(env).toMatchObject({ DATABASE_URL: 'postgres://from-file/db', PORT: '7070', LOG_LEVEL: 'debug' });
    expect(readEnvironment({ PORT: '1' }, os.tmpdir() + '/no-such-dir-qbhm')).toEqual({ PORT: '1' });
  });

  it('the CLI exits 78 with one line per problem, no stack trace and no secret', async () => {
    const r = await runQbhealth(['migrate'], { DATABASE_URL: 'mysql://root:Sup3rSecretDbPw@localhost/db', LOG_LEVEL: 'loud' });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('DATABASE_URL: must start with postgres://');
    expect(r.stderr).toContain('LOG_LEVEL: must be one of');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr + r.stdout).not.toContain('Sup3rSecretDbPw');
  });
});
