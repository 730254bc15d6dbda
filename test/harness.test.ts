import { describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../src/dev/embedded-postgres.js';
import { createServer, type AddressInfo } from 'node:net';

describe('test harness', () => {
  it('runs in a time zone that is not UTC, so time-zone bugs show', () => {
    expect(new Date('2025-12-28T04:00:00Z').getTimezoneOffset()).not.toBe(0);
  });

  it('a PostgreSQL that cannot start fails fast with the reason and its log, not a hang', async () => {
    // Something else already listens on the port PostgreSQL is told to use.
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as AddressInfo).port;
    const failure: unknown = await startEmbeddedPostgres({ port, startTimeoutMs: 30_000 })
      .catch((err: unknown) => err as Error)
      .finally(() => blocker.close());
    expect(failure).toBeInstanceOf(Error);
    expect((failure as Error).message).toMatch(/PostgreSQL did not start/);
    expect((failure as Error).message).toMatch(/could not (bind|create listen socket)|already in use/i);
  }, 60_000);
});
