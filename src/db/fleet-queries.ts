/**
 * Named queries on the fleet's tables, quickbooks_monitor_members and quickbooks_realm_leases
 * (identifiers from db/schema.ts). Every instant is the database's (`now()`), never a member's
 * host clock: a member whose clock is off neither steals leases early nor keeps them late.
 */
import { leasesTable as L, membersTable as M, tokensTable as T } from './schema.js';
import type { Queryable } from './pool.js';

/** `$n` milliseconds as an interval. */
const ms = (param: string): string => `make_interval(secs => ${param}::double precision / 1000)`;

export interface MemberRegistration {
  readonly instanceId: string;
  readonly host: string;
  readonly pid: number;
  readonly version: string;
  readonly healthAddress: string | undefined;
}

export interface MemberRow extends MemberRegistration {
  readonly startedAt: Date;
  readonly heartbeatAt: Date;
  /** now() − heartbeat_at on the database's clock. */
  readonly heartbeatAgeMs: number;
  /** Realms whose lease it holds now. */
  readonly realmsHeld: number;
}

/** Joins the fleet (or comes back to it under the same id), with a fresh heartbeat. */
export async function registerMember(db: Queryable, m: MemberRegistration): Promise<void> {
  await db.query(
    `INSERT INTO ${M.name} (instance_id, host, pid, version, health_address, started_at, heartbeat_at)
     VALUES ($1, $2, $3, $4, $5, now(), now())
     ON CONFLICT (instance_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version,
       health_address = EXCLUDED.health_address, started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at`,
    [m.instanceId, m.host, m.pid, m.version, m.healthAddress ?? null],
  );
}

/** The member registered under `instanceId`, if any (for refusing a live duplicate). */
export async function memberById(db: Queryable, instanceId: string): Promise<MemberRow | undefined> {
  return (await listMembers(db)).find((m) => m.instanceId === instanceId);
}

/**
 * The heartbeat: the member's row, and the leases of the realms it is probing now (`realms`), are
 * renewed for `ttlMs`. A lease it no longer works on (a probe whose end could not be written) is
 * not renewed: it expires and the realm goes to whoever claims it next. Rows are locked in
 * realm_id order, as finishLeases locks them, so the two never deadlock. `registered` false means
 * the member's row is gone (retired while this member was stopped): the caller registers again.
 */
export async function heartbeat(db: Queryable, instanceId: string, ttlMs: number, realms: readonly string[] = []): Promise<{ registered: boolean; held: number; now: Date }> {
  const { rows } = await db.query<{ registered: string; held: string; db_now: Date }>(
    `WITH m AS (UPDATE ${M.name} SET heartbeat_at = now() WHERE instance_id = $1 RETURNING 1),
          locked AS (SELECT realm_id FROM ${L.name} WHERE holder = $1 AND realm_id = ANY($3::text[]) AND lease_until > now() ORDER BY realm_id FOR UPDATE),
          l AS (UPDATE ${L.name} x SET lease_until = now() + ${ms('$2')} FROM locked WHERE x.realm_id = locked.realm_id RETURNING 1)
     SELECT (SELECT count(*) FROM m) AS registered, (SELECT count(*) FROM l) AS held, clock_timestamp() AS db_now`,
    [instanceId, ttlMs, realms],
  );
  return { registered: Number(rows[0]?.registered ?? 0) > 0, held: Number(rows[0]?.held ?? 0), now: rows[0]?.db_now ?? new Date() };
}

/** A clean stop: leases handed back at once, the row removed. Returns how many leases it released. */
export async function deregisterMember(db: Queryable, instanceId: string): Promise<number> {
  const { rows } = await db.query<{ released: string }>(
    `WITH l AS (UPDATE ${L.name} SET holder = NULL, lease_until = NULL WHERE holder = $1 RETURNING 1),
          m AS (DELETE FROM ${M.name} WHERE instance_id = $1 RETURNING 1)
     SELECT (SELECT count(*) FROM l) AS released`,
    [instanceId],
  );
  return Number(rows[0]?.released ?? 0);
}

/**
 * `qbhealth fleet retire ID`: a member that is gone for good leaves the fleet (its leases freed, its
 * row removed). Refused (`live`) while its heartbeat is younger than `ttlMs`.
 */
export async function retireMember(db: Queryable, instanceId: string, ttlMs: number): Promise<'retired' | 'live' | 'unknown'> {
  const { rows } = await db.query<{ live: boolean }>(
    `SELECT heartbeat_at > now() - ${ms('$2')} AS live FROM ${M.name} WHERE instance_id = $1`,
    [instanceId, ttlMs],
  );
  if (rows.length === 0) return 'unknown';
  if (rows[0]?.live) return 'live';
  await deregisterMember(db, instanceId);
  return 'retired';
}

export async function listMembers(db: Queryable): Promise<MemberRow[]> {
  const { rows } = await db.query<{
    instance_id: string;
    host: string;
    pid: number;
    version: string;
    health_address: string | null;
    started_at: Date;
    heartbeat_at: Date;
    heartbeat_age_ms: number;
    realms_held: string;
  }>(
    `SELECT m.instance_id, m.host, m.pid, m.version, m.health_address, m.started_at, m.heartbeat_at,
            (extract(epoch FROM now() - m.heartbeat_at) * 1000)::float8 AS heartbeat_age_ms,
            (SELECT count(*) FROM ${L.name} l WHERE l.holder = m.instance_id AND l.lease_until > now()) AS realms_held
       FROM ${M.name} m ORDER BY m.instance_id`,
  );
  return rows.map((r) => ({
    instanceId: r.instance_id,
    host: r.host,
    pid: r.pid,
    version: r.version,
    healthAddress: r.health_address ?? undefined,
    startedAt: r.started_at,
    heartbeatAt: r.heartbeat_at,
    heartbeatAgeMs: Math.max(0, r.heartbeat_age_ms),
    realmsHeld: Number(r.realms_held),
  }));
}

/** Now on the database's clock. */
export async function databaseNow(db: Queryable): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now() AS now');
  return rows[0]?.now ?? new Date();
}

/**
 * Gives every monitored realm a lease row and removes the rows of realms no longer in the token
 * table. Cheap when nothing changed (two anti-joins on the primary keys).
 */
export async function syncLeases(db: Queryable): Promise<void> {
  await db.query(
    `WITH added AS (
       INSERT INTO ${L.name} (realm_id) SELECT t.realm_id FROM ${T.name} t
        WHERE t.status <> 'disconnected' AND NOT EXISTS (SELECT 1 FROM ${L.name} l WHERE l.realm_id = t.realm_id)
       ON CONFLICT (realm_id) DO NOTHING RETURNING 1)
     DELETE FROM ${L.name} l WHERE NOT EXISTS (SELECT 1 FROM ${T.name} t WHERE t.realm_id = l.realm_id)`,
  );
}

export interface Lease {
  readonly realmId: string;
  /** The claim's number: finishing needs it unchanged (nobody claimed the realm since). */
  readonly seq: string;
}

/**
 * Claims up to `limit` realms that are due (not probed in the last `dueAfterMs`) and free (no
 * lease, or one that expired: its holder stopped heartbeating), longest-waiting first (claimed
 * longest ago; a claim moves its realms to the end of that order, so each claim reads the first
 * due rows of its index and stops), skipping rows another member is claiming this instant. The
 * lease runs `leaseMs`; heartbeats renew it. `force` claims free realms whether due or not
 * (`probeNow`). `probedBefore` (a cycle's start) leaves out realms probed since: a cycle longer
 * than `dueAfterMs` ends after one pass instead of claiming its first realms again.
 */
export async function claimRealms(
  db: Queryable,
  instanceId: string,
  opts: { limit: number; dueAfterMs: number; leaseMs: number; force?: boolean; probedBefore?: Date },
): Promise<Lease[]> {
  const { rows } = await db.query<{ realm_id: string; lease_seq: string; probed_at: Date | null }>(
    `WITH due AS (
       SELECT l.realm_id FROM ${L.name} l
         JOIN ${T.name} t ON t.realm_id = l.realm_id AND t.status <> 'disconnected'
        WHERE (l.lease_until IS NULL OR l.lease_until < now())
          AND ($5 OR l.probed_at IS NULL OR (l.probed_at <= now() - ${ms('$3')} AND ($6::timestamptz IS NULL OR l.probed_at < $6)))
        ORDER BY l.claimed_at NULLS FIRST, l.realm_id
        LIMIT $2
        FOR UPDATE OF l SKIP LOCKED
     )
     UPDATE ${L.name} l SET holder = $1, lease_seq = l.lease_seq + 1, lease_until = now() + ${ms('$4')}, claimed_at = now()
       FROM due WHERE l.realm_id = due.realm_id
     RETURNING l.realm_id, l.lease_seq, l.probed_at`,
    [instanceId, opts.limit, opts.dueAfterMs, opts.leaseMs, opts.force ?? false, opts.probedBefore ?? null],
  );
  // RETURNING keeps no order: the longest unprobed first.
  rows.sort((a, b) => (a.probed_at?.getTime() ?? -Infinity) - (b.probed_at?.getTime() ?? -Infinity) || a.realm_id.localeCompare(b.realm_id));
  return rows.map((r) => ({ realmId: r.realm_id, seq: r.lease_seq }));
}

export interface FinishedProbe {
  readonly lease: Lease;
  readonly connected: boolean;
  /** The result as the fleet view serves it (JSON). */
  readonly result: unknown;
}

/**
 * Ends the leases of probes that finished: the realm is marked probed now, with its result, and
 * freed. Returns the realms whose lease was still this member's (the same claim); for the others
 * the lease was lost (it expired and another member claimed the realm) and the result is not ours to keep.
 */
export async function finishLeases(db: Queryable, instanceId: string, probes: readonly FinishedProbe[]): Promise<Set<string>> {
  if (probes.length === 0) return new Set();
  // Rows locked in realm_id order, as the heartbeat locks them: the two never deadlock.
  const { rows } = await db.query<{ realm_id: string }>(
    `WITH f AS (SELECT * FROM unnest($2::text[], $3::bigint[], $4::boolean[], $5::jsonb[]) AS f(realm_id, seq, connected, result)),
          locked AS (SELECT x.realm_id FROM ${L.name} x JOIN f ON f.realm_id = x.realm_id WHERE x.holder = $1 AND x.lease_seq = f.seq ORDER BY x.realm_id FOR UPDATE OF x)
     UPDATE ${L.name} l SET holder = NULL, lease_until = NULL, probed_at = now(), probed_by = $1, last_result = f.result,
            last_success_at = CASE WHEN f.connected THEN now() ELSE l.last_success_at END
       FROM f JOIN locked ON locked.realm_id = f.realm_id
      WHERE l.realm_id = f.realm_id
     RETURNING l.realm_id`,
    [instanceId, probes.map((p) => p.lease.realmId), probes.map((p) => p.lease.seq), probes.map((p) => p.connected), probes.map((p) => JSON.stringify(p.result))],
  );
  return new Set(rows.map((r) => r.realm_id));
}

/** Hands leases back unprobed (a stop before their probes started). */
export async function releaseLeases(db: Queryable, instanceId: string, leases: readonly Lease[]): Promise<void> {
  if (leases.length === 0) return;
  await db.query(
    `UPDATE ${L.name} l SET holder = NULL, lease_until = NULL FROM unnest($2::text[], $3::bigint[]) AS f(realm_id, seq)
      WHERE l.realm_id = f.realm_id AND l.holder = $1 AND l.lease_seq = f.seq`,
    [instanceId, leases.map((l) => l.realmId), leases.map((l) => l.seq)],
  );
}

export interface RealmView {
  readonly realmId: string;
  readonly holder: string | undefined;
  /** now() − probed_at on the database's clock; undefined when never probed. */
  readonly probedAgeMs: number | undefined;
  readonly probedBy: string | undefined;
  /** The last result, as finishLeases stored it; only for realms probed after `since` (all when undefined). */
  readonly lastResult: unknown;
  readonly lastSuccessAgeMs: number | undefined;
}

/**
 * The fleet's view of every monitored realm (connected or reconnect_required, whether it has a
 * lease row yet or not), and the database's clock. Results are sent only for
 * realms probed after `since` (an earlier call's `now`): the rest are unchanged.
 */
export async function fleetView(db: Queryable, since: Date | undefined): Promise<{ now: Date; realms: RealmView[] }> {
  const { rows } = await db.query<{
    db_now: Date;
    realm_id: string | null;
    holder: string | null;
    probed_age_ms: number | null;
    probed_by: string | null;
    last_result: unknown;
    last_success_age_ms: number | null;
  }>(
    `SELECT now() AS db_now, t.realm_id, CASE WHEN l.lease_until > now() THEN l.holder END AS holder,
            (extract(epoch FROM now() - l.probed_at) * 1000)::float8 AS probed_age_ms, l.probed_by,
            CASE WHEN $1::timestamptz IS NULL OR l.probed_at >= $1::timestamptz THEN l.last_result END AS last_result,
            (extract(epoch FROM now() - l.last_success_at) * 1000)::float8 AS last_success_age_ms
       FROM (SELECT 1) one
       LEFT JOIN (${T.name} t LEFT JOIN ${L.name} l ON l.realm_id = t.realm_id) ON t.status <> 'disconnected'
      ORDER BY t.realm_id`,
    [since ?? null],
  );
  return {
    now: rows[0]?.db_now ?? new Date(),
    realms: rows
      .filter((r): r is typeof r & { realm_id: string } => r.realm_id !== null)
      .map((r) => ({
        realmId: r.realm_id,
        holder: r.holder ?? undefined,
        probedAgeMs: r.probed_age_ms ?? undefined,
        probedBy: r.probed_by ?? undefined,
        lastResult: r.last_result ?? undefined,
        lastSuccessAgeMs: r.last_success_age_ms ?? undefined,
      })),
  };
}

export interface UnpublishedResult {
  readonly realmId: string;
  /** How long ago the probe was taken (on the member's own clock, which only has to agree with itself). */
  readonly ageMs: number;
  readonly connected: boolean;
  /** The result as the fleet view serves it (JSON). */
  readonly result: unknown;
}

/**
 * Results a member kept without ending a lease with them (PostgreSQL was away: probed without
 * coordination, or the lease could not be ended) put into the fleet's view once PostgreSQL answers:
 * the realm's probed_at, placed by the result's age on the database's clock, and its last result,
 * where the view holds nothing newer. Leases are not touched. Returns how many realms took one.
 */
export async function publishResults(db: Queryable, instanceId: string, results: readonly UnpublishedResult[]): Promise<number> {
  if (results.length === 0) return 0;
  const { rows } = await db.query<{ realm_id: string }>(
    `UPDATE ${L.name} l SET probed_at = now() - ${ms('f.age_ms')}, probed_by = $1, last_result = f.result,
            last_success_at = CASE WHEN f.connected THEN greatest(l.last_success_at, now() - ${ms('f.age_ms')}) ELSE l.last_success_at END
       FROM unnest($2::text[], $3::float8[], $4::boolean[], $5::jsonb[]) AS f(realm_id, age_ms, connected, result)
      WHERE l.realm_id = f.realm_id AND (l.probed_at IS NULL OR l.probed_at < now() - ${ms('f.age_ms')})
     RETURNING l.realm_id`,
    [instanceId, results.map((r) => r.realmId), results.map((r) => r.ageMs), results.map((r) => r.connected), results.map((r) => JSON.stringify(r.result))],
  );
  return rows.length;
}
