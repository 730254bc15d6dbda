/** ecosystem.config.js derives PM2's kill_timeout from PROBE_TIMEOUT_MS, read as the daemon reads it. */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REFRESH_ANSWER_TIMEOUT_MS } from '../src/quickbooks/token-store.js';

const ECOSYSTEM = pathToFileURL(fileURLToPath(new URL('../ecosystem.config.js', import.meta.url))).href;

/** The kill_timeout PM2 would read, in a process of its own (the file reads env and ./.env at load). */
async function killTimeout(env: Record<string, string>, envFile?: string): Promise<number> {
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'qbhm-eco-'));
  if (envFile !== undefined) writeFileSync(path.join(cwd, '.env'), envFile);
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(ECOSYSTEM)}); console.log(m.apps[0].kill_timeout)`], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
  });
  return Number(stdout.trim());
}

describe('PM2 kill_timeout', () => {
  it('covers the probe deadline, a refresh awaited once sent, and the final flush, whatever PROBE_TIMEOUT_MS is', async () => {
    expect(await killTimeout({})).toBe(10_000 + REFRESH_ANSWER_TIMEOUT_MS + 5_000);
    expect(await killTimeout({ PROBE_TIMEOUT_MS: '45000' })).toBe(45_000 + REFRESH_ANSWER_TIMEOUT_MS + 5_000);
    // From .env, as the daemon reads it; the environment wins over the file.
    expect(await killTimeout({}, 'PROBE_TIMEOUT_MS=20000\n')).toBe(20_000 + REFRESH_ANSWER_TIMEOUT_MS + 5_000);
    expect(await killTimeout({ PROBE_TIMEOUT_MS: '12000' }, 'PROBE_TIMEOUT_MS=20000\n')).toBe(12_000 + REFRESH_ANSWER_TIMEOUT_MS + 5_000);
  });
});
