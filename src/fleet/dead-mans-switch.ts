/**
 * HEARTBEAT_URL: an external dead-man's switch (healthchecks.io, Cronitor, a CloudWatch synthetic
 * ...), pinged with a GET after each completed probe cycle by the member that completed it. The
 * fleet covers for a dead member; this covers for the last one: when no member completes a cycle,
 * the pings stop and the outside service alerts. A ping never delays a cycle; a failed one is
 * logged (`heartbeat_url.failed`), never retried late (the next cycle pings again).
 */
import { coerceError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';

const PING_TIMEOUT_MS = 10_000;

export class DeadMansSwitch {
  private inFlight: Promise<void> | undefined;
  private readonly repeats = new RepeatLimiter();
  /** Pings answered 2xx (qbhealth_heartbeat_url_pings_total{outcome}). */
  onPing: (outcome: 'ok' | 'failed') => void = () => undefined;

  constructor(
    private readonly url: string | undefined,
    private readonly log: Logger,
  ) {}

  /** Pings once (skipped while the previous ping is still waiting for its answer). */
  ping(): void {
    if (!this.url || this.inFlight) return;
    this.inFlight = this.send(this.url).finally(() => {
      this.inFlight = undefined;
    });
  }

  /** Waits for a ping in flight (at shutdown). */
  async settle(): Promise<void> {
    await this.inFlight;
  }

  private async send(url: string): Promise<void> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
    try {
      const response = await fetch(url, { method: 'GET', signal: controller.signal, headers: { 'user-agent': 'qbo-health-monitor' } });
      // The body is not ours to log; it is read so that the connection is reused.
      await response.arrayBuffer();
      if (!response.ok) throw new Error(`HEARTBEAT_URL answered HTTP ${response.status}`);
      this.repeats.clear('ping');
      this.onPing('ok');
    } catch (err) {
      this.onPing('failed');
      const admitted = this.repeats.admit('ping');
      // The URL carries the check's secret: it is never logged (the logger scrubs it too).
      if (admitted) this.log.warn({ event: LogEvent.heartbeatUrlFailed, err: coerceError(err), ...admitted }, 'HEARTBEAT_URL ping failed: the external dead-man\'s switch may alert although the monitor runs (repeats are counted, not logged, for a minute)');
    } finally {
      clearTimeout(timer);
    }
  }
}
