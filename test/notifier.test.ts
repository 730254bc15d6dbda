import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect, it } from 'vitest';
import { WebhookNotifier, type AlertNotification } from '../src/escalate/notifier.js';
import { captureLog } from './support/log.js';

const alert: AlertNotification = {
  event: 'alert.raised',
  severity: 'critical',
  kind: 'database',
  realmId: null,
  summary: 'PostgreSQL is unreachable',
  consecutiveFailures: 3,
  since: '2026-11-23T10:00:00.000Z',
  lastError: 'ECONNREFUSED',
  intuitTid: null,
  notificationId: '0b9f3c52-6d1e-4f4e-9a53-2f1c9c8f0a11',
  dedupKey: 'qbo-health-monitor:database:monitor',
  instance: 'host-a:8080',
  text: ':rotating_light: [CRITICAL] database: PostgreSQL is unreachable',
};

it('retries a failing webhook with backoff, logs each failed attempt, and keeps what gave up for the next tick', async () => {
  const answers = [503, 500, 200, 400, 200];
  const received: unknown[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push(JSON.parse(body));
      res.writeHead(answers.shift() ?? 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const secretUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T000/B000/s3cr3t-webhook-token`;
  const capture = captureLog('debug');
  capture.secrets.add(secretUrl);
  try {
    const notifier = new WebhookNotifier(secretUrl, capture.log, { retries: 3, minTimeoutMs: 10, maxTimeoutMs: 20 });
    notifier.send(alert);
    await notifier.drain(5000);
    expect(received).toHaveLength(3);
    expect(received[2]).toEqual(alert);
    expect(capture.byEvent('alert.delivery_failed').map((l) => l.attempt)).toEqual([1, 2]);

    // A 400 will not improve by retrying now: kept, and delivered by the next tick's retry.
    notifier.send({ ...alert, event: 'alert.repeated' });
    await notifier.drain(5000);
    expect(received).toHaveLength(4);
    expect(notifier.undelivered).toBe(1);
    notifier.retryFailed();
    await notifier.drain(5000);
    expect(received).toHaveLength(5);
    expect(notifier.undelivered).toBe(0);
    expect(capture.lines.join('\n')).not.toContain('s3cr3t-webhook-token');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
