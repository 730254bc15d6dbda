/**
 * `qbhealth silence`: maintenance windows. `--realm-id R` and/or `--kind K` with `--for 2h
 * --reason "..."` creates one; `--list` shows the active ones; `--remove ID` ends one early. A
 * silenced alert is still recorded and shown (`status`, `/status`, the dashboard) but not notified;
 * if it is still open when the silence ends, it is notified then (escalate/silences.ts). Silences
 * are rows in PostgreSQL, so every daemon of a fleet honours them; each creation and removal is
 * logged with the OS user who ran it, and stored with it.
 */
import os from 'node:os';
import { ALERT_KINDS, isAlertKind } from '../alert.js';
import type { Silence } from '../dashboard-model.js';
import { createSilence, listSilences, removeSilence } from '../db/silence-queries.js';
import { ExitCode, OperatorError } from '../errors.js';
import { LogEvent, type Logger } from '../log.js';
import { writeLine, type CliIO, type Command } from './command.js';
import { withDatabase } from './db-commands.js';
import { table } from './format.js';
import { databaseFailure, realmOption } from './qbo-commands.js';

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** A silence longer than this is more likely a typo than a maintenance window. */
export const MAX_SILENCE_MS = 30 * UNIT_MS.d;

/** `30m`, `2h`, `1d`, `1h30m`: milliseconds; throws a usage error that says what is accepted. */
export function parseSilenceDuration(text: string): number {
  const trimmed = text.trim();
  let ms = 0;
  if (/^(\d{1,5}[mhd])+$/.test(trimmed)) {
    for (const [, n, unit] of trimmed.matchAll(/(\d+)([mhd])/g)) ms += Number(n) * UNIT_MS[unit as keyof typeof UNIT_MS];
  }
  if (ms < UNIT_MS.m || ms > MAX_SILENCE_MS) {
    throw new OperatorError(
      `--for "${text}" is not a duration from 1 minute to 30 days: give minutes, hours or days such as 30m, 2h, 1d or 1h30m (see \`qbhealth silence --help\`)`,
      ExitCode.usage,
    );
  }
  return ms;
}

/** The OS user running the command, for created_by / removed_by and the log line. */
export function osUser(io: CliIO, log: Logger): string {
  try {
    return os.userInfo().username;
  } catch (err) {
    // A uid without a passwd entry (a container): USER is the best name left.
    const fallback = io.env.USER?.trim() || io.env.LOGNAME?.trim() || 'unknown';
    log.warn({ event: LogEvent.silenceUserUnknown, err, recordedAs: fallback }, `cannot name the OS user running this command; recording "${fallback}"`);
    return fallback;
  }
}

const what = (s: Pick<Silence, 'realmId' | 'kind'>): string =>
  s.realmId !== null && s.kind !== null ? `${s.kind} alerts of realm ${s.realmId}` : s.realmId !== null ? `every alert of realm ${s.realmId}` : `every ${s.kind} alert`;

/** How long from `now` to `at`, coarsely: `in 1 h 58 min`, `in 3 d`. */
function until(at: string, now: Date): string {
  const min = Math.max(0, Math.round((Date.parse(at) - now.getTime()) / 60_000));
  if (min < 60) return `in ${min} min`;
  if (min < 48 * 60) return `in ${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ''}`;
  return `in ${Math.round(min / 1440)} d`;
}

/** The active silences as a table (or a line saying there are none); `silence --list` and `status` share it. */
export function silenceLines(silences: readonly Silence[], now: Date, indent = ''): string[] {
  if (silences.length === 0) return [`${indent}no active silence`];
  return table(
    ['id', 'silences', 'ends', 'by', 'reason'],
    silences.map((s) => [s.id, what(s), `${s.endsAt} (${until(s.endsAt, now)})`, s.createdBy, s.reason]),
    indent,
  );
}

type Values = Readonly<Record<string, string | boolean | undefined>>;

function usage(message: string): OperatorError {
  return new OperatorError(`${message} (see \`qbhealth silence --help\`)`, ExitCode.usage);
}

/** Which of the three forms was asked for, its options checked. */
function modeOf(values: Values): { mode: 'list' } | { mode: 'remove'; id: string } | { mode: 'create'; realmId: string | null; kind: (typeof ALERT_KINDS)[number] | null; durationMs: number; reason: string } {
  const given = (['realm-id', 'kind', 'for', 'reason'] as const).filter((o) => values[o] !== undefined).map((o) => `--${o}`);
  if (values.list) {
    if (values.remove !== undefined || given.length > 0) throw usage(`--list takes no other option but --json (got ${[...given, ...(values.remove !== undefined ? ['--remove'] : [])].join(', ')})`);
    return { mode: 'list' };
  }
  if (values.json) throw usage('--json goes with --list');
  if (values.remove !== undefined) {
    if (given.length > 0) throw usage(`--remove takes no other option (got ${given.join(', ')})`);
    const id = String(values.remove).trim();
    if (!/^\d{1,18}$/.test(id)) throw usage(`--remove needs a silence id as \`qbhealth silence --list\` shows it, not "${String(values.remove)}"`);
    return { mode: 'remove', id };
  }
  const realm = values['realm-id'];
  const kind = values.kind;
  if (realm === undefined && kind === undefined) throw usage('say what to silence: --realm-id R, --kind K, or both (or --list, or --remove ID)');
  if (realm !== undefined && !/^\d{1,32}$/.test(String(realm))) throw usage(`--realm-id must be the numeric company ID, not "${String(realm)}"`);
  if (kind !== undefined && !isAlertKind(String(kind))) throw usage(`unknown alert kind "${String(kind)}"; --kind is one of: ${ALERT_KINDS.join(', ')}`);
  if (values.for === undefined) throw usage('--for is required: how long the silence lasts, such as 30m, 2h or 1d');
  const durationMs = parseSilenceDuration(String(values.for));
  const reason = typeof values.reason === 'string' ? values.reason.trim() : '';
  if (reason === '') throw usage('--reason is required: say why (it is shown wherever the silence is listed)');
  return { mode: 'create', realmId: realm === undefined ? null : String(realm), kind: kind === undefined ? null : (String(kind) as (typeof ALERT_KINDS)[number]), durationMs, reason };
}

export const silenceCommand: Command = {
  name: 'silence',
  summary: 'maintenance windows: silence a realm or an alert kind for a while (--list, --remove ID)',
  description:
    'Creates a silence: `qbhealth silence --realm-id R --for 2h --reason "..."` (every alert of that realm), ' +
    '`--kind K` (that alert kind for every realm and for the monitor itself), or both (that kind for that realm). A ' +
    'silenced alert is still recorded and shown as silenced (`qbhealth status`, GET /status, the dashboard) but no ' +
    'notification is sent; if it is still open when the silence ends (expires or is removed), it is notified then, ' +
    'once. A resolution is notified when its alert had been notified. Every daemon sharing the database honours it ' +
    '(it is a row in quickbooks_alert_silences); a daemon that cannot reach PostgreSQL honours the silences it read ' +
    'before, and sends its database alerts if it read none. `--list` shows the active silences (`--json` for JSON), ' +
    '`--remove ID` ends one now. Each creation and removal is logged (`silence.created`, `silence.removed`) with the OS ' +
    `user who ran it. Durations: minutes, hours or days (30m, 2h, 1d, 1h30m), at most 30 days. Kinds: ${ALERT_KINDS.join(', ')}. ` +
    'Needs only DATABASE_URL.',
  options: {
    'realm-id': { ...realmOption, description: 'silence this realm (every kind, unless --kind narrows it)' },
    kind: { type: 'string', valueName: 'KIND', description: 'silence this alert kind (every realm, unless --realm-id narrows it)' },
    for: { type: 'string', valueName: 'DURATION', description: 'how long, from now: 30m, 2h, 1d, 1h30m (at most 30d)' },
    reason: { type: 'string', valueName: 'TEXT', description: 'why (required): shown wherever the silence is listed (status, --list, the dashboard)' },
    list: { type: 'boolean', description: 'list the active silences' },
    json: { type: 'boolean', description: 'with --list: print them as JSON' },
    remove: { type: 'string', valueName: 'ID', description: 'end silence ID now (alerts it held back that are still open are notified)' },
  },
  exitCodes: [
    [0, 'created, listed or removed'],
    [1, '--remove: no silence has that id, or it has already ended (nothing changed)'],
    [2, 'usage: nothing to silence, no --for or --reason, a bad duration, an unknown kind, a bad realm or silence id'],
    [65, 'the silences table is missing; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; run it again'],
    [78, 'configuration invalid (DATABASE_URL)'],
  ],
  run: (io, values) => {
    const mode = modeOf(values);
    return withDatabase(io, async (pool, log) => {
      try {
        if (mode.mode === 'list') {
          const silences = await listSilences(pool);
          writeLine(io.stdout, io.secrets, values.json ? JSON.stringify(silences, null, 2) : silenceLines(silences, new Date()).join('\n'));
          return ExitCode.ok;
        }
        const by = osUser(io, log);
        if (mode.mode === 'remove') {
          const removed = await removeSilence(pool, mode.id, by);
          if (removed.outcome === 'unknown') throw new OperatorError(`no silence has id ${mode.id} (\`qbhealth silence --list\` shows the active ones); nothing was changed`, ExitCode.probeFailing);
          const s = removed.silence;
          if (removed.outcome === 'not_active') {
            const ended = s.removedAt ? `was removed at ${s.removedAt} by ${s.removedBy ?? 'unknown'}` : `ended at ${s.endsAt}`;
            throw new OperatorError(`silence ${s.id} (${what(s)}) ${ended}; nothing was changed`, ExitCode.probeFailing);
          }
          log.info({ event: LogEvent.silenceRemoved, silenceId: s.id, realmId: s.realmId, kind: s.kind, endsAt: s.endsAt, reason: s.reason, by }, `silence ${s.id} (${what(s)}) removed by ${by}`);
          writeLine(io.stdout, io.secrets, `silence ${s.id} removed: ${what(s)} notified again from now (open alerts it held back are notified within seconds by a running daemon)`);
          return ExitCode.ok;
        }
        const s = await createSilence(pool, { realmId: mode.realmId, kind: mode.kind, durationMs: mode.durationMs, reason: mode.reason, createdBy: by });
        log.info(
          { event: LogEvent.silenceCreated, silenceId: s.id, realmId: s.realmId, kind: s.kind, startsAt: s.startsAt, endsAt: s.endsAt, reason: s.reason, by },
          `silence ${s.id} (${what(s)}) created by ${by} until ${s.endsAt}`,
        );
        writeLine(io.stdout, io.secrets, `silence ${s.id} created: ${what(s)} until ${s.endsAt}, by ${by}: ${s.reason}`);
        writeLine(io.stdout, io.secrets, `alerts it covers are recorded and shown, not notified; end it early with \`qbhealth silence --remove ${s.id}\``);
        return ExitCode.ok;
      } catch (err) {
        throw databaseFailure(err) ?? err;
      }
    });
  },
};
