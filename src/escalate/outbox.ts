/**
 * Delivers the fleet's alert notifications from quickbooks_alert_outbox to ALERT_WEBHOOK_URL.
 * Any live member delivers: notifications are claimed with SKIP LOCKED for as long as one
 * delivery may take (p-retry's bound, WebhookNotifier.deliver), marked delivered, or released
 * with a backoff when the receiver keeps failing. A member killed mid-delivery leaves its claim to
 * expire and another member delivers; the receiver may then see a notification twice, with the
 * same `notificationId`, and drops the retry. Woken when this member writes a notification, and
 * polled, so that another member's notifications go out even if that member died after its commit.
 * As it polls it also notifies the alerts a silence held back once no silence covers them
 * (silences.ts), and keeps the silences it read for this member's own database alerts.
 */
import { claimNotifications, markDelivered, markUndelivered, type ClaimedNotification } from '../db/alert-queries.js';
import type { Pool } from '../db/pool.js';
import { coerceError } from '../errors.js';
import { LogEvent, RepeatLimiter, type Logger } from '../log.js';
import type { WebhookNotifier } from './notifier.js';
import { releaseHeldAlerts, SilenceCache } from './silences.js';

export interface OutboxOptions {
  readonly instanceId: string;
  /** How often the outbox is looked at without being woken. */
  readonly pollMs?: number;
  /** How long a claim lasts: longer than one delivery with all its retries. */
  readonly claimMs?: number;
}

const BATCH = 20;
/** The share of a claim a delivery may start in and still end within it (clocks and queries take a little). */
const CLAIM_SAFETY = 0.9;

export class OutboxDeliverer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Claimed and not yet settled: released at once if the stop cannot wait for them. */
  private inHand: ClaimedNotification[] = [];
  private readonly repeats = new RepeatLimiter();
  private readonly pollMs: number;
  private readonly claimMs: number;
  /** Deliveries made by this member (qbhealth_alert_notifications_total). */
  onDelivered: (n: ClaimedNotification) => void = () => undefined;
  /** The silences as last read (each poll), for the alerts this member sends directly (database-alerts.ts). */
  readonly silences = new SilenceCache();
  /** When held-back alerts were last looked for (once a poll period, not at every wake-up). */
  private releasedAt = 0;

  constructor(
    private readonly pool: Pool,
    private readonly notifier: WebhookNotifier,
    private readonly log: Logger,
    private readonly opts: OutboxOptions,
  ) {
    this.pollMs = opts.pollMs ?? 2000;
    this.claimMs = opts.claimMs ?? 180_000;
  }

  start(): void {
    if (!this.notifier.configured) return;
    this.timer = setInterval(() => this.poke(), this.pollMs);
    this.timer.unref();
    this.poke();
  }

  /** Looks at the outbox now (a notification was just written). */
  poke(): void {
    if (!this.notifier.configured || this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.run().finally(() => {
      this.running = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        this.poke();
      }
    });
  }

  /** Stops polling; waits up to `timeoutMs` for deliveries in flight, then hands the rest back to the fleet. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (!this.running) return;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([this.running.then(() => true), new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(timer);
    if (done) {
      // The loop ended between deliveries: what it claimed and did not start goes back at once.
      await this.handBack('not started before shutdown');
      return;
    }
    this.notifier.abort();
    await this.handBack('delivery abandoned at shutdown');
  }

  /** Releases what this member claimed and has not delivered, for any member to claim again now. */
  private async handBack(reason: string): Promise<void> {
    const left = this.inHand.splice(0);
    for (const n of left) {
      try {
        await markUndelivered(this.pool, n.notificationId, this.opts.instanceId, reason, 0);
      } catch (err) {
        this.log.warn({ event: LogEvent.alertDeliveryFailed, notificationId: n.notificationId, err }, 'a claimed notification could not be handed back; another member delivers it when the claim expires');
      }
    }
    if (left.length > 0) {
      this.log.info({ event: LogEvent.outboxHandedBack, handedBack: left.length, reason }, `${left.length} claimed alert notification(s) handed back to the fleet, for any member to deliver now: ${reason}`);
    }
  }

  private async run(): Promise<void> {
    await this.releaseSilenced();
    for (;;) {
      if (this.stopped) return;
      let claimed: ClaimedNotification[];
      try {
        claimed = await claimNotifications(this.pool, this.opts.instanceId, BATCH, this.claimMs);
      } catch (err) {
        const admitted = this.repeats.admit('claim');
        if (admitted) this.log.warn({ event: LogEvent.dbReadFailed, what: 'alert outbox', err, ...admitted }, 'cannot read the alert outbox from PostgreSQL; notifications wait there until it answers (repeats are counted, not logged, for a minute)');
        return;
      }
      this.repeats.clear('claim');
      if (claimed.length === 0) return;
      this.inHand = [...claimed];
      const claimedAt = performance.now();
      for (const n of claimed) {
        if (this.stopped) return;
        // A delivery must end while the claim holds, or another member may send it too, and the
        // next of its alert (a resolution) before it: what is left goes back to be claimed afresh.
        if (performance.now() - claimedAt + this.notifier.longestDeliveryMs > this.claimMs * CLAIM_SAFETY) {
          await this.handBack('their claim would have run out before their turn');
          break;
        }
        const delivered = await this.deliverOne(n);
        this.inHand = this.inHand.filter((x) => x !== n);
        if (!delivered) {
          // The receiver is failing: the rest are not kept waiting behind it, nor tried at it now.
          await this.handBack('the receiver failed a delivery before their turn');
          return;
        }
      }
    }
  }

  /** Held-back alerts whose silence ended go into the outbox, to be claimed next. */
  private async releaseSilenced(): Promise<void> {
    if (this.stopped || Date.now() - this.releasedAt < this.pollMs) return;
    this.releasedAt = Date.now();
    try {
      await releaseHeldAlerts(this.pool, this.log, { instanceId: this.opts.instanceId, cache: this.silences });
      this.repeats.clear('release');
    } catch (err) {
      const admitted = this.repeats.admit('release');
      if (admitted) this.log.warn({ event: LogEvent.dbReadFailed, what: 'alert silences', err, ...admitted }, 'cannot look for silenced alerts whose silence ended; they are notified once PostgreSQL answers (repeats are counted, not logged, for a minute)');
    }
  }

  /** Delivers one notification and records it; false when the receiver failed it (it is due again later). */
  private async deliverOne(n: ClaimedNotification): Promise<boolean> {
    try {
      await this.notifier.deliver(n.body);
    } catch (err) {
      // Backoff between claims grows with the attempts: 30 s, 1, 2, 4 … up to 15 minutes.
      const retryInMs = Math.min(15 * 60_000, 30_000 * 2 ** Math.max(0, n.attempts - 1));
      this.log.error(
        { event: LogEvent.alertDeliveryFailed, alert: n.body.event, kind: n.body.kind, realmId: n.body.realmId, notificationId: n.notificationId, attempts: n.attempts, retryInMs, err },
        `alert webhook delivery gave up for now; the notification stays in the outbox and is tried again in ${Math.round(retryInMs / 1000)} s by any member`,
      );
      await this.settle(n, () => markUndelivered(this.pool, n.notificationId, this.opts.instanceId, coerceError(err).message, retryInMs));
      return false;
    }
    await this.settle(n, () => markDelivered(this.pool, n.notificationId, this.opts.instanceId));
    this.onDelivered(n);
    return true;
  }

  /** Records a delivery's outcome; if PostgreSQL cannot take it, the claim expires and the notification is sent again (same notificationId). */
  private async settle(n: ClaimedNotification, write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.log.warn(
        { event: LogEvent.dbWriteFailed, what: 'alert outbox', notificationId: n.notificationId, err },
        'the outcome of an alert delivery could not be stored; when its claim expires it may be delivered again, with the same notificationId',
      );
    }
  }
}
