/**
 * What the daemon knows right now, kept in memory so the health endpoints answer from it without
 * touching PostgreSQL or Intuit: a slow probe or a dead database never slows a health check.
 */
import type { ProbeResult } from '../probe-result.js';
import type { AlertState } from '../alert.js';
import type { SchemaWatchStatus } from '../schema-watch/watch.js';
import type { MemberRow } from '../db/fleet-queries.js';

export interface RealmHealth {
  readonly realmId: string;
  readonly last: ProbeResult;
  readonly lastSuccessAt: Date | undefined;
  /**
   * When the result was taken, on this host's clock (a result another member took is placed by
   * its age on the database's clock, so a member whose clock is off does not look stale).
   */
  readonly observedAt: number;
  /** The member that took it. */
  readonly probedBy?: string | undefined;
}

/** The fleet's members as this member last read them (fleet/membership.ts). */
export interface FleetStatus {
  readonly self: string;
  readonly members: ReadonlyArray<MemberRow & { readonly live: boolean }>;
  /** The live member with the smallest id: it runs the fleet-wide checks. */
  readonly leader: string | undefined;
  readonly versions: readonly string[];
  /** When the members were last read (this host's clock). */
  readonly readAt: Date;
}

/** A realm as the fleet's view (db/fleet-queries.ts fleetView) tells it. */
export interface FleetRealm {
  readonly realmId: string;
  readonly probedAgeMs: number | undefined;
  readonly probedBy: string | undefined;
  readonly lastSuccessAgeMs: number | undefined;
  /** Present when it changed since the previous view. */
  readonly last: ProbeResult | undefined;
}

/** How late a due scheduler tick may be before /health/live fails. */
export const TICK_OVERDUE_MS = 60_000;

export class HealthState {
  readonly startedAt = new Date();
  readonly realms = new Map<string, RealmHealth>();
  db: { reachable: boolean; checkedAt: Date | undefined; error: string | undefined } = { reachable: false, checkedAt: undefined, error: undefined };
  schema: { verified: boolean; error: string | undefined } = { verified: false, error: undefined };
  spoolPending = 0;
  lastTickAt: Date | undefined;
  lastTickFinishedAt: Date | undefined;
  /** Longest gap between two ticks that still counts as "ticking" (schedule period + deadline + slack). */
  maxTickGapMs = 5 * 60_000;
  /** Worst event-loop delay seen in the last heartbeat window. */
  eventLoopLagMs = 0;
  shuttingDown = false;
  openAlerts: () => readonly AlertState[] = () => [];
  /** The schema watch's last check (SCHEMA_WATCH_*); undefined while the watch is off or has not checked. */
  schemaWatch: SchemaWatchStatus | undefined;
  /** The fleet's members as last read (undefined until this daemon joined). */
  fleet: FleetStatus | undefined;
  /** When the fleet's view of the realms was last read (this host's clock); undefined: never. */
  viewReadAt: number | undefined;
  /** How old the view may be before other members' realms cannot be judged stale from it. */
  viewMaxAgeMs = 15_000;

  /** Realms the scheduler must probe, with when each became due a first result (start, or its connect). */
  readonly expected = new Map<string, Date>();
  /** A tick counts towards staleness once this long has passed since it: its probes had their deadline. */
  probeTimeoutMs = 10_000;
  /** Start times of the most recent scheduler ticks (run or skipped as an overlap), oldest first. */
  private readonly ticks: number[] = [];
  /** When the scheduler's next tick is due (node-cron's next run), for liveness on any schedule. */
  nextTickDueAt: Date | undefined;

  /** A scheduler tick at `at` (a cycle started, or skipped because one still runs). */
  noteTick(at: Date, nextDue: Date | undefined): void {
    this.lastTickAt = at;
    this.nextTickDueAt = nextDue;
    this.ticks.push(at.getTime());
    if (this.ticks.length > 8) this.ticks.shift();
  }

  /** The realms the last listing returned: each is expected to have results from now on. */
  expectRealms(ids: Iterable<string>, now = new Date()): void {
    const keep = new Set(ids);
    for (const id of this.expected.keys()) if (!keep.has(id)) this.expected.delete(id);
    for (const id of keep) if (!this.expected.has(id)) this.expected.set(id, now);
  }

  /**
   * Expected realms without a recent result: 3 scheduler ticks have come and had their deadline
   * since the realm's newest result, or 2 since it became due without any. Counted in ticks, not
   * clock time, so an irregular schedule (business hours, a quiet night) raises nothing while no
   * tick is due. A scheduler that ticks but skips realms (a stuck cycle, a failing listing, a
   * defect) shows here, where /health/live cannot see it.
   */
  stalledRealms(now = Date.now()): Array<{ realmId: string; sinceMs: number; lastResultAt: Date | undefined }> {
    // With other members live, their results reach this member only through the fleet's view: an
    // old view would make their realms look stalled. The view read's own failure is logged.
    const others = (this.fleet?.members ?? []).filter((m) => m.live && m.instanceId !== this.fleet?.self).length;
    if (others > 0 && (this.viewReadAt === undefined || now - this.viewReadAt > this.viewMaxAgeMs)) return [];
    const stalled: Array<{ realmId: string; sinceMs: number; lastResultAt: Date | undefined }> = [];
    const settled = this.ticks.filter((t) => t + this.probeTimeoutMs < now);
    for (const [realmId, due] of this.expected) {
      const seen = this.realms.get(realmId);
      const last = seen ? new Date(seen.observedAt) : undefined;
      const since = (last ?? due).getTime();
      const missed = settled.filter((t) => t > since).length;
      if (missed >= (last ? 3 : 2)) stalled.push({ realmId, sinceMs: now - since, lastResultAt: last });
    }
    return stalled;
  }

  /** A result this member took; `observedAt` is when it got it, on this host's clock (checkedAt is on the database's). */
  observe(result: ProbeResult, probedBy?: string, observedAt = Date.now()): void {
    const previous = this.realms.get(result.realmId);
    this.realms.set(result.realmId, {
      realmId: result.realmId,
      last: result,
      lastSuccessAt: result.connected ? result.checkedAt : previous?.lastSuccessAt,
      observedAt,
      probedBy,
    });
  }

  /**
   * The fleet's view of every monitored realm: each is expected, and a result another member took
   * replaces this member's older one. Ages are on the database's clock. Realms missing from the
   * view are not dropped here: FleetWatch forgets them once they stay missing.
   */
  mergeFleetView(realms: readonly FleetRealm[], now = Date.now()): void {
    for (const r of realms) {
      if (r.probedAgeMs === undefined) continue;
      const observedAt = now - r.probedAgeMs;
      const current = this.realms.get(r.realmId);
      // Within a second it is this member's own result, already observed with its exact instant.
      if (current && current.observedAt >= observedAt - 1000) continue;
      const last = r.last ?? current?.last;
      if (!last) continue;
      this.realms.set(r.realmId, {
        realmId: r.realmId,
        last,
        lastSuccessAt: r.lastSuccessAgeMs === undefined ? undefined : new Date(now - r.lastSuccessAgeMs),
        observedAt,
        probedBy: r.probedBy,
      });
    }
    for (const r of realms) if (!this.expected.has(r.realmId)) this.expected.set(r.realmId, new Date(now));
  }

  /** Keeps only the realms still being probed (a disconnected realm leaves the health report). */
  retainRealms(keep: ReadonlySet<string>): void {
    for (const id of this.realms.keys()) if (!keep.has(id)) this.realms.delete(id);
    this.expectRealms(keep);
  }

  /** Live: the scheduler ticks (or has only just started) and the event loop is responsive. */
  live(now = Date.now(), opts: { handingOver?: boolean } = {}): { ok: boolean; reason: string | undefined } {
    if (this.shuttingDown && !opts.handingOver) return { ok: false, reason: 'shutting down' };
    if (this.nextTickDueAt !== undefined) {
      // The tick node-cron was to fire next is overdue: the scheduler has stopped (any schedule).
      const overdue = now - this.nextTickDueAt.getTime();
      if (overdue > TICK_OVERDUE_MS) return { ok: false, reason: `the scheduler tick due at ${this.nextTickDueAt.toISOString()} has not come (${Math.round(overdue / 1000)} s late)` };
    } else {
      const reference = this.lastTickAt?.getTime() ?? this.startedAt.getTime();
      if (now - reference > this.maxTickGapMs) return { ok: false, reason: `no scheduler tick for ${Math.round((now - reference) / 1000)} s` };
    }
    if (this.eventLoopLagMs > 5000) return { ok: false, reason: `event loop blocked for ${Math.round(this.eventLoopLagMs)} ms` };
    return { ok: true, reason: undefined };
  }

  /** Ready: PostgreSQL reachable and the schema verified. */
  /**
   * `handingOver`: a PM2 cluster worker that is stopping while other workers keep the port: what a
   * poll asks is whether the service behind the port is up, and it is.
   */
  ready(opts: { handingOver?: boolean } = {}): { ok: boolean; reason: string | undefined } {
    if (this.shuttingDown && !opts.handingOver) return { ok: false, reason: 'shutting down' };
    if (!this.db.reachable) return { ok: false, reason: `PostgreSQL unreachable${this.db.error ? `: ${this.db.error}` : ''}` };
    if (!this.schema.verified) return { ok: false, reason: `schema not verified${this.schema.error ? `: ${this.schema.error}` : ''}` };
    return { ok: true, reason: undefined };
  }
}
