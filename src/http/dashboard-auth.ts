/**
 * Who may see the dashboard when HEALTH_TOKEN is set. Three ways to present the token, never in
 * the URL (a query string ends up in proxy logs, browser history and Referer headers):
 *  - HTTP Basic, any user name, the token as password: browsers prompt for it natively and
 *    `curl -u any:TOKEN` works;
 *  - `Authorization: Bearer TOKEN`, as `/status` and `/metrics` take it;
 *  - the session cookie the login form sets: HttpOnly, SameSite=Strict, Secure behind HTTPS. It
 *    holds an expiry and an HMAC of it keyed by the token, never the token itself, so every
 *    member of a fleet sharing HEALTH_TOKEN accepts it and changing the token ends every session.
 * Comparisons are constant-time on digests, whatever the lengths given.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const SESSION_COOKIE = 'qbhm_session';
/** How long a login lasts. */
export const SESSION_MS = 12 * 3_600_000;
export const BASIC_REALM = 'qbo-health-monitor';

const digest = (text: string | Buffer): Buffer => createHash('sha256').update(text).digest();
const sameDigest = (a: Buffer, b: Buffer): boolean => a.length === b.length && timingSafeEqual(a, b);

/** The value of cookie `name` in a Cookie header; undefined when absent. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export class DashboardGate {
  private readonly tokenDigest: Buffer | undefined;

  constructor(
    private readonly token: string | undefined,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.tokenDigest = token === undefined ? undefined : digest(token);
  }

  /** HEALTH_TOKEN is set: the page and its data are not public. */
  get required(): boolean {
    return this.tokenDigest !== undefined;
  }

  /** The token as given to the login form or as a Basic password. */
  isToken(given: string): boolean {
    return this.tokenDigest !== undefined && sameDigest(digest(given), this.tokenDigest);
  }

  /** The request presents the token (Basic, Bearer or a live session cookie), or none is required. */
  admits(req: IncomingMessage): boolean {
    if (!this.required) return true;
    const auth = req.headers.authorization ?? '';
    const space = auth.indexOf(' ');
    const scheme = space > 0 ? auth.slice(0, space).toLowerCase() : '';
    const credentials = space > 0 ? auth.slice(space + 1).trim() : '';
    if (scheme === 'bearer' && this.isToken(credentials)) return true;
    if (scheme === 'basic') {
      const decoded = Buffer.from(credentials, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0 && this.isToken(decoded.slice(colon + 1))) return true;
    }
    const session = cookieValue(req.headers.cookie, SESSION_COOKIE);
    return session !== undefined && this.validSession(session);
  }

  /** A new session cookie's value: `v1.<expiry ms>.<HMAC-SHA256(token, expiry)>`. */
  newSession(): { value: string; expiresAt: Date } {
    const expiresAt = new Date(this.now().getTime() + SESSION_MS);
    return { value: `v1.${expiresAt.getTime()}.${this.mac(String(expiresAt.getTime())).toString('base64url')}`, expiresAt };
  }

  private validSession(value: string): boolean {
    const [version, expiry, mac] = value.split('.');
    if (version !== 'v1' || !expiry || !mac || !/^\d{1,15}$/.test(expiry)) return false;
    if (Number(expiry) <= this.now().getTime()) return false;
    return sameDigest(digest(Buffer.from(mac, 'base64url')), digest(this.mac(expiry)));
  }

  private mac(expiry: string): Buffer {
    return createHmac('sha256', this.token ?? '').update(`qbo-health-monitor dashboard session ${expiry}`).digest();
  }
}
