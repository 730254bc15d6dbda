/**
 * This daemon's membership of the fleet: registered at start (instance id, host, pid, version,
 * health address), a heartbeat every FLEET_HEARTBEAT_MS that also renews its realm leases, and a
 * clean stop that hands its leases back and leaves at once. Each heartbeat also reads the members
 * (the database's clock says how old each heartbeat is), so that /health, /status and the
 * leader's checks (fleet/watch.ts) see the fleet as it is.
 */
import { hostname } from 'node:os';
import { deregisterMember, heartbeat, listMembers, memberById, registerMember, type MemberRow } from '../db/fleet-queries.js';
import type { Pool } from '../db/pool.js';
import { ExitCode, OperatorError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';

export interface MembershipOptions {
  readonly instanceId: string;
  readonly version: string;
  readonly heartbeatMs: number;
  readonly ttlMs: number;
}

export interface FleetStatus {
  readonly self: string;
  readonly members: ReadonlyArray<MemberRow & { readonly live: boolean }>;
  /** The live member with the smallest id: it runs the fleet-wide checks. */
  readonly leader: string | undefined;
  readonly versions: readonly string[];
  /** When the members were last read (this host's clock). */
  readonly readAt: Date;
}

/** Whether a process with this pid runs on this host (a registration left by a crash is not a live duplicate). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // ESRCH: no such process. EPERM: it exists (another user's).
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class Membership {
  status: FleetStatus | undefined;
  private readonly repeats = new RepeatLimiter();
  private joined = false;
  /** The registration at start failed; each heartbeat tries it again. */
  private pending = false;
  private healthAddress: string | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly opts: MembershipOptions,
  ) {}

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /**
   * Registers this daemon. Another live daemon registered under the same FLEET_INSTANCE_ID is a
   * configuration error (exit 78): two members with one id would renew each other's leases.
   */
  async join(healthAddress: string | undefined): Promise<void> {
    this.healthAddress = healthAddress;
    try {
      await this.register();
    } catch (err) {
      if (err instanceof OperatorError) throw err;
      // PostgreSQL answers but refuses the write (read-only, a lock): the monitor starts anyway,
      // uncoordinated, and registers at a later heartbeat; exiting would silence it.
      this.log.warn(
        { event: LogEvent.fleetHeartbeatFailed, instance: this.opts.instanceId, err },
        `cannot register with the fleet yet; probing without coordination until PostgreSQL takes the registration (tried again every ${this.opts.heartbeatMs} ms)`,
      );
      this.pending = true;
    }
  }

  private async register(): Promise<void> {
    const existing = await memberById(this.pool, this.opts.instanceId);
    if (existing && existing.heartbeatAgeMs < this.opts.ttlMs) {
      const sameHost = existing.host === hostname();
      const duplicate = sameHost ? existing.pid !== process.pid && processAlive(existing.pid) : true;
      if (duplicate) {
        throw new OperatorError(
          `another daemon is running as FLEET_INSTANCE_ID "${this.opts.instanceId}" (pid ${existing.pid} on ${existing.host}, heartbeat ${Math.round(existing.heartbeatAgeMs)} ms ago): ` +
            'give each daemon sharing this database its own FLEET_INSTANCE_ID (the default, <hostname>:<PORT>, differs when each has its own PORT)',
          ExitCode.configInvalid,
        );
      }
    }
    await registerMember(this.pool, { instanceId: this.opts.instanceId, host: hostname(), pid: process.pid, version: this.opts.version, healthAddress: this.healthAddress });
    this.joined = true;
    await this.readMembers();
    const others = (this.status?.members ?? []).filter((m) => m.instanceId !== this.opts.instanceId);
    this.log.info(
      { event: LogEvent.fleetJoined, instance: this.opts.instanceId, members: others.length + 1, live: (this.status?.members ?? []).filter((m) => m.live).length },
      `joined the fleet as ${this.opts.instanceId} (${others.length} other member(s) registered)`,
    );
  }

  /** One heartbeat: registration and leases renewed, members read. Never throws (a failure is logged and retried next time). */
  async beat(): Promise<boolean> {
    if (this.pending) {
      try {
        await this.register();
        this.pending = false;
      } catch (err) {
        if (err instanceof OperatorError) throw err;
        const admitted = this.repeats.admit('heartbeat');
        if (admitted) this.log.warn({ event: LogEvent.fleetHeartbeatFailed, instance: this.opts.instanceId, err, ...admitted }, 'cannot register with the fleet yet (repeats are counted, not logged, for a minute)');
        return false;
      }
    }
    if (!this.joined) return false;
    try {
      const { registered } = await heartbeat(this.pool, this.opts.instanceId, this.opts.ttlMs);
      if (!registered) {
        // Retired while this process was stopped (SIGSTOP, a VM paused): it joins again.
        await registerMember(this.pool, { instanceId: this.opts.instanceId, host: hostname(), pid: process.pid, version: this.opts.version, healthAddress: this.healthAddress });
        this.log.warn({ event: LogEvent.fleetRejoined, instance: this.opts.instanceId }, `this member's registration was gone (retired, or removed while it was not heartbeating); registered again as ${this.opts.instanceId}`);
      }
      await this.readMembers();
      this.repeats.clear('heartbeat');
      return true;
    } catch (err) {
      const admitted = this.repeats.admit('heartbeat');
      if (admitted) {
        this.log.warn(
          { event: LogEvent.fleetHeartbeatFailed, instance: this.opts.instanceId, err, ...admitted },
          `fleet heartbeat failed: after ${this.opts.ttlMs} ms without one, the other members take this member's realms over (repeats are counted, not logged, for a minute)`,
        );
      }
      return false;
    }
  }

  /** A clean stop: leases handed back and the registration removed at once. */
  async leave(): Promise<void> {
    if (!this.joined) return;
    this.joined = false;
    try {
      const released = await deregisterMember(this.pool, this.opts.instanceId);
      this.log.info({ event: LogEvent.fleetLeft, instance: this.opts.instanceId, released }, `left the fleet; ${released} lease(s) handed back`);
    } catch (err) {
      this.log.warn(
        { event: LogEvent.fleetLeaveFailed, instance: this.opts.instanceId, err },
        `could not leave the fleet cleanly: the other members take this member's realms over after FLEET_MEMBER_TTL_MS (${this.opts.ttlMs} ms), and report it down until it is back or retired`,
      );
    }
  }

  private async readMembers(): Promise<void> {
    const rows = await listMembers(this.pool);
    const members = rows.map((m) => ({ ...m, live: m.heartbeatAgeMs < this.opts.ttlMs }));
    const live = members.filter((m) => m.live).map((m) => m.instanceId).sort();
    this.status = {
      self: this.opts.instanceId,
      members,
      leader: live[0],
      versions: [...new Set(members.filter((m) => m.live).map((m) => m.version))].sort(),
      readAt: new Date(),
    };
  }

  isLeader(): boolean {
    return this.status?.leader === this.opts.instanceId;
  }
}
