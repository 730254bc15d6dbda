/**
 * pino, one JSON object a line. Two layers keep secrets out of the logs:
 *  - key redaction: fields named like tokens, secrets, keys and passwords are censored at any
 *    of the depths our log objects have;
 *  - value scrubbing: every secret value the process knows (client secret, encryption key,
 *    DB password, and each OAuth token as it is issued) is replaced in the final line, so a
 *    secret that slips into an error message or a nested body still never reaches the log.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger } from 'pino';

/** Contract log events (ARCHITECTURE.md); operators build metric filters on these names. */
export const LogEvent = {
  daemonStarted: 'daemon.started',
  daemonStopping: 'daemon.stopping',
  daemonStopped: 'daemon.stopped',
  configInvalid: 'config.invalid',
  migrationApplied: 'migration.applied',
  schemaInvalid: 'schema.invalid',
  probeSucceeded: 'probe.succeeded',
  probeFailed: 'probe.failed',
  tokenRefreshed: 'token.refreshed',
  tokenRefreshFailed: 'token.refresh_failed',
  dbWriteFailed: 'db.write_failed',
  spoolAppended: 'spool.appended',
  spoolReplayed: 'spool.replayed',
  alertRaised: 'alert.raised',
  alertRepeated: 'alert.repeated',
  alertResolved: 'alert.resolved',
  alertDeliveryFailed: 'alert.delivery_failed',
  // Events beyond the contract's list (additive, same naming scheme).
  migrationReapplied: 'migration.reapplied',
  migrationUnknown: 'migration.unknown',
  dbConnectionError: 'db.connection_error',
  dbReadFailed: 'db.read_failed',
  dbRecovered: 'db.recovered',
  probeSkipped: 'probe.skipped',
  schedulerOverlap: 'scheduler.overlap',
  schedulerMissed: 'scheduler.missed',
  schedulerTickFailed: 'scheduler.tick_failed',
  schedulerCycleCompleted: 'scheduler.cycle_completed',
  historyPruned: 'history.pruned',
  httpError: 'http.error',
  daemonFatal: 'daemon.fatal',
} as const;

export const REDACTED = '[redacted]';

const SENSITIVE_KEYS = [
  'accessToken',
  'access_token',
  'refreshToken',
  'refresh_token',
  'idToken',
  'id_token',
  'token',
  'clientSecret',
  'client_secret',
  'secret',
  'password',
  'authorization',
  'Authorization',
  'cookie',
  'encryptionKey',
  'tokenEncryptionKey',
  'healthToken',
  'databaseUrl',
  'connectionString',
  'alertWebhookUrl',
];

/** Paths for pino's redaction: each sensitive key at the top and up to three levels down. */
function redactPaths(): string[] {
  const paths: string[] = [];
  for (const key of SENSITIVE_KEYS) {
    paths.push(key, `*.${key}`, `*.*.${key}`, `*.*.*.${key}`);
  }
  return paths;
}

/**
 * Secret values to scrub from every line. Shared by all loggers of the process because a token
 * learned by one component must be hidden in the lines of every other.
 */
export class SecretRegistry {
  private readonly values = new Set<string>();
  private pattern: RegExp | undefined;

  add(...values: ReadonlyArray<string | undefined>): void {
    let changed = false;
    for (const value of values) {
      // Very short values would scrub ordinary words; they are not credentials worth the name.
      if (value === undefined || value.length < 6 || this.values.has(value)) continue;
      this.values.add(value);
      // A value containing JSON-escaped characters appears escaped in the line.
      this.values.add(JSON.stringify(value).slice(1, -1));
      changed = true;
    }
    if (changed) this.pattern = undefined;
  }

  get size(): number {
    return this.values.size;
  }

  scrub(text: string): string {
    if (this.values.size === 0) return text;
    this.pattern ??= new RegExp(
      [...this.values]
        .sort((a, b) => b.length - a.length)
        .map((v) => v.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('|'),
      'g',
    );
    return text.replace(this.pattern, REDACTED);
  }
}

export interface LoggerOptions {
  level: LogLevel;
  secrets: SecretRegistry;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: DestinationStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  const { secrets } = opts;
  return pino(
    {
      level: opts.level,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label, number) => ({ level: number, levelName: label }) },
      redact: { paths: redactPaths(), censor: REDACTED },
      serializers: { err: pino.stdSerializers.errWithCause },
      hooks: { streamWrite: (line) => secrets.scrub(line) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}
