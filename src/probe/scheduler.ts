/**
 * PROBE_SCHEDULE: node-cron ticks, each running one probe cycle (never two at once: a tick that
 * finds the previous cycle still running is counted as an overlap and skipped), and the daily
 * history prune. Each tick is noted in the health state, whose liveness and staleness checks
 * count ticks rather than clock time (a schedule with quiet hours raises nothing while quiet).
 */
import cron, { type ScheduledTask } from 'node-cron';
import type { HealthState } from '../health/state.js';
import { LogEvent, type Logger } from '../log.js';

/** The daily retention prune runs at 03:17 local time, away from the top of the hour. */
export const PRUNE_SCHEDULE = '17 3 * * *';

/**
 * The schedule's period: the shortest gap among its next runs (for `*\/5 9-17 * * 1-5`, five
 * minutes, not the night). A realm is due again once most of a period has passed since its probe.
 */
export function schedulePeriodMs(schedule: string): number {
  const task = cron.createTask(schedule, () => undefined);
  try {
    const runs = task.getNextRuns(6).map((d) => d.getTime());
    const gaps = runs.slice(1).map((t, i) => t - (runs[i] as number));
    return gaps.length > 0 ? Math.min(...gaps) : 60_000;
  } finally {
    void task.destroy();
  }
}

export interface SchedulerHooks {
  /** One cycle; resolves when it is done (its failures are the hook's to report). */
  cycle(): Promise<void>;
  prune(): Promise<void>;
}

export class Scheduler {
  private tasks: ScheduledTask[] = [];
  private probeTask: ScheduledTask | undefined;

  constructor(
    private readonly schedule: string,
    private readonly state: HealthState,
    /** Counts ticks that ran no cycle (qbhealth_scheduler_ticks_total). */
    private readonly countTick: (outcome: 'overlap' | 'missed') => void,
    private readonly log: Logger,
    private readonly hooks: SchedulerHooks,
  ) {}

  get running(): boolean {
    return this.tasks.length > 0;
  }

  start(probeTimeoutMs: number): void {
    const { log } = this;
    cron.setLogger({
      info: (message) => log.debug({ component: 'node-cron' }, message),
      // Its overlap warning repeats the execution:overlap event below (scheduler.overlap): debug only.
      warn: (message) =>
        /overlap/i.test(message) ? log.debug({ component: 'node-cron' }, message) : log.warn({ event: LogEvent.schedulerMissed, component: 'node-cron' }, message),
      error: (message, err) => log.error({ event: LogEvent.schedulerTickFailed, component: 'node-cron', err: err ?? message }, String(message)),
      debug: (message) => log.debug({ component: 'node-cron' }, String(message)),
    });
    const probe = cron.schedule(this.schedule, () => this.tick(), { name: 'probe-cycle', noOverlap: true, suppressMissedWarning: true });
    probe.on('execution:overlap', () => {
      // The scheduler is alive; the previous cycle is still running (slow realms, many realms).
      this.state.noteTick(new Date(), probe.getNextRun() ?? undefined);
      this.countTick('overlap');
      log.warn({ event: LogEvent.schedulerOverlap }, 'a probe cycle is still running at the next tick; this tick is skipped');
    });
    probe.on('execution:missed', (ctx) => {
      this.countTick('missed');
      log.warn({ event: LogEvent.schedulerMissed, scheduledFor: ctx.date }, 'a scheduled tick was missed (the event loop was busy or the clock jumped)');
    });
    const prune = cron.schedule(PRUNE_SCHEDULE, () => this.hooks.prune(), { name: 'history-prune', noOverlap: true });
    this.tasks = [probe, prune];
    this.probeTask = probe;
    const periodMs = schedulePeriodMs(this.schedule);
    this.state.probeTimeoutMs = probeTimeoutMs;
    this.state.nextTickDueAt = probe.getNextRun() ?? undefined;
    this.state.maxTickGapMs = 3 * periodMs + 30_000;
  }

  /** A tick: noted, then the cycle. */
  tick(): Promise<void> {
    if (this.state.shuttingDown) return Promise.resolve();
    this.state.noteTick(new Date(), this.probeTask?.getNextRun() ?? undefined);
    return this.hooks.cycle();
  }

  async stop(): Promise<void> {
    const tasks = this.tasks;
    this.tasks = [];
    for (const task of tasks) await task.destroy();
  }
}
