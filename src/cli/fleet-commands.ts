/**
 * `qbhealth fleet` (the daemons sharing the database: who is live, who is down, who holds which
 * realms, which versions run) and `qbhealth fleet retire ID` (a member gone for good leaves the
 * fleet). Both need only DATABASE_URL; FLEET_MEMBER_TTL_MS decides live or down, as in the daemons.
 */
import type { Env } from '../config.js';
import { listMembers, retireMember } from '../db/fleet-queries.js';
import { slotOf } from '../fleet/membership.js';
import { loadFleetReport, type FleetMemberReport, type FleetReport } from '../db/fleet-report.js';
import { inTransaction, withClient, type Pool } from '../db/pool.js';
import { ExitCode, OperatorError } from '../errors.js';
import { writeLine, type Command } from './command.js';
import { withDatabase } from './db-commands.js';
import { ago, table } from './format.js';
import { databaseFailure } from './qbo-commands.js';

const HEARTBEAT_DEFAULT_MS = 5000;

/** Reads a whole number the way config.ts does (trimmed, blank is unset, one problem line when out of range). */
function wholeNumber(env: Env, name: string, fallback: number, min: number, max: number, problems: string[]): number {
  const value = env[name]?.trim();
  if (value === undefined || value === '') return fallback;
  if (!/^-?\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    problems.push(`${name}: must be a whole number from ${min} to ${max} (got "${value}")`);
    return fallback;
  }
  return Number(value);
}

/**
 * FLEET_MEMBER_TTL_MS exactly as config.ts reads it for the daemon (default 3 × FLEET_HEARTBEAT_MS,
 * at least twice it), for the commands that need only DATABASE_URL: config.ts's database scope does
 * not carry it. test/fleet-cli.test.ts holds this reading equal to config.ts's.
 */
export function memberTtlFromEnv(env: Env): { ttlMs: number; problems: string[] } {
  const problems: string[] = [];
  const heartbeatMs = wholeNumber(env, 'FLEET_HEARTBEAT_MS', HEARTBEAT_DEFAULT_MS, 100, 600_000, problems);
  const ttlMs = wholeNumber(env, 'FLEET_MEMBER_TTL_MS', 3 * heartbeatMs, 300, 3_600_000, problems);
  if (ttlMs < 2 * heartbeatMs) {
    problems.push(`FLEET_MEMBER_TTL_MS: must be at least twice FLEET_HEARTBEAT_MS (${heartbeatMs}), so that one late heartbeat is not a death (got ${ttlMs})`);
  }
  return { ttlMs, problems };
}

/** The fleet on one read-only snapshot, so that the members' ages and the realm counts agree. */
export async function readFleet(pool: Pool, ttlMs: number): Promise<FleetReport> {
  try {
    return await withClient(pool, (client) =>
      inTransaction(client, async () => {
        await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        return loadFleetReport(client, ttlMs);
      }),
    );
  } catch (err) {
    throw databaseFailure(err) ?? err;
  }
}

const summaryText = (f: FleetReport): string => `${f.live} live, ${f.down} down; realms: ${f.realms.total} monitored, ${f.realms.held} held now`;

function memberRow(m: FleetMemberReport, at: string): string[] {
  return [m.instanceId, m.state === 'live' ? 'LIVE' : 'DOWN', ago(m.heartbeatAt, at), m.host, String(m.pid), m.version, ago(m.startedAt, at), String(m.realmsHeld), m.healthAddress ?? '-'];
}

/**
 * The members as a table, the version warning and the down members' next step. Shared by
 * `qbhealth fleet` and the fleet section of `qbhealth status`.
 */
export function fleetLines(f: FleetReport, indent = ''): string[] {
  if (f.members.length === 0) return [`${indent}no member registered: no daemon has joined the fleet; is it running? (\`pm2 status\`)`];
  const lines = table(
    ['instance', 'state', 'heartbeat', 'host', 'pid', 'version', 'started', 'realms held', 'health address'],
    f.members.map((m) => memberRow(m, f.at)),
    indent,
  );
  if (f.versionsDiffer) {
    const versions = f.versions.map((v) => `${v.version} (${v.members.join(', ')})`).join(', ');
    lines.push(`${indent}warning: the live members run different versions: ${versions}; finish the rolling upgrade`);
  }
  for (const m of f.members.filter((x) => x.state === 'down')) {
    lines.push(`${indent}${m.instanceId} is down (last heartbeat ${ago(m.heartbeatAt, f.at)}): start it again, or if it is gone for good, \`qbhealth fleet retire ${m.instanceId}\``);
  }
  return lines;
}

/** The `fleet` section of `qbhealth status`. */
export function renderFleetSection(f: FleetReport): string[] {
  const head = f.members.length === 0 ? 'fleet:' : `fleet: ${summaryText(f)} (down after ${f.memberTtlMs} ms without a heartbeat)`;
  return [head, ...fleetLines(f, '  ')];
}

export function renderFleet(f: FleetReport): string {
  return [
    `QuickBooks health monitor fleet at ${f.at} (database clock); a member is down after FLEET_MEMBER_TTL_MS=${f.memberTtlMs} ms without a heartbeat`,
    '',
    ...fleetLines(f),
    '',
    `fleet: ${summaryText(f)}`,
  ].join('\n');
}

const retireCommand: Command = {
  name: 'retire',
  summary: 'remove a member that is gone for good (its leases freed); refuses a live one',
  description:
    'Removes a dead member from the fleet: its registration is deleted and every realm lease it held is freed at once ' +
    '(the live members would otherwise wait for the leases to expire). The live members then resolve its ' +
    'monitor_instance_down alert. Refused while the member is live (its heartbeat younger than FLEET_MEMBER_TTL_MS): ' +
    'stop it first; a daemon that stops cleanly leaves the fleet by itself, so retire is for one that died or whose ' +
    'host is gone. A retired member that comes back joins again. Needs only DATABASE_URL.',
  options: {},
  arguments: [{ name: 'ID', description: 'a member id as `qbhealth fleet` lists it (<FLEET_INSTANCE_ID>#<pid>), or a FLEET_INSTANCE_ID as alerts name it (every process of that slot)' }],
  exitCodes: [
    [0, 'retired'],
    [1, 'refused: the member is live (stop it first), or no member has that id (the registered ids are listed)'],
    [2, 'usage: no ID, or more than one'],
    [65, 'the fleet tables are missing; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; run it again'],
    [78, 'configuration invalid (DATABASE_URL, FLEET_MEMBER_TTL_MS, FLEET_HEARTBEAT_MS)'],
  ],
  run: (io, _values, args) => {
    const id = args[0] ?? '';
    const { ttlMs, problems } = memberTtlFromEnv(io.env);
    return withDatabase(
      io,
      async (pool) => {
        const before = await readFleet(pool, ttlMs);
        // A slot (FLEET_INSTANCE_ID, as alerts name it) retires every process registered in it.
        const inSlot = before.members.filter((m) => m.instanceId !== id && slotOf(m.instanceId) === id);
        if (!before.members.some((m) => m.instanceId === id) && inSlot.length > 0) {
          const live = inSlot.filter((m) => m.state === 'live');
          if (live.length > 0) {
            throw new OperatorError(
              `fleet member ${id} has a live process (${live.map((m) => m.instanceId).join(', ')}): it is not down; stop it first if it is to leave. Nothing was changed`,
              ExitCode.probeFailing,
            );
          }
          for (const m of inSlot) {
            try {
              await retireMember(pool, m.instanceId, ttlMs);
            } catch (err) {
              throw databaseFailure(err) ?? err;
            }
            writeLine(io.stdout, io.secrets, `retired fleet member ${m.instanceId} (host ${m.host}, pid ${m.pid}, last heartbeat ${ago(m.heartbeatAt, before.at)})`);
          }
          writeLine(io.stdout, io.secrets, `slot ${id} retired: its realm leases are freed, and the live members resolve its monitor_instance_down alert`);
          return ExitCode.ok;
        }
        const member = before.members.find((m) => m.instanceId === id);
        let outcome: Awaited<ReturnType<typeof retireMember>>;
        try {
          outcome = await retireMember(pool, id, ttlMs);
        } catch (err) {
          throw databaseFailure(err) ?? err;
        }
        if (outcome === 'unknown') {
          let ids: string[];
          try {
            ids = (await listMembers(pool)).map((m) => m.instanceId);
          } catch (err) {
            throw databaseFailure(err) ?? err;
          }
          const known = ids.length === 0 ? 'no member is registered at all' : `registered: ${ids.join(', ')}`;
          throw new OperatorError(`no fleet member is registered as "${id}" (${known}); nothing was changed`, ExitCode.probeFailing);
        }
        if (outcome === 'live') {
          const where = member ? ` (heartbeat ${ago(member.heartbeatAt, before.at)} on ${member.host}, pid ${member.pid})` : '';
          throw new OperatorError(
            `fleet member ${id} is live${where}: stop it first (on its host: \`pm2 stop qbo-health-monitor\`); ` +
              `a daemon that stops cleanly leaves the fleet by itself, and one that died is down after FLEET_MEMBER_TTL_MS=${ttlMs} ms without a heartbeat. Nothing was changed`,
            ExitCode.probeFailing,
          );
        }
        const detail = member ? ` (host ${member.host}, pid ${member.pid}, version ${member.version}, last heartbeat ${ago(member.heartbeatAt, before.at)})` : '';
        writeLine(io.stdout, io.secrets, `retired fleet member ${id}${detail}: its realm leases are freed, and the live members resolve its monitor_instance_down alert`);
        return ExitCode.ok;
      },
      problems,
    );
  },
};

export const fleetCommand: Command = {
  name: 'fleet',
  summary: 'the daemons sharing the database: live or down, versions, realms held; `fleet retire ID` removes a dead one',
  description:
    'Lists the members of the fleet (the daemons sharing this database): instance id, host, pid, version, health ' +
    'address, when it started, how old its heartbeat is (on the database\'s clock), live or down (down once the ' +
    'heartbeat is FLEET_MEMBER_TTL_MS old: the live members take its realms over and raise monitor_instance_down), and ' +
    'the realms whose lease it holds now. Warns when the live members run different versions, and ends with a summary ' +
    'line. `qbhealth fleet retire ID` removes a member that is gone for good. `qbhealth status` and GET /status carry the ' +
    'same fleet section. Needs only DATABASE_URL.',
  options: {
    json: { type: 'boolean', description: 'print the fleet as JSON (the `fleet` section of `qbhealth status --json`)' },
  },
  exitCodes: [
    [0, 'every registered member is live'],
    [1, 'a member is down (start it again, or retire it), or no member is registered (no daemon running)'],
    [2, 'usage: an unknown option or subcommand'],
    [65, 'the fleet tables are missing; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable; run it again'],
    [78, 'configuration invalid (DATABASE_URL, FLEET_MEMBER_TTL_MS, FLEET_HEARTBEAT_MS)'],
  ],
  subcommands: [retireCommand],
  runsWithoutSubcommand: true,
  run: (io, values) => {
    const { ttlMs, problems } = memberTtlFromEnv(io.env);
    return withDatabase(
      io,
      async (pool) => {
        const report = await readFleet(pool, ttlMs);
        writeLine(io.stdout, io.secrets, values.json ? JSON.stringify(report, null, 2) : renderFleet(report));
        return report.down > 0 || report.members.length === 0 ? ExitCode.probeFailing : ExitCode.ok;
      },
      problems,
    );
  },
};
