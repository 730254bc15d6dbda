/** Shared set-up for the QuickBooks tests: a migrated database, keys, a runtime wired to it. */
import { pino } from 'pino';
import { createPool, type Pool } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { Prober } from '../../src/probe/prober.js';
import { TokenCipher } from '../../src/quickbooks/cipher.js';
import { IntuitOAuth } from '../../src/quickbooks/oauth.js';
import { TokenStore } from '../../src/quickbooks/token-store.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { captureLog, type CapturedLog } from './log.js';

export const CLIENT_ID = 'ABsimClientId0001';
export const CLIENT_SECRET = 'sim-client-secret-7Hq2';
export const KEY = Buffer.alloc(32, 42);
export const KEY_B64 = KEY.toString('base64');

export async function migratedDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  const pool = createPool({ databaseUrl: db.url, applicationName: 'test' }, pino({ level: 'silent' }));
  try {
    await migrate(pool, pino({ level: 'silent' }));
  } finally {
    await pool.end();
  }
  return db;
}

export interface Monitor {
  pool: Pool;
  store: TokenStore;
  prober: Prober;
  capture: CapturedLog;
  close(): Promise<void>;
}

/** One monitoring "process": its own pool, logger, store and prober. */
export function monitor(db: TestDatabase, endpoints: { tokenUrl: string; revokeUrl: string; apiBaseUrl: string }, probeTimeoutMs = 3000): Monitor {
  const capture = captureLog('debug');
  capture.secrets.add(CLIENT_SECRET, KEY_B64);
  const pool = createPool({ databaseUrl: db.url, applicationName: 'test', max: 6 }, capture.log);
  const oauth = new IntuitOAuth({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    environment: 'sandbox',
    redirectUri: 'http://localhost:8080/oauth/callback',
    tokenUrl: endpoints.tokenUrl,
    revokeUrl: endpoints.revokeUrl,
  });
  const store = new TokenStore(pool, new TokenCipher(KEY), oauth, capture.secrets, capture.log);
  const prober = new Prober(store, { apiBaseUrl: endpoints.apiBaseUrl, probeTimeoutMs, refreshTokenWarnDays: 14 }, capture.log, capture.secrets);
  return { pool, store, prober, capture, close: () => pool.end() };
}

/** The environment a qbhealth command or the daemon needs to run against `databaseUrl` and the simulator. */
export function simulatorEnv(databaseUrl: string, sim: { tokenUrl: string; revokeUrl: string; url: string }): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    QBO_CLIENT_ID: CLIENT_ID,
    QBO_CLIENT_SECRET: CLIENT_SECRET,
    TOKEN_ENCRYPTION_KEY: KEY_B64,
    QBO_TOKEN_URL: sim.tokenUrl,
    QBO_REVOKE_URL: sim.revokeUrl,
    QBO_API_BASE_URL: sim.url,
  };
}
