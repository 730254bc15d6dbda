/**
 * pino, one JSON object a line. Three layers keep secrets out of the logs:
 *  - errors are reduced: `err` keeps name, message, code, status and a reduced cause chain, never
 *    the request config, headers, request/response objects or bodies that library errors carry
 *    (an axios error holds `Authorization: Basic base64(client_id:client_secret)`);
 *  - key redaction: fields named like tokens, secrets, keys and passwords are censored at any
 *    of the depths our log objects have;
 *  - value scrubbing: every secret value the process knows (client secret, encryption key,
 *    DB password, and each OAuth token as it is issued), in every form it can take on the wire
 *    (JSON-escaped, URL-encoded, Base64), is replaced in the final line, so a secret that slips
 *    into an error message or a nested body still never reaches the log.
 */
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino, type Logger, type DestinationStream } from 'pino';

/** pino's levels, as LOG_LEVEL accepts them (config.ts validates against this). */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
import { errorEssentials, OperatorError } from './errors.js';

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
  /** PostgreSQL answers, but the catching up after it failed (db/watchdog.ts). */
  dbRecoveryFailed: 'db.recovery_failed',
  /** Claimed notifications this member did not deliver, released for any member (escalate/outbox.ts). */
  outboxHandedBack: 'outbox.handed_back',
  schedulerOverlap: 'scheduler.overlap',
  schedulerMissed: 'scheduler.missed',
  schedulerTickFailed: 'scheduler.tick_failed',
  schedulerCycleCompleted: 'scheduler.cycle_completed',
  historyPruned: 'history.pruned',
  httpError: 'http.error',
  daemonFatal: 'daemon.fatal',
  /** Realms whose stored tokens TOKEN_ENCRYPTION_KEY cannot open (start-up check). */
  tokenUnreadable: 'token.unreadable',
  /** Intuit issued a rotated pair that PostgreSQL did not store yet; kept in memory until it does. */
  tokenUnsaved: 'token.unsaved',
  /** A rotated pair kept in memory could not be stored before the process ended: that realm must reconnect. */
  tokenLost: 'token.lost',
  /** A realm left the token table or was disconnected: no longer probed, its alerts resolved. */
  realmForgotten: 'realm.forgotten',
  /** The health server listens beyond loopback without HEALTH_TOKEN: its details are readable by anyone who reaches it. */
  httpUnauthenticated: 'http.unauthenticated',
  /** At start, results an earlier run left in the spool (replayed next: `spool.replayed`). */
  spoolFound: 'spool.found',
  /** At start, open alerts restored from quickbooks_alert_state (not raised again). */
  alertsRestored: 'alerts.restored',
  historyPruneFailed: 'history.prune_failed',
  /** `qbhealth silence` created a silence (maintenance window); `by` is the OS user who ran it. */
  silenceCreated: 'silence.created',
  /** `qbhealth silence --remove` ended a silence early; `by` is the OS user who ran it. */
  silenceRemoved: 'silence.removed',
  /** The OS user running `qbhealth silence` could not be named; the silence records USER (or "unknown") instead. */
  silenceUserUnknown: 'silence.user_unknown',
  /** An alert transition held back by a silence: recorded and shown, not notified (`alert` is what it would have been). */
  alertSilenced: 'alert.silenced',
  /** The daily prune deleted alert history (events, ended silences) older than its retention. */
  alertHistoryPruned: 'alert_history.pruned',
  /** A member's database alert transitions, kept in memory while PostgreSQL was away, could not be written to the history (retried). */
  alertHistoryFlushFailed: 'alert_history.flush_failed',
  /** Database alert transitions waiting for PostgreSQL were dropped from memory (over the bound), the oldest first. */
  alertHistoryDropped: 'alert_history.dropped',
  /** A second SIGINT/SIGTERM: the process exits at once without finishing the shutdown. */
  daemonStopForced: 'daemon.stop_forced',
  /** Closing what a failed start had opened failed too (the start failure is reported on its own). */
  daemonCleanupFailed: 'daemon.cleanup_failed',
  /** Schema watch (SCHEMA_WATCH_*): the application's tables or queries no longer match (alert kind `schema`). */
  schemaWatchDrift: 'schema_watch.drift',
  /** Schema watch: what drifted is back; the alert resolves. */
  schemaWatchRestored: 'schema_watch.restored',
  /** Schema watch: a check that matched (debug) or the first one after start (info). */
  schemaWatchChecked: 'schema_watch.checked',
  /** Schema watch: a check could not run (PostgreSQL unreachable, manifest or queries unreadable); no verdict. */
  schemaWatchCheckFailed: 'schema_watch.check_failed',
  /** Fleet: this daemon registered with the members sharing the database. */
  fleetJoined: 'fleet.joined',
  /** Fleet: this member's registration was gone (retired while it was stopped) and it registered again. */
  fleetRejoined: 'fleet.rejoined',
  /** Fleet: a heartbeat could not be written; after FLEET_MEMBER_TTL_MS the others take this member's realms. */
  fleetHeartbeatFailed: 'fleet.heartbeat_failed',
  /** Fleet: a clean stop handed the leases back and removed the registration. */
  fleetLeft: 'fleet.left',
  fleetLeaveFailed: 'fleet.leave_failed',
  /** Fleet: another member stopped heartbeating (alert kind `monitor_instance_down`). */
  fleetMemberDown: 'fleet.member_down',
  /** Fleet: a member reported down heartbeats again, or was retired. */
  fleetMemberBack: 'fleet.member_back',
  /** A probe finished after this member's lease on the realm had expired and another member claimed it: the result is dropped. */
  leaseLost: 'lease.lost',
  /** Due realms could not be claimed from PostgreSQL: the member probes the realms it held last. */
  leaseClaimFailed: 'lease.claim_failed',
  /** Fleet: this host's clock is more than 2 s off PostgreSQL's (results are stamped on the database's clock). */
  fleetClockSkew: 'fleet.clock_skew',
  /** HEARTBEAT_URL (the external dead-man's switch) could not be pinged. */
  heartbeatUrlFailed: 'heartbeat_url.failed',
  /** The dashboard's sign-in form was given a wrong HEALTH_TOKEN, or posted from another origin. */
  dashboardLoginRefused: 'dashboard.login_refused',
  /** `qbhealth rollup --rebuild` recomputed a realm's rollups from its raw rows. */
  rollupRebuilt: 'rollup.rebuilt',
  /** At start: raw history predates the rollups (after an upgrade or adoption); run `qbhealth rollup --rebuild`. */
  rollupMissing: 'rollup.missing',
  /** At start: whether the rollups cover the history could not be checked. */
  rollupCheckFailed: 'rollup.check_failed',
  /** Folding closed half hours into the rollups failed; the next fold (a minute later) catches up. */
  rollupFoldFailed: 'rollup.fold_failed',
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
  'tokenEncryptionKeyPrevious',
  'previousKeys',
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

/** How far a logged error's cause chain is followed, and how many AggregateError members are kept. */
const MAX_ERROR_DEPTH = 5;
const MAX_AGGREGATED = 10;
const MAX_FIELD_TEXT = 500;
const ERROR_OWN_KEYS = new Set(['name', 'message', 'stack', 'cause', 'errors', 'code', 'status']);
const SENSITIVE_KEY_SET = new Set(SENSITIVE_KEYS.map((k) => k.toLowerCase()));

/** This package's directory (src/ or dist/ is one below), as stack frames spell it: a path or a file URL. */
const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));
const PACKAGE_LOCATIONS = [PACKAGE_ROOT, pathToFileURL(PACKAGE_ROOT).href];

/**
 * Whether an error was raised by this project's code: its first stack frame is in this package,
 * not in its node_modules, nor in Node's internals. Only such errors keep their stack and their
 * own scalar fields (httpStatus, intuitTid, exitCode …); a library's error keeps its essentials.
 */
/** Failure classes the program expects and words for the operator: logged without a stack. */
function isExpectedFailure(err: Error): boolean {
  return err instanceof OperatorError || err.name === 'IntuitFailure';
}

function isOwnError(err: Error): boolean {
  const frame = err.stack?.split('\n').find((line) => /^\s+at /.test(line));
  if (frame === undefined) return false;
  return PACKAGE_LOCATIONS.some((root) => {
    const at = frame.indexOf(root);
    return at >= 0 && !frame.startsWith('node_modules/', at + root.length);
  });
}

export interface SerializedError {
  type: string;
  name: string;
  message: string;
  code?: string | number;
  status?: number;
  stack?: string;
  cause?: SerializedError;
  errors?: SerializedError[];
  [field: string]: unknown;
}

/**
 * pino's `err` serializer: whatever was thrown, by us or by a library, becomes a small plain
 * object. Replaces pino's errWithCause, which copies every enumerable field (an axios error's
 * `config.headers.Authorization`, `request._header`, `response.data`) into the line.
 */
export function serializeError(err: unknown, depth = 0, ancestors = new Set<unknown>()): SerializedError {
  const { type, name, message, code, status } = errorEssentials(err);
  const out: SerializedError = { type, name, message };
  if (code !== undefined) out.code = code;
  if (status !== undefined) out.status = status;
  if (!(err instanceof Error)) return out;
  if (isOwnError(err)) {
    for (const [key, value] of Object.entries(err)) {
      if (ERROR_OWN_KEYS.has(key) || SENSITIVE_KEY_SET.has(key.toLowerCase())) continue;
      if (typeof value === 'string') out[key] = value.slice(0, MAX_FIELD_TEXT);
      else if (typeof value === 'number' || typeof value === 'boolean') out[key] = value;
    }
    // Stacks are for the unexpected. A classified Intuit answer (timeout, throttling, a 5xx) and
    // an operator-facing failure (PostgreSQL unreachable, a bad key) say all there is in their
    // message; a stack there only buries the line an operator reads during an outage.
    if (err.stack !== undefined && !isExpectedFailure(err)) out.stack = err.stack;
  }
  // A cause chain that loops back to an error on the way here ends there.
  ancestors.add(err);
  const follow = (value: unknown): SerializedError | undefined =>
    value === undefined || value === null || ancestors.has(value) || depth >= MAX_ERROR_DEPTH ? undefined : serializeError(value, depth + 1, ancestors);
  const cause = follow(err.cause);
  if (cause !== undefined) out.cause = cause;
  const members = (err as { errors?: unknown }).errors;
  if (Array.isArray(members)) {
    out.errors = members
      .slice(0, MAX_AGGREGATED)
      .map(follow)
      .filter((e): e is SerializedError => e !== undefined);
  }
  ancestors.delete(err);
  return out;
}

/**
 * The forms in which a secret value can appear in a line: as is, JSON-escaped (inside a JSON
 * string), URL-encoded (a query string or form body) and Base64 (an encoded credential or
 * header). Kept to these few because every form is one more index entry per token rotation.
 */
function formsOf(value: string): Set<string> {
  return new Set([value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value), Buffer.from(value, 'utf8').toString('base64')]);
}

/** The HTTP Basic credential of an OAuth client (RFC 6749 §2.3.1), as intuit-oauth sends it and as the RFC spells it. */
export function basicCredentials(clientId: string, clientSecret: string): string[] {
  const plain = Buffer.from(`${clientId}:${clientSecret}`, 'utf8').toString('base64');
  const encoded = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`, 'utf8').toString('base64');
  return [...new Set([plain, encoded])];
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
 * daemon's registry stays the size of its realm count. Each value is held in its few forms
 * (formsOf). Scrubbing is one pass over the line, looking each position's first characters up in
 * an index that gives the lengths of the forms starting with them, then each such slice up in a
 * hash of the forms: its cost does not grow with the number of secrets, even when all of them
 * share their first characters (Intuit's access tokens all begin with the same JWE header).
 */
export class SecretRegistry {
  /** Registered value -> how many registrations hold it. */
  private readonly counts = new Map<string, number>();
  /** Each form of the held values (formsOf) -> how many held values have that form. */
  private readonly formCounts = new Map<string, number>();
  /** First MIN_SECRET characters -> the lengths of the forms starting with them: longest first, and how many forms have each. */
  private readonly index = new Map<string, { lengths: number[]; countByLength: Map<number, number> }>();
  private readonly generations = new Map<string, string[][]>();

  /**
   * An OAuth client's id and secret: the secret, and the Basic credential built from the pair
   * (the id alone is no secret, but `base64(id:secret)` is the secret in another form).
   */
  addCredentialPair(clientId: string, clientSecret: string): void {
    this.add(clientSecret, ...basicCredentials(clientId, clientSecret));
  }

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

  /** How many distinct secret values are held (each is scrubbed in all its forms). */
  get size(): number {
    return this.counts.size;
  }

  scrub(text: string): string {
    if (this.formCounts.size === 0) return text;
    let out = '';
    let copied = 0;
    for (let i = 0; i <= text.length - MIN_SECRET; ) {
      const entry = this.index.get(text.slice(i, i + MIN_SECRET));
      const hit = entry?.lengths.find((length) => i + length <= text.length && this.formCounts.has(text.slice(i, i + length)));
      if (hit === undefined) {
        i++;
        continue;
      }
      out += text.slice(copied, i) + REDACTED;
      i += hit;
      copied = i;
    }
    return copied === 0 ? text : out + text.slice(copied);
  }

  private hold(value: string | undefined): void {
    if (value === undefined || value.length < MIN_SECRET) return;
    const n = this.counts.get(value) ?? 0;
    this.counts.set(value, n + 1);
    if (n > 0) return;
    for (const form of formsOf(value)) {
      const held = this.formCounts.get(form) ?? 0;
      this.formCounts.set(form, held + 1);
      if (held > 0) continue;
      const prefix = form.slice(0, MIN_SECRET);
      const entry = this.index.get(prefix) ?? { lengths: [], countByLength: new Map<number, number>() };
      this.index.set(prefix, entry);
      const sameLength = entry.countByLength.get(form.length) ?? 0;
      entry.countByLength.set(form.length, sameLength + 1);
      if (sameLength === 0) {
        const at = entry.lengths.findIndex((length) => length < form.length);
        entry.lengths.splice(at < 0 ? entry.lengths.length : at, 0, form.length);
      }
    }
  }

  private release(value: string): void {
    const n = (this.counts.get(value) ?? 0) - 1;
    if (n > 0) {
      this.counts.set(value, n);
      return;
    }
    this.counts.delete(value);
    for (const form of formsOf(value)) {
      const held = (this.formCounts.get(form) ?? 0) - 1;
      if (held > 0) {
        this.formCounts.set(form, held);
        continue;
      }
      this.formCounts.delete(form);
      const prefix = form.slice(0, MIN_SECRET);
      const entry = this.index.get(prefix);
      if (entry === undefined) continue;
      const sameLength = (entry.countByLength.get(form.length) ?? 0) - 1;
      if (sameLength > 0) {
        entry.countByLength.set(form.length, sameLength);
        continue;
      }
      entry.countByLength.delete(form.length);
      entry.lengths = entry.lengths.filter((length) => length !== form.length);
      if (entry.lengths.length === 0) this.index.delete(prefix);
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
      serializers: { err: (err: unknown) => serializeError(err) },
      hooks: { streamWrite: (line) => secrets.scrub(line) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
}

/**
 * Keeps a repeated warning from flooding the log during an outage: the first occurrence of a key
 * is written, repeats within `intervalMs` are counted instead, and the next one written carries
 * `suppressed` (how many were not). `clear(key)` when the condition ends, so a new occurrence is
 * written at once.
 */
export class RepeatLimiter {
  private readonly seen = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly intervalMs = 60_000,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** The fields to add when the line is to be written; undefined when it is suppressed. */
  admit(key: string): { suppressed: number } | undefined {
    const at = this.now();
    const last = this.seen.get(key);
    if (last && at - last.at < this.intervalMs) {
      last.suppressed++;
      return undefined;
    }
    this.seen.set(key, { at, suppressed: 0 });
    return { suppressed: last?.suppressed ?? 0 };
  }

  /** The condition behind `key` ended; returns how many repeats were suppressed since the last line. */
  clear(key: string): number {
    const last = this.seen.get(key);
    this.seen.delete(key);
    return last?.suppressed ?? 0;
  }
}
