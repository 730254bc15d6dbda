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

/** Values shorter than this are not scrubbed: they would hide ordinary words, and are no credential. */
const MIN_SECRET = 6;

/**
 * Secret values to scrub from every line. Shared by all loggers of the process because a token
 * learned by one component must be hidden in the lines of every other.
 *
 * Configuration secrets are kept for the life of the process (`add`). Tokens rotate, so they are
 * kept per key (`track(realmId, …)`): the current generation and the one before it, because a
 * line about a rotation may still carry the old value; older ones are dropped, so a long-running
 * daemon's registry stays the size of its realm count. Scrubbing is one pass over the line,
 * looking each position's first characters up in an index, so its cost does not grow with the
 * number of secrets.
 */
export class SecretRegistry {
  /** Registered value (and its JSON-escaped form) -> how many registrations hold it. */
  private readonly counts = new Map<string, number>();
  /** First MIN_SECRET characters -> values starting with them, longest first. */
  private readonly index = new Map<string, string[]>();
  private readonly generations = new Map<string, string[][]>();

  /** Secrets that never expire (configuration). */
  add(...values: ReadonlyArray<string | undefined>): void {
    for (const value of values) this.hold(value);
  }

  /** The current secrets under `key` (a realm's token pair); generations older than the previous are forgotten. */
  track(key: string, values: ReadonlyArray<string | undefined>): void {
    const current = values.filter((v): v is string => v !== undefined && v.length >= MIN_SECRET);
    const history = this.generations.get(key) ?? [];
    const latest = history.at(-1);
    if (latest && latest.length === current.length && latest.every((v, i) => v === current[i])) return;
    for (const v of current) this.hold(v);
    history.push(current);
    while (history.length > 2) for (const v of history.shift() ?? []) this.release(v);
    this.generations.set(key, history);
  }

  get size(): number {
    return this.counts.size;
  }

  scrub(text: string): string {
    if (this.counts.size === 0) return text;
    let out = '';
    let copied = 0;
    for (let i = 0; i <= text.length - MIN_SECRET; ) {
      const candidates = this.index.get(text.slice(i, i + MIN_SECRET));
      const hit = candidates?.find((v) => text.startsWith(v, i));
      if (hit === undefined) {
        i++;
        continue;
      }
      out += text.slice(copied, i) + REDACTED;
      i += hit.length;
      copied = i;
    }
    return copied === 0 ? text : out + text.slice(copied);
  }

  private hold(value: string | undefined): void {
    if (value === undefined || value.length < MIN_SECRET) return;
    // A value containing JSON-escaped characters appears escaped in the line.
    for (const form of new Set([value, JSON.stringify(value).slice(1, -1)])) {
      const n = this.counts.get(form) ?? 0;
      this.counts.set(form, n + 1);
      if (n > 0) continue;
      const prefix = form.slice(0, MIN_SECRET);
      const list = [...(this.index.get(prefix) ?? []), form].sort((a, b) => b.length - a.length);
      this.index.set(prefix, list);
    }
  }

  private release(value: string): void {
    for (const form of new Set([value, JSON.stringify(value).slice(1, -1)])) {
      const n = (this.counts.get(form) ?? 0) - 1;
      if (n > 0) {
        this.counts.set(form, n);
        continue;
      }
      this.counts.delete(form);
      const prefix = form.slice(0, MIN_SECRET);
      const list = (this.index.get(prefix) ?? []).filter((v) => v !== form);
      if (list.length > 0) this.index.set(prefix, list);
      else this.index.delete(prefix);
    }
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
