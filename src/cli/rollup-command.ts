/** `qbhealth rollup [--rebuild] [--realm-id R]`: whether the rollups cover the history, and rebuilding them from the raw rows. */
import { sqlState, SqlState } from '../db/pool.js';
import { describeIncompleteRollups, REBUILD_CHUNK_DAYS, rebuildRollups, rollupCoverage } from '../db/rollup-rebuild.js';
import { ExitCode, OperatorError } from '../errors.js';
import { writeLine, type Command } from './command.js';
import { withDatabase } from './db-commands.js';
import { databaseFailure, realmOption, requireRealm } from './qbo-commands.js';

const day = (d: Date): string => d.toISOString().slice(0, 10);

/** A busy lock (recording held the rollups past the wait) is worth retrying, like an unreachable database. */
function rollupFailure(err: unknown): unknown {
  if (sqlState(err) === SqlState.lockNotAvailable) {
    return new OperatorError(`the rollup tables stayed locked by other writers for too long (${(err as Error).message}); run it again`, ExitCode.temporaryFailure, { cause: err });
  }
  return databaseFailure(err) ?? err;
}

export const rollupCommand: Command = {
  name: 'rollup',
  summary: 'check that the rollups (the dashboard\'s history) cover the raw history; --rebuild recomputes them',
  description:
    'The dashboard reads its 90 days of history from rollups (per realm, per half hour and per UTC day) that are ' +
    'the daemons fold from the raw rows once each half hour is over. History recorded before they existed (an upgrade) or in a table adopted by ' +
    '`qbhealth migrate` is not in them: without options this command says whether that is the case (exit 1), and ' +
    '`--rebuild` recomputes the rollups from the raw rows, one transaction per realm and ' +
    `${REBUILD_CHUNK_DAYS} days (the daemons' folds wait for each; recording and the dashboard do not), printing one line per realm. ` +
    'Safe to run again and while the daemon runs. Periods whose raw rows were pruned keep their rollups. Needs only DATABASE_URL.',
  options: {
    rebuild: { type: 'boolean', description: 'recompute the rollups from the raw rows' },
    'realm-id': { ...realmOption, description: 'rebuild only this realm' },
  },
  exitCodes: [
    [0, 'rebuilt; or, without --rebuild, the rollups cover the raw history'],
    [1, 'without --rebuild: raw history is missing from the rollups (run `qbhealth rollup --rebuild`)'],
    [2, 'usage: a bad --realm-id, or --realm-id without --rebuild'],
    [65, 'the database schema is incomplete; run `qbhealth migrate`'],
    [75, 'PostgreSQL unreachable, or the rollups stayed locked; retry'],
    [78, 'configuration invalid (DATABASE_URL)'],
  ],
  run: (io, values) => {
    const realmId = values['realm-id'] === undefined ? undefined : requireRealm(values, 'rollup');
    if (realmId !== undefined && !values.rebuild) throw new OperatorError('--realm-id goes with --rebuild (see `qbhealth rollup --help`)', ExitCode.usage);
    return withDatabase(io, async (pool, log) => {
      try {
        if (!values.rebuild) {
          const coverage = await rollupCoverage(pool);
          if (coverage.incomplete) {
            writeLine(io.stdout, io.secrets, describeIncompleteRollups(coverage));
            return ExitCode.probeFailing;
          }
          writeLine(
            io.stdout,
            io.secrets,
            coverage.rawFrom === null ? 'no health history recorded yet: nothing to roll up' : `the rollups cover the health history (raw rows from ${coverage.rawFrom.toISOString()})`,
          );
          return ExitCode.ok;
        }
        const outcome = await rebuildRollups(pool, log, {
          ...(realmId === undefined ? {} : { realmIds: [realmId] }),
          onRealm: (r) =>
            writeLine(io.stdout, io.secrets, `realm ${r.realmId}: ${r.rows} raw row(s) from ${day(r.from)} to ${day(new Date(r.to.getTime() - 1))} -> ${r.days} day and ${r.halfHours} half-hour rollup(s) written`),
        });
        const rows = outcome.realms.reduce((n, r) => n + r.rows, 0);
        writeLine(
          io.stdout,
          io.secrets,
          outcome.realms.length === 0
            ? `no raw rows${realmId === undefined ? '' : ` for realm ${realmId}`}: nothing to rebuild`
            : `rebuilt the rollups of ${outcome.realms.length} realm(s) from ${rows} raw row(s)` +
                (outcome.oldestRaw ? `; periods before ${outcome.oldestRaw.toISOString()} (the oldest raw row: older ones were pruned) were only filled where they had no rollup` : ''),
        );
        return ExitCode.ok;
      } catch (err) {
        throw rollupFailure(err);
      }
    });
  },
};
