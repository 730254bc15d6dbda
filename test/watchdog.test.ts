/**
 * The database watchdog against a real PostgreSQL: catching up after an outage (spool adoption and
 * replay, rotated tokens stored, the schema checked) that fails for a reason of its own is named as
 * that (`db.recovery_failed`), and PostgreSQL stays reachable; PostgreSQL itself going away
 * meanwhile is the database failing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../src/db/pool.js';
import { DatabaseWatchdog } from '../src/db/watchdog.js';
import type { TestDatabase } from './support/db.js';
import { captureLog } from './support/log.js';
import { migratedDatabase } from './support/qbo.js';
import { quiet } from './support/realms.js';

let db: TestDatabase;
let pool: Pool;
beforeAll(async () => {
  db = await migratedDatabase();
  pool = createPool({ databaseUrl: db.url, applicationName: 'test', max: 2 }, quiet);
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('the database watchdog', () => {
  it('a failure to catch up that is not the database (a spool directory it may not read) is logged as db.recovery_failed with err, and PostgreSQL stays reachable', async () => {
    const capture = captureLog('debug');
    const seen: boolean[] = [];
    let after = 0;
    const spoolRefused = Object.assign(new Error("EACCES: permission denied, scandir '/var/spool/qbhm/other-slot'"), { code: 'EACCES' });
    const watchdog = new DatabaseWatchdog(pool, capture.log, {
      reachable: (ok) => void seen.push(ok),
      recover: () => Promise.reject(spoolRefused),
      after: async () => void after++,
    });
    await watchdog.check();
    await watchdog.check();
    expect(seen).toEqual([true, true]);
    expect(after).toBe(2);
    const lines = capture.byEvent('db.recovery_failed');
    // Once a minute: the second is counted, not written.
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, err: { code: 'EACCES', message: expect.stringContaining('permission denied') } });
    expect(capture.byEvent('db.connection_error')).toEqual([]);
  });

  it('PostgreSQL going away while catching up is the database failing: unreachable, db.connection_error', async () => {
    const capture = captureLog('debug');
    const seen: boolean[] = [];
    const gone = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const watchdog = new DatabaseWatchdog(pool, capture.log, {
      reachable: (ok) => void seen.push(ok),
      recover: () => Promise.reject(gone),
      after: async () => undefined,
    });
    await watchdog.check();
    expect(seen).toEqual([true, false]);
    expect(capture.byEvent('db.connection_error')).toHaveLength(1);
    expect(capture.byEvent('db.recovery_failed')).toEqual([]);
  });
});
