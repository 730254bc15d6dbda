/**
 * The health server (node:http): `/health/live`, `/health/ready`, `/health`
 * (application/health+json, draft-inadarei-api-health-check) and `/metrics`. Everything is
 * answered from memory (HealthState, the metrics registry). With HEALTH_TOKEN set, `/health`
 * shows only its status to callers without `Authorization: Bearer <token>`, and `/metrics`
 * answers 401. No secret and no raw Intuit body is ever in a response: realm entries carry our
 * own scrubbed error messages. `/health/ready` names the failing check but never PostgreSQL's own
 * words (they name hosts, users and databases) unless the caller holds HEALTH_TOKEN. `GET /` and
 * `/dashboard/*`, the dashboard, are answered by http/dashboard-routes.ts.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIPv4, type AddressInfo } from 'node:net';
import { LogEvent, type Logger } from '../log.js';
import type { HealthState } from '../health/state.js';
import { instanceOfSubject, isSystemSubject, SystemSubject } from '../alert.js';
import type { ProbeResult } from '../probe-result.js';
import { ErrorCode } from '../quickbooks/outcome.js';
import type { Metrics } from './metrics.js';
import { parseSince, type StatusSource } from '../db/status.js';
import { DashboardRoutes } from './dashboard-routes.js';

type Status = 'pass' | 'warn' | 'fail';

interface Check {
  componentId?: string;
  componentType?: string;
  observedValue?: unknown;
  observedUnit?: string;
  status: Status;
  time?: string;
  output?: string;
}

const DAY_MS = 86_400_000;

/** The media type of draft-inadarei-api-health-check, for `/health`, `/health/ready` and `/health/live` alike. */
const HEALTH_JSON = 'application/health+json';

export interface HealthServerOptions {
  readonly healthToken: string | undefined;
  readonly refreshTokenWarnDays: number;
  readonly version: string;
  /**
   * Reads the `qbhealth status` report for `GET /status` (the one route that reads PostgreSQL),
   * on connections of its own (StatusReader). The server closes it when it closes.
   */
  readonly status?: StatusSource;
  /** The clock `/status` windows are measured on (tests fix it). */
  readonly now?: () => Date;
}

/** `/health` is rebuilt at most this often (its checks carry their own `time`). */
export const HEALTH_CACHE_MS = 1000;

/**
 * `/status` answers are reused this long, so a dashboard polling it costs the database little;
 * it is also the granularity of a window's start in the cache key.
 */
export const STATUS_CACHE_MS = 5000;

/** Different `/status` windows read at once; more are turned away (503, Retry-After) without queueing. */
export const STATUS_MAX_LOADS = 8;


const isLoopback = (address: string): boolean => {
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return v4 === '::1' || (isIPv4(v4) && v4.startsWith('127.'));
};

/** Which readiness check fails, in our words only: PostgreSQL's error text stays behind HEALTH_TOKEN. */
function readinessSummary(state: HealthState): string {
  if (state.shuttingDown) return 'shutting down';
  if (!state.db.reachable) return 'PostgreSQL unreachable';
  if (!state.schema.verified) return 'schema not verified';
  return 'not ready';
}

const worst = (statuses: Iterable<Status>): Status => {
  let result: Status = 'pass';
  for (const s of statuses) {
    if (s === 'fail') return 'fail';
    if (s === 'warn') result = 'warn';
  }
  return result;
};

interface RealmFragment {
  readonly probeId: string;
  /** Whole days of refresh-token lifetime left when the fragment was made (the refresh entry shows it). */
  readonly daysLeft: number | undefined;
  readonly connectionStatus: Status;
  readonly connection: string;
  readonly refreshStatus: Status | undefined;
  readonly refresh: string | undefined;
}

/**
 * draft-inadarei-api-health-check `componentType`: QuickBooks is an external system, PostgreSQL a
 * datastore, the monitor's own parts components.
 */
const ComponentType = { system: 'system', datastore: 'datastore', component: 'component' } as const;

const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

/** Why a realm's connection entry is not `pass`: the probe's own (scrubbed) error, or the token's nearing expiry. */
function connectionOutput(r: ProbeResult, now: number): string | undefined {
  if (r.status === 'pass') return undefined;
  if (r.error) return r.error;
  if (r.refreshTokenExpiresAt) {
    const days = Math.floor((r.refreshTokenExpiresAt.getTime() - now) / DAY_MS);
    return `the refresh token expires in ${plural(Math.max(0, days), 'day')} (${r.refreshTokenExpiresAt.toISOString()}): reconnect with \`qbhealth connect --realm-id ${r.realmId}\` before then`;
  }
  return `the probe ended ${r.status} (${r.errorCode})`;
}

/**
 * The realm's `quickbooks:refreshTokenExpiry` entry. `time` is when the probe read the expiry (the
 * days are counted from now). A refresh token Intuit refused (invalid_grant: revoked, or rotated
 * and lost; the realm is reconnect_required) has no lifetime left whatever its stored expiry says:
 * the entry fails with no value and says so, rather than counting down days of a dead token.
 */
function refreshCheck(r: ProbeResult, daysLeft: number | undefined, warnDays: number): Check | undefined {
  if (r.errorCode === ErrorCode.authInvalidGrant) {
    return {
      componentId: r.realmId,
      componentType: ComponentType.system,
      status: 'fail',
      time: r.checkedAt.toISOString(),
      output: `revoked: reconnect with \`qbhealth connect --realm-id ${r.realmId}\` (Intuit refused the refresh token; it has no lifetime left)`,
    };
  }
  if (!r.refreshTokenExpiresAt || daysLeft === undefined) return undefined;
  const expires = r.refreshTokenExpiresAt.toISOString();
  // Whole days, rounded down: 0 is "less than a day left", and below 0 it has expired.
  const status: Status = daysLeft < 0 ? 'fail' : daysLeft < warnDays ? 'warn' : 'pass';
  return {
    componentId: r.realmId,
    componentType: ComponentType.system,
    observedValue: daysLeft,
    observedUnit: 'd',
    status,
    time: r.checkedAt.toISOString(),
    ...(status === 'fail'
      ? { output: `the refresh token expired (${expires}): reconnect with \`qbhealth connect --realm-id ${r.realmId}\`` }
      : status === 'warn'
        ? { output: `the refresh token expires in ${plural(daysLeft, 'day')} (${expires}), within REFRESH_TOKEN_WARN_DAYS (${warnDays}): reconnect with \`qbhealth connect --realm-id ${r.realmId}\` before then` }
        : {}),
  };
}

/** The document's top-level `output` for a non-pass: which checks are not passing, and how many entries each. */
function summarize(notPassing: ReadonlyMap<string, { fail: number; warn: number }>): string {
  return [...notPassing]
    .map(([key, n]) => `${key} ${[n.fail > 0 ? `${n.fail} fail` : '', n.warn > 0 ? `${n.warn} warn` : ''].filter(Boolean).join(', ')}`)
    .join('; ');
}

/**
 * The application/health+json document, as draft-inadarei-api-health-check clients read it:
 * every check has a `componentType` (`system`, `datastore` or `component`), an `observedUnit`
 * beside every `observedValue`, `time` when the value was observed (never in the future), and an
 * `output` on every entry that is not `pass`. Each realm's two entries are serialized once per
 * probe result (and again when its whole days left change) and kept, so with a thousand realms a
 * rebuild is a string join rather than thousands of objects through JSON.stringify, and it never
 * blocks the event loop for long while probes run.
 */
export class HealthDocument {
  private readonly fragments = new Map<string, RealmFragment>();

  constructor(private readonly opts: Pick<HealthServerOptions, 'refreshTokenWarnDays' | 'version'>) {}

  private fragment(r: ProbeResult, now: number): RealmFragment {
    const daysLeft = r.refreshTokenExpiresAt ? Math.floor((r.refreshTokenExpiresAt.getTime() - now) / DAY_MS) : undefined;
    const known = this.fragments.get(r.realmId);
    if (known && known.probeId === r.probeId && known.daysLeft === daysLeft) return known;
    const output = connectionOutput(r, now);
    const connection: Check = {
      componentId: r.realmId,
      componentType: ComponentType.system,
      // The error_code vocabulary (README), as in the history's `error_code` column.
      observedValue: r.errorCode,
      observedUnit: 'error_code',
      status: r.status,
      time: r.checkedAt.toISOString(),
      ...(output ? { output } : {}),
    };
    const refresh = refreshCheck(r, daysLeft, this.opts.refreshTokenWarnDays);
    const made = {
      probeId: r.probeId,
      daysLeft,
      connectionStatus: r.status,
      connection: JSON.stringify(connection),
      refreshStatus: refresh?.status,
      refresh: refresh ? JSON.stringify(refresh) : undefined,
    };
    this.fragments.set(r.realmId, made);
    return made;
  }

  render(state: HealthState, now = Date.now()): { status: Status; json: string } {
    for (const id of this.fragments.keys()) if (!state.realms.has(id)) this.fragments.delete(id);
    const statuses: Status[] = [];
    const notPassing = new Map<string, { fail: number; warn: number }>();
    const note = (key: string, status: Status): void => {
      statuses.push(status);
      if (status === 'pass') return;
      let counts = notPassing.get(key);
      if (!counts) notPassing.set(key, (counts = { fail: 0, warn: 0 }));
      counts[status]++;
    };
    const connection: string[] = [];
    const refresh: string[] = [];
    for (const realm of state.realms.values()) {
      const f = this.fragment(realm.last, now);
      note('quickbooks:connection', f.connectionStatus);
      connection.push(f.connection);
      if (f.refresh !== undefined && f.refreshStatus !== undefined) {
        note('quickbooks:refreshTokenExpiry', f.refreshStatus);
        refresh.push(f.refresh);
      }
    }
    const at = new Date(now).toISOString();
    const live = state.live(now);
    const alerts = state.openAlerts();
    const shownAlerts = alerts.slice(0, 10).map((a) => `${a.kind}${alertSubject(a.realmId)} ${a.severity}`);
    const dbStatus: Status = state.db.reachable ? 'pass' : 'fail';
    const system: Record<string, Check[]> = {
      'postgres:connection': [
        {
          componentType: ComponentType.datastore,
          status: dbStatus,
          ...(state.db.checkedAt ? { time: state.db.checkedAt.toISOString() } : {}),
          ...(dbStatus === 'fail' ? { output: state.db.error ?? (state.db.checkedAt ? 'PostgreSQL unreachable' : 'PostgreSQL not reached yet') } : {}),
        },
      ],
      'postgres:schema': [
        {
          componentType: ComponentType.datastore,
          status: state.schema.verified ? 'pass' : 'fail',
          ...(state.schema.verified ? {} : { output: state.schema.error ?? 'the schema is not verified yet' }),
        },
      ],
      'spool:pending': [
        {
          componentType: ComponentType.component,
          observedValue: state.spoolPending,
          observedUnit: 'results',
          status: state.spoolPending > 0 ? 'warn' : 'pass',
          time: at,
          ...(state.spoolPending > 0 ? { output: `${plural(state.spoolPending, 'probe result')} wait in the spool until PostgreSQL takes them` } : {}),
        },
      ],
      'scheduler:lastTick': [
        {
          componentType: ComponentType.component,
          status: live.ok ? 'pass' : 'fail',
          ...(state.lastTickAt ? { time: state.lastTickAt.toISOString() } : {}),
          ...(live.ok ? {} : { output: live.reason ?? 'not live' }),
        },
      ],
      'alerts:open': [
        {
          componentType: ComponentType.component,
          observedValue: alerts.length,
          observedUnit: 'alerts',
          status: alerts.length > 0 ? 'warn' : 'pass',
          time: at,
          ...(alerts.length > 0 ? { output: `${plural(alerts.length, 'open alert')}: ${shownAlerts.join(', ')}${alerts.length > shownAlerts.length ? ', …' : ''}` } : {}),
        },
      ],
      'monitor:staleness': [staleness(state, now)],
      ...(state.fleet ? { 'fleet:members': [fleetCheck(state.fleet)] } : {}),
      ...(state.schemaWatch ? { 'postgres:schemaWatch': [schemaWatchCheck(state.schemaWatch)] } : {}),
    };
    for (const [key, list] of Object.entries(system)) for (const c of list) note(key, c.status);
    const status = state.shuttingDown ? 'fail' : worst(statuses);
    const output = state.shuttingDown ? 'shutting down' : status === 'pass' ? undefined : summarize(notPassing);
    const head = JSON.stringify({
      status,
      version: this.opts.version,
      serviceId: 'qbo-health-monitor',
      description: 'QuickBooks Online connection health',
      ...(output ? { output } : {}),
    });
    const systemJson = JSON.stringify(system).slice(1, -1);
    const json = `${head.slice(0, -1)},"checks":{"quickbooks:connection":[${connection.join(',')}],"quickbooks:refreshTokenExpiry":[${refresh.join(',')}],${systemJson}}}`;
    return { status, json };
  }
}

/**
 * The schema watch (SCHEMA_WATCH_*): `fail` while objects the application relies on are missing or
 * changed (its queries on them fail now: the incident), naming them; `warn` when the last check
 * could not run (no verdict: PostgreSQL unavailable, an unreadable manifest), unless drift found
 * before is still unresolved. `time` is when the check ended.
 */
function schemaWatchCheck(watch: NonNullable<HealthState['schemaWatch']>): Check {
  const drifted = watch.drift.length > 0;
  const status: Status = drifted ? 'fail' : watch.error !== undefined ? 'warn' : 'pass';
  const shown = watch.drift.slice(0, 20).join(', ') + (watch.drift.length > 20 ? ', …' : '');
  const notes = [drifted ? `${plural(watch.drift.length, 'difference')} from what the application expects: ${shown}` : '', watch.error ? `the last check could not run: ${watch.error}` : ''];
  return {
    componentType: ComponentType.datastore,
    observedValue: watch.drift.length,
    observedUnit: 'differences',
    status,
    time: watch.checkedAt.toISOString(),
    ...(status === 'pass' ? {} : { output: notes.filter(Boolean).join('; ') }),
  };
}

/** How an alert's subject is named in a one-line list. */
function alertSubject(subject: string): string {
  if (!isSystemSubject(subject)) return ` (realm ${subject})`;
  if (subject === SystemSubject.schemaWatch) return ' (schema watch)';
  const instance = instanceOfSubject(subject);
  return instance === undefined ? '' : ` (member ${instance})`;
}

/**
 * The fleet (several daemons sharing the database): `warn` while a member is down (its realms are
 * covered by the others; `monitor:staleness` fails if they are not) or the live members run
 * different versions (a rolling upgrade that did not finish). Never `fail`: this member is fine.
 */
function fleetCheck(fleet: NonNullable<HealthState['fleet']>): Check {
  const live = fleet.members.filter((m) => m.live);
  const down = fleet.members.filter((m) => !m.live);
  const notes = [
    down.length > 0 ? `${plural(down.length, 'member')} not heartbeating: ${down.map((m) => `${m.instanceId} (${Math.round(m.heartbeatAgeMs / 1000)} s)`).join(', ')}` : '',
    fleet.versions.length > 1 ? `live members run different versions: ${fleet.versions.join(', ')}` : '',
  ].filter(Boolean);
  return {
    componentType: ComponentType.component,
    componentId: fleet.self,
    observedValue: live.length,
    observedUnit: 'live members',
    status: notes.length > 0 ? 'warn' : 'pass',
    time: fleet.readAt.toISOString(),
    ...(notes.length > 0 ? { output: notes.join('; ') } : {}),
  };
}

/** Realms without a recent result (HealthState.stalledRealms): the scheduler ticks but skips them. */
function staleness(state: HealthState, now: number): Check {
  const stalled = state.stalledRealms(now);
  const shown = stalled.slice(0, 10).map((s) => `${s.realmId} (${Math.round(s.sinceMs / 1000)} s)`);
  return {
    componentType: ComponentType.component,
    observedValue: stalled.length,
    observedUnit: 'realms',
    status: stalled.length > 0 ? 'fail' : 'pass',
    time: new Date(now).toISOString(),
    ...(stalled.length > 0
      ? { output: `no recent probe result for ${stalled.length} realm(s): ${shown.join(', ')}${stalled.length > shown.length ? ', …' : ''}` }
      : {}),
  };
}

function send(res: ServerResponse, status: number, contentType: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

/** `{"status":"pass"}` of /health/live and /health/ready, with its headers, made once: it is the common answer. */
const PASS_BODY = Buffer.from(JSON.stringify({ status: 'pass' }));
const PASS_HEADERS = { 'content-type': HEALTH_JSON, 'cache-control': 'no-store', 'content-length': PASS_BODY.length } as const;

function sendPass(res: ServerResponse): void {
  res.writeHead(200, PASS_HEADERS);
  res.end(PASS_BODY);
}

export class HealthServer {
  private readonly server: Server;
  /** SHA-256 of the `Authorization` header that HEALTH_TOKEN asks for. */
  private readonly token: Buffer | undefined;
  private readonly document: HealthDocument;
  /** `GET /` and `/dashboard/*` (http/dashboard-routes.ts). */
  private readonly dashboard: DashboardRoutes;
  private healthCache: { at: number; status: Status; full: Buffer; brief: Buffer } | undefined;
  private readonly statusCache = new Map<string, { at: number; body: Promise<string> }>();
  private statusLoads = 0;
  private closing: Promise<void> | undefined;

  /**
   * stopAccepting() was called: other workers answer new connections, and the liveness and
   * readiness polls still arriving on this one's open connections are answered for the service
   * (the other workers keep it up), each closing its connection so the next poll goes to them.
   */
  private handingOver = false;

  constructor(
    private readonly state: HealthState,
    private readonly metrics: Metrics,
    private readonly opts: HealthServerOptions,
    private readonly log: Logger,
  ) {
    this.document = new HealthDocument(opts);
    this.dashboard = new DashboardRoutes(state, opts, log);
    this.token = opts.healthToken === undefined ? undefined : createHash('sha256').update(`Bearer ${opts.healthToken}`).digest();
    this.server = createServer((req, res) => {
      // While stopping, every answer ends its connection: the client's next request opens a new
      // one, which (under PM2 cluster mode) goes to a worker that is not stopping.
      if (this.state.shuttingDown) res.shouldKeepAlive = false;
      // Liveness and readiness are what load balancers and PM2 poll, often and from many places:
      // they are answered synchronously from the request line as it came, without a URL split or
      // a promise per request. Anything else (these paths with a query string too) is routed.
      try {
        if (this.answerProbe(req, res)) return;
      } catch (err) {
        return this.failed(req, res, err);
      }
      this.handle(req, res).catch((err: unknown) => this.failed(req, res, err));
    });
    // A health check must not hold sockets open for long; the load balancer reconnects.
    this.server.keepAliveTimeout = 5000;
    this.server.requestTimeout = 10_000;
  }

  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.log.error({ event: LogEvent.httpError, err }, 'health server error'));
        const bound = this.server.address() as AddressInfo;
        this.warnIfExposed(bound);
        resolve(bound);
      });
    });
  }

  /** Without HEALTH_TOKEN on a reachable address, the details are public: say so once, at start. */
  private warnIfExposed(bound: AddressInfo): void {
    if (this.token || isLoopback(bound.address)) return;
    this.log.warn(
      { event: LogEvent.httpUnauthenticated, host: bound.address, port: bound.port },
      `the health server listens on ${bound.address}:${bound.port} without HEALTH_TOKEN: anyone who can reach this port can read ` +
        'every realm id, company name and error in /health, /status and /metrics. Set HEALTH_TOKEN, or HOST=127.0.0.1 behind a proxy that restricts access',
    );
  }

  /**
   * For a member sharing its port with others (PM2 cluster mode): stops taking new connections at
   * once, so that every new poll goes to a member that is not stopping, while requests in flight
   * finish. (A lone daemon keeps answering 503 until it exits: refusing connections would look
   * like a crash.)
   */
  stopAccepting(): void {
    this.handingOver = true;
    void this.close().catch((err: unknown) => this.log.error({ event: LogEvent.httpError, err }, 'closing the health server failed'));
  }

  /** Stops accepting requests, lets those in flight finish, then closes the status reader. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await new Promise<void>((resolve, reject) => {
        if (!this.server.listening) return resolve();
        this.server.close((err) => (err ? reject(err) : resolve()));
        if (!this.handingOver) {
          this.server.closeIdleConnections();
          return;
        }
        // Handing over to other workers: an idle keep-alive connection is let expire (the client
        // closes it first) rather than cut under a request the client may be sending on it.
        setTimeout(() => this.server.closeAllConnections(), this.server.keepAliveTimeout + 1000).unref();
      });
      await this.opts.status?.close();
    })();
    return this.closing;
  }

  /**
   * The /health document, serialized at most once per HEALTH_CACHE_MS: with many realms it is
   * large, and a load balancer or dashboard polling it must not cost a rebuild per request.
   * Shutdown is never served from the cache.
   */
  private healthBytes(): { status: Status; full: Buffer; brief: Buffer } {
    const now = Date.now();
    const cached = this.healthCache;
    if (cached && !this.state.shuttingDown && now - cached.at < HEALTH_CACHE_MS) return cached;
    const { status, json } = this.document.render(this.state, now);
    this.healthCache = { at: now, status, full: Buffer.from(json), brief: Buffer.from(JSON.stringify({ status })) };
    return this.healthCache;
  }

  /** `Authorization: Bearer HEALTH_TOKEN`, compared as SHA-256 digests: constant time whatever the length given. */
  private authorized(req: IncomingMessage): boolean {
    if (!this.token) return true;
    return timingSafeEqual(createHash('sha256').update(req.headers.authorization ?? '').digest(), this.token);
  }

  /**
   * `GET /status?since=24h&realmId=R`: the JSON of `qbhealth status --json`. The cache key is the
   * window, not its spelling: the start rounded down to STATUS_CACHE_MS, and the realm. So `24h`,
   * `1440m` and an ISO instant a few milliseconds apart share one database read, and concurrent
   * and repeated requests within STATUS_CACHE_MS share it too. Beyond STATUS_MAX_LOADS different
   * windows in flight, requests are turned away at once rather than queued for connections.
   */
  private async serveStatus(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const source = this.opts.status;
    if (!source) return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    const url = new URL(req.url ?? '/', 'http://localhost');
    const sinceText = url.searchParams.get('since') ?? '24h';
    const realmId = url.searchParams.get('realmId') ?? undefined;
    const now = this.opts.now?.() ?? new Date();
    let windowStart: number;
    try {
      windowStart = Math.floor(parseSince(sinceText, now).getTime() / STATUS_CACHE_MS) * STATUS_CACHE_MS;
      if (realmId !== undefined && !/^\d{1,32}$/.test(realmId)) throw new RangeError('realmId must be the numeric company ID');
    } catch (err) {
      return send(res, 400, 'application/json', JSON.stringify({ status: 'fail', output: (err as Error).message }));
    }
    const key = `${windowStart}\u0000${realmId ?? ''}`;
    let entry = this.statusCache.get(key);
    if (!entry || now.getTime() - entry.at > STATUS_CACHE_MS) {
      if (this.statusLoads >= STATUS_MAX_LOADS) {
        return send(res, 503, 'application/json', JSON.stringify({ status: 'fail', output: 'too many different /status windows are being read at once; retry in a few seconds' }), {
          'retry-after': String(STATUS_CACHE_MS / 1000),
        });
      }
      if (this.statusCache.size > 100) this.statusCache.clear();
      this.statusLoads++;
      const body = source.load({ since: new Date(windowStart), now, realmId }).then((report) => JSON.stringify(report));
      // Counted down however the read ends; its failure is reported below, to each waiting request.
      body.then(
        () => this.statusLoads--,
        () => this.statusLoads--,
      );
      entry = { at: now.getTime(), body };
      this.statusCache.set(key, entry);
    }
    const shared = entry;
    let body: string;
    try {
      body = await shared.body;
    } catch (err) {
      // A failed read is not reused: the next request tries the database again.
      if (this.statusCache.get(key) === shared) this.statusCache.delete(key);
      this.log.warn({ event: LogEvent.dbReadFailed, what: 'status report', err }, 'GET /status could not read the history');
      return send(res, 503, 'application/json', JSON.stringify({ status: 'fail', output: 'the history cannot be read from PostgreSQL right now; /health shows why' }));
    }
    return send(res, 200, 'application/json', body);
  }

  /** A request that failed in our code: logged with its path, answered 500 when nothing was sent yet. */
  private failed(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    this.log.error({ event: LogEvent.httpError, path: req.url, err }, 'health endpoint failed');
    if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
    else res.destroy();
  }

  /** Answers `GET`/`HEAD` of exactly `/health/live` or `/health/ready`; false for any other request. */
  private answerProbe(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url;
    if (url !== '/health/live' && url !== '/health/ready') return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    if (url === '/health/live') this.serveLive(res);
    else this.serveReady(req, res);
    return true;
  }

  private serveLive(res: ServerResponse): void {
    const live = this.state.live(Date.now(), { handingOver: this.handingOver });
    if (live.ok) return sendPass(res);
    send(res, 503, HEALTH_JSON, JSON.stringify({ status: 'fail', output: live.reason }));
  }

  private serveReady(req: IncomingMessage, res: ServerResponse): void {
    const ready = this.state.ready({ handingOver: this.handingOver });
    if (ready.ok) return sendPass(res);
    // Only a caller holding HEALTH_TOKEN sees the reason in full (PostgreSQL's error names hosts, users, databases).
    const output = this.token && this.authorized(req) ? ready.reason : readinessSummary(this.state);
    send(res, 503, HEALTH_JSON, JSON.stringify({ status: 'fail', output }));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    // The dashboard answers its own methods (its sign-in form posts).
    if (this.dashboard.owns(path)) return this.dashboard.serve(req, res, path);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    }
    switch (path) {
      case '/health/live':
        return this.serveLive(res);
      case '/health/ready':
        return this.serveReady(req, res);
      case '/health': {
        const doc = this.healthBytes();
        return send(res, doc.status === 'fail' ? 503 : 200, HEALTH_JSON, this.authorized(req) ? doc.full : doc.brief);
      }
      case '/status':
        if (!this.authorized(req)) return send(res, 401, 'text/plain; charset=utf-8', 'HEALTH_TOKEN required\n', { 'www-authenticate': 'Bearer' });
        return this.serveStatus(req, res);
      case '/metrics': {
        if (!this.authorized(req)) return send(res, 401, 'text/plain; charset=utf-8', 'HEALTH_TOKEN required\n', { 'www-authenticate': 'Bearer' });
        return send(res, 200, this.metrics.registry.contentType, await this.metrics.registry.metrics());
      }
      default:
        return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
  }
}
