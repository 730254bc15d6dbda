/**
 * What every fault case checks besides its own outcome: nothing was lost (every probe the daemon
 * logged is a row or a spooled line; after recovery, a row), and none of the secrets it used
 * reached a log line or stderr.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { RunningDaemon } from '../support/daemon.js';
import { CLIENT_ID, CLIENT_SECRET, KEY, KEY_B64 } from '../support/qbo.js';

type Query = (text: string) => Promise<{ rows: Array<Record<string, unknown>> }>;

/** Probe ids the daemon logged (probe.succeeded / probe.failed carry the row's probe_id). */
export const attempted = (...daemons: RunningDaemon[]): string[] =>
  daemons.flatMap((d) => d.lines.filter((l) => l.event === 'probe.succeeded' || l.event === 'probe.failed').map((l) => String(l.probeId)));

export async function rowIds(query: Query): Promise<string[]> {
  return (await query('SELECT probe_id FROM quickbooks_connection_health WHERE probe_id IS NOT NULL')).rows.map((r) => String(r.probe_id));
}

/** Probe ids in the spool's files (complete lines only), SPOOL_DIR's own and each daemon process's directory under it. */
export function spooledIds(spoolDir: string): string[] {
  const ids: string[] = [];
  if (!existsSync(spoolDir)) return ids;
  // SPOOL_DIR/<instance>/<pid>/*.jsonl, and anything directly under SPOOL_DIR.
  const files = (readdirSync(spoolDir, { recursive: true }) as string[]).filter((f) => f.endsWith('.jsonl'));
  for (const file of files.filter((f) => f.endsWith('.jsonl'))) {
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

/**
 * The forms in which `secret` could be written out: as is, JSON-escaped, URL-encoded (a query or
 * form body) and Base64 (an encoded credential or header).
 */
export function secretForms(secret: string): string[] {
  return [...new Set([secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret), Buffer.from(secret).toString('base64')])];
}

/** The app's HTTP Basic credential, `base64(client_id:client_secret)`, as intuit-oauth sends it (and as RFC 6749 spells it). */
export const basicCredentials = (clientId = CLIENT_ID, clientSecret = CLIENT_SECRET): string[] => [
  Buffer.from(`${clientId}:${clientSecret}`).toString('base64'),
  Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64'),
];

/**
 * No secret used by the case, in any of its forms, in any log line or stderr (nor in `extra`:
 * rows, webhook bodies): the client secret and its Basic credential, the encryption key (also in
 * hex), and each of `secrets`.
 */
export function expectNoSecrets(daemons: RunningDaemon[], secrets: ReadonlyArray<string | undefined>, extra: string[] = []): void {
  const text = [...daemons.flatMap((d) => [d.lines.map((l) => JSON.stringify(l)).join('\n'), d.stderr()]), ...extra].join('\n');
  const known = [CLIENT_SECRET, KEY_B64, KEY.toString('hex'), ...secrets].filter((s): s is string => s !== undefined && s !== '');
  for (const form of new Set([...known.flatMap(secretForms), ...basicCredentials()])) expect(text, 'a secret in a log line, stderr, a row or a webhook body').not.toContain(form);
}

export const dbPassword = (url: string): string => decodeURIComponent(new URL(url).password);
