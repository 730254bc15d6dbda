/**
 * The fleet, every FLEET_HEARTBEAT_MS: this member's heartbeat (membership.ts), the fleet's view
 * of every realm (who probed it, how long ago on the database's clock, its last result) and its
 * open alerts read into memory, so that every member's /health, /metrics and staleness checks
 * speak for the whole fleet. The leader (the live member with the smallest id) also watches the
 * others: a member whose heartbeat is older than FLEET_MEMBER_TTL_MS raises one
 * `monitor_instance_down` (warning while the others cover every realm, critical once a realm went
 * unprobed beyond staleness), resolved when it heartbeats again or is retired.
 *
 * The heartbeat never waits for the view: a view read held up (a lock on the token table, a slow
 * PostgreSQL) must not let this member's leases expire while it is alive. Results this member kept
 * without ending a lease with them (probed while PostgreSQL was away) are put into the view when it
 * answers again, so that no member judges those realms stalled.
 */
import { deregisterMember, fleetView, publishResults, type MemberRow, type RealmView, type UnpublishedResult } from '../db/fleet-queries.js';
import type { Pool } from '../db/pool.js';
import type { Escalator } from '../escalate/escalator.js';
import { instanceOfSubject, SystemSubject } from '../escalate/transition.js';
import type { FleetRealm, HealthState } from '../health/state.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { reviveProbeResult } from '../probe-result.js';
import { slotOf, type Membership } from './membership.js';

export class FleetWatch {
  private timer: NodeJS.Timeout | undefined;
  /** The heartbeat in flight. */
  private beating: Promise<boolean> | undefined;
  /** The view and the leader's checks in flight (after a heartbeat). */
  private running: Promise<void> | undefined;
  /** The database's clock at the previous view: results probed since are read again. */
  private viewSince: Date | undefined;
  private readonly down = new Set<string>();
  /** Realms missing from consecutive views (removed or disconnected), by how many views. */
  private readonly absent = new Map<string, number>();
  /** A realm that left the token table (or was disconnected): forgotten by the daemon. */
  onGone: (realmId: string) => void = () => undefined;
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly pool: Pool,
    private readonly membership: Membership,
    private readonly escalator: Escalator,
    private readonly state: HealthState,
    private readonly log: Logger,
    private readonly opts: { readonly heartbeatMs: number; readonly ttlMs: number },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.opts.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([this.beating, this.running]);
  }

  /**
   * One round (also run once at start, before the first cycle): a heartbeat, then, unless the
   * previous one is still running, the view and the leader's checks. Never throws.
   */
  tick(): Promise<void> {
    this.beating ??= this.membership
      .beat()
      .then((ok) => {
        this.state.fleet = this.membership.status;
        return ok;
      })
      .finally(() => {
        this.beating = undefined;
      });
    const beat = this.beating;
    this.running ??= beat
      .then((ok) => (ok ? this.round() : undefined))
      .catch((err: unknown) => {
        this.log.error({ event: LogEvent.dbReadFailed, what: 'fleet round', err }, 'a fleet round failed unexpectedly; the next heartbeat runs another');
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private async round(): Promise<void> {
    try {
      await this.readView();
      await this.escalator.load();
      this.repeats.clear('view');
    } catch (err) {
      const admitted = this.repeats.admit('view');
      if (admitted) this.log.warn({ event: LogEvent.dbReadFailed, what: 'fleet view', err, ...admitted }, "cannot read the fleet's view of the realms; /health shows this member's own results meanwhile (repeats are counted, not logged, for a minute)");
      return;
    }
    if (this.membership.isLeader()) await this.watchMembers();
  }

  private async readView(): Promise<void> {
    const view = await fleetView(this.pool, this.viewSince);
    // Two seconds of overlap: a result committed just before the previous read is not missed.
    this.viewSince = new Date(view.now.getTime() - 2000);
    await this.publishOwn(view.realms);
    const realms: FleetRealm[] = view.realms.map((r) => ({
      realmId: r.realmId,
      probedAgeMs: r.probedAgeMs,
      probedBy: r.probedBy,
      lastSuccessAgeMs: r.lastSuccessAgeMs,
      last: r.lastResult === undefined ? undefined : reviveProbeResult(r.lastResult),
    }));
    const listed = new Set(realms.map((r) => r.realmId));
    const known = new Set([...this.state.realms.keys(), ...this.state.expected.keys(), ...this.escalator.realmsWithState(), ...this.absent.keys()]);
    this.state.mergeFleetView(realms);
    this.state.viewReadAt = Date.now();
    // Missing from two views in a row: a realm connected a moment ago is in the next view anyway.
    for (const id of known) {
      if (listed.has(id)) {
        this.absent.delete(id);
        continue;
      }
      const times = (this.absent.get(id) ?? 0) + 1;
      if (times < 2) {
        this.absent.set(id, times);
        continue;
      }
      this.absent.delete(id);
      this.onGone(id);
    }
  }

  /**
   * This member's own results that the view does not hold (taken while PostgreSQL was away, or
   * whose lease could not be ended) are written into it, placed by their age: otherwise the leader
   * would see realms this member kept probing through an outage as unprobed since, and page.
   */
  private async publishOwn(realms: readonly RealmView[]): Promise<void> {
    const self = this.membership.instanceId;
    const now = Date.now();
    const unpublished: UnpublishedResult[] = [];
    for (const r of realms) {
      const mine = this.state.realms.get(r.realmId);
      if (!mine || mine.probedBy !== self) continue;
      // Within a second it is the result the lease was ended with (probed_at is the probe's end).
      if (r.probedAgeMs !== undefined && mine.observedAt <= now - r.probedAgeMs + 1000) continue;
      unpublished.push({ realmId: r.realmId, ageMs: Math.max(0, now - mine.observedAt), connected: mine.last.connected, result: mine.last });
    }
    if (unpublished.length === 0) return;
    try {
      const published = await publishResults(this.pool, self, unpublished);
      this.repeats.clear('publish');
      this.log.debug({ instance: self, published, kept: unpublished.length }, `${published} result(s) this member took without coordination put into the fleet's view`);
    } catch (err) {
      const admitted = this.repeats.admit('publish');
      if (admitted) this.log.warn({ event: LogEvent.dbWriteFailed, what: 'fleet view results', realms: unpublished.length, err, ...admitted }, "cannot put this member's results taken without coordination into the fleet's view; tried again at the next heartbeat (repeats are counted, not logged, for a minute)");
    }
  }

  /**
   * The leader's duty, per slot (FLEET_INSTANCE_ID: a member id without its pid): a slot none of
   * whose processes heartbeats raises `monitor_instance_down`; a slot live again (restarted,
   * reloaded) resolves it, and the dead process rows it left are removed; a slot whose rows are all
   * gone (retired, or stopped cleanly) resolves it too.
   */
  private async watchMembers(): Promise<void> {
    const status = this.membership.status;
    if (!status) return;
    const stalled = this.state.stalledRealms().length;
    const liveCount = status.members.filter((m) => m.live).length;
    const slots = new Map<string, Array<MemberRow & { live: boolean }>>();
    for (const m of status.members) {
      const slot = slotOf(m.instanceId);
      slots.set(slot, [...(slots.get(slot) ?? []), m]);
    }
    for (const [slot, members] of slots) {
      const subject = SystemSubject.instance(slot);
      const live = members.filter((m) => m.live);
      const hosts = [...new Set(live.map((m) => m.host))];
      if (hosts.length > 1) {
        // One slot on two hosts: one host's death would be hidden by the other's heartbeat.
        const admitted = this.repeats.admit(`slot-hosts:${slot}`);
        if (admitted) {
          this.log.warn(
            { event: LogEvent.fleetMemberDown, instance: slot, hosts, ...admitted },
            `FLEET_INSTANCE_ID ${slot} is in use on ${hosts.join(' and ')}: give each daemon its own (the default, <hostname>:<PORT>, is), or a dead one will not be reported`,
          );
        }
      }
      const dead = members.filter((m) => !m.live);
      if (live.length > 0) {
        // A process of this slot runs: the dead ones were replaced (a crash and a restart, a reload).
        for (const d of dead) await this.removeReplaced(d, live[0] as MemberRow);
        if (this.down.delete(slot) || this.escalator.isOpen(subject, 'monitor_instance_down')) {
          this.log.info({ event: LogEvent.fleetMemberBack, instance: slot, member: live[0]?.instanceId }, `fleet member ${slot} heartbeats again (${live[0]?.instanceId})`);
          this.escalator.succeed(subject, 'monitor_instance_down');
        }
        continue;
      }
      const last = [...dead].sort((a, b) => a.heartbeatAgeMs - b.heartbeatAgeMs)[0] as MemberRow;
      const seconds = Math.round(last.heartbeatAgeMs / 1000);
      if (!this.down.has(slot)) {
        this.down.add(slot);
        this.log.warn(
          { event: LogEvent.fleetMemberDown, instance: slot, member: last.instanceId, host: last.host, pid: last.pid, heartbeatAgeMs: Math.round(last.heartbeatAgeMs) },
          `fleet member ${slot} (pid ${last.pid} on ${last.host}) has not heartbeaten for ${seconds} s; its realms are taken over`,
        );
      }
      this.escalator.fail(subject, 'monitor_instance_down', {
        severity: stalled > 0 ? 'critical' : 'warning',
        immediate: true,
        subject: `member ${slot}`,
        summary:
          `fleet member ${slot} (pid ${last.pid} on ${last.host}, version ${last.version}) stopped heartbeating ${seconds} s ago; ` +
          (stalled > 0
            ? `${stalled} realm(s) went unprobed beyond staleness although ${liveCount} member(s) are live: look at their scheduler.overlap and lease lines, or add a member`
            : `the ${liveCount} live member(s) cover its realms`) +
          `. Restart it, or if it is gone for good: \`qbhealth fleet retire ${last.instanceId}\``,
      });
    }
    // Alerts about slots no longer registered at all: retired, or stopped cleanly since.
    for (const a of this.escalator.openAlerts()) {
      const slot = instanceOfSubject(a.realmId);
      if (slot === undefined || slots.has(slot)) continue;
      this.down.delete(slot);
      this.log.info({ event: LogEvent.fleetMemberBack, instance: slot, retired: true }, `fleet member ${slot} is no longer registered (retired, or stopped cleanly)`);
      this.escalator.resolveRealm(a.realmId, `member ${slot} was retired or stopped cleanly`);
    }
    await this.escalator.persist();
  }

  /** A dead process whose slot runs again: its row goes (its leases expired long ago). */
  private async removeReplaced(dead: MemberRow, successor: MemberRow): Promise<void> {
    try {
      await deregisterMember(this.pool, dead.instanceId);
      this.log.info(
        { event: LogEvent.fleetMemberBack, instance: slotOf(dead.instanceId), member: dead.instanceId, replacedBy: successor.instanceId },
        `fleet member ${dead.instanceId} stopped without leaving and was replaced by ${successor.instanceId}; its registration is removed`,
      );
    } catch (err) {
      this.log.warn({ event: LogEvent.dbWriteFailed, what: 'fleet member', member: dead.instanceId, err }, `cannot remove the registration of replaced member ${dead.instanceId}; tried again at the next heartbeat`);
    }
  }
}
