/**
 * The fleet as an operator reads it (`qbhealth fleet`, the `fleet` section of `qbhealth status`
 * and `GET /status`): every registered member with its heartbeat age on the database's clock,
 * live or down against FLEET_MEMBER_TTL_MS, the realms each holds, whether the live members run
 * one version, and how many monitored realms are held right now. Read-only.
 */
import { listMembers } from './fleet-queries.js';
import type { Queryable } from './pool.js';
import { leasesTable as L, tokensTable as T } from './schema.js';

/** FLEET_MEMBER_TTL_MS's default (3 × FLEET_HEARTBEAT_MS's 5000), for readers not given the daemon's. */
export const DEFAULT_FLEET_MEMBER_TTL_MS = 15_000;

export type MemberState = 'live' | 'down';

export interface FleetMemberReport {
  readonly instanceId: string;
  readonly host: string;
  readonly pid: number;
  readonly version: string;
  /** Where its health server listens, as it registered it; null when it gave none. */
  readonly healthAddress: string | null;
  readonly startedAt: string;
  readonly heartbeatAt: string;
  /** The database's now() − heartbeat_at: no host's clock is involved. */
  readonly heartbeatAgeMs: number;
  /** `down` once the heartbeat is memberTtlMs old: the live members take its realms over and raise monitor_instance_down. */
  readonly state: MemberState;
  /** Realms whose lease it holds now. */
  readonly realmsHeld: number;
}

export interface FleetReport {
  /** The database's clock when the fleet was read: every age is measured on it. */
  readonly at: string;
  /** FLEET_MEMBER_TTL_MS the members were judged against. */
  readonly memberTtlMs: number;
  readonly members: FleetMemberReport[];
  readonly live: number;
  readonly down: number;
  /** The versions the live members run, each with its members; more than one during a rolling upgrade. */
  readonly versions: Array<{ version: string; members: string[] }>;
  readonly versionsDiffer: boolean;
  /** Monitored realms (not disconnected), and those whose lease some member holds now. */
  readonly realms: { total: number; held: number };
}

const REALMS_SQL = `SELECT now() AS db_now,
    (SELECT count(*) FROM ${T.name} t WHERE t.${T.col('status')} <> 'disconnected')::int AS total,
    (SELECT count(*) FROM ${L.name} l WHERE l.${L.col('holder')} IS NOT NULL AND l.${L.col('lease_until')} > now())::int AS held`;

/**
 * Reads the fleet. Run it inside one snapshot (REPEATABLE READ) when the figures must agree with
 * each other: now() is then the same instant for the members' ages and the realm counts.
 */
export async function loadFleetReport(db: Queryable, memberTtlMs: number): Promise<FleetReport> {
  // One statement at a time: `db` may be a single client.
  const rows = await listMembers(db);
  const realms = await db.query<{ db_now: Date; total: number; held: number }>(REALMS_SQL);
  const summary = realms.rows[0];
  // A SELECT without FROM always answers one row; anything else is not PostgreSQL as we know it.
  if (!summary) throw new Error('the fleet summary query returned no row');
  const members = rows.map(
    (m): FleetMemberReport => ({
      instanceId: m.instanceId,
      host: m.host,
      pid: m.pid,
      version: m.version,
      healthAddress: m.healthAddress ?? null,
      startedAt: m.startedAt.toISOString(),
      heartbeatAt: m.heartbeatAt.toISOString(),
      heartbeatAgeMs: Math.round(m.heartbeatAgeMs),
      // The same test as retireMember's and the daemons' own (heartbeat younger than the TTL).
      state: m.heartbeatAgeMs < memberTtlMs ? 'live' : 'down',
      realmsHeld: m.realmsHeld,
    }),
  );
  const byVersion = new Map<string, string[]>();
  for (const m of members) if (m.state === 'live') byVersion.set(m.version, [...(byVersion.get(m.version) ?? []), m.instanceId]);
  const versions = [...byVersion].map(([version, ids]) => ({ version, members: ids })).sort((a, b) => a.version.localeCompare(b.version));
  const live = members.filter((m) => m.state === 'live').length;
  return {
    at: summary.db_now.toISOString(),
    memberTtlMs,
    members,
    live,
    down: members.length - live,
    versions,
    versionsDiffer: versions.length > 1,
    realms: { total: summary.total, held: summary.held },
  };
}
