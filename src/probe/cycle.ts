/**
 * One probe cycle of this member: due realms claimed from PostgreSQL in batches of
 * PROBE_CONCURRENCY, each probed (Prober: every probe ends as a result), its lease ended with the
 * result, then handed on: to the health view, the metrics, escalation and the recorder. A probe
 * slot moves on to its next realm as soon as its result is handed to the recorder; the cycle ends
 * only when every result is in the database or the spool, and the first failure to record (fatal:
 * neither could take it) stops the cycle and is rethrown.
 *
 * When PostgreSQL cannot be asked for work, no coordination is possible: this member probes its
 * share (CycleHooks.offlineShare: the realms divided among the members it last saw, alike on each of
 * them), so that their results are spooled and the database alert is raised, and coordination
 * resumes once PostgreSQL answers.
 */
import { isDatabaseUnavailable, isSchemaGap, isSqlError, isTransientSqlError } from '../db/pool.js';
import type { Lease } from '../db/fleet-queries.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import type { ProbeResult } from '../probe-result.js';
import { RealmDisconnectedError } from '../quickbooks/token-store.js';
import { ClaimQueue, LeaseFinisher, type ClaimOptions } from './leases.js';
import type { Prober, ProbeOutcome } from './prober.js';

export interface CycleHooks {
  /** A result this member keeps (its lease held, or PostgreSQL could not say): view, metrics, escalation. */
  observe(outcome: ProbeOutcome): void;
  /** Durable: in the database or the spool. Rejects only when neither could take it (fatal). */
  record(result: ProbeResult): Promise<void>;
  /**
   * What this member probes while PostgreSQL cannot hand out work: its share of the realms it knows
   * of, less those whose last result is not due again yet.
   */
  offlineShare(): OfflineShare;
  /** A realm disconnected while it was probed. */
  forget(realmId: string): void;
  /** A database failure while coordinating (claiming, ending leases): counted towards the database alert. */
  databaseFailed(err: unknown): void;
  shuttingDown(): boolean;
}

/** A member's share of the realms without coordination, and what it was divided from (for the log). */
export interface OfflineShare {
  /** Due now, in this member's share. */
  readonly realms: readonly string[];
  /** Realms this member knows of. */
  readonly known: number;
  /** Members they were divided among (1: this one alone). */
  readonly members: number;
}

export interface CycleSummary {
  readonly realms: number;
  readonly pass: number;
  readonly warn: number;
  readonly fail: number;
  /** Results dropped because the lease had been taken over meanwhile. */
  readonly lost: number;
  /** Probed without coordination (PostgreSQL could not hand out work). */
  readonly uncoordinated: boolean;
}

export class ProbeCycle {
  private readonly finisher: LeaseFinisher;
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly pool: ConstructorParameters<typeof ClaimQueue>[0],
    private readonly prober: Prober,
    private readonly hooks: CycleHooks,
    private readonly log: Logger,
    private readonly opts: ClaimOptions,
  ) {
    this.finisher = new LeaseFinisher(pool, opts.instanceId);
    this.finisher.onError = (err) => {
      const admitted = this.repeats.admit('finish');
      if (admitted) this.log.warn({ event: LogEvent.dbWriteFailed, what: 'realm leases', err, ...admitted }, 'cannot end realm leases in PostgreSQL; the results are kept (database or spool) and the leases expire by themselves (repeats are counted, not logged, for a minute)');
      this.hooks.databaseFailed(err);
    };
  }

  /** Cycles in a row whose claims failed with a transient error (a timeout, a deadlock). */
  private transientClaimFailures = 0;

  /** Realms being probed now. */
  private readonly working = new Set<string>();
  /** The claims of the cycle running, some of them not started yet. */
  private queue: ClaimQueue | undefined;

  /**
   * The realms whose leases this member holds now, the heartbeat renews: those being probed and
   * those claimed that wait for a free probe slot (a wait as long as a probe's deadline, which may
   * outlast FLEET_MEMBER_TTL_MS).
   */
  probing(): string[] {
    return [...new Set([...this.working, ...(this.queue?.waiting() ?? [])])];
  }


  async run(force = false): Promise<CycleSummary> {
    const queue = new ClaimQueue(this.pool, this.opts, force);
    this.queue = queue;
    const counts = { pass: 0, warn: 0, fail: 0, lost: 0 };
    const recording: Array<Promise<void>> = [];
    let recordFailure: { err: unknown } | undefined;
    let uncoordinated = false;
    let probed = 0;

    const handle = async (realmId: string, lease: Lease | undefined): Promise<void> => {
      let outcome: ProbeOutcome;
      try {
        outcome = await this.prober.probe(realmId);
      } catch (err) {
        // Every other failure is a result (Prober.probe); only a realm disconnected meanwhile is not.
        if (!(err instanceof RealmDisconnectedError)) throw err;
        this.hooks.forget(realmId);
        return;
      }
      probed++;
      if (lease) {
        const end = await this.finisher.finish(lease, outcome.result);
        if (end === 'lost') {
          counts.lost++;
          this.log.warn(
            { event: LogEvent.leaseLost, realmId, instance: this.opts.instanceId, probeId: outcome.result.probeId },
            `the lease on realm ${realmId} expired before its probe finished (this member did not heartbeat for FLEET_MEMBER_TTL_MS: paused, or cut off from PostgreSQL) and another member has taken it over; this result is dropped, that member's counts`,
          );
          return;
        }
      }
      counts[outcome.result.status]++;
      this.hooks.observe(outcome);
      recording.push(
        this.hooks.record(outcome.result).catch((err: unknown) => {
          recordFailure ??= { err };
        }),
      );
    };

    const worker = async (): Promise<void> => {
      for (;;) {
        if (this.hooks.shuttingDown() || recordFailure) return;
        const lease = await queue.next();
        if (!lease) return;
        this.working.add(lease.realmId);
        try {
          await handle(lease.realmId, lease);
        } finally {
          this.working.delete(lease.realmId);
        }
      }
    };

    let coordinationFailure: unknown;
    try {
      await queue.prepare();
      // Every slot is let finish its realm before a failure is looked at, so none is left running.
      const slots = await Promise.allSettled(Array.from({ length: this.opts.batch }, worker));
      const failed = slots.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
      this.repeats.clear('claim');
      this.transientClaimFailures = 0;
    } catch (err) {
      // Any refusal of PostgreSQL's (unreachable, read-only, a missing table, a timeout) ends coordination for this cycle.
      if (!isDatabaseUnavailable(err) && !isSchemaGap(err) && !isSqlError(err)) throw err;
      coordinationFailure = err;
    } finally {
      if (this.hooks.shuttingDown()) await queue.releaseUnstarted().catch((err: unknown) => this.finisher.onError(err));
    }
    if (coordinationFailure !== undefined && isTransientSqlError(coordinationFailure) && ++this.transientClaimFailures === 1) {
      // A claim that timed out or lost a deadlock once: the other members claim on, and probing
      // this member's share beside them would probe realms twice. What is left is claimed next
      // time; a second failure in a row is no passing race, and then the share is probed.
      const admitted = this.repeats.admit('claim');
      if (admitted) {
        this.log.warn(
          { event: LogEvent.leaseClaimFailed, err: coordinationFailure, instance: this.opts.instanceId, ...admitted },
          'claiming realms from PostgreSQL timed out or lost a deadlock; the realms not claimed are left to the other members and the next cycle (a second failure in a row probes this member\'s share without coordination) (repeats are counted, not logged, for a minute)',
        );
      }
      this.hooks.databaseFailed(coordinationFailure);
    } else if (coordinationFailure !== undefined) {
      // PostgreSQL cannot hand out work: this member's share is probed without coordination (less
      // what this cycle claimed before the failure).
      uncoordinated = true;
      const started = new Set(queue.claimed.map((l) => l.realmId));
      const share = this.hooks.offlineShare();
      const rest = share.realms.filter((id) => !started.has(id));
      const admitted = this.repeats.admit('claim');
      if (admitted) {
        this.log.warn(
          { event: LogEvent.leaseClaimFailed, err: coordinationFailure, realms: rest.length, known: share.known, members: share.members, instance: this.opts.instanceId, ...admitted },
          `cannot claim realms from PostgreSQL; probing this member's share of the ${share.known} realm(s) it knows of, divided among ${share.members} member(s) (${rest.length} due now), without coordination, until it answers (repeats are counted, not logged, for a minute)`,
        );
      }
      this.hooks.databaseFailed(coordinationFailure);
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(this.opts.batch, rest.length) }, async () => {
          while (next < rest.length && !this.hooks.shuttingDown() && !recordFailure) await handle(rest[next++] as string, undefined);
        }),
      );
    }
    await Promise.all(recording);
    if (recordFailure) throw recordFailure.err;
    return { realms: probed, ...counts, uncoordinated };
  }
}
