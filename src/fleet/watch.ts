/**
 * The fleet, every FLEET_HEARTBEAT_MS: this member's heartbeat (membership.ts), the fleet's view
 * of every realm (who probed it, how long ago on the database's clock, its last result) and its
 * open alerts read into memory, so that every member's /health, /metrics and staleness checks
 * speak for the whole fleet. The leader (the live member with the smallest id) also watches the
 * others: a member whose heartbeat is older than FLEET_MEMBER_TTL_MS raises one
 * `monitor_instance_down` (warning while the others cover every realm, critical once a realm went
 * unprobed beyond staleness), resolved when it heartbeats again or is retired.
 */
import { fleetView } from '../db/fleet-queries.js';
import type { Pool } from '../db/pool.js';
import type { Escalator } from '../escalate/escalator.js';
import { instanceOfSubject, SystemSubject } from '../escalate/transition.js';
import type { FleetRealm, HealthState } from '../health/state.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import { reviveProbeResult } from '../probe-result.js';
import type { Membership } from './membership.js';

export class FleetWatch {
  private timer: NodeJS.Timeout | undefined;
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
    await this.running;
  }

  /** One round (also run once at start, before the first cycle). Never throws. */
  tick(): Promise<void> {
    this.running ??= this.round().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async round(): Promise<void> {
    const beat = await this.membership.beat();
    this.state.fleet = this.membership.status;
    if (!beat) return;
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

  /** The leader's duty: members down raise `monitor_instance_down`; members back, or retired, resolve it. */
  private async watchMembers(): Promise<void> {
    const status = this.membership.status;
    if (!status) return;
    const stalled = this.state.stalledRealms().length;
    const live = status.members.filter((m) => m.live);
    for (const m of status.members) {
      if (m.instanceId === status.self) continue;
      const subject = SystemSubject.instance(m.instanceId);
      if (m.live) {
        if (this.down.delete(m.instanceId) || this.escalator.isOpen(subject, 'monitor_instance_down')) {
          this.log.info({ event: LogEvent.fleetMemberBack, instance: m.instanceId }, `fleet member ${m.instanceId} heartbeats again`);
          this.escalator.succeed(subject, 'monitor_instance_down');
        }
        continue;
      }
      const seconds = Math.round(m.heartbeatAgeMs / 1000);
      if (!this.down.has(m.instanceId)) {
        this.down.add(m.instanceId);
        this.log.warn(
          { event: LogEvent.fleetMemberDown, instance: m.instanceId, host: m.host, pid: m.pid, heartbeatAgeMs: Math.round(m.heartbeatAgeMs) },
          `fleet member ${m.instanceId} (pid ${m.pid} on ${m.host}) has not heartbeaten for ${seconds} s; its realms are taken over`,
        );
      }
      this.escalator.fail(subject, 'monitor_instance_down', {
        severity: stalled > 0 ? 'critical' : 'warning',
        immediate: true,
        subject: `member ${m.instanceId}`,
        summary:
          `fleet member ${m.instanceId} (pid ${m.pid} on ${m.host}, version ${m.version}) stopped heartbeating ${seconds} s ago; ` +
          (stalled > 0
            ? `${stalled} realm(s) went unprobed beyond staleness although ${live.length} member(s) are live: look at their scheduler.overlap and lease lines, or add a member`
            : `the ${live.length} live member(s) cover its realms`) +
          `. Restart it, or if it is gone for good: \`qbhealth fleet retire ${m.instanceId}\``,
      });
    }
    // Alerts about members no longer registered: retired, or stopped cleanly since.
    const registered = new Set(status.members.map((m) => m.instanceId));
    for (const a of this.escalator.openAlerts()) {
      const instance = instanceOfSubject(a.realmId);
      if (instance === undefined || registered.has(instance)) continue;
      this.down.delete(instance);
      this.log.info({ event: LogEvent.fleetMemberBack, instance, retired: true }, `fleet member ${instance} is no longer registered (retired, or stopped cleanly)`);
      this.escalator.resolveRealm(a.realmId, `member ${instance} was retired or stopped cleanly`);
    }
    await this.escalator.persist();
  }
}
