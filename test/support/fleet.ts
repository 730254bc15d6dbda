/**
 * Helpers for the tests that run several daemons against one database: a daemon's member id,
 * the span each probe ran (from its log line), the rows each realm got, and the checks the fleet
 * must pass on them (no realm probed by two members at once, no two results of a realm within a
 * fraction of a period).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { LogLine, RunningDaemon } from './daemon.js';

type Query = (text: string, params?: unknown[]) => Promise<{ rows: Array<Record<string, unknown>> }>;

/** A daemon's member id in quickbooks_monitor_members: `<FLEET_INSTANCE_ID>#<pid>`. */
export const memberOf = (env: Record<string, string>, d: RunningDaemon): string => `${env.FLEET_INSTANCE_ID}#${d.child.pid}`;

export interface ProbeSpan {
  readonly realmId: string;
  readonly probeId: string;
  readonly member: string;
  /** Epoch ms on the test's clock. */
  readonly start: number;
  readonly end: number;
}

/** A log line's `time` (ISO) as epoch ms. */
export const logTime = (l: LogLine): number => {
  const t = typeof l.time === 'number' ? l.time : Date.parse(String(l.time));
  if (Number.isNaN(t)) throw new Error(`a log line without a time: ${JSON.stringify(l)}`);
  return t;
};

const isProbe = (l: LogLine): boolean => l.event === 'probe.succeeded' || l.event === 'probe.failed';

/**
 * Each probe a daemon logged as the span it ran: the line is written as the probe ends (pino's
 * `time`), `durationMs` back is its start. `clockOffsetMs` is what the daemon's clock is ahead of
 * the test's (a daemon run with a shifted clock).
 */
export function probeSpans(d: RunningDaemon, member: string, clockOffsetMs = 0): ProbeSpan[] {
  return d.lines.filter(isProbe).map((l) => {
    const end = logTime(l) - clockOffsetMs;
    return { realmId: String(l.realmId), probeId: String(l.probeId), member, start: end - Number(l.durationMs), end };
  });
}

/** Pairs of spans of one realm that overlap (by more than `toleranceMs`, for the rounding of the log's times). */
export function overlappingProbes(spans: readonly ProbeSpan[], toleranceMs = 2): Array<[ProbeSpan, ProbeSpan]> {
  const byRealm = new Map<string, ProbeSpan[]>();
  for (const s of spans) byRealm.set(s.realmId, [...(byRealm.get(s.realmId) ?? []), s]);
  const found: Array<[ProbeSpan, ProbeSpan]> = [];
  for (const list of byRealm.values()) {
    list.sort((a, b) => a.start - b.start);
    let latest: ProbeSpan | undefined;
    for (const s of list) {
      if (latest && s.start < latest.end - toleranceMs) found.push([latest, s]);
      if (!latest || s.end > latest.end) latest = s;
    }
  }
  return found;
}

export interface HealthRow {
  readonly realmId: string;
  readonly probeId: string;
  /** checked_at: when the probe started, on the clock of the member that took it. */
  readonly checkedAt: number;
  /** created_at: when the row was inserted, on the database's clock. */
  readonly createdAt: number;
  readonly latencyMs: number;
  readonly status: string;
}

export async function healthRows(query: Query): Promise<HealthRow[]> {
  const { rows } = await query('SELECT realm_id, probe_id, checked_at, created_at, latency_ms, status FROM quickbooks_connection_health ORDER BY realm_id, checked_at');
  return rows.map((r) => ({
    realmId: String(r.realm_id),
    probeId: String(r.probe_id),
    checkedAt: (r.checked_at as Date).getTime(),
    createdAt: (r.created_at as Date).getTime(),
    latencyMs: Number(r.latency_ms ?? 0),
    status: String(r.status),
  }));
}

export function byRealm<T extends { realmId: string }>(items: readonly T[]): Map<string, T[]> {
  const map = new Map<string, T[]>();
  for (const i of items) map.set(i.realmId, [...(map.get(i.realmId) ?? []), i]);
  return map;
}

/**
 * Consecutive results of one realm (by `at`, ascending) closer than `minGapMs`: a realm probed
 * twice within a period. Returns a readable line per pair.
 */
export function closeResults<T extends { realmId: string; probeId: string }>(items: readonly T[], at: (i: T) => number, minGapMs: number): string[] {
  const found: string[] = [];
  for (const [realm, list] of byRealm(items)) {
    const sorted = [...list].sort((a, b) => at(a) - at(b));
    for (let i = 1; i < sorted.length; i++) {
      const gap = at(sorted[i] as T) - at(sorted[i - 1] as T);
      if (gap < minGapMs) found.push(`realm ${realm}: ${(sorted[i - 1] as T).probeId} and ${(sorted[i] as T).probeId} ${gap} ms apart`);
    }
  }
  return found;
}

/** Webhook bodies of one kind and event. */
export const bodiesOf = (bodies: ReadonlyArray<Record<string, unknown>>, event: string, kind: string): Array<Record<string, unknown>> =>
  bodies.filter((b) => b.event === event && b.kind === kind);

/** Resolves once `check` is true, polling every `everyMs`; rejects with `what` after `timeoutMs`. */
export async function until(what: string | (() => string), check: () => Promise<boolean> | boolean, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface AlertReceiver {
  readonly url: string;
  /** Every POST, in arrival order, with the status it was answered. */
  readonly attempts: Array<{ body: Record<string, unknown>; status: number; at: number }>;
  /** Bodies answered 2xx. */
  accepted(): Array<Record<string, unknown>>;
  close(): Promise<void>;
}

/**
 * An alert webhook receiver that answers 500 to the first attempt of the first `failFirst`
 * notifications (by notificationId) and 200 to everything else.
 */
export async function alertReceiver(failFirst = 0): Promise<AlertReceiver> {
  const attempts: AlertReceiver['attempts'] = [];
  const failed = new Set<string>();
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (d: Buffer) => (text += d.toString()));
    req.on('end', () => {
      const body = JSON.parse(text) as Record<string, unknown>;
      const id = String(body.notificationId);
      const fail = failed.size < failFirst && !failed.has(id) && !attempts.some((a) => a.body.notificationId === id);
      if (fail) failed.add(id);
      const status = fail ? 500 : 200;
      attempts.push({ body, status, at: Date.now() });
      res.writeHead(status).end(fail ? 'try again' : 'ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    attempts,
    accepted: () => attempts.filter((a) => a.status < 300).map((a) => a.body),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
