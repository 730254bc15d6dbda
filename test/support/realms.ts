/** A database with connected realms and the simulator they are connected to (benchmarks, fault suite). */
import { pino } from 'pino';
import { forEachLimited } from '../../src/for-each-limited.js';
import { IntuitOAuth } from '../../src/quickbooks/oauth.js';
import { deadlineSignal } from '../../src/deadline.js';
import { startSimulator, type Simulator } from '../../src/simulator/simulator.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase, monitor } from './qbo.js';
import type { TestDatabase } from './db.js';

export interface Fixture {
  readonly db: TestDatabase;
  readonly sim: Simulator;
  readonly realms: string[];
  close(): Promise<void>;
}

/** Registers each company with the simulator and connects it: its tokens refreshed once and stored encrypted. */
export async function connectRealms(db: TestDatabase, sim: Simulator, companies: ReadonlyArray<readonly [realmId: string, companyName: string]>): Promise<void> {
  const m = monitor(db, { tokenUrl: sim.tokenUrl, revokeUrl: sim.revokeUrl, apiBaseUrl: sim.url });
  const oauth = new IntuitOAuth({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    environment: 'sandbox',
    redirectUri: 'http://localhost:8080/oauth/callback',
    tokenUrl: sim.tokenUrl,
    revokeUrl: sim.revokeUrl,
  });
  try {
    await forEachLimited(companies, 16, async ([realmId, companyName]) => {
      const refreshToken = sim.addRealm(realmId, companyName);
      await m.store.save(realmId, 'sandbox', await oauth.refresh(refreshToken, deadlineSignal(10_000)));
    });
  } finally {
    await m.close();
  }
}

/** A migrated database with `count` realms connected to a fresh simulator (tokens refreshed once, stored encrypted). */
export async function realmsFixture(count: number, simOptions: { slowMs?: number } = {}): Promise<Fixture> {
  const db = await migratedDatabase();
  const sim = await startSimulator({ host: '127.0.0.1', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, ...simOptions });
  const realms = Array.from({ length: count }, (_, i) => String(9_100_000_000 + i));
  await connectRealms(
    db,
    sim,
    realms.map((realmId) => [realmId, `Bench Company ${realmId}`] as const),
  );
  return {
    db,
    sim,
    realms,
    close: async () => {
      await sim.close();
      await db.drop();
    },
  };
}

export const quiet = pino({ level: 'silent' });

/** Percentile of an ascending-sorted array (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}
