/**
 * lease_claim_rate (realms claimed per second from one PostgreSQL by concurrent claimers, with the
 * fleet's own claim query) and fleet_scaling (the cycle time of 1, 2 and 4 daemons sharing 2,000
 * realms through that database), each against a baseline from the same run.
 *
 * lease_claim_rate: 10,000 connected realms (and 2,000, reported), 4 claimers (a connection each,
 * as 4 daemons), each calling claimRealms() with one batch size until it claims nothing; a pass
 * ends when all four did. The baseline is the same four connections updating the same lease
 * columns of the same realms by primary key (`UPDATE … WHERE realm_id = ANY($batch)`, the batches
 * handed out in advance): the round trips and row writes a claim cannot avoid, without the
 * choosing and locking that make claims safe. Passes alternate (claims, baseline, baseline,
 * claims, …) and the verdict is on the median. Every pass is checked: the claims are disjoint and
 * cover every realm, each realm's lease_seq was bumped exactly once, and each row's holder is the
 * claimer that got it.
 *
 * fleet_scaling: real daemons (dist/main.js) with FLEET_INSTANCE_ID each, against the simulator
 * answering every request after 100 ms, PROBE_CONCURRENCY 10 (see CONCURRENCY). The fleet's cycle
 * time is from the tick until the last row of that period is in quickbooks_connection_health (its
 * created_at, the database's insert time). No two probes of a realm may be closer than DUE_SHARE
 * of a period, and a measured period must have every realm once (a period whose cycles do not fit
 * the schedule is not measured: see runFleet). Fleets of 1, 2 and 4 run in turn
 * (the order flipping each round), each measured over cycles after one warm-up cycle, and the
 * speedup of N daemons is the 1-daemon cycle over the N-daemon cycle of the same round; the
 * verdict is on the median of the per-round speedups / N. Nothing is pinned here: the
 * daemons, the simulator and PostgreSQL share the machine's cores, so each cycle's line says where
 * the CPU went (the daemons, this process, PostgreSQL and the rest) and how many rows and commits
 * PostgreSQL made per probe.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.js';
import { claimRealms, syncLeases } from '../../src/db/fleet-queries.js';
import { daemonEnv, spawnDaemon, type LogLine, type RunningDaemon } from '../support/daemon.js';
import { migratedDatabase } from '../support/qbo.js';
import { quiet, realmsFixture } from '../support/realms.js';
import { atLeast, COMMAND, failed, median, record, reported, type BenchResult } from './results.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A realm is due again this share of a schedule period after its last probe (the daemon's, src/daemon/daemon.ts). */
const DUE_SHARE = 0.5;

function expectTargetsMet(rows: readonly BenchResult[]): void {
  expect(failed(rows), 'targets failed (median of the rounds; spread beside it)').toEqual([]);
}

/** CPU time so far, in ms: the whole machine's busy time, the daemons', and this process's (the simulator's). */
interface CpuSample {
  readonly at: number;
  readonly machine: number;
  readonly daemons: number;
  readonly self: number;
}

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

function processCpuMs(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
  } catch {
    return 0;
  }
}

function cpuSample(pids: readonly number[]): CpuSample {
  const machine = os.cpus().reduce((n, c) => n + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0);
  const { user, system } = process.cpuUsage();
  return { at: Date.now(), machine, daemons: pids.reduce((n, pid) => n + processCpuMs(pid), 0), self: (user + system) / 1000 };
}

/**
 * Where the CPU went between two instants, in cores (CPU ms per wall ms): the machine as a whole,
 * the daemons, this process (the simulator, and the bench reading the daemons' logs), and the rest
 * (PostgreSQL, and anything else running).
 */
function coresBetween(samples: readonly CpuSample[], from: number, to: number): { machine: number; daemons: number; self: number; rest: number } | undefined {
  const a = [...samples].reverse().find((x) => x.at <= from);
  const b = samples.find((x) => x.at >= to);
  if (!a || !b || b.at <= a.at) return undefined;
  const wall = b.at - a.at;
  const machine = (b.machine - a.machine) / wall;
  const daemons = (b.daemons - a.daemons) / wall;
  const self = (b.self - a.self) / wall;
  return { machine, daemons, self, rest: Math.max(0, machine - daemons - self) };
}

describe('fleet coordination', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('lease_claim_rate: realms claimed by 4 concurrent claimers vs UPDATE by primary key of the same batches', async () => {
    const CLAIMERS = 4;
    const ROUNDS = 7;
    const TARGET = 5000;
    /** Leases long enough that none expires during a pass (an expired lease could be claimed twice, rightly). */
    const LEASE_MS = 600_000;
    const DUE_AFTER_MS = 60_000;
    /**
     * Batch sizes a daemon with PROBE_CONCURRENCY 4 (the default), 20 and 50 would claim, judged at
     * 10,000 realms; at 2,000 realms the default's batch is reported beside them (a claim chooses
     * among all due realms, so its cost grows with their number).
     */
    const CASES = [
      { realms: 10_000, batch: 4, judged: true },
      { realms: 10_000, batch: 20, judged: true },
      { realms: 10_000, batch: 50, judged: true },
      { realms: 2000, batch: 4, judged: false },
    ] as const;

    /** A migrated database with `realms` connected realms and their lease rows, and a connection per claimer. */
    const setUp = async (realms: number): Promise<{ db: Awaited<ReturnType<typeof migratedDatabase>>; pools: Pool[] }> => {
      const db = await migratedDatabase();
      cleanups.push(() => db.drop());
      await db.query(
        `INSERT INTO quickbooks_oauth_tokens (realm_id, environment, refresh_token_enc, status, company_name)
         SELECT (9100000000 + i)::text, 'sandbox', 'bench-not-a-token', 'connected', 'Bench Company ' || i FROM generate_series(0, $1::int - 1) i`,
        [realms],
      );
      await syncLeases(db.client);
      expect(Number((await db.query('SELECT count(*) AS n FROM quickbooks_realm_leases')).rows[0].n)).toBe(realms);
      const pools: Pool[] = [];
      for (let i = 0; i < CLAIMERS; i++) {
        const pool = createPool({ databaseUrl: db.url, applicationName: `bench-claimer-${i}`, max: 1 }, quiet);
        cleanups.push(() => pool.end());
        pools.push(pool);
        await pool.query('SELECT 1');
      }
      return { db, pools };
    };

    const rows: BenchResult[] = [];
    const judged: BenchResult[] = [];
    const databases = new Map<number, Awaited<ReturnType<typeof setUp>>>();
    const passes = new Map<number, number>();
    for (const { realms, batch, judged: isJudged } of CASES) {
      if (!databases.has(realms)) databases.set(realms, await setUp(realms));
      const { db, pools } = databases.get(realms) as Awaited<ReturnType<typeof setUp>>;

      // Every pass starts from the same state: no lease held, every realm last claimed and probed
      // minutes ago (spread over a minute, as in a running fleet), so every realm is due; dead rows
      // vacuumed.
      const reset = async (): Promise<void> => {
        await db.query(
          `UPDATE quickbooks_realm_leases SET holder = NULL, lease_until = NULL,
                  probed_at = now() - interval '5 minutes' - (hashtext(realm_id)::bigint % 60000) * interval '1 millisecond',
                  claimed_at = now() - interval '5 minutes' - (hashtext(realm_id)::bigint % 60000) * interval '1 millisecond' - interval '100 milliseconds'`,
        );
        await db.query('VACUUM (ANALYZE) quickbooks_realm_leases');
      };
      /** After a pass: every realm's lease bumped exactly once and held, by the claimer that got it. */
      const verify = async (held: ReadonlyArray<readonly string[]>): Promise<void> => {
        const pass = (passes.get(realms) ?? 0) + 1;
        passes.set(realms, pass);
        const { rows: stats } = await db.query<{ n: string; unheld: string; lo: string; hi: string }>(
          `SELECT count(*) AS n, count(*) FILTER (WHERE holder IS NULL OR lease_until <= now()) AS unheld, min(lease_seq) AS lo, max(lease_seq) AS hi FROM quickbooks_realm_leases`,
        );
        expect(stats[0]).toEqual({ n: String(realms), unheld: '0', lo: String(pass), hi: String(pass) });
        const byHolder = (await db.query<{ holder: string; n: string }>('SELECT holder, count(*) AS n FROM quickbooks_realm_leases GROUP BY holder')).rows;
        expect(Object.fromEntries(byHolder.map((r) => [r.holder, Number(r.n)]))).toEqual(
          Object.fromEntries(held.map((h, i) => [`claimer-${i}`, h.length] as const).filter(([, n]) => n !== 0)),
        );
      };

      /** One pass of claims: each claimer claims batches until it gets none. Returns realms/s. */
      const claimPass = async (): Promise<number> => {
        await reset();
        const held: string[][] = pools.map(() => []);
        const start = performance.now();
        await Promise.all(
          pools.map(async (pool, i) => {
            for (;;) {
              const leases = await claimRealms(pool, `claimer-${i}`, { limit: batch, dueAfterMs: DUE_AFTER_MS, leaseMs: LEASE_MS });
              if (leases.length === 0) return;
              if (leases.length > batch) throw new Error(`claimed ${leases.length} realms with limit ${batch}`);
              for (const l of leases) held[i]?.push(l.realmId);
            }
          }),
        );
        const seconds = (performance.now() - start) / 1000;
        // Disjoint and complete: no realm claimed twice in the pass, none left out.
        const claimed = held.flat();
        const distinct = new Set(claimed);
        expect(distinct.size, 'a realm was claimed twice in one pass').toBe(claimed.length);
        expect(distinct.size, 'realms left unclaimed at the end of a pass').toBe(realms);
        await verify(held);
        return realms / seconds;
      };

      /** One pass of the baseline: the same batches, by primary key, handed out in claim order. */
      const updatePass = async (): Promise<number> => {
        await reset();
        const order = (await db.query<{ realm_id: string }>('SELECT realm_id FROM quickbooks_realm_leases ORDER BY claimed_at NULLS FIRST, realm_id')).rows.map((r) => r.realm_id);
        const batches: string[][] = [];
        for (let i = 0; i < order.length; i += batch) batches.push(order.slice(i, i + batch));
        let next = 0;
        const held: string[][] = pools.map(() => []);
        const start = performance.now();
        await Promise.all(
          pools.map(async (pool, i) => {
            for (let b = batches[next++]; b !== undefined; b = batches[next++]) {
              const { rowCount } = await pool.query(
                `UPDATE quickbooks_realm_leases SET holder = $1, lease_seq = lease_seq + 1, lease_until = now() + interval '600 seconds', claimed_at = now()
                  WHERE realm_id = ANY($2::text[])`,
                [`claimer-${i}`, b],
              );
              if (rowCount !== b.length) throw new Error(`updated ${String(rowCount)} of ${b.length} rows`);
              held[i]?.push(...b);
            }
          }),
        );
        const seconds = (performance.now() - start) / 1000;
        await verify(held);
        return realms / seconds;
      };

      // One unrecorded pass of each side first (plans cached, buffers warm).
      await claimPass();
      await updatePass();
      const claims: number[] = [];
      const updates: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        if (round % 2 === 0) {
          claims.push(await claimPass());
          updates.push(await updatePass());
        } else {
          updates.push(await updatePass());
          claims.push(await claimPass());
        }
      }
      const name = `lease_claim_rate_batch_${batch}${realms === 10_000 ? '' : `_${realms}_realms`}`;
      process.stdout.write(
        `${name} rounds (claims/update realms/s, ${CLAIMERS} claimers, ${realms} realms, batch ${batch}): ` +
          `${claims.map((c, i) => `${Math.round(c)}/${Math.round(updates[i] as number)}=${(c / (updates[i] as number)).toFixed(3)}`).join(' ')}\n`,
      );
      const row = isJudged ? atLeast(name, 'realms/s', { values: claims, baselines: updates }, TARGET) : reported(name, 'realms/s', { values: claims, baselines: updates });
      rows.push(row);
      if (isJudged) judged.push(row);
    }
    record(...rows);
    expectTargetsMet(judged);
  });

  it('fleet_scaling: 2,000 realms, 100 ms Intuit latency, PROBE_CONCURRENCY 10, 1 vs 2 vs 4 daemons', async () => {
    const REALMS = 2000;
    const LATENCY_MS = 100;
    /**
     * Daemons add probing capacity where Intuit's latency bounds a cycle: each has PROBE_CONCURRENCY
     * probes in flight, so N daemons wait on Intuit N times as much at once. 10 per daemon (the
     * default is 4) keeps this benchmark in that regime on a machine of 2 cores: a probe costs about
     * 2 ms of CPU across the daemon, PostgreSQL and the simulator, so 2,000 probes need about 2 s of
     * both cores whatever the fleet, and 4 daemons at 10 wait 5 s on Intuit. With 40 per daemon
     * (1.25 s of waiting for 4) the cores, not Intuit, bound 4 daemons, and adding daemons to one
     * small machine cannot make its cores faster (4 daemons measured 2.3 × one there).
     */
    const CONCURRENCY = 10;
    const FLEETS = [1, 2, 4] as const;
    /**
     * Seconds between ticks per fleet size (a divisor of 60), about 3 × the ideal cycle: after a
     * cycle that ends more than (1 - DUE_SHARE) of a period after its tick, the realms it probed
     * last are not yet due at the next tick, and that period would measure the wait instead of the
     * fleet (it is then not measured; see runFleet).
     */
    const PERIOD_S: Record<(typeof FLEETS)[number], number> = { 1: 60, 2: 30, 4: 20 };
    const ROUNDS = 2;
    /** Cycles measured per fleet run, after one warm-up cycle (connections, JIT, token cache). */
    const CYCLES = 2;
    const idealMs = (n: number): number => (REALMS * LATENCY_MS) / (n * CONCURRENCY);

    const fx = await realmsFixture(REALMS);
    cleanups.push(() => fx.close());
    fx.sim.latencyMs = LATENCY_MS;
    const maxConnections = Number((await fx.db.query<{ max_connections: string }>('SHOW max_connections')).rows[0]?.max_connections);
    const needed = Math.max(...FLEETS) * (CONCURRENCY + 3) + 10;
    if (needed > maxConnections) throw new Error(`${Math.max(...FLEETS)} daemons with PROBE_CONCURRENCY ${CONCURRENCY} need ${needed} connections; the server allows ${maxConnections}`);

    /**
     * What went wrong in a period, for the failure message: each member's cycle, what the members
     * warned about, and for a few realms probed twice, which member probed each when.
     */
    const periodReport = async (daemons: readonly RunningDaemon[], lines: readonly LogLine[], tick: number, periodMs: number): Promise<string> => {
      const cyclesText = lines.map((l, i) => `member ${i}: ${String(l.realms)} realm(s), ${String(l.durationMs)} ms, ended ${String(l.time)}${l.uncoordinated === true ? ', without coordination' : ''}`);
      const warnings = daemons.flatMap((d, i) => d.lines.filter((l) => (l.level ?? 0) >= 40).map((l) => `member ${i}: ${JSON.stringify(l).slice(0, 400)}`));
      const { rows: twice } = await fx.db.query<{ realm_id: string }>(
        `SELECT realm_id FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2 GROUP BY realm_id HAVING count(*) > 1 ORDER BY realm_id LIMIT 5`,
        [new Date(tick), new Date(tick + periodMs)],
      );
      const probesOf = (realmId: string): string =>
        daemons
          .flatMap((d, i) => d.lines.filter((l) => (l.event === 'probe.succeeded' || l.event === 'probe.failed') && l.realmId === realmId && Date.parse(String(l.time)) >= tick - periodMs).map((l) => `member ${i} at ${String(l.time)}`))
          .join(', ');
      // A realm probed later than (1 - DUE_SHARE) of a period after the previous tick is not due at
      // this one, and a quick cycle may end before it is.
      const { rows: previous } = await fx.db.query<{ last: Date | null }>(
        `SELECT max(created_at) AS last FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2`,
        [new Date(tick - periodMs), new Date(tick)],
      );
      const previousLast = previous[0]?.last;
      return [
        `${daemons.length} daemon(s), period from ${new Date(tick).toISOString()} (${periodMs} ms):`,
        ...cyclesText,
        previousLast ? `the previous period's last row came ${previousLast.getTime() - (tick - periodMs)} ms after its tick (realms probed more than ${(1 - DUE_SHARE) * periodMs} ms after it are not due yet at this tick)` : 'no row in the previous period',
        ...twice.map((r) => `realm ${r.realm_id} probed by ${probesOf(r.realm_id)}`),
        `members' warnings (${warnings.length}):`,
        ...warnings.slice(0, 10),
      ].join('\n');
    };

    /** A fleet of `n` daemons for `CYCLES` measured periods: the cycle times in ms, and the machine's busy cores in each. */
    const runFleet = async (n: number, round: number): Promise<{ cycles: number[]; cores: number[] }> => {
      // Every run starts from the same state: no member, no lease held, every realm due.
      await fx.db.query('DELETE FROM quickbooks_monitor_members');
      await fx.db.query('UPDATE quickbooks_realm_leases SET holder = NULL, lease_until = NULL, probed_at = NULL');
      const periodMs = PERIOD_S[n as (typeof FLEETS)[number]] * 1000;
      const daemons: RunningDaemon[] = [];
      const cycles: number[] = [];
      const cores: number[] = [];
      let cleanupSampler = (): void => undefined;
      const dbStats = async (): Promise<{ xacts: number; written: number }> => {
        const { rows } = await fx.db.query<{ xacts: string; written: string }>(
          `SELECT xact_commit AS xacts, tup_inserted + tup_updated + tup_deleted AS written FROM pg_stat_database WHERE datname = current_database()`,
        );
        return { xacts: Number(rows[0]?.xacts), written: Number(rows[0]?.written) };
      };
      let statsBefore = { xacts: 0, written: 0 };
      try {
        for (let i = 0; i < n; i++) {
          daemons.push(
            spawnDaemon({
              ...daemonEnv(fx.db.url, fx.sim),
              FLEET_INSTANCE_ID: `bench-r${round}-n${n}-${i}`,
              FLEET_HEARTBEAT_MS: '5000',
              FLEET_MEMBER_TTL_MS: '15000',
              PROBE_SCHEDULE: `*/${periodMs / 1000} * * * * *`,
              PROBE_CONCURRENCY: String(CONCURRENCY),
              PROBE_TIMEOUT_MS: '10000',
              LOG_LEVEL: 'info',
            }),
          );
        }
        for (const d of daemons) await d.url();
        const pids = daemons.map((d) => d.child.pid as number);
        const samples: CpuSample[] = [cpuSample(pids)];
        const sampler = setInterval(() => samples.push(cpuSample(pids)), 100);
        cleanupSampler = () => clearInterval(sampler);
        // The first tick at least 500 ms away is the warm-up; the next CYCLES are measured.
        const first = Math.ceil((Date.now() + 500) / periodMs) * periodMs;
        /** How long after its tick the previous period's last row came. */
        let previousEndMs: number | undefined;
        let probesMeasured = 0;
        for (let k = 0; cycles.length < CYCLES; k++) {
          if (k > CYCLES + 4) throw new Error(`${n} daemon(s): only ${cycles.length} of ${CYCLES} periods measurable in ${k - 1} after the warm-up (cycles that did not fit the ${periodMs} ms schedule: is the machine busy?)`);
          const tick = first + k * periodMs;
          // Every member's cycle for this tick has completed (a member that claims nothing completes one too).
          const lines = await Promise.all(
            daemons.map((d) =>
              d.waitFor('scheduler.cycle_completed', {
                timeoutMs: tick + 3 * periodMs - Date.now(),
                where: (l) => Date.parse(String(l.time)) - Number(l.durationMs) >= tick - 100,
              }),
            ),
          );
          const { rows } = await fx.db.query<{ n: string; distinct: string; last: Date | null }>(
            `SELECT count(*) AS n, count(DISTINCT realm_id) AS distinct, max(created_at) AS last
               FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2`,
            [new Date(tick), new Date(tick + periodMs)],
          );
          const row = rows[0] as { n: string; distinct: string; last: Date | null };
          const probed = lines.map((l) => Number(l.realms));
          const counted = { rows: Number(row.n), realms: Number(row.distinct), probedByMembers: probed.reduce((a, b) => a + b, 0) };
          const maxDuration = Math.max(...lines.map((l) => Number(l.durationMs)));
          // What the fleet promises: no two probes of a realm closer than DUE_SHARE of a period (a
          // realm is claimed again only that long after its last probe ended), so never two members
          // on one realm at once. Checked across this period and the one before.
          const { rows: spacing } = await fx.db.query<{ close: string; min_gap_ms: number | null }>(
            `SELECT count(*) FILTER (WHERE gap < $3) AS close, min(gap) AS min_gap_ms FROM (
               SELECT (extract(epoch FROM checked_at - lag(checked_at) OVER (PARTITION BY realm_id ORDER BY checked_at)) * 1000)::float8 AS gap
                 FROM quickbooks_connection_health WHERE checked_at >= $1 AND checked_at < $2) g`,
            [new Date(tick - periodMs), new Date(tick + periodMs), DUE_SHARE * periodMs - 20], // 20 ms: two reads of the same clock
          );
          const close = Number(spacing[0]?.close ?? 0);
          // A period is measured when its cycles fit the schedule: no member's cycle longer than
          // DUE_SHARE of a period (then realms probed at its start are due again before it ends, and
          // are rightly probed again), and not short of realms after a cycle that ended more than
          // 1 - DUE_SHARE of a period after its tick (its last realms are not due yet at this tick,
          // and a quicker cycle rightly ends before they are).
          const overran = maxDuration > DUE_SHARE * periodMs;
          const late = counted.rows < REALMS && previousEndMs !== undefined && previousEndMs > (1 - DUE_SHARE) * periodMs;
          const complete = counted.rows === REALMS && counted.realms === REALMS && counted.probedByMembers === REALMS;
          if (close > 0 || (!overran && !late && !complete)) {
            expect(
              { ...counted, probesCloserThanDueShare: close },
              `${await periodReport(daemons, lines, tick, periodMs)}\nclosest two probes of a realm: ${String(spacing[0]?.min_gap_ms)} ms apart`,
            ).toEqual({ rows: REALMS, realms: REALMS, probedByMembers: REALMS, probesCloserThanDueShare: 0 });
          }
          const ms = row.last === null ? Number.NaN : row.last.getTime() - tick;
          await sleep(150);
          const cpu = row.last === null ? undefined : coresBetween(samples, tick, row.last.getTime());
          const cpuText = cpu
            ? `CPU ${cpu.machine.toFixed(2)} of ${os.availableParallelism()} cores busy: daemons ${cpu.daemons.toFixed(2)}, simulator and bench ${cpu.self.toFixed(2)}, PostgreSQL and the rest ${cpu.rest.toFixed(2)}`
            : 'CPU not sampled';
          const what =
            k === 0
              ? 'warm-up'
              : overran
                ? `not measured (a member's cycle took longer than ${DUE_SHARE * periodMs} ms; ${counted.rows} probes of ${counted.realms} realms)`
                : late
                  ? `not measured (${counted.rows} realms: the previous cycle ended ${String(previousEndMs)} ms after its tick)`
                  : `cycle ${cycles.length + 1}`;
          process.stdout.write(
            `fleet_scaling ${n} daemon(s) round ${round} ${what}: ${ms} ms from the tick to the last row ` +
              `(ideal ${idealMs(n)} ms; longest member cycle ${maxDuration} ms; realms per member ${probed.join('/')}; ${cpuText})\n`,
          );
          if (k > 0) probesMeasured += counted.rows;
          if (k > 0 && !late && !overran) {
            cycles.push(ms);
            if (cpu) cores.push(cpu.machine);
          }
          if (k === 0) statsBefore = await dbStats();
          previousEndMs = ms;
        }
        // The database's work per probe over the periods after the warm-up (heartbeats and these queries included).
        await sleep(1100); // PostgreSQL flushes a backend's statistics at most a second late
        const statsAfter = await dbStats();
        process.stdout.write(
          `fleet_scaling ${n} daemon(s) round ${round}: per probe, PostgreSQL committed ${((statsAfter.xacts - statsBefore.xacts) / probesMeasured).toFixed(2)} transactions ` +
            `and wrote ${((statsAfter.written - statsBefore.written) / probesMeasured).toFixed(2)} rows (inserted + updated + deleted)\n`,
        );
        return { cycles, cores };
      } finally {
        cleanupSampler();
        for (const d of daemons) await d.stop('SIGINT');
      }
    };

    const times: Record<number, number[]> = { 1: [], 2: [], 4: [] };
    const busy: Record<number, number[]> = { 1: [], 2: [], 4: [] };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? FLEETS : [...FLEETS].reverse();
      for (const n of order) {
        const run = await runFleet(n, round);
        times[n]?.push(median(run.cycles));
        if (run.cores.length > 0) busy[n]?.push(median(run.cores));
      }
    }

    const t1 = times[1] as number[];
    const rows: BenchResult[] = [];
    for (const n of FLEETS) {
      // probe_cycle's convention: each round's ideal / actual, higher is better; reported.
      const tn = times[n] as number[];
      const efficiency = tn.map((ms) => idealMs(n) / ms);
      rows.push({
        name: `fleet_cycle_${n}`,
        value: median(tn),
        unit: 'ms',
        baseline: idealMs(n),
        ratio: median(efficiency),
        judged: 'ratio',
        spread: [Math.min(...efficiency), Math.max(...efficiency)],
        rounds: tn.length,
        target: null,
        verdict: 'reported',
        command: COMMAND,
      });
      // The machine's busy cores during those cycles: where it nears the core count, the cycle
      // waits for CPU (daemons, simulator and PostgreSQL share it), not for the database's leases.
      if ((busy[n] ?? []).length > 0) rows.push(reported(`fleet_cycle_${n}_cpu`, 'cores', { values: busy[n] as number[] }));
    }
    for (const n of [2, 4] as const) {
      // The speedup of each round (1 daemon's cycle / n daemons' cycle, measured in the same
      // round), judged as speedup / n.
      const tn = times[n] as number[];
      const speedups = t1.map((t, i) => t / (tn[i] as number));
      const perN = speedups.map((s) => s / n);
      const ratio = median(perN);
      rows.push({
        name: n === 4 ? 'fleet_scaling' : `fleet_scaling_${n}`,
        value: median(speedups),
        unit: 'x',
        baseline: n,
        ratio,
        judged: 'ratio',
        spread: [Math.min(...perN), Math.max(...perN)],
        rounds: perN.length,
        target: 'speedup/N >= 0.8',
        verdict: ratio >= 0.8 ? 'pass' : 'fail',
        command: COMMAND,
      });
    }
    record(...rows);
    expectTargetsMet(rows);
    // 2 rounds of 3 fleets, 3 periods each (a minute's for one daemon).
  }, 1_200_000);
});
