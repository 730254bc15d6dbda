/**
 * This daemon's membership of the fleet: registered at start (member id, host, pid, version,
 * health address), a heartbeat every FLEET_HEARTBEAT_MS that also renews its realm leases, and a
 * clean stop that hands its leases back and leaves at once. Each heartbeat also reads the members
 * (the database's clock says how old each heartbeat is), so that /health, /status and the
 * leader's checks (fleet/watch.ts) see the fleet as it is.
 */
import cluster from 'node:cluster';
import { hostname } from 'node:os';
import { deregisterMember, heartbeat, listMembers, registerMember, type MemberRow } from '../db/fleet-queries.js';
import type { FleetStatus } from '../health/state.js';
import type { Pool } from '../db/pool.js';
import { ExitCode, OperatorError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { pidAlive } from '../recorder/spool.js';

/**
 * A member is one process: `<FLEET_INSTANCE_ID>#<pid>`. The instance id names the slot it fills
 * (a host and port, a PM2 worker number), which outlives the process: `pm2 reload` starts the
 * slot's next process while the last one is still finishing, and a crash is followed by a restart.
 * Alerts about members are about slots (fleet/watch.ts); leases and spools belong to processes.
 */
export function memberIdOf(instanceId: string, pid = process.pid): string {
  return `${instanceId}#${pid}`;
}

/** The slot (FLEET_INSTANCE_ID) of a member id. */
export function slotOf(memberId: string): string {
  const at = memberId.lastIndexOf('#');
  return at < 0 ? memberId : memberId.slice(0, at);
}


/**
 * Another daemon running on this host under the same FLEET_INSTANCE_ID (a copied configuration): its
 * heartbeat keeps the slot live, so this one's death, or its own, would never be reported. The one
 * exception is PM2 cluster mode, where `pm2 reload` starts a worker's successor in the same slot
 * while the worker is still running.
 */
export class DuplicateInstanceError extends OperatorError {
  constructor(slot: string, other: MemberRow) {
    super(
      `another daemon is running as FLEET_INSTANCE_ID "${slot}" (pid ${other.pid} on ${other.host}, heartbeat ${Math.round(other.heartbeatAgeMs)} ms ago): ` +
        'give each daemon sharing this database its own FLEET_INSTANCE_ID (the default, <hostname>:<PORT>, differs when each has its own PORT), or stop the other one',
      ExitCode.configInvalid,
    );
    this.name = 'DuplicateInstanceError';
  }
}

/** A host clock this far from the database's is logged (`fleet.clock_skew`). */
export const CLOCK_SKEW_WARN_MS = 2000;

/**
 * The offset of the database's clock from this host's, from round trips that read the database's
 * clock_timestamp(): each one says the offset lies within [db - answeredAt, db - sentAt] (the
 * database read its clock between sending and answering), an interval as wide as the round trip.
 * The estimate is the middle of where the last SAMPLES intervals overlap, so one slow round trip
 * (a loaded host, a heartbeat waiting on a row lock) does not move it. Intervals that do not overlap
 * mean a clock was stepped (NTP): the older ones are dropped.
 */
export class ClockOffset {
  static readonly SAMPLES = 8;
  private intervals: Array<{ readonly low: number; readonly high: number }> = [];
  offsetMs = 0;

  sample(dbAt: number, sentAt: number, answeredAt: number): void {
    const next = { low: dbAt - answeredAt, high: dbAt - sentAt };
    this.intervals = [...this.intervals, next].slice(-ClockOffset.SAMPLES);
    // The newest interval first; older ones narrow it while they overlap what is left.
    let { low, high } = next;
    for (let i = this.intervals.length - 2; i >= 0; i--) {
      const older = this.intervals[i] as { low: number; high: number };
      if (older.high < low || older.low > high) {
        this.intervals = this.intervals.slice(i + 1);
        break;
      }
      low = Math.max(low, older.low);
      high = Math.min(high, older.high);
    }
    this.offsetMs = (low + high) / 2;
  }
}

export interface MembershipOptions {
  /** This process's member id (memberIdOf). */
  readonly instanceId: string;
  readonly version: string;
  readonly heartbeatMs: number;
  readonly ttlMs: number;
}


export class Membership {
  status: FleetStatus | undefined;
  private readonly repeats = new RepeatLimiter();
  private joined = false;
  /** The registration at start failed; each heartbeat tries it again. */
  private pending = false;
  private healthAddress: string | undefined;
  /** When (performance.now()) this member's heartbeats began to succeed without a gap of a TTL; undefined while they fail. */
  private beatingSince: number | undefined;
  /** When (performance.now()) its last heartbeat succeeded. */
  private lastBeatAt: number | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly log: Logger,
    private readonly opts: MembershipOptions,
  ) {}

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /**
   * Registers this process (at start; on failure, at a later heartbeat). Another live daemon of
   * this slot on this host refuses the start (DuplicateInstanceError, exit 78).
   */
  async join(healthAddress: string | undefined): Promise<void> {
    this.healthAddress = healthAddress;
    try {
      await this.register();
    } catch (err) {
      if (err instanceof DuplicateInstanceError) throw err;
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
    await this.refuseDuplicate();
    await registerMember(this.pool, { instanceId: this.opts.instanceId, host: hostname(), pid: process.pid, version: this.opts.version, healthAddress: this.healthAddress });
    this.joined = true;
    this.noteBeat(true);
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
        const admitted = this.repeats.admit('heartbeat');
        if (admitted && err instanceof DuplicateInstanceError) this.log.error({ event: LogEvent.fleetHeartbeatFailed, instance: this.opts.instanceId, err, ...admitted }, `cannot register with the fleet: ${err.message}`);
        else if (admitted) this.log.warn({ event: LogEvent.fleetHeartbeatFailed, instance: this.opts.instanceId, err, ...admitted }, 'cannot register with the fleet yet (repeats are counted, not logged, for a minute)');
        return false;
      }
    }
    if (!this.joined) return false;
    try {
      const sentAt = Date.now();
      const { registered, now: dbNow } = await heartbeat(this.pool, this.opts.instanceId, this.opts.ttlMs, this.probing());
      this.noteClock(dbNow, sentAt, Date.now());
      if (!registered) {
        // Retired while this process was stopped (SIGSTOP, a VM paused): it joins again.
        await registerMember(this.pool, { instanceId: this.opts.instanceId, host: hostname(), pid: process.pid, version: this.opts.version, healthAddress: this.healthAddress });
        this.log.warn({ event: LogEvent.fleetRejoined, instance: this.opts.instanceId }, `this member's registration was gone (retired, or removed while it was not heartbeating); registered again as ${this.opts.instanceId}`);
      }
      this.noteBeat(true);
      await this.readMembers();
      this.repeats.clear('heartbeat');
      return true;
    } catch (err) {
      this.noteBeat(false);
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

  /**
   * Whether this member may speak for the fleet: it is the leader (the live member with the
   * smallest id) and has heartbeaten without a break for FLEET_MEMBER_TTL_MS. A member that has
   * just started, or just regained PostgreSQL after losing it (an outage, a pause, a blocked
   * round), sees every other member's heartbeat as old and the fleet's view without what the others
   * did meanwhile; judging members down or realms stalled from that would page falsely. One TTL
   * later, every member that can reach PostgreSQL has heartbeaten and put its results back.
   */
  isLeader(now = performance.now()): boolean {
    return this.status?.leader === this.opts.instanceId && this.beatingSince !== undefined && now - this.beatingSince >= this.opts.ttlMs;
  }

  /** A heartbeat's outcome: a failure, or a gap longer than the TTL since the last success, starts the settling again. */
  private noteBeat(ok: boolean, now = performance.now()): void {
    if (!ok) {
      this.beatingSince = undefined;
      return;
    }
    if (this.beatingSince === undefined || this.lastBeatAt === undefined || now - this.lastBeatAt > this.opts.ttlMs) this.beatingSince = now;
    this.lastBeatAt = now;
  }

  /**
   * How far this host's clock is behind the database's (ClockOffset), measured at each heartbeat.
   * Results are stamped on the database's clock with it, so a member whose clock is off does not
   * write history out of order; more than CLOCK_SKEW_WARN_MS off is logged (`fleet.clock_skew`)
   * once a minute.
   */
  private readonly clock = new ClockOffset();

  get clockOffsetMs(): number {
    return this.clock.offsetMs;
  }

  /** The realms whose leases this member is working on now (the probe cycle's), renewed by each heartbeat. */
  probing: () => readonly string[] = () => [];

  private noteClock(dbNow: Date, sentAt: number, answeredAt: number): void {
    this.clock.sample(dbNow.getTime(), sentAt, answeredAt);
    if (Math.abs(this.clockOffsetMs) <= CLOCK_SKEW_WARN_MS) {
      this.repeats.clear('clock');
      return;
    }
    const admitted = this.repeats.admit('clock');
    if (admitted) {
      this.log.warn(
        { event: LogEvent.fleetClockSkew, instance: this.opts.instanceId, offsetMs: Math.round(this.clockOffsetMs), ...admitted },
        `this host's clock is ${Math.round(Math.abs(this.clockOffsetMs) / 1000)} s ${this.clockOffsetMs > 0 ? 'behind' : 'ahead of'} PostgreSQL's: leases use the database's clock and results are stamped with it, but fix the host's time (NTP) (repeats are counted, not logged, for a minute)`,
      );
    }
  }

  /** Refuses to register while another live process of this slot runs on this host (see DuplicateInstanceError). */
  private async refuseDuplicate(): Promise<void> {
    const slot = slotOf(this.opts.instanceId);
    const host = hostname();
    const members = await listMembers(this.pool);
    // The very same member id live on another host: one FLEET_INSTANCE_ID given to daemons in
    // containers, each pid 1. Registering would merge the two into one row, whose heartbeat would
    // keep a dead one's leases alive.
    const twin = members.find((m) => m.instanceId === this.opts.instanceId && m.host !== host && m.heartbeatAgeMs < this.opts.ttlMs);
    if (twin) throw new DuplicateInstanceError(slot, twin);
    // Under PM2 cluster mode a reload overlaps a worker and its successor in one slot.
    if (cluster.isWorker) return;
    const other = members.find(
      (m) => m.instanceId !== this.opts.instanceId && slotOf(m.instanceId) === slot && m.host === host && m.heartbeatAgeMs < this.opts.ttlMs && m.pid !== process.pid && pidAlive(m.pid),
    );
    if (other) throw new DuplicateInstanceError(slot, other);
  }
}
