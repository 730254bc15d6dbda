/**
 * What every fault case checks besides its own outcome: nothing was lost (every probe the daemon
 * logged is a row or a spooled line; after recovery, a row), and none of the secrets it used
 * reached a log line or stderr.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { RunningDaemon } from '../support/daemon.js';
import { CLIENT_SECRET, KEY_B64 } from '../support/qbo.js';

type Query = (text: string) => Promise<{ rows: Array<Record<string, unknown>> }>;

/** Probe ids the daemon logged (probe.succeeded / probe.failed carry the row's probe_id). */
export const attempted = (...daemons: RunningDaemon[]): string[] =>
  daemons.flatMap((d) => d.lines.filter((l) => l.event === 'probe.succeeded' || l.event === 'probe.failed').map((l) => String(l.probeId)));

export async function rowIds(query: Query): Promise<string[]> {
  return (await query('SELECT probe_id FROM quickbooks_connection_health WHERE probe_id IS NOT NULL')).rows.map((r) => String(r.probe_id));
}

/** Probe ids in the spool's files (complete lines only). */
export function spooledIds(spoolDir: string): string[] {
  const ids: string[] = [];
  if (!existsSync(spoolDir)) return ids;
  for (const file of readdirSync(spoolDir).filter((f) => f.endsWith('.jsonl'))) {
    for (const line of readFileSync(path.join(spoolDir, file), 'utf8').split('\n')) {
      try {
        const id = (JSON.parse(line) as { probeId?: unknown }).probeId;
        if (typeof id === 'string') ids.push(id);
      } catch (err) {
        // A torn or empty line holds no complete result: not counted, as the daemon does not count it.
        if (!(err instanceof SyntaxError)) throw err;
      }
    }
  }
  return ids;
}

/** attempted = rows + spooled, with no id twice; with `recovered`, every attempt is a row. */
export async function expectNothingLost(query: Query, spoolDirs: string | string[], daemons: RunningDaemon[], recovered: boolean): Promise<void> {
  const dirs = typeof spoolDirs === 'string' ? [spoolDirs] : spoolDirs;
  const tried = attempted(...daemons);
  const rows = await rowIds(query);
  const spooled = dirs.flatMap(spooledIds);
  expect(new Set(tried).size).toBe(tried.length);
  expect(new Set([...rows, ...spooled]).size, 'a result recorded twice').toBe(rows.length + spooled.length);
  expect([...rows, ...spooled].filter((id) => tried.includes(id)).sort()).toEqual([...tried].sort());
  if (recovered) expect(spooled, 'results still in the spool after recovery').toEqual([]);
}

/** No secret used by the case in any log line or stderr. */
export function expectNoSecrets(daemons: RunningDaemon[], secrets: ReadonlyArray<string | undefined>, extra: string[] = []): void {
  const text = [...daemons.flatMap((d) => [d.lines.map((l) => JSON.stringify(l)).join('\n'), d.stderr()]), ...extra].join('\n');
  for (const secret of [CLIENT_SECRET, KEY_B64, ...secrets]) if (secret) expect(text).not.toContain(secret);
}

export const dbPassword = (url: string): string => decodeURIComponent(new URL(url).password);
