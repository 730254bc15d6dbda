/**
 * Work claimed from PostgreSQL: the realms this member probes, in batches of its concurrency, so
 * that members share the due realms by how fast each gets through them (adding a member adds
 * capacity; a member gone leaves its realms to the others once its leases expire). A finished
 * probe ends its lease with its result; the leases of probes finishing together end in one
 * statement (group commit). A lease found no longer this member's (it stopped heartbeating long
 * enough for another member to take the realm over) means the result is a duplicate: dropped.
 */
import { claimRealms, databaseNow, finishLeases, releaseLeases, syncLeases, type Lease } from '../db/fleet-queries.js';
import type { Pool } from '../db/pool.js';
import type { ProbeResult } from '../probe-result.js';

export interface ClaimOptions {
  readonly instanceId: string;
  /** Realms claimed at once (PROBE_CONCURRENCY). */
  readonly batch: number;
  /** A realm probed more recently than this is not due (most of a schedule period). */
  readonly dueAfterMs: number;
  /** How long a claim lasts without a heartbeat renewing it (FLEET_MEMBER_TTL_MS). */
  readonly leaseMs: number;
}

/** The realms of one cycle, claimed as the probe slots need them. */
export class ClaimQueue {
  private buffer: Lease[] = [];
  private claiming: Promise<void> | undefined;
  private exhausted = false;
  /** Every lease claimed this cycle. */
  readonly claimed: Lease[] = [];

  constructor(
    private readonly pool: Pool,
    private readonly opts: ClaimOptions,
    /** Claim free realms whether due or not (a cycle run on demand). */
    private readonly force: boolean,
  ) {}

  /** When this cycle began, on the database's clock: realms probed since are not claimed again by it. */
  private startedAt: Date | undefined;

  /** Gives every monitored realm a lease row (once per cycle), and notes when the cycle began. */
  async prepare(): Promise<void> {
    this.startedAt = await databaseNow(this.pool);
    await syncLeases(this.pool);
  }

  /** The next realm to probe, or undefined when no realm is due. Throws when PostgreSQL cannot be asked. */
  async next(): Promise<Lease | undefined> {
    while (this.buffer.length === 0 && !this.exhausted) {
      this.claiming ??= this.claim().finally(() => {
        this.claiming = undefined;
      });
      await this.claiming;
    }
    return this.buffer.shift();
  }

  /** The realms claimed and not handed out yet. */
  waiting(): string[] {
    return this.buffer.map((l) => l.realmId);
  }

  /** Hands back what was claimed and not started (a stop). */
  async releaseUnstarted(): Promise<void> {
    const left = this.buffer.splice(0);
    this.exhausted = true;
    await releaseLeases(this.pool, this.opts.instanceId, left);
  }

  private async claim(): Promise<void> {
    const leases = await claimRealms(this.pool, this.opts.instanceId, {
      limit: this.opts.batch,
      dueAfterMs: this.opts.dueAfterMs,
      leaseMs: this.opts.leaseMs,
      force: this.force,
      ...(this.force || this.startedAt === undefined ? {} : { probedBefore: this.startedAt }),
    });
    // A forced cycle claims every free realm once: a realm it finished is free again at once.
    const fresh = this.force ? leases.filter((l) => !this.claimed.some((c) => c.realmId === l.realmId)) : leases;
    if (fresh.length === 0) {
      this.exhausted = true;
      if (leases.length > 0) await releaseLeases(this.pool, this.opts.instanceId, leases);
      return;
    }
    this.claimed.push(...fresh);
    this.buffer.push(...fresh);
  }
}

/** Whether the lease was still this member's when its probe finished; `unknown`: PostgreSQL could not say. */
export type LeaseEnd = 'held' | 'lost' | 'unknown';

interface Finishing {
  readonly lease: Lease;
  readonly result: ProbeResult;
  resolve(end: LeaseEnd): void;
}

/** Ends leases with their results, those that finish together in one statement. */
export class LeaseFinisher {
  private queue: Finishing[] = [];
  private draining: Promise<void> | undefined;
  /** The last failure to end leases (PostgreSQL unreachable, ...), for the caller to report. */
  onError: (err: unknown) => void = () => undefined;

  constructor(
    private readonly pool: Pool,
    private readonly instanceId: string,
  ) {}

  finish(lease: Lease, result: ProbeResult): Promise<LeaseEnd> {
    return new Promise((resolve) => {
      this.queue.push({ lease, result, resolve });
      this.draining ??= this.drain().finally(() => {
        this.draining = undefined;
      });
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, 500);
      try {
        const held = await finishLeases(
          this.pool,
          this.instanceId,
          batch.map((f) => ({ lease: f.lease, connected: f.result.connected, result: f.result })),
        );
        for (const f of batch) f.resolve(held.has(f.lease.realmId) ? 'held' : 'lost');
      } catch (err) {
        // The result is kept (recorder: database or spool) and escalated; the lease expires by itself.
        this.onError(err);
        for (const f of batch) f.resolve('unknown');
      }
    }
  }
}
