/**
 * What the health server shows to whom, and how `/status` reads the history: PostgreSQL's error
 * text stays behind HEALTH_TOKEN, an exposed port without HEALTH_TOKEN is announced at start, and
 * `/status` reads on a small pool of its own, keyed by the window it asks for, with a bound on
 * how many different windows are read at once.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { HealthState } from '../src/health/state.js';
import { STATUS_APPLICATION_NAME, StatusReader, type StatusQuery, type StatusReport, type StatusSource } from '../src/db/status.js';
import { Metrics } from '../src/http/metrics.js';
import { HealthServer, STATUS_CACHE_MS, STATUS_MAX_LOADS } from '../src/http/server.js';
import { LogEvent } from '../src/log.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const TOKEN = 'health-token-for-surface-tests-42';
const AUTH = { authorization: `Bearer ${TOKEN}` };
// What pg and pg-pool put in their messages: the host, the user, the database.
const PG_ERROR = 'password authentication failed for user "ledger_admin" (connecting to db-prod-7.internal:5432, database clinic_ledger)';
const PG_DETAILS = ['ledger_admin', 'db-prod-7.internal', 'clinic_ledger', 'password authentication'];

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const servers: HealthServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function serve(
  state: HealthState,
  opts: { healthToken?: string; status?: StatusSource; now?: () => Date; host?: string } = {},
): Promise<{ base: string; log: ReturnType<typeof captureLog> }> {
  const log = captureLog('debug');
  const server = new HealthServer(
    state,
    new Metrics(state),
    { healthToken: opts.healthToken, refreshTokenWarnDays: 14, version: 'test', status: opts.status, now: opts.now },
    log.log,
  );
  servers.push(server);
  const bound = await server.listen(opts.host ?? '127.0.0.1', 0);
  return { base: `http://127.0.0.1:${bound.port}`, log };
}

function unreachableState(): HealthState {
  const state = new HealthState();
  state.lastTickAt = new Date();
  state.db = { reachable: false, checkedAt: new Date(), error: PG_ERROR };
  state.schema = { verified: true, error: undefined };
  return state;
}

describe('/health/ready and /health for callers without HEALTH_TOKEN', () => {
  it('name the failing check but never PostgreSQL\'s error text; a caller holding the token sees it', async () => {
    const state = unreachableState();
    const { base } = await serve(state, { healthToken: TOKEN });
    const anonymous: Array<Record<string, string>> = [{}, { authorization: 'Bearer wrong-token-wrong-token-00' }, { authorization: TOKEN }];
    for (const headers of anonymous) {
      const ready = await fetch(`${base}/health/ready`, { headers });
      expect(ready.status).toBe(503);
      expect(await ready.json()).toEqual({ status: 'fail', output: 'PostgreSQL unreachable' });
      const health = await fetch(`${base}/health`, { headers });
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ status: 'fail' });
    }
    const detailed = await fetch(`${base}/health/ready`, { headers: AUTH });
    expect(detailed.status).toBe(503);
    expect(((await detailed.json()) as { output: string }).output).toContain(PG_ERROR);

    // A schema that differs is named too, without the database's words.
    state.db = { reachable: true, checkedAt: new Date(), error: undefined };
    state.schema = { verified: false, error: 'quickbooks_connection_health.realm_id is missing (database clinic_ledger)' };
    expect(await (await fetch(`${base}/health/ready`)).json()).toEqual({ status: 'fail', output: 'schema not verified' });
    expect(JSON.stringify(await (await fetch(`${base}/health/ready`, { headers: AUTH })).json())).toContain('clinic_ledger');

    state.schema = { verified: true, error: undefined };
    expect(await (await fetch(`${base}/health/ready`)).json()).toEqual({ status: 'pass' });
    state.shuttingDown = true;
    expect(await (await fetch(`${base}/health/ready`)).json()).toEqual({ status: 'fail', output: 'shutting down' });
  });

  it('without HEALTH_TOKEN configured, /health/ready still carries no PostgreSQL error text', async () => {
    const { base } = await serve(unreachableState());
    const ready = await fetch(`${base}/health/ready`);
    expect(ready.status).toBe(503);
    const text = await ready.text();
    expect(JSON.parse(text)).toEqual({ status: 'fail', output: 'PostgreSQL unreachable' });
    for (const detail of PG_DETAILS) expect(text).not.toContain(detail);
  });
});

describe('an exposed port without HEALTH_TOKEN', () => {
  it('is announced once at start, at warn, naming what anyone who reaches it can read', async () => {
    const state = new HealthState();
    const exposed = await serve(state, { host: '0.0.0.0' });
    const lines = exposed.log.byEvent(LogEvent.httpUnauthenticated);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, host: '0.0.0.0', port: expect.any(Number) });
    expect(String(lines[0]?.msg)).toMatch(/realm id.*company name.*error/);
    expect(String(lines[0]?.msg)).toContain('HEALTH_TOKEN');

    expect((await serve(state, { host: '127.0.0.1' })).log.byEvent(LogEvent.httpUnauthenticated)).toEqual([]);
    expect((await serve(state, { host: '0.0.0.0', healthToken: TOKEN })).log.byEvent(LogEvent.httpUnauthenticated)).toEqual([]);
  });
});

/** A status source that counts loads and holds each until the test lets it go. */
function heldSource(): StatusSource & { loads: StatusQuery[]; release(): void; closed: number } {
  const waiting: Array<() => void> = [];
  let released = false;
  const source = {
    loads: [] as StatusQuery[],
    closed: 0,
    load(q: StatusQuery): Promise<StatusReport> {
      source.loads.push(q);
      const report = { since: q.since.toISOString(), realms: [] } as unknown as StatusReport;
      if (released) return Promise.resolve(report);
      return new Promise((resolve) => waiting.push(() => resolve(report)));
    },
    release(): void {
      released = true;
      for (const w of waiting.splice(0)) w();
    },
    close(): Promise<void> {
      source.closed++;
      return Promise.resolve();
    },
  };
  return source;
}

describe('/status', () => {
  const NOW = new Date('2026-11-23T12:00:02.500Z');

  it('keys its cache by the window, not its spelling: 24h, 1440m and an ISO instant a moment apart are one read', async () => {
    const source = heldSource();
    source.release();
    const { base } = await serve(new HealthState(), { status: source, now: () => NOW });
    const dayAgo = NOW.getTime() - 86_400_000;
    for (const since of ['24h', '1440m', new Date(dayAgo + 3).toISOString(), new Date(dayAgo - 1).toISOString()]) {
      expect((await fetch(`${base}/status?since=${since}`)).status).toBe(200);
    }
    // The window's start, rounded down to the cache granularity, is what was read.
    expect(source.loads.map((q) => q.since.getTime())).toEqual([Math.floor(dayAgo / STATUS_CACHE_MS) * STATUS_CACHE_MS]);
    expect((await fetch(`${base}/status?since=23h`)).status).toBe(200);
    expect((await fetch(`${base}/status?since=24h&realmId=42`)).status).toBe(200);
    expect(source.loads.map((q) => [q.since.getTime() - dayAgo < 0 ? '24h' : '23h', q.realmId ?? null])).toEqual([
      ['24h', null],
      ['23h', null],
      ['24h', '42'],
    ]);
  });

  it(`reads at most ${STATUS_MAX_LOADS} different windows at once and turns the rest away at once with Retry-After`, async () => {
    const source = heldSource();
    const { base } = await serve(new HealthState(), { status: source, now: () => NOW });
    const extra = 5;
    const answers: Response[] = [];
    const requests = Array.from({ length: STATUS_MAX_LOADS + extra }, (_, i) =>
      fetch(`${base}/status?since=${i + 1}h`).then((r) => {
        answers.push(r);
        return r;
      }),
    );
    // The extra requests are answered while every read is still held: they never queued.
    await until('the turned-away answers', () => answers.length === extra);
    expect(source.loads).toHaveLength(STATUS_MAX_LOADS);
    for (const r of answers) {
      expect(r.status).toBe(503);
      expect(r.headers.get('retry-after')).toBe(String(STATUS_CACHE_MS / 1000));
      expect(((await r.json()) as { output: string }).output).toMatch(/too many/);
    }
    source.release();
    const all = await Promise.all(requests);
    expect(all.filter((r) => r.status === 200)).toHaveLength(STATUS_MAX_LOADS);
    // Finished reads free their places.
    expect((await fetch(`${base}/status?since=100h`)).status).toBe(200);
  });

  it('closes its status source when the server closes, once', async () => {
    const source = heldSource();
    const log = captureLog('debug');
    const server = new HealthServer(new HealthState(), new Metrics(new HealthState()), { healthToken: undefined, refreshTokenWarnDays: 14, version: 't', status: source }, log.log);
    await server.listen('127.0.0.1', 0);
    await server.close();
    await server.close();
    expect(source.closed).toBe(1);
  });
});

describe('StatusReader: its own small pool with a short statement timeout', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('uses at most two connections, named for pg_stat_activity, and gives up on a blocked statement', async () => {
    const log = captureLog('debug');
    const reader = new StatusReader(db.url, log.log, { statementTimeoutMs: 300 });
    try {
      const report = await reader.load({ since: new Date(Date.now() - 3_600_000) });
      expect(report.realms).toEqual([]);

      // A DDL lock on a table the report reads: every statement waiting on it is cancelled.
      await db.query('BEGIN');
      await db.query('LOCK TABLE quickbooks_alert_state IN ACCESS EXCLUSIVE MODE');
      let settled = 0;
      let most = 0;
      const loads = Array.from({ length: 6 }, () =>
        reader.load({ since: new Date(Date.now() - 3_600_000) }).then(
          () => {
            settled++;
            return undefined;
          },
          (err: unknown) => {
            settled++;
            return err;
          },
        ),
      );
      try {
        while (settled < loads.length) {
          await db.query('SELECT pg_stat_clear_snapshot()');
          const n = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1', [STATUS_APPLICATION_NAME])).rows[0]!.n;
          most = Math.max(most, n);
        }
      } finally {
        await db.query('ROLLBACK');
      }
      const errors = await Promise.all(loads);
      expect(errors.map((e) => (e as { code?: string } | undefined)?.code)).toEqual(Array(6).fill('57014'));
      expect(most).toBeGreaterThanOrEqual(1);
      expect(most).toBeLessThanOrEqual(2);

      // The lock gone, it reads again.
      expect((await reader.load({ since: new Date(Date.now() - 3_600_000) })).realms).toEqual([]);
    } finally {
      await reader.close();
      await reader.close();
    }
  });
});
