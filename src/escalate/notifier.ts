/**
 * Delivers alert notifications to ALERT_WEBHOOK_URL as JSON (the contract's body, with a
 * Slack-compatible `text`). Deliveries go out one at a time, in order, each retried with
 * exponential backoff and jitter (p-retry) within a bound; every failed attempt is logged as
 * `alert.delivery_failed`. A delivery that exhausts its retries is kept and tried again with the
 * next one (or by retryFailed() on the next tick), up to a bound. Never fatal, never blocks a probe.
 */
import pRetry, { AbortError } from 'p-retry';
import { coerceError } from '../errors.js';
import { LogEvent, type Logger } from '../log.js';
import type { AlertNotification } from '../alert.js';

export type { AlertNotification } from '../alert.js';


export interface NotifierOptions {
  readonly retries?: number;
  readonly minTimeoutMs?: number;
  readonly maxTimeoutMs?: number;
  /** Bound on one delivery's retrying, all attempts included. */
  readonly maxRetryTimeMs?: number;
  /** Bound on one HTTP attempt. */
  readonly attemptTimeoutMs?: number;
  /** How many undelivered notifications are kept for later. */
  readonly maxKept?: number;
}

export class WebhookNotifier {
  private chain: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private kept: AlertNotification[] = [];
  private readonly stopping = new AbortController();
  private readonly opts: Required<NotifierOptions>;

  constructor(
    private readonly url: string | undefined,
    private readonly log: Logger,
    opts: NotifierOptions = {},
  ) {
    this.opts = {
      retries: opts.retries ?? 5,
      minTimeoutMs: opts.minTimeoutMs ?? 1000,
      maxTimeoutMs: opts.maxTimeoutMs ?? 30_000,
      maxRetryTimeMs: opts.maxRetryTimeMs ?? 120_000,
      attemptTimeoutMs: opts.attemptTimeoutMs ?? 10_000,
      maxKept: opts.maxKept ?? 500,
    };
  }

  get configured(): boolean {
    return this.url !== undefined;
  }

  /** The longest one deliver() can take: its retries' window and one more attempt. */
  get longestDeliveryMs(): number {
    return this.opts.maxRetryTimeMs + this.opts.attemptTimeoutMs;
  }

  /** Notifications waiting for a retry after exhausting their attempts. */
  get undelivered(): number {
    return this.kept.length;
  }

  send(notification: AlertNotification): void {
    if (!this.url) return;
    this.enqueue(notification);
  }

  /** Tries the kept notifications again (called once per scheduler tick). */
  retryFailed(): void {
    if (this.kept.length === 0 || this.inFlight > 0) return;
    const again = this.kept.splice(0);
    for (const n of again) this.enqueue(n);
  }

  /** Aborts every delivery in flight (direct or through deliver()); used at a stop that cannot wait longer. */
  abort(): void {
    this.stopping.abort(new Error('shutting down'));
  }

  /** Waits for in-flight deliveries up to `timeoutMs`, then abandons the rest (logged). */
  async drain(timeoutMs: number): Promise<void> {
    if (this.inFlight === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const outcome = await Promise.race([this.chain.then(() => 'done' as const), timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.stopping.abort(new Error('shutting down'));
      this.log.error(
        { event: LogEvent.alertDeliveryFailed, undelivered: this.inFlight + this.kept.length },
        `alert deliveries still pending at shutdown after ${timeoutMs} ms; they were abandoned`,
      );
    }
  }

  private enqueue(notification: AlertNotification): void {
    this.inFlight++;
    this.chain = this.chain.then(async () => {
      try {
        await this.deliver(notification);
      } catch (err) {
        this.keep(notification, err);
      } finally {
        this.inFlight--;
      }
    });
  }

  private keep(notification: AlertNotification, err: unknown): void {
    if (this.stopping.signal.aborted) {
      this.log.error(
        { event: LogEvent.alertDeliveryFailed, alert: notification.event, kind: notification.kind, realmId: notification.realmId, err },
        'alert webhook delivery abandoned at shutdown',
      );
      return;
    }
    this.kept.push(notification);
    const dropped = this.kept.length > this.opts.maxKept ? this.kept.splice(0, this.kept.length - this.opts.maxKept) : [];
    this.log.error(
      { event: LogEvent.alertDeliveryFailed, alert: notification.event, kind: notification.kind, realmId: notification.realmId, kept: this.kept.length, dropped: dropped.length, err },
      `alert webhook delivery gave up for now; it is tried again on the next tick${dropped.length > 0 ? ` (${dropped.length} oldest dropped)` : ''}`,
    );
  }

  /**
   * One delivery, retried within its bound (p-retry); throws once it gives up. The outbox
   * deliverer calls this directly: it keeps undelivered notifications in PostgreSQL instead.
   */
  async deliver(notification: AlertNotification): Promise<void> {
    const url = this.url;
    if (!url) return;
    await pRetry(
      async () => {
        // One controller aborted by a timer or by shutdown. Not AbortSignal.any(): the signal it
        // returns holds its sources weakly, and under memory pressure the timeout could be
        // collected before it fired, leaving an attempt to a hung receiver waiting forever.
        const attempt = new AbortController();
        const timer = setTimeout(() => attempt.abort(new Error(`no answer within ${this.opts.attemptTimeoutMs} ms`)), this.opts.attemptTimeoutMs);
        const onStop = (): void => attempt.abort(this.stopping.signal.reason);
        this.stopping.signal.addEventListener('abort', onStop, { once: true });
        let response: Response;
        try {
          response = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(notification),
            signal: attempt.signal,
          });
          // The body is not ours to log (it may echo the URL's token); its size is enough.
          await response.arrayBuffer();
        } finally {
          clearTimeout(timer);
          this.stopping.signal.removeEventListener('abort', onStop);
        }
        if (response.ok) return;
        const error = new Error(`alert webhook answered HTTP ${response.status}`);
        // A 4xx other than timeout/throttling will not get better by retrying now.
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) throw new AbortError(error);
        throw error;
      },
      {
        retries: this.opts.retries,
        minTimeout: this.opts.minTimeoutMs,
        maxTimeout: this.opts.maxTimeoutMs,
        maxRetryTime: this.opts.maxRetryTimeMs,
        randomize: true,
        signal: this.stopping.signal,
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          this.log.warn(
            { event: LogEvent.alertDeliveryFailed, alert: notification.event, kind: notification.kind, realmId: notification.realmId, attempt: attemptNumber, retriesLeft, err: coerceError(error) },
            `alert webhook delivery failed (attempt ${attemptNumber})`,
          );
        },
      },
    );
  }
}
