/**
 * A member's own `database` and `schema` alerts: PostgreSQL unreachable, refusing writes, or
 * missing a table. These cannot travel through PostgreSQL (the state table and the outbox are in
 * the database that is failing), so each member keeps them in memory and sends them to
 * ALERT_WEBHOOK_URL directly, its instance named in the text, with the `dedupKey` every member
 * computes for the same alert, so that a receiver merges what several members sent.
 *
 * Database outcomes within one probe cycle (or one check between cycles) count once: the worst
 * one. A schema gap outweighs an unreachable database, and any failure outweighs a success.
 */
import { randomUUID } from 'node:crypto';
import type { DbOutcome } from '../db/failure.js';
import { LogEvent, type Logger } from '../log.js';
import type { WebhookNotifier } from './notifier.js';
import { applyChange, notificationOf, SystemSubject, type AlertKind, type AlertState, type Change, type EscalatorOptions } from './transition.js';

export class DatabaseAlerts {
  private readonly states = new Map<AlertKind, AlertState>();
  private outcome: DbOutcome | undefined;

  constructor(
    private readonly notifier: WebhookNotifier,
    private readonly log: Logger,
    private readonly opts: EscalatorOptions & { readonly instanceId: string },
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Notes a database outcome of the current cycle (applied by apply()). */
  note(outcome: DbOutcome): void {
    const current = this.outcome;
    if (!current || (!outcome.ok && (current.ok || outcome.kind === 'schema'))) this.outcome = outcome;
  }

  /** Escalates the worst outcome noted since the last call (once per cycle, or per check between cycles). */
  apply(): void {
    const outcome = this.outcome;
    this.outcome = undefined;
    if (!outcome) return;
    if (outcome.ok) {
      this.change({ op: 'succeed', kind: 'database' });
      this.change({ op: 'succeed', kind: 'schema' });
      return;
    }
    if (outcome.kind === 'schema') {
      this.change({ op: 'fail', kind: 'schema', failure: { severity: 'critical', immediate: true, summary: outcome.summary, lastError: outcome.err.message } });
    } else {
      this.change({
        op: 'fail',
        kind: 'database',
        failure: { severity: 'critical', summary: `${outcome.summary}; failing for {count} consecutive cycle(s)`, lastError: outcome.err.message },
      });
    }
  }

  openAlerts(): AlertState[] {
    return [...this.states.values()].filter((s) => s.state === 'open');
  }

  private change(change: Change): void {
    const { state, transition } = applyChange(this.states.get(change.kind), SystemSubject.monitor, change, this.now(), this.opts);
    if (state) this.states.set(change.kind, state);
    if (!transition) return;
    const { text, ...fields } = notificationOf(transition, { notificationId: randomUUID(), instance: this.opts.instanceId, instanceInText: true });
    if (fields.event === LogEvent.alertResolved) this.log.info(fields, text);
    else this.log.error(fields, text);
    this.notifier.send({ ...fields, text });
  }
}
