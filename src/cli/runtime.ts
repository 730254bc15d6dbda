/** The parts the QuickBooks commands share, built from the full configuration and closed after. */
import { pino } from 'pino';
import { parseConfig, type Config } from '../config.js';
import { createPool, type Pool } from '../db/pool.js';
import { createLogger, type Logger } from '../log.js';
import { Prober } from '../probe/prober.js';
import { TokenCipher } from '../quickbooks/cipher.js';
import { IntuitOAuth } from '../quickbooks/oauth.js';
import { TokenStore } from '../quickbooks/token-store.js';
import type { CliIO } from './command.js';
import { configProblemsError } from './errors.js';

export interface Runtime {
  readonly config: Config;
  readonly log: Logger;
  readonly pool: Pool;
  readonly oauth: IntuitOAuth;
  readonly store: TokenStore;
  readonly prober: Prober;
}

export async function withRuntime(io: CliIO, fn: (rt: Runtime) => Promise<number>): Promise<number> {
  const parsed = parseConfig(io.env, 'full', io.cwd);
  io.secrets.add(...parsed.secrets);
  if (!parsed.ok) throw configProblemsError(parsed.problems);
  const config = parsed.config;
  const log = createLogger({ level: config.logLevel, secrets: io.secrets, destination: pino.destination({ dest: 2, sync: true }) });
  const pool = createPool({ databaseUrl: config.databaseUrl, applicationName: 'qbhealth', max: Math.max(2, config.probeConcurrency) }, log);
  const oauth = IntuitOAuth.fromConfig(config);
  const store = new TokenStore(pool, TokenCipher.fromConfig(config), oauth, io.secrets, log);
  const prober = new Prober(store, { ...config, apiBaseUrl: config.qboApiBaseUrl }, log, io.secrets);
  try {
    return await fn({ config, log, pool, oauth, store, prober });
  } finally {
    await pool.end();
  }
}
