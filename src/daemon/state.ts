/**
 * What the daemon knows right now, kept in memory so the health endpoints answer from it without
 * touching PostgreSQL or Intuit: a slow probe or a dead database never slows a health check.
 */
import type { ProbeResult } from '../probe/result.js';
import type { AlertState } from '../escalate/escalator.js';

export interface RealmHealth {
  readonly realmId: string;
  readonly last: ProbeResult;
  readonly lastSuccessAt: Date | undefined;
  /** When the daemon got the result (a probe ends up to PROBE_TIMEOUT_MS after its checkedAt). */
  readonly observedAt: Date;
}

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

  /** Realms the scheduler must probe, with when each became due a first result (start, or its connect). */
  readonly expected = new Map<string, Date>();
  /** Schedule period; staleness is judged in periods of it. */
  periodMs = 60_000;
  /** Added to the staleness bounds: a probe's result arrives up to its deadline after it started. */
  probeTimeoutMs = 10_000;

  /** The realms the last listing returned: each is expected to have results from now on. */
  expectRealms(ids: Iterable<string>, now = new Date()): void {
    const keep = new Set(ids);
    for (const id of this.expected.keys()) if (!keep.has(id)) this.expected.delete(id);
    for (const id of keep) if (!this.expected.has(id)) this.expected.set(id, now);
  }

  /**
   * Expected realms without a recent result: none for 3 schedule periods, or none within 2
   * periods of the realm becoming due (each bound plus one probe deadline, the longest a result
   * takes to arrive). A scheduler that ticks but skips realms (a stuck cycle, a failing listing, a
   * defect) shows here, where /health/live cannot see it.
   */
  stalledRealms(now = Date.now()): Array<{ realmId: string; sinceMs: number; lastResultAt: Date | undefined }> {
    const stalled: Array<{ realmId: string; sinceMs: number; lastResultAt: Date | undefined }> = [];
    for (const [realmId, due] of this.expected) {
      const last = this.realms.get(realmId)?.observedAt;
      const sinceMs = now - (last ?? due).getTime();
      if (sinceMs > (last ? 3 : 2) * this.periodMs + this.probeTimeoutMs) stalled.push({ realmId, sinceMs, lastResultAt: last });
    }
    return stalled;
  }

  observe(result: ProbeResult): void {
    const previous = this.realms.get(result.realmId);
    this.realms.set(result.realmId, {
      realmId: result.realmId,
      last: result,
      lastSuccessAt: result.connected ? result.checkedAt : previous?.lastSuccessAt,
      observedAt: new Date(),
    });
  }

  /** Keeps only the realms still being probed (a disconnected realm leaves the health report). */
  retainRealms(keep: ReadonlySet<string>): void {
    for (const id of this.realms.keys()) if (!keep.has(id)) this.realms.delete(id);
    this.expectRealms(keep);
  }

  /** Live: the scheduler ticks (or has only just started) and the event loop is responsive. */
  live(now = Date.now()): { ok: boolean; reason: string | undefined } {
    if (this.shuttingDown) return { ok: false, reason: 'shutting down' };
    const reference = this.lastTickAt?.getTime() ?? this.startedAt.getTime();
    if (now - reference > this.maxTickGapMs) return { ok: false, reason: `no scheduler tick for ${Math.round((now - reference) / 1000)} s` };
    if (this.eventLoopLagMs > 5000) return { ok: false, reason: `event loop blocked for ${Math.round(this.eventLoopLagMs)} ms` };
    return { ok: true, reason: undefined };
  }

  /** Ready: PostgreSQL reachable and the schema verified. */
  ready(): { ok: boolean; reason: string | undefined } {
    if (this.shuttingDown) return { ok: false, reason: 'shutting down' };
    if (!this.db.reachable) return { ok: false, reason: `PostgreSQL unreachable${this.db.error ? `: ${this.db.error}` : ''}` };
    if (!this.schema.verified) return { ok: false, reason: `schema not verified${this.schema.error ? `: ${this.schema.error}` : ''}` };
    return { ok: true, reason: undefined };
  }
}
