/**
 * `qbhealth silence` as an operator runs it (the built CLI, a clean environment, a real
 * PostgreSQL): create, list, remove, with the OS user recorded and logged; usage errors exit 2 with
 * a message that says what is wrong; `qbhealth status` shows silenced alerts and the silences.
 */
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runQbhealth, type CliResult } from './support/cli.js';
import { migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

const logLines = (r: CliResult): Array<Record<string, unknown>> =>
  r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('qbhealth silence', () => {
  let db: TestDatabase;
  const me = os.userInfo().username;
  beforeAll(async () => {
    db = await migratedDatabase();
  });
  afterAll(() => db.drop());
  const silence = (...args: string[]): Promise<CliResult> => runQbhealth(['silence', ...args], { DATABASE_URL: db.url });

  it('creates a silence for a realm, stores and logs who ran it, lists it and removes it', async () => {
    const created = await silence('--realm-id', '9130357766', '--for', '2h', '--reason', 'Intuit maintenance window');
    expect(created.code).toBe(0);
    const id = /^silence (\d+) created: every alert of realm 9130357766 until (\S+), by (\S+): Intuit maintenance window$/m.exec(created.stdout);
    expect(id?.[3]).toBe(me);
    const { rows } = await db.query(`SELECT realm_id, kind, reason, created_by, ends_at - starts_at AS span, removed_at FROM quickbooks_alert_silences WHERE id = $1`, [id?.[1]]);
    expect(rows).toEqual([{ realm_id: '9130357766', kind: null, reason: 'Intuit maintenance window', created_by: me, span: expect.objectContaining({ hours: 2 }), removed_at: null }]);
    expect(logLines(created).filter((l) => l.event === 'silence.created')).toEqual([
      expect.objectContaining({ silenceId: id?.[1], realmId: '9130357766', kind: null, by: me, reason: 'Intuit maintenance window', endsAt: id?.[2] }),
    ]);

    const both = await silence('--realm-id', '42', '--kind', 'quickbooks_api', '--for', '1h30m', '--reason', 'app keys rotation');
    expect(both.code).toBe(0);
    expect(both.stdout).toMatch(/^silence \d+ created: quickbooks_api alerts of realm 42 until /m);
    const byKind = await silence('--kind', 'database', '--for', '1d', '--reason', 'PostgreSQL upgrade');
    expect(byKind.stdout).toMatch(/^silence \d+ created: every database alert until /m);

    const list = await silence('--list');
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^id +silences +ends +by +reason$/m);
    expect(list.stdout).toMatch(new RegExp(`^${id?.[1]} +every alert of realm 9130357766 +\\S+ \\(in (1 h 59 min|2 h)\\) +${me} +Intuit maintenance window$`, 'm'));
    const json = await silence('--list', '--json');
    expect(json.code).toBe(0);
    const listed = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(listed.map((s) => [s.realmId, s.kind, s.createdBy])).toEqual([
      ['42', 'quickbooks_api', me],
      ['9130357766', null, me],
      [null, 'database', me],
    ]);

    const removed = await silence('--remove', String(id?.[1]));
    expect(removed.code).toBe(0);
    expect(removed.stdout).toContain(`silence ${id?.[1]} removed`);
    expect(logLines(removed).filter((l) => l.event === 'silence.removed')).toEqual([expect.objectContaining({ silenceId: id?.[1], by: me })]);
    const after = await db.query(`SELECT removed_by, removed_at IS NOT NULL AS removed FROM quickbooks_alert_silences WHERE id = $1`, [id?.[1]]);
    expect(after.rows).toEqual([{ removed_by: me, removed: true }]);
    expect(JSON.parse((await silence('--list', '--json')).stdout)).toHaveLength(2);

    // Removing it again, or an id nobody made: exit 1, nothing changed.
    const again = await silence('--remove', String(id?.[1]));
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`was removed at`);
    expect(again.stderr).toContain(`by ${me}; nothing was changed`);
    const unknown = await silence('--remove', '999999');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no silence has id 999999');
  });

  it.each([
    [['--realm-id', '1', '--for', '2h'], '--reason is required'],
    [['--realm-id', '1', '--for', '2h', '--reason', '   '], '--reason is required'],
    [['--realm-id', '1', '--reason', 'x'], '--for is required'],
    [['--realm-id', '1', '--for', '2x', '--reason', 'x'], '--for "2x" is not a duration from 1 minute to 30 days'],
    [['--realm-id', '1', '--for', '31d', '--reason', 'x'], '--for "31d" is not a duration'],
    [['--realm-id', '1', '--for', '0m', '--reason', 'x'], '--for "0m" is not a duration'],
    [['--kind', 'quickbooks', '--for', '2h', '--reason', 'x'], 'unknown alert kind "quickbooks"; --kind is one of: quickbooks_api, quickbooks_auth, database, schema,'],
    [['--realm-id', 'acme', '--for', '2h', '--reason', 'x'], '--realm-id must be the numeric company ID'],
    [['--for', '2h', '--reason', 'x'], 'say what to silence: --realm-id R, --kind K, or both'],
    [['--list', '--kind', 'database'], '--list takes no other option but --json'],
    [['--remove', '3', '--reason', 'x'], '--remove takes no other option'],
    [['--remove', 'latest'], '--remove needs a silence id'],
    [['--json'], '--json goes with --list'],
  ])('usage error %j: exit 2, "%s", nothing stored', async (args, message) => {
    const before = await db.query(`SELECT count(*)::int AS n FROM quickbooks_alert_silences`);
    const r = await silence(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain('qbhealth silence --help');
    expect((await db.query(`SELECT count(*)::int AS n FROM quickbooks_alert_silences`)).rows).toEqual(before.rows);
  });

  it('shows a reason carrying terminal escape sequences as text: no control character reaches the terminal', async () => {
    const reason = 'upgrade \u001b[2J\u001b]0;owned\u0007 window\r';
    const created = await silence('--realm-id', '9130357799', '--for', '1h', '--reason', reason);
    expect(created.code).toBe(0);
    const list = await silence('--list');
    expect(list.code).toBe(0);
    for (const out of [created.stdout, list.stdout]) {
      // eslint-disable-next-line no-control-regex
      expect(out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
      expect(out).toContain('upgrade \ufffd[2J\ufffd]0;owned\ufffd window');
    }
  });

  it('needs DATABASE_URL (exit 78) and a reachable PostgreSQL (exit 75)', async () => {
    const none = await runQbhealth(['silence', '--list'], {});
    expect(none.code).toBe(78);
    expect(none.stderr).toContain('DATABASE_URL');
    const down = await runQbhealth(['silence', '--list'], { DATABASE_URL: 'postgres://nobody:pw@127.0.0.1:1/none' });
    expect(down.code).toBe(75);
  });

  it('qbhealth status marks an open alert a silence covers, and lists the silences', async () => {
    const R = '7100000001';
    await db.query(`INSERT INTO quickbooks_connection_health (connected, realm_id, status, error_code) VALUES (false, $1, 'fail', 'server_error')`, [R]);
    await db.query(
      `INSERT INTO quickbooks_alert_state (realm_id, kind, severity, state, consecutive_failures, since, summary) VALUES ($1, 'quickbooks_api', 'critical', 'open', 3, now(), 'realm failing 3 times in a row'), ('', 'schema', 'critical', 'open', 1, now(), 'a table is missing')`,
      [R],
    );
    const created = await silence('--realm-id', R, '--for', '45m', '--reason', 'planned');
    const id = /^silence (\d+) created/m.exec(created.stdout)?.[1];
    const status = await runQbhealth(['status'], { DATABASE_URL: db.url });
    expect(status.code).toBe(1);
    expect(status.stdout).toMatch(new RegExp(`^ {2}open alerts +CRITICAL quickbooks_api since \\d+ s ago \\(3 failure\\(s\\)\\) SILENCED \\(silence ${id}: recorded, not notified\\): realm failing 3 times in a row$`, 'm'));
    // The system's schema alert is not covered by a realm's silence.
    expect(status.stdout).toMatch(/^ {2}CRITICAL schema since \d+ s ago \(1 failure\(s\)\): a table is missing$/m);
    expect(status.stdout).toMatch(/^silences \(alerts they cover are recorded, not notified\):$/m);
    expect(status.stdout).toMatch(new RegExp(`^ {2}${id} +every alert of realm ${R} +\\S+ \\(in 4\\d min\\) +${me} +planned$`, 'm'));
    const json = JSON.parse((await runQbhealth(['status', '--json'], { DATABASE_URL: db.url })).stdout) as { realms: Array<{ realmId: string; alerts: unknown[] }>; systemAlerts: unknown[]; silences: unknown[] };
    expect(json.realms.find((r) => r.realmId === R)?.alerts).toEqual([expect.objectContaining({ silenced: true, silenceId: id })]);
    expect(json.systemAlerts).toEqual([expect.objectContaining({ kind: 'schema', silenced: false, silenceId: null })]);
    expect(json.silences).toEqual(expect.arrayContaining([expect.objectContaining({ id, realmId: R, reason: 'planned' })]));
  });
});
