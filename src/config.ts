/**
 * The only module that reads the environment. Every variable of the contract is parsed and
 * validated here once, into a frozen object; every problem is reported at once, one line each,
 * naming the variable and what is expected, and never echoing a secret's value.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { parseEnv } from 'node:util';
import cron from 'node-cron';
import { basicCredentials, type LogLevel } from './log.js';

export type QboEnvironment = 'sandbox' | 'production';
export type { LogLevel } from './log.js';

/** What the commands that touch only PostgreSQL need (`migrate`, `check-schema`). */
export interface DatabaseConfig {
  readonly databaseUrl: string;
  readonly logLevel: LogLevel;
  /** HISTORY_RETENTION_DAYS: `qbhealth prune` and the daemon's daily prune keep this much. */
  readonly historyRetentionDays: number;
  /** ROLLUP_RETENTION_DAYS: the same prunes keep this much of the rollups (never less than the history). */
  readonly rollupRetentionDays: number;
}

export interface Config extends DatabaseConfig {
  readonly qboClientId: string;
  readonly qboClientSecret: string;
  readonly qboEnvironment: QboEnvironment;
  readonly qboRedirectUri: string;
  /** 32 raw bytes decoded from TOKEN_ENCRYPTION_KEY. */
  readonly tokenEncryptionKey: Buffer;
  /**
   * TOKEN_ENCRYPTION_KEY_PREVIOUS: the key being rotated away from, used only to open tokens
   * sealed under it until `qbhealth rotate-key` has re-sealed them under TOKEN_ENCRYPTION_KEY.
   */
  readonly tokenEncryptionKeyPrevious: Buffer | undefined;
  readonly probeSchedule: string;
  readonly probeTimeoutMs: number;
  readonly probeConcurrency: number;
  readonly alertWebhookUrl: string | undefined;
  readonly alertAfterFailures: number;
  readonly alertRepeatMinutes: number;
  readonly refreshTokenWarnDays: number;
  readonly host: string;
  readonly port: number;
  readonly healthToken: string | undefined;
  readonly spoolDir: string;
  readonly migrateOnStart: boolean;
  readonly qboTokenUrl: string;
  readonly qboApiBaseUrl: string;
  readonly qboRevokeUrl: string;
  /** Where `qbhealth connect` sends the browser for consent (QBO_AUTHORIZE_URL). */
  readonly qboAuthorizeUrl: string;
  /**
   * Schema watch of the application that shares the database (absolute paths; the watch is off
   * when both are unset): SCHEMA_WATCH_MANIFEST, a `qbhealth schema snapshot` manifest, and
   * SCHEMA_WATCH_QUERIES, a directory of the application's .sql files.
   */
  readonly schemaWatchManifest: string | undefined;
  readonly schemaWatchQueries: string | undefined;
  /** SCHEMA_WATCH_SCHEDULE: when the watch re-checks (node-cron, 5 or 6 fields). */
  readonly schemaWatchSchedule: string;
  /**
   * FLEET_INSTANCE_ID: this daemon's name among the daemons sharing the database (and its spool
   * subdirectory). Default `<hostname>:<PORT>`, with `/<NODE_APP_INSTANCE>` under PM2.
   */
  readonly instanceId: string;
  /** FLEET_HEARTBEAT_MS: how often a member renews its registration and its leases. */
  readonly fleetHeartbeatMs: number;
  /** FLEET_MEMBER_TTL_MS: a member whose heartbeat is older is dead; its leases are taken over. */
  readonly fleetMemberTtlMs: number;
  /** HEARTBEAT_URL: an external dead-man's switch, pinged after each completed cycle. */
  readonly heartbeatUrl: string | undefined;
}

export type ConfigScope = 'database' | 'full';

export type ConfigResult<T> =
  | { readonly ok: true; readonly config: T; readonly secrets: readonly string[] }
  | { readonly ok: false; readonly problems: readonly string[]; readonly secrets: readonly string[] };

/** Rollups are kept for 400 days (or as long as the raw history, when that is longer). */
export const DEFAULT_ROLLUP_RETENTION_DAYS = 400;

export const INTUIT_TOKEN_URL = 'https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer';
export const INTUIT_REVOKE_URL = 'https://developer.api.intuit.com/v2/oauth2/tokens/revoke';
export const INTUIT_AUTHORIZE_URL = 'https://appcenter.intuit.com/connect/oauth2';
export const INTUIT_API_BASE_URL: Readonly<Record<QboEnvironment, string>> = {
  sandbox: 'https://sandbox-quickbooks.api.intuit.com',
  production: 'https://quickbooks.api.intuit.com',
};

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * The process environment merged over a `.env` file in `cwd` (the environment wins, as with
 * process.loadEnvFile, but process.env itself is left untouched).
 */
export function readEnvironment(processEnv: Env, cwd: string): Env {
  let fileText: string;
  try {
    fileText = readFileSync(path.join(cwd, '.env'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return processEnv;
    throw new Error(`cannot read ${path.join(cwd, '.env')}: ${(err as Error).message}`);
  }
  return { ...parseEnv(fileText), ...processEnv };
}

/** Collects one problem line per variable and the parsed values. */
class Reader {
  readonly problems: string[] = [];
  readonly secrets: string[] = [];

  constructor(private readonly env: Env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    if (value === undefined) return undefined;
    const trimmed = value.trim();
    return trimmed === '' ? undefined : trimmed;
  }

  private problem(name: string, expected: string): undefined {
    this.problems.push(`${name}: ${expected}`);
    return undefined;
  }

  /** A value that must never be echoed: remembered so the logger can scrub it anywhere. */
  secret(name: string): string | undefined {
    const value = this.raw(name);
    if (value !== undefined) this.secrets.push(value);
    return value;
  }

  requiredSecret(name: string, expected: string): string | undefined {
    return this.secret(name) ?? this.problem(name, `is required; ${expected}`);
  }

  required(name: string, expected: string): string | undefined {
    return this.raw(name) ?? this.problem(name, `is required; ${expected}`);
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalSecret(name: string): string | undefined {
    return this.secret(name);
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^-?\d+$/.test(value) || Number(value) < min || Number(value) > max) {
      this.problem(name, `must be a whole number from ${min} to ${max} (got "${value}")`);
      return fallback;
    }
    return Number(value);
  }

  /** A decimal number (e.g. minutes that may be fractional). */
  decimal(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!/^\d+(\.\d+)?$/.test(value) || Number(value) < min || Number(value) > max) {
      this.problem(name, `must be a number from ${min} to ${max} (got "${value}")`);
      return fallback;
    }
    return Number(value);
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return fallback;
    if (TRUE_WORDS.has(value)) return true;
    if (FALSE_WORDS.has(value)) return false;
    this.problem(name, `must be true or false (got "${value}")`);
    return fallback;
  }

  oneOf<T extends string>(name: string, fallback: T, allowed: readonly T[]): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if ((allowed as readonly string[]).includes(value)) return value as T;
    this.problem(name, `must be one of ${allowed.join(', ')} (got "${value}")`);
    return fallback;
  }

  /** An http(s) URL. `secretValue` URLs (webhooks carry their credential in the path) are not echoed. */
  httpUrl(name: string, value: string | undefined, opts: { secretValue: boolean }): string | undefined {
    if (value === undefined) return undefined;
    const shown = opts.secretValue ? '' : ` (got "${value}")`;
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      // Not an exception to surface: it becomes this variable's problem line.
      return this.problem(name, `must be an absolute http:// or https:// URL${shown}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return this.problem(name, `must be an absolute http:// or https:// URL${shown}`);
    }
    return value;
  }
}

function parseDatabaseUrl(r: Reader): string | undefined {
  const expected = 'a PostgreSQL connection string such as postgres://user:password@host:5432/dbname';
  const value = r.requiredSecret('DATABASE_URL', expected);
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // Reported as a problem line; the value itself holds a password and is not echoed.
    r.problems.push(`DATABASE_URL: is not a valid URL; expected ${expected}`);
    return undefined;
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    r.problems.push(`DATABASE_URL: must start with postgres:// or postgresql:// (got scheme "${url.protocol}")`);
    return undefined;
  }
  // The password as written in the URL (percent-encoded) and as sent to the server; a stray `%`
  // that is no escape would make decodeURIComponent throw, and then it is meant literally.
  if (url.password !== '') {
    const literal = /%(?![0-9A-Fa-f]{2})/.test(url.password);
    r.secrets.push(url.password, literal ? url.password : decodeURIComponent(url.password));
  }
  return value;
}

const ENCRYPTION_KEY_EXPECTED = '32 random bytes in base64, e.g. the output of `openssl rand -base64 32`';

function parseEncryptionKey(r: Reader): Buffer | undefined {
  return decodeEncryptionKey(r, 'TOKEN_ENCRYPTION_KEY', r.requiredSecret('TOKEN_ENCRYPTION_KEY', ENCRYPTION_KEY_EXPECTED));
}

/** A key's problem line says what it is (not base64, or how many bytes), never the value. */
function decodeEncryptionKey(r: Reader, name: string, value: string | undefined): Buffer | undefined {
  if (value === undefined) return undefined;
  const key = BASE64.test(value) ? Buffer.from(value, 'base64') : undefined;
  if (key === undefined || key.length !== 32) {
    const got = key === undefined ? 'a value that is not base64' : `${key.length} bytes`;
    r.problems.push(`${name}: must be ${ENCRYPTION_KEY_EXPECTED} (got ${got})`);
    return undefined;
  }
  // The same 32 bytes spelled in the other encodings a dump of the key would use.
  r.secrets.push(key.toString('hex'), key.toString('base64'), key.toString('base64url'));
  return key;
}

function parseSchedule(r: Reader, name = 'PROBE_SCHEDULE', fallback = '* * * * *'): string {
  const value = r.string(name, fallback);
  if (!cron.validate(value)) {
    r.problems.push(
      `${name}: must be a cron expression of 5 fields (minute hour day month weekday) or 6 (seconds first), e.g. "*/5 * * * *" (got "${value}")`,
    );
  }
  return value;
}

/**
 * SCHEMA_WATCH_*: paths resolved against the working directory. Whether the manifest and the
 * queries can be read, and are well-formed, is checked when the daemon starts (exit 78, one line).
 */
function parseSchemaWatch(r: Reader, cwd: string): Pick<Config, 'schemaWatchManifest' | 'schemaWatchQueries' | 'schemaWatchSchedule'> {
  const manifest = r.string('SCHEMA_WATCH_MANIFEST', '');
  const queries = r.string('SCHEMA_WATCH_QUERIES', '');
  return {
    schemaWatchManifest: manifest === '' ? undefined : path.resolve(cwd, manifest),
    schemaWatchQueries: queries === '' ? undefined : path.resolve(cwd, queries),
    schemaWatchSchedule: parseSchedule(r, 'SCHEMA_WATCH_SCHEDULE', '*/5 * * * *'),
  };
}

function parseDatabaseScope(r: Reader): DatabaseConfig | undefined {
  const databaseUrl = parseDatabaseUrl(r);
  const logLevel = r.oneOf('LOG_LEVEL', 'info', LOG_LEVELS);
  const historyRetentionDays = r.integer('HISTORY_RETENTION_DAYS', 90, 1, 36_500);
  const rollupRetentionDays = r.integer('ROLLUP_RETENTION_DAYS', Math.max(DEFAULT_ROLLUP_RETENTION_DAYS, historyRetentionDays), 1, 36_500);
  // Rollups are rebuilt from the raw rows: pruned sooner, a rebuild would bring them back.
  if (rollupRetentionDays < historyRetentionDays) {
    r.problems.push(`ROLLUP_RETENTION_DAYS: must be at least HISTORY_RETENTION_DAYS (${historyRetentionDays}): the rollups summarise the history and are kept at least as long (got ${rollupRetentionDays})`);
  }
  return databaseUrl === undefined ? undefined : { databaseUrl, logLevel, historyRetentionDays, rollupRetentionDays };
}

function parseFull(r: Reader, cwd: string): Config | undefined {
  const db = parseDatabaseScope(r);
  const qboClientId = r.required('QBO_CLIENT_ID', 'the Client ID of your Intuit app (developer.intuit.com, Keys & credentials)');
  const qboClientSecret = r.requiredSecret('QBO_CLIENT_SECRET', 'the Client Secret of your Intuit app');
  // intuit-oauth sends the pair as `Authorization: Basic base64(id:secret)`: the secret in another form.
  if (qboClientId !== undefined && qboClientSecret !== undefined) r.secrets.push(...basicCredentials(qboClientId, qboClientSecret));
  const qboEnvironment = r.oneOf<QboEnvironment>('QBO_ENVIRONMENT', 'sandbox', ['sandbox', 'production']);
  const qboRedirectUri = r.httpUrl('QBO_REDIRECT_URI', r.string('QBO_REDIRECT_URI', 'http://localhost:8080/oauth/callback'), {
    secretValue: false,
  });
  const tokenEncryptionKey = parseEncryptionKey(r);
  const tokenEncryptionKeyPrevious = decodeEncryptionKey(r, 'TOKEN_ENCRYPTION_KEY_PREVIOUS', r.optionalSecret('TOKEN_ENCRYPTION_KEY_PREVIOUS'));
  const probeSchedule = parseSchedule(r);
  const probeTimeoutMs = r.integer('PROBE_TIMEOUT_MS', 10_000, 100, 600_000);
  const probeConcurrency = r.integer('PROBE_CONCURRENCY', 4, 1, 256);
  const alertWebhookUrl = r.httpUrl('ALERT_WEBHOOK_URL', r.optionalSecret('ALERT_WEBHOOK_URL'), { secretValue: true });
  const alertAfterFailures = r.integer('ALERT_AFTER_FAILURES', 3, 1, 1000);
  const alertRepeatMinutes = r.decimal('ALERT_REPEAT_MINUTES', 60, 0.05, 10_080);
  const refreshTokenWarnDays = r.integer('REFRESH_TOKEN_WARN_DAYS', 14, 0, 3650);
  const host = r.string('HOST', '0.0.0.0');
  const port = r.integer('PORT', 8080, 0, 65_535);
  const healthToken = r.optionalSecret('HEALTH_TOKEN');
  if (healthToken !== undefined && healthToken.length < 16) {
    r.problems.push('HEALTH_TOKEN: must be at least 16 characters when set (e.g. `openssl rand -hex 24`)');
  }
  const spoolDir = path.resolve(cwd, r.string('SPOOL_DIR', './var/spool'));
  const migrateOnStart = r.boolean('MIGRATE_ON_START', true);
  const qboTokenUrl = r.httpUrl('QBO_TOKEN_URL', r.string('QBO_TOKEN_URL', INTUIT_TOKEN_URL), { secretValue: false });
  const qboApiBaseUrl = r.httpUrl('QBO_API_BASE_URL', r.string('QBO_API_BASE_URL', INTUIT_API_BASE_URL[qboEnvironment]), {
    secretValue: false,
  });
  const qboRevokeUrl = r.httpUrl('QBO_REVOKE_URL', r.string('QBO_REVOKE_URL', INTUIT_REVOKE_URL), { secretValue: false });
  const qboAuthorizeUrl = r.httpUrl('QBO_AUTHORIZE_URL', r.string('QBO_AUTHORIZE_URL', INTUIT_AUTHORIZE_URL), { secretValue: false });
  const schemaWatch = parseSchemaWatch(r, cwd);
  const fleet = parseFleet(r, port);

  if (
    r.problems.length > 0 ||
    db === undefined ||
    qboClientId === undefined ||
    qboClientSecret === undefined ||
    qboRedirectUri === undefined ||
    tokenEncryptionKey === undefined ||
    qboTokenUrl === undefined ||
    qboApiBaseUrl === undefined ||
    qboRevokeUrl === undefined ||
    qboAuthorizeUrl === undefined
  ) {
    return undefined;
  }
  return {
    ...db,
    qboClientId,
    qboClientSecret,
    qboEnvironment,
    qboRedirectUri,
    tokenEncryptionKey,
    tokenEncryptionKeyPrevious,
    probeSchedule,
    probeTimeoutMs,
    probeConcurrency,
    alertWebhookUrl,
    alertAfterFailures,
    alertRepeatMinutes,
    refreshTokenWarnDays,
    host,
    port,
    healthToken,
    spoolDir,
    migrateOnStart,
    qboTokenUrl,
    qboApiBaseUrl: qboApiBaseUrl.replace(/\/+$/, ''),
    qboRevokeUrl,
    qboAuthorizeUrl,
    ...schemaWatch,
    ...fleet,
  };
}

const INSTANCE_ID = /^[A-Za-z0-9._:@/-]{1,128}$/;

/** FLEET_*, HEARTBEAT_URL. The instance id must be unique among the daemons sharing one database. */
function parseFleet(r: Reader, port: number): Pick<Config, 'instanceId' | 'fleetHeartbeatMs' | 'fleetMemberTtlMs' | 'heartbeatUrl'> {
  const pm2Instance = r.string('NODE_APP_INSTANCE', '');
  const fallback = `${hostname()}:${port}${pm2Instance === '' ? '' : `/${pm2Instance}`}`;
  const instanceId = r.string('FLEET_INSTANCE_ID', fallback);
  if (!INSTANCE_ID.test(instanceId)) {
    r.problems.push(`FLEET_INSTANCE_ID: must be 1 to 128 letters, digits or . _ : @ / - (got "${instanceId}")`);
  }
  const fleetHeartbeatMs = r.integer('FLEET_HEARTBEAT_MS', 5000, 100, 600_000);
  const fleetMemberTtlMs = r.integer('FLEET_MEMBER_TTL_MS', 3 * fleetHeartbeatMs, 300, 3_600_000);
  if (fleetMemberTtlMs < 2 * fleetHeartbeatMs) {
    r.problems.push(`FLEET_MEMBER_TTL_MS: must be at least twice FLEET_HEARTBEAT_MS (${fleetHeartbeatMs}), so that one late heartbeat is not a death (got ${fleetMemberTtlMs})`);
  }
  // Healthchecks.io and Cronitor URLs carry their check's secret in the path: never echoed.
  const heartbeatUrl = r.httpUrl('HEARTBEAT_URL', r.optionalSecret('HEARTBEAT_URL'), { secretValue: true });
  return { instanceId, fleetHeartbeatMs, fleetMemberTtlMs, heartbeatUrl };
}

export function parseConfig(env: Env, scope: 'database', cwd?: string): ConfigResult<DatabaseConfig>;
export function parseConfig(env: Env, scope: 'full', cwd?: string): ConfigResult<Config>;
export function parseConfig(env: Env, scope: ConfigScope, cwd = '.'): ConfigResult<DatabaseConfig | Config> {
  const r = new Reader(env);
  const config = scope === 'database' ? parseDatabaseScope(r) : parseFull(r, cwd);
  if (config === undefined || r.problems.length > 0) {
    return { ok: false, problems: r.problems, secrets: r.secrets };
  }
  return { ok: true, config: Object.freeze(config), secrets: r.secrets };
}
