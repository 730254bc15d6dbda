/// <reference lib="dom" />
/**
 * The dashboard in a real browser: Debian's chromium, headless, driven by puppeteer-core, against
 * the real daemon (dist/main.js) with HEALTH_TOKEN set, the simulator standing in for Intuit, and
 * 90 days of seeded history for three companies: one healthy for 90 days but for a 2-hour outage 10
 * days ago, one throttled today, one whose refresh token Intuit revoked (reconnect required).
 * History is seeded as raw rows and rolled up with `qbhealth rollup --rebuild`; the outage's
 * incident as rows of the alert history. Company names carry markup, as Intuit may send it.
 *
 * It checks what a person would: each company, 90 day-bars with the outage day marked, the
 * tooltip on keyboard focus and on hover, the incident with its duration, the revoked company as
 * reconnect required; the simulator switched to an outage turning the healthy company red
 * without a reload; no console error, no failed request, no serious or critical axe-core
 * violation, no horizontal scroll at 390 px; and screenshots (desktop, phone, dark) in
 * var/screenshots/.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAlertEvent } from '../src/db/incident-queries.js';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { runQbhealth } from './support/cli.js';
import { daemonEnv, spawnDaemon, type RunningDaemon } from './support/daemon.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase, simulatorEnv } from './support/qbo.js';
import { connectRealms } from './support/realms.js';
import type { TestDatabase } from './support/db.js';

const CHROMIUM = '/usr/bin/chromium';
const AXE = fileURLToPath(new URL('../node_modules/axe-core/axe.min.js', import.meta.url));
const SCREENSHOTS = fileURLToPath(new URL('../var/screenshots/', import.meta.url));
const TOKEN = 'browser-test-health-token-5c1e0b';

const HEALTHY = '9200000001';
const THROTTLED = '9200000002';
const REVOKED = '9200000003';
/** Markup in company names: the page must show it as text and never run it. */
const HEALTHY_NAME = '<script>window.__pwned = 1</script> Harbour Dental';
const THROTTLED_NAME = '"><img src=x onerror="window.__pwned = 2"> Bayside Clinic';
const REVOKED_NAME = 'Northgate Orthodontics';

const MIN = 60_000;
const DAY = 86_400_000;
const utcDay = (t: number): number => Math.floor(t / DAY) * DAY;

const now = Date.now();
const today = utcDay(now);
/** The outage: 09:00 to 11:00 UTC, 10 days ago. */
const outageDay = today - 10 * DAY;
const outageStart = outageDay + 9 * 60 * MIN;
const outageEnd = outageDay + 11 * 60 * MIN;
/** One probe every 10 minutes of seeded history: 144 a day, 12 of them in the outage. */
const SEED_STEP_MIN = 10;

let db: TestDatabase;
let sim: Simulator;
let daemon: RunningDaemon;
let browser: Browser;
let base: string;

/** What went wrong in the page, collected for the final assertion. */
const problems: string[] = [];

/** Connected, with the name earlier probes read from CompanyInfo (the revoked realm is never probed successfully again). */
async function seedRealms(companies: ReadonlyArray<readonly [string, string]>): Promise<void> {
  await connectRealms(db, sim, companies);
  for (const [realmId, company] of companies) await db.query('UPDATE quickbooks_oauth_tokens SET company_name = $2 WHERE realm_id = $1', [realmId, company]);
}

/**
 * Raw history for a realm: a probe every SEED_STEP_MIN minutes from 90 days ago to a minute ago,
 * passing but in [badFrom, badTo), where it ends as `bad` says.
 */
async function seedHistory(realmId: string, bad?: { from: number; to: number; status: 'warn' | 'fail'; code: string; http: number; error: string }): Promise<void> {
  await db.query(
    `INSERT INTO quickbooks_connection_health (connected, error, checked_at, created_at, realm_id, probe_id, status, error_code, http_status, latency_ms, intuit_tid)
     SELECT NOT b, CASE WHEN b THEN $6 END, t, t, $1, gen_random_uuid(), CASE WHEN b THEN $7 ELSE 'pass' END, CASE WHEN b THEN $8 ELSE 'ok' END,
            CASE WHEN b THEN $9::int ELSE 200 END, 180 + (extract(epoch FROM t)::bigint % 7) * 40, 'seed-' || extract(epoch FROM t)::bigint
       FROM generate_series($2::timestamptz, $3::timestamptz, make_interval(mins => $10)) AS t,
            LATERAL (SELECT $4::timestamptz IS NOT NULL AND t >= $4::timestamptz AND t < $5::timestamptz AS b) AS f`,
    [
      realmId,
      new Date(now - 90 * DAY),
      new Date(now - MIN),
      bad ? new Date(bad.from) : null,
      bad ? new Date(bad.to) : null,
      bad?.error ?? null,
      bad?.status ?? null,
      bad?.code ?? null,
      bad?.http ?? null,
      SEED_STEP_MIN,
    ],
  );
}

/** The outage's incident, as the escalation records it: raised at the third failure, resolved at the first success. */
async function seedIncident(): Promise<void> {
  const common = {
    realmId: HEALTHY,
    kind: 'quickbooks_api' as const,
    severity: 'warning' as const,
    since: new Date(outageStart),
    lastError: 'Intuit answered 503',
    errorCode: 'server_error',
    intuitTid: 'seed-tid-outage',
    silenced: false,
    silenceId: null,
    instance: 'seed',
  };
  await insertAlertEvent(db.client, {
    ...common,
    event: 'alert.raised',
    at: new Date(outageStart + 20 * MIN),
    consecutiveFailures: 3,
    summary: 'QuickBooks API failing for realm 9200000001: Intuit answered 503',
    reason: null,
    notificationId: '00000000-0000-4000-8000-000000000001',
  });
  await insertAlertEvent(db.client, {
    ...common,
    event: 'alert.resolved',
    at: new Date(outageEnd),
    consecutiveFailures: 0,
    summary: 'QuickBooks API answers again for realm 9200000001',
    reason: null,
    notificationId: '00000000-0000-4000-8000-000000000002',
  });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the dashboard's browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it)`);
  }
  db = await migratedDatabase();
  sim = await startSimulator({ host: '127.0.0.1', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  await seedRealms([
    [HEALTHY, HEALTHY_NAME],
    [THROTTLED, THROTTLED_NAME],
    [REVOKED, REVOKED_NAME],
  ]);
  await seedHistory(HEALTHY, { from: outageStart, to: outageEnd, status: 'fail', code: 'server_error', http: 503, error: 'Intuit answered 503' });
  // Throttled since 6 hours ago (or since midnight UTC, if that is later): today's bar shows it.
  await seedHistory(THROTTLED, { from: Math.max(today, now - 6 * 60 * MIN), to: now, status: 'warn', code: 'throttled', http: 429, error: 'Intuit answered 429 (throttled)' });
  await seedHistory(REVOKED, { from: now - 60 * MIN, to: now, status: 'fail', code: 'auth_invalid_grant', http: 400, error: 'Intuit refused the refresh token (invalid_grant)' });
  await db.query(`UPDATE quickbooks_oauth_tokens SET status = 'reconnect_required', status_reason = 'Intuit refused the refresh token (invalid_grant)' WHERE realm_id = $1`, [REVOKED]);
  await seedIncident();
  const rebuilt = await runQbhealth(['rollup', '--rebuild'], simulatorEnv(db.url, sim));
  if (rebuilt.code !== 0) throw new Error(`qbhealth rollup --rebuild exited ${rebuilt.code}: ${rebuilt.stderr}`);

  daemon = spawnDaemon({ ...daemonEnv(db.url, sim), HEALTH_TOKEN: TOKEN });
  await daemon.waitFor('probe.succeeded', { where: (l) => l.realmId === HEALTHY });
  base = await daemon.url();
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root (CI), chromium's sandbox cannot start; the page is our own, on loopback.
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--lang=en-US'],
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
});

afterAll(async () => {
  await browser?.close();
  await daemon?.stop();
  await sim?.close();
  await db?.drop();
});

/** A page signed in as a browser would be after its Basic prompt, with every problem it shows collected. */
async function dashboardPage(width = 1280, scheme: 'light' | 'dark' = 'light'): Promise<Page> {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warn') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${String(err)}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.authenticate({ username: 'operator', password: TOKEN });
  await page.setViewport({ width, height: 900 });
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: scheme }]);
  const res = await page.goto(`${base}/`, { waitUntil: 'load' });
  expect(res?.status()).toBe(200);
  await page.waitForSelector('body[data-loaded="true"]');
  await page.waitForSelector(`#realm-${REVOKED}`);
  return page;
}

/** axe-core, run in the page (injected over DevTools, which the page's CSP does not govern). */
async function seriousViolations(page: Page): Promise<string[]> {
  await page.evaluate(readFileSync(AXE, 'utf8'));
  const violations = await page.evaluate(async () => {
    const axe = (window as unknown as { axe: { run(ctx: Document, opts: object): Promise<{ violations: Array<{ id: string; impact: string | null; help: string; nodes: Array<{ target: unknown }> }> }> } }).axe;
    const result = await axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, targets: v.nodes.slice(0, 3).map((n) => JSON.stringify(n.target)) }));
  });
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.targets.join(' ')}`);
}

const barSelector = (realmId: string, kind: 'day' | 'halfHour', from: number): string => `#realm-${realmId} .strip-${kind} .bar[data-from="${new Date(from).toISOString()}"]`;

describe('the dashboard in chromium', () => {
  it('with HEALTH_TOKEN: 401 with a Basic challenge without it, 200 with Basic; the CSP is sent', async () => {
    const anonymous = await fetch(`${base}/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Basic realm="qbo-health-monitor"');
    expect((await fetch(`${base}/dashboard/data`)).status).toBe(401);
    const withBasic = await fetch(`${base}/`, { headers: { authorization: `Basic ${Buffer.from(`operator:${TOKEN}`).toString('base64')}` } });
    expect(withBasic.status).toBe(200);
    expect(withBasic.headers.get('content-security-policy')).toBe(
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    );
    // A browser whose Basic prompt was answered wrongly, then dismissed, gets the sign-in form, not
    // the dashboard; signing in there sets an HttpOnly, SameSite=Strict cookie and opens it.
    const context = await browser.createBrowserContext();
    try {
      const page = await context.newPage();
      await page.authenticate({ username: 'operator', password: 'not-the-token-at-all' });
      const res = await page.goto(`${base}/`);
      expect(res?.status()).toBe(401);
      expect(await page.$('#realms')).toBeNull();
      await page.type('#token', TOKEN);
      await Promise.all([page.waitForNavigation(), page.click('form[action="/dashboard/login"] button[type="submit"]')]);
      await page.waitForSelector('body[data-loaded="true"]');
      expect(await page.$$eval('article.realm', (cards) => cards.length)).toBe(3);
      const [cookie] = await context.cookies();
      expect(cookie).toMatchObject({ name: 'qbhm_session', httpOnly: true, sameSite: 'Strict', secure: false });
      expect(cookie?.value).not.toContain(TOKEN);
    } finally {
      await context.close();
    }
  }, 30_000);

  it('shows each company with its markup as text, 90 day-bars with the outage day marked, the tooltip on focus and hover, the incident with its duration, the revoked company as reconnect required', async () => {
    const page = await dashboardPage();
    try {
      // Company names are text: the <script> never ran and no <img> was made.
      for (const [realm, name] of [
        [HEALTHY, HEALTHY_NAME],
        [THROTTLED, THROTTLED_NAME],
        [REVOKED, REVOKED_NAME],
      ]) {
        expect(await page.$eval(`#realm-${realm} h3`, (h) => h.textContent)).toBe(name);
      }
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      expect(await page.$$eval('img', (imgs) => imgs.length)).toBe(0);
      expect(await page.content()).not.toContain(TOKEN);

      for (const realm of [HEALTHY, THROTTLED, REVOKED]) {
        expect(await page.$$eval(`#realm-${realm} .strip-day .bar`, (bars) => bars.length)).toBe(90);
        expect(await page.$$eval(`#realm-${realm} .strip-halfHour .bar`, (bars) => bars.length)).toBe(48);
      }
      // The outage day is coloured and patterned as failed; the days around it are all up.
      const outage = barSelector(HEALTHY, 'day', outageDay);
      expect(await page.$eval(outage, (b) => [b.className, Number((b as HTMLElement).dataset.uptime)])).toEqual(['bar bar-down', 132 / 144]);
      expect(await page.$eval(barSelector(HEALTHY, 'day', outageDay - DAY), (b) => b.className)).toBe('bar bar-up');
      expect(await page.$eval(barSelector(HEALTHY, 'day', outageDay + DAY), (b) => b.className)).toBe('bar bar-up');
      expect(await page.$eval(`#realm-${HEALTHY} .strip-title`, (p) => p.textContent)).toContain('1 day under 100 %');

      // The tooltip, on keyboard focus: date, uptime, probes, failures by error_code.
      await page.focus(outage);
      const tip = `#realm-${HEALTHY} .strip-day .tooltip`;
      await page.waitForSelector(`${tip}:not([hidden])`);
      const date = new Date(outageDay).toISOString().slice(0, 10);
      expect(await page.$eval(tip, (t) => Array.from(t.children, (c) => c.textContent))).toEqual([`${date} (UTC day)`, 'uptime 91.66 %', '144 probes', 'failures: server_error 12']);
      expect(await page.$eval(outage, (b) => b.getAttribute('aria-label'))).toBe(`${date} (UTC day), uptime 91.66 %, 144 probes, failures: server_error 12`);
      // Arrow keys move along the strip, and the tooltip follows.
      await page.keyboard.press('ArrowLeft');
      const before = new Date(outageDay - DAY).toISOString().slice(0, 10);
      await page.waitForFunction((sel, text) => document.querySelector(sel)?.firstElementChild?.textContent === text, {}, tip, `${before} (UTC day)`);
      expect(await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.from)).toBe(new Date(outageDay - DAY).toISOString());
      await page.keyboard.press('Escape');
      await page.waitForSelector(`${tip}[hidden]`);
      // And on hover.
      await page.hover(barSelector(THROTTLED, 'day', today));
      const throttledTip = `#realm-${THROTTLED} .strip-day .tooltip`;
      await page.waitForSelector(`${throttledTip}:not([hidden])`);
      expect(await page.$eval(throttledTip, (t) => t.textContent)).toMatch(/throttled \d+/);
      expect(await page.$eval(barSelector(THROTTLED, 'day', today), (b) => b.className)).toBe('bar bar-throttled');

      // The incident, with its duration (raised at the third failure, resolved at the first success).
      const incidents = await page.$eval('#incidents', (e) => e.textContent ?? '');
      expect(incidents).toContain(HEALTHY_NAME);
      expect(incidents).toContain('lasted 1 h 40 min');
      expect(incidents).toContain('2 notifications sent');

      // The revoked company: reconnect required, its token shown as revoked, its alert open.
      expect(await page.$eval(`#realm-${REVOKED} .badge`, (b) => b.textContent)).toBe('⟲ Reconnect required');
      expect(await page.$eval(`#realm-${REVOKED} .realm-details`, (d) => d.textContent)).toContain('Revoked by Intuit');
      await page.waitForFunction((name) => document.querySelector('#alerts')?.textContent?.includes(name), { timeout: 15_000 }, REVOKED_NAME);
      expect(await page.$eval(`#realm-${HEALTHY} .badge`, (b) => b.textContent)).toBe('✓ Pass');

      await page.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-desktop.png'), fullPage: true });
      expect(await seriousViolations(page)).toEqual([]);
    } finally {
      await page.close();
    }
  }, 60_000);

  it('reads on a phone (390 px, no horizontal scroll) and in the dark variant, with no serious accessibility violation', async () => {
    const phone = await dashboardPage(390);
    try {
      expect(await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)).toBeLessThanOrEqual(0);
      await phone.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-phone.png'), fullPage: true });
      expect(await seriousViolations(phone)).toEqual([]);
    } finally {
      await phone.close();
    }
    const dark = await dashboardPage(1280, 'dark');
    try {
      expect(await dark.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(13, 17, 23)');
      await dark.screenshot({ path: path.join(SCREENSHOTS, 'dashboard-dark.png'), fullPage: true });
      expect(await seriousViolations(dark)).toEqual([]);
    } finally {
      await dark.close();
    }
  }, 60_000);

  it('turns the healthy company red within 15 s of the simulator switching to an outage, without a reload', async () => {
    const page = await dashboardPage();
    try {
      await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
      expect(await page.$eval(`#realm-${HEALTHY}`, (a) => (a as HTMLElement).dataset.badge)).toBe('pass');
      sim.scenario = 'outage';
      // Waited on as a condition, bounded by the 15 s the page promises.
      await page.waitForFunction((id) => (document.getElementById(id) as HTMLElement | null)?.dataset.badge === 'fail', { timeout: 15_000 }, `realm-${HEALTHY}`);
      expect(await page.$eval(`#realm-${HEALTHY} .badge`, (b) => b.textContent)).toBe('✕ Failing');
      expect(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument)).toBe(true);
    } finally {
      sim.scenario = 'healthy';
      await page.close();
    }
  }, 30_000);

  it('had no console error, no failed request and no error response in any page', () => {
    expect(problems).toEqual([]);
  });
});
