/**
 * The daemon's entry point (`node dist/main.js`, run by PM2): configuration, logger, start-up,
 * `process.send('ready')` for PM2's wait_ready, signals, exit codes (ARCHITECTURE.md: 0 stopped,
 * 65 schema mismatch, 75 temporary failure, 78 configuration invalid).
 */
import cluster from 'node:cluster';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { parseConfig, readEnvironment } from './config.js';
import { Daemon, SchemaMismatchError } from './daemon/daemon.js';
import { DatabaseUnreachableError } from './db/pool.js';
import { coerceError, ExitCode, OperatorError } from './errors.js';
import { createLogger, LogEvent, SecretRegistry, type Logger } from './log.js';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * The daemon's log lines go to stdout through a buffer written asynchronously: a log reader that
 * falls behind (PM2 busy, a slow disk) then costs memory, not a blocked event loop, so probes and
 * health checks keep their pace. Every exit writes out what is still buffered first.
 */
const fd1 = pino.destination({ dest: 1, sync: false }) as ReturnType<typeof pino.destination> & { _writing?: boolean };
const flushAll = fd1.flushSync.bind(fd1);
// pino calls flushSync on every `fatal` line. With a write in flight that puts the later lines
// before it (and the exit that follows may cut the in-flight one off); exit() below flushes in
// order instead, so a fatal line only queues while a write is in flight.
fd1.flushSync = (): void => {
  if (fd1._writing !== true) flushAll();
};
/**
 * A PM2 cluster-mode worker's log lines must go through process.stdout.write, which PM2 replaces
 * with a writer to its log files: what a worker writes to file descriptor 1 is lost.
 */
const pm2Worker = cluster.isWorker;
const stdout = pm2Worker ? process.stdout : fd1;

/** How long an exit waits for a log write already handed to the OS (a reader that stopped reading). */
const EXIT_FLUSH_MS = 2000;

/**
 * Writes out every buffered log line in order, then exits. A write already in flight is waited
 * for first (bounded): lines written synchronously behind it would otherwise land before it, and
 * it could be cut off by the exit. Never resolves.
 */
async function exit(log: Logger, code: number): Promise<never> {
  log.flush();
  if (pm2Worker) {
    // PM2's writer appends to its log file in order: an empty write's callback comes after the rest.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((resolve) => process.stdout.write('', () => resolve())), new Promise((resolve) => (timer = setTimeout(resolve, EXIT_FLUSH_MS)))]);
    clearTimeout(timer);
    process.exit(code);
  }
  const until = Date.now() + EXIT_FLUSH_MS;
  while (fd1._writing === true && Date.now() < until) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([once(fd1, 'write'), new Promise((resolve) => (timer = setTimeout(resolve, until - Date.now())))]);
    clearTimeout(timer);
  }
  try {
    flushAll();
  } catch (err) {
    // The reader is gone (EPIPE) or stuck: the lines cannot be delivered; the exit code still is.
    process.stderr.write(`qbo-health-monitor: could not write the last log lines: ${coerceError(err).message}\n`);
  }
  process.exit(code);
}

async function main(): Promise<void> {
  const secrets = new SecretRegistry();
  let env;
  try {
    env = readEnvironment(process.env, process.cwd());
  } catch (err) {
    // A .env that exists but cannot be read is configuration (78: PM2 must not restart-loop on it).
    const problem = coerceError(err).message;
    const log = createLogger({ level: 'info', secrets, destination: stdout });
    log.fatal({ event: LogEvent.configInvalid, problems: [problem] }, `configuration invalid: ${problem}`);
    process.stderr.write(`qbo-health-monitor: configuration invalid: ${problem}\n`);
    return exit(log, ExitCode.configInvalid);
  }
  const parsed = parseConfig(env, 'full', process.cwd());
  secrets.add(...parsed.secrets);
  if (!parsed.ok) {
    const log = createLogger({ level: 'info', secrets, destination: stdout });
    log.fatal({ event: LogEvent.configInvalid, problems: parsed.problems }, `configuration invalid: ${parsed.problems.join('; ')}`);
    process.stderr.write(`qbo-health-monitor: configuration invalid (set these in the environment or in .env):\n${parsed.problems.map((p) => `  ${p}`).join('\n')}\n`);
    return exit(log, ExitCode.configInvalid);
  }
  const config = parsed.config;
  const log = createLogger({ level: config.logLevel, secrets, destination: stdout });

  // Set once started: an exit that cannot finish the shutdown still names the tokens it loses.
  let running: Daemon | undefined;
  process.on('uncaughtException', (err) => {
    log.fatal({ event: LogEvent.daemonFatal, err }, `uncaught exception: ${err.message}`);
    running?.reportTokensAtRisk('uncaught exception');
    void exit(log, 1);
  });
  process.on('unhandledRejection', (reason) => {
    log.fatal({ event: LogEvent.daemonFatal, err: coerceError(reason) }, 'unhandled promise rejection');
    running?.reportTokensAtRisk('unhandled promise rejection');
    void exit(log, 1);
  });

  let daemon: Daemon;
  try {
    daemon = await Daemon.start(config, log, secrets, version);
    running = daemon;
  } catch (err) {
    const failure = err instanceof OperatorError ? err : undefined;
    // One line per start failure; a schema mismatch is the one `schema.invalid` of this detection.
    log.fatal(
      {
        event: failure?.exitCode === ExitCode.schemaMismatch ? LogEvent.schemaInvalid : LogEvent.daemonFatal,
        exitCode: failure?.exitCode ?? 1,
        ...(err instanceof SchemaMismatchError ? { problems: err.problems } : { err }),
      },
      `cannot start: ${coerceError(err).message}${err instanceof DatabaseUnreachableError ? '; this is retried: the daemon exits 75 and PM2 starts it again with backoff' : ''}`,
    );
    return exit(log, failure?.exitCode ?? 1);
  }

  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ event: LogEvent.daemonStopForced, signal }, `second ${signal}: exiting now without finishing the shutdown`);
      daemon.reportTokensAtRisk(`second ${signal}`);
      void exit(log, 1);
      return;
    }
    stopping = true;
    daemon.stop(signal).then(
      () => {
        for (const s of signals) process.off(s, onSignal);
        process.off('message', onMessage);
        return exit(log, ExitCode.ok);
      },
      (err: unknown) => {
        log.fatal({ event: LogEvent.daemonFatal, err }, 'shutdown failed');
        return exit(log, 1);
      },
    );
  };
  // PM2 on Windows (and `pm2 stop` with shutdown_with_message) sends a 'shutdown' message instead of a signal.
  const onMessage = (message: unknown): void => {
    if (message === 'shutdown') onSignal('SIGINT');
  };
  for (const s of signals) process.on(s, onSignal);
  process.on('message', onMessage);

  daemon.onFatal = (err) => {
    if (stopping) return;
    stopping = true;
    daemon.stop('fatal').then(
      () => exit(log, err.exitCode),
      (stopErr: unknown) => {
        log.fatal({ event: LogEvent.daemonFatal, err: stopErr }, 'shutdown after a fatal error failed');
        return exit(log, err.exitCode);
      },
    );
  };

  log.info(
    {
      event: LogEvent.daemonStarted,
      version,
      schedule: config.probeSchedule,
      health: daemon.address,
      realms: daemon.realmCount(),
      spoolPending: daemon.state.spoolPending,
    },
    `monitoring QuickBooks on "${config.probeSchedule}"; health on ${daemon.address?.host}:${daemon.address?.port}`,
  );
  // PM2's wait_ready: only now are migrations, the schema check and the health server up.
  process.send?.('ready');
}

await main();
