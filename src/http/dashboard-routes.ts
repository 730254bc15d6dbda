/**
 * The dashboard on the health server: `GET /` the page (web/dashboard.html), its one script and
 * one stylesheet (`/dashboard/app.js`, `/dashboard/app.css`, served from web/: no CDN, so it works
 * on an intranet with no internet), `GET /dashboard/data` the JSON the script polls, and the
 * optional login form (`POST /dashboard/login`, `/dashboard/logout`). `/dashboard` redirects to `/`.
 *
 * With HEALTH_TOKEN set the page, its data and the login's outcome need the token
 * (http/dashboard-auth.ts); the script and stylesheet hold no data and are served to anyone, so
 * the login form is styled. Every response carries a strict Content-Security-Policy: the page
 * has no inline script or style, and the script writes every value with textContent.
 *
 * The stored part (history, incidents, silences, company names) is read through the status
 * reader's small pool (StatusSource.read) at most once per DASHBOARD_READ_MS however many pages
 * poll, and a read that fails leaves the last good one on the page with the failure named: the
 * page is most needed when PostgreSQL is in trouble, and its live part never waits for it.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import type { HealthState } from '../health/state.js';
import type { StatusSource } from '../db/status.js';
import { loadStoredDashboard, type StoredDashboard } from '../db/dashboard-reads.js';
import { buildDashboardData, type StoredPart } from './dashboard-data.js';
import { BASIC_REALM, DashboardGate, SESSION_COOKIE, SESSION_MS } from './dashboard-auth.js';

/** How long one stored read serves every page polling (each polls every few seconds). */
export const DASHBOARD_READ_MS = 3000;
/** A read failure that goes on is logged again this often, not at every poll. */
const READ_FAILURE_LOG_MS = 60_000;
const LOGIN_BODY_MAX = 4096;

export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
} as const;

const WWW_AUTHENTICATE = `Basic realm="${BASIC_REALM}"`;

const HTML = 'text/html; charset=utf-8';
const JSON_TYPE = 'application/json; charset=utf-8';

/** For text put into HTML by the server (the page itself is static: the script renders data). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

interface Asset {
  readonly body: Buffer;
  readonly type: string;
  readonly etag: string;
}

const WEB_DIR = new URL('../../web/', import.meta.url);

function asset(file: string, type: string): Asset {
  const body = readFileSync(new URL(file, WEB_DIR));
  return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
}

/** The sign-in page: a form for the token, shown on a 401 when the browser's own prompt was dismissed. */
function loginPage(message: string | undefined): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Sign in: QuickBooks connection health</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/dashboard/app.css">
</head>
<body>
<main class="login">
<h1>QuickBooks connection health</h1>
<p>This monitor's dashboard needs its <code>HEALTH_TOKEN</code>.</p>
${message ? `<p class="login-error" role="alert">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/dashboard/login">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<p class="muted">Scripts can use HTTP Basic instead: any user name, the token as password (<code>curl -u monitor:TOKEN</code>).</p>
</main>
</body>
</html>
`;
}

export interface DashboardOptions {
  readonly healthToken: string | undefined;
  readonly refreshTokenWarnDays: number;
  readonly version: string;
  readonly status?: StatusSource;
  readonly now?: () => Date;
}

export class DashboardRoutes {
  /** Refused sign-ins, logged once a minute with a count. */
  private readonly loginRepeats = new RepeatLimiter();
  private readonly gate: DashboardGate;
  private readonly assets: { page: Asset; script: Asset; style: Asset };
  private readonly now: () => Date;
  private last: StoredPart = { data: undefined, error: undefined };
  private readAt = Number.NEGATIVE_INFINITY;
  private reading: Promise<void> | undefined;
  private failingSince: number | undefined;
  private failureLoggedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly state: HealthState,
    private readonly opts: DashboardOptions,
    private readonly log: Logger,
  ) {
    this.now = opts.now ?? (() => new Date());
    this.gate = new DashboardGate(opts.healthToken, this.now);
    // Read once at start: a missing file is an install defect, and the daemon should say so then.
    this.assets = {
      page: asset('dashboard.html', HTML),
      script: asset('dashboard.js', 'text/javascript; charset=utf-8'),
      style: asset('dashboard.css', 'text/css; charset=utf-8'),
    };
  }

  /** `/`, `/dashboard` and everything under `/dashboard/`: decided without a promise, so other routes pay nothing. */
  owns(path: string): boolean {
    return path === '/' || path === '/dashboard' || path.startsWith('/dashboard/');
  }

  /** Answers one of the dashboard's paths (see owns()). */
  async serve(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const read = method === 'GET' || method === 'HEAD';
    if (path === '/dashboard/login' && method === 'POST') return this.login(req, res);
    if (path === '/dashboard/logout' && method === 'POST') return this.logout(req, res);
    if (!read) return this.send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: path.startsWith('/dashboard/log') ? 'POST' : 'GET, HEAD' });
    switch (path) {
      case '/':
        if (!this.gate.admits(req)) return this.send(res, 401, HTML, loginPage(undefined), { 'www-authenticate': WWW_AUTHENTICATE });
        return this.sendAsset(req, res, this.assets.page, 'no-store');
      case '/dashboard':
      case '/dashboard/':
        return this.send(res, 302, 'text/plain; charset=utf-8', 'the dashboard is at /\n', { location: '/' });
      case '/dashboard/app.js':
        return this.sendAsset(req, res, this.assets.script, 'no-cache');
      case '/dashboard/app.css':
        return this.sendAsset(req, res, this.assets.style, 'no-cache');
      case '/dashboard/data':
        return this.serveData(req, res);
      default:
        return this.send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
  }

  private send(res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body), ...SECURITY_HEADERS, ...extra });
    res.end(body);
  }

  private sendAsset(req: IncomingMessage, res: ServerResponse, a: Asset, cache: string): void {
    if (req.headers['if-none-match'] === a.etag) {
      res.writeHead(304, { etag: a.etag, 'cache-control': cache, ...SECURITY_HEADERS });
      res.end();
      return;
    }
    this.send(res, 200, a.type, a.body, { etag: a.etag, 'cache-control': cache });
  }

  private async serveData(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.gate.admits(req)) {
      return this.send(res, 401, JSON_TYPE, JSON.stringify({ error: 'HEALTH_TOKEN required: HTTP Basic (any user name, the token as password), Authorization: Bearer, or sign in at /' }), {
        'www-authenticate': WWW_AUTHENTICATE,
      });
    }
    const part = await this.storedPart();
    const data = buildDashboardData(this.state, part, {
      version: this.opts.version,
      refreshTokenWarnDays: this.opts.refreshTokenWarnDays,
      now: this.now(),
      trustedViewer: this.gate.required,
    });
    this.send(res, 200, JSON_TYPE, JSON.stringify(data));
  }

  /**
   * The stored part: read at most once per DASHBOARD_READ_MS. The first request waits for the
   * read; later ones are answered with the last outcome while the next read runs.
   */
  private async storedPart(): Promise<StoredPart> {
    const now = this.now().getTime();
    if (!this.reading && now - this.readAt >= DASHBOARD_READ_MS) {
      this.readAt = now;
      this.reading = this.readStored().finally(() => (this.reading = undefined));
    }
    if (this.reading && this.last.data === undefined && this.last.error === undefined) await this.reading;
    return this.last;
  }

  /** Never rejects: a failure is kept (the page shows it) and logged. */
  private async readStored(): Promise<void> {
    const source = this.opts.status;
    if (!source?.read) {
      this.last = { data: undefined, error: 'no database reader is configured: only the live state is shown' };
      return;
    }
    const read = source.read.bind(source);
    const at = this.now();
    let data: StoredDashboard;
    try {
      data = await read((db) => loadStoredDashboard(db, { now: at }));
    } catch (err) {
      this.failingSince ??= at.getTime();
      const since = new Date(this.failingSince).toISOString();
      if (at.getTime() - this.failureLoggedAt >= READ_FAILURE_LOG_MS) {
        this.failureLoggedAt = at.getTime();
        this.log.warn({ event: LogEvent.dbReadFailed, what: 'dashboard', failingSince: since, err }, 'the dashboard cannot read the history from PostgreSQL; it shows the live state and the last history read');
      }
      this.last = {
        data: this.last.data,
        error: `the history cannot be read from PostgreSQL (failing since ${since})${this.last.data ? ': the last history read is shown' : ''}; /health shows why`,
      };
      return;
    }
    this.failingSince = undefined;
    this.failureLoggedAt = Number.NEGATIVE_INFINITY;
    this.last = { data, error: undefined };
  }

  /** `POST /dashboard/login` (form field `token`): a session cookie, then back to the page. */
  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.gate.required) return this.send(res, 303, 'text/plain; charset=utf-8', 'no token is needed\n', { location: '/' });
    if (!this.sameOrigin(req)) return this.send(res, 403, 'text/plain; charset=utf-8', 'cross-origin sign-in refused\n');
    const body = await readBody(req, LOGIN_BODY_MAX);
    if (body === undefined) return this.send(res, 413, 'text/plain; charset=utf-8', 'the sign-in form is too large\n');
    const token = new URLSearchParams(body).get('token') ?? '';
    if (!this.gate.isToken(token)) {
      // Once a minute at most, with a count: a client trying tokens cannot flood the log.
      const admitted = this.loginRepeats.admit('refused');
      if (admitted) this.log.warn({ event: LogEvent.dashboardLoginRefused, remote: req.socket.remoteAddress, ...admitted }, 'a dashboard sign-in gave a wrong token (repeats are counted, not logged, for a minute)');
      // 403, not 401: a 401 would make the browser show its own prompt over the form.
      return this.send(res, 403, HTML, loginPage('That is not the token. Try again.'));
    }
    const session = this.gate.newSession();
    this.send(res, 303, 'text/plain; charset=utf-8', 'signed in\n', { location: '/', 'set-cookie': sessionCookie(req, session.value, SESSION_MS / 1000) });
  }

  private logout(req: IncomingMessage, res: ServerResponse): void {
    if (!this.sameOrigin(req)) return this.send(res, 403, 'text/plain; charset=utf-8', 'cross-origin sign-out refused\n');
    this.send(res, 303, 'text/plain; charset=utf-8', 'signed out\n', { location: '/', 'set-cookie': sessionCookie(req, '', 0) });
  }

  /**
   * A form posted from another site is refused (the cookie is SameSite=Strict too). Browsers say
   * where a request comes from in Sec-Fetch-Site; under this page's Referrer-Policy (no-referrer)
   * their Origin is "null", so Origin is only looked at where Sec-Fetch-Site is missing.
   */
  private sameOrigin(req: IncomingMessage): boolean {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined) return site === 'same-origin' || site === 'none';
    const origin = req.headers.origin;
    if (origin === undefined || origin === 'null') return origin === undefined;
    try {
      return new URL(origin).host === req.headers.host;
    } catch (err) {
      this.log.warn({ event: LogEvent.dashboardLoginRefused, origin, err }, 'a dashboard form came with an unreadable Origin');
      return false;
    }
  }
}

/** Behind a TLS proxy (X-Forwarded-Proto: https) the cookie is Secure: it never travels over plain HTTP. */
function sessionCookie(req: IncomingMessage, value: string, maxAgeSeconds: number): string {
  const https = req.headers['x-forwarded-proto'] === 'https' || (req.socket as { encrypted?: boolean }).encrypted === true;
  return `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; SameSite=Strict${https ? '; Secure' : ''}`;
}

/** The request body as text, or undefined once it passes `max` bytes. */
async function readBody(req: IncomingMessage, max: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > max) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
