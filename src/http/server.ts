/**
 * The health server (node:http): `/health/live`, `/health/ready`, `/health`
 * (application/health+json, draft-inadarei-api-health-check) and `/metrics`. Everything is
 * answered from memory (HealthState, the metrics registry). With HEALTH_TOKEN set, `/health`
 * shows only its status to callers without `Authorization: Bearer <token>`, and `/metrics`
 * answers 401. No secret and no raw Intuit body is ever in a response: realm entries carry our
 * own scrubbed error messages.
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LogEvent, type Logger } from '../log.js';
import type { HealthState } from '../daemon/state.js';
import type { Metrics } from './metrics.js';
import { parseSince, type StatusReport } from '../db/status.js';

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

export interface HealthServerOptions {
  readonly healthToken: string | undefined;
  readonly refreshTokenWarnDays: number;
  readonly version: string;
  /** Reads the `qbhealth status` report for `GET /status` (the one route that reads PostgreSQL). */
  readonly status?: (query: { since: Date; now: Date; realmId: string | undefined }) => Promise<StatusReport>;
}

/** `/status` answers are reused this long, so a dashboard polling it costs the database little. */
export const STATUS_CACHE_MS = 5000;

const worst = (statuses: Iterable<Status>): Status => {
  let result: Status = 'pass';
  for (const s of statuses) {
    if (s === 'fail') return 'fail';
    if (s === 'warn') result = 'warn';
  }
  return result;
};

/** The application/health+json document. */
export function healthDocument(state: HealthState, opts: Pick<HealthServerOptions, 'refreshTokenWarnDays' | 'version'>, now = Date.now()): { status: Status; body: Record<string, unknown> } {
  const connection: Check[] = [];
  const refresh: Check[] = [];
  for (const realm of state.realms.values()) {
    const r = realm.last;
    connection.push({
      componentId: r.realmId,
      componentType: 'quickbooks-company',
      observedValue: r.errorCode,
      status: r.status,
      time: r.checkedAt.toISOString(),
      ...(r.error ? { output: r.error } : {}),
    });
    if (r.refreshTokenExpiresAt) {
      const days = (r.refreshTokenExpiresAt.getTime() - now) / DAY_MS;
      refresh.push({
        componentId: r.realmId,
        observedValue: Math.floor(days),
        observedUnit: 'd',
        status: days <= 0 ? 'fail' : days < opts.refreshTokenWarnDays ? 'warn' : 'pass',
        time: r.refreshTokenExpiresAt.toISOString(),
      });
    }
  }
  const live = state.live(now);
  const checks: Record<string, Check[]> = {
    'quickbooks:connection': connection,
    'quickbooks:refreshTokenExpiry': refresh,
    'postgres:connection': [
      {
        componentType: 'datastore',
        status: state.db.reachable ? 'pass' : 'fail',
        ...(state.db.checkedAt ? { time: state.db.checkedAt.toISOString() } : {}),
        ...(state.db.error ? { output: state.db.error } : {}),
      },
    ],
    'postgres:schema': [{ componentType: 'datastore', status: state.schema.verified ? 'pass' : 'fail', ...(state.schema.error ? { output: state.schema.error } : {}) }],
    'spool:pending': [{ observedValue: state.spoolPending, observedUnit: 'results', status: state.spoolPending > 0 ? 'warn' : 'pass' }],
    'scheduler:lastTick': [
      {
        status: live.ok ? 'pass' : 'fail',
        ...(state.lastTickAt ? { time: state.lastTickAt.toISOString() } : {}),
        ...(live.reason ? { output: live.reason } : {}),
      },
    ],
    'alerts:open': [{ observedValue: state.openAlerts().length, status: state.openAlerts().length > 0 ? 'warn' : 'pass' }],
  };
  const status = state.shuttingDown ? 'fail' : worst(Object.values(checks).flatMap((list) => list.map((c) => c.status)));
  return {
    status,
    body: {
      status,
      version: opts.version,
      serviceId: 'qbo-health-monitor',
      description: 'QuickBooks Online connection health',
      ...(state.shuttingDown ? { output: 'shutting down' } : {}),
      checks,
    },
  };
}

function send(res: ServerResponse, status: number, contentType: string, body: string | Buffer, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}

export class HealthServer {
  private readonly server: Server;
  private readonly token: Buffer | undefined;
  private readonly statusCache = new Map<string, { at: number; body: Promise<string> }>();

  constructor(
    private readonly state: HealthState,
    private readonly metrics: Metrics,
    private readonly opts: HealthServerOptions,
    private readonly log: Logger,
  ) {
    this.token = opts.healthToken === undefined ? undefined : Buffer.from(`Bearer ${opts.healthToken}`);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ event: LogEvent.httpError, path: req.url, err }, 'health endpoint failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
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
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.server.listening) return resolve();
      this.server.close((err) => (err ? reject(err) : resolve()));
      this.server.closeIdleConnections();
    });
  }

  private authorized(req: IncomingMessage): boolean {
    if (!this.token) return true;
    const given = Buffer.from(req.headers.authorization ?? '');
    return given.length === this.token.length && timingSafeEqual(given, this.token);
  }

  /**
   * `GET /status?since=24h&realmId=R`: the JSON of `qbhealth status --json`. Concurrent and
   * repeated requests within STATUS_CACHE_MS share one database read.
   */
  private async serveStatus(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const load = this.opts.status;
    if (!load) return send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    const url = new URL(req.url ?? '/', 'http://localhost');
    const sinceText = url.searchParams.get('since') ?? '24h';
    const realmId = url.searchParams.get('realmId') ?? undefined;
    const now = new Date();
    let since: Date;
    try {
      since = parseSince(sinceText, now);
      if (realmId !== undefined && !/^\d{1,32}$/.test(realmId)) throw new RangeError('realmId must be the numeric company ID');
    } catch (err) {
      return send(res, 400, 'application/json', JSON.stringify({ status: 'fail', output: (err as Error).message }));
    }
    const key = `${sinceText}\u0000${realmId ?? ''}`;
    let entry = this.statusCache.get(key);
    if (!entry || now.getTime() - entry.at > STATUS_CACHE_MS) {
      if (this.statusCache.size > 100) this.statusCache.clear();
      entry = { at: now.getTime(), body: load({ since, now, realmId }).then((report) => JSON.stringify(report)) };
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

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    }
    switch (path) {
      case '/health/live': {
        const live = this.state.live();
        return send(res, live.ok ? 200 : 503, 'application/json', JSON.stringify(live.ok ? { status: 'pass' } : { status: 'fail', output: live.reason }));
      }
      case '/health/ready': {
        const ready = this.state.ready();
        return send(res, ready.ok ? 200 : 503, 'application/json', JSON.stringify(ready.ok ? { status: 'pass' } : { status: 'fail', output: ready.reason }));
      }
      case '/health': {
        const { status, body } = healthDocument(this.state, this.opts);
        const code = status === 'fail' ? 503 : 200;
        const shown = this.authorized(req) ? body : { status };
        return send(res, code, 'application/health+json', JSON.stringify(shown));
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
