/**
 * `npm run demo`: the whole system on embedded defaults, with no configuration. An embedded
 * PostgreSQL (kept under ./var/demo/, reused next time), the Intuit simulator on loopback, a
 * demo realm imported with `qbhealth import-tokens`, a local alert webhook that prints what it
 * receives, and the real daemon (dist/main.js) probing every 10 seconds, its JSON log lines made
 * human by pino-pretty. Nothing here ever reaches a real Intuit endpoint: every Intuit URL the
 * daemon and the CLI get points at the simulator.
 *
 * Ctrl-C stops everything in order (daemon, then simulator, then PostgreSQL) so the daemon's
 * last results and alert state are written. The terminal sends Ctrl-C's SIGINT to its whole
 * foreground process group, which would stop PostgreSQL under the daemon; so this process only
 * supervises, and runs the stack in a process group of its own, which it tells when to stop.
 *
 * Environment (all optional): PORT (8080) and HOST (127.0.0.1) for the health server,
 * PROBE_SCHEDULE (every 10 s), QBHEALTH_DEMO_DIR (./var/demo) for where the demo keeps its
 * database, spool and keys, SIM_PORT and WEBHOOK_PORT to pin the simulator's and the alert
 * printer's ports (free ones otherwise), so that curl commands copied from one run work in the next.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { coerceError } from '../errors.js';
import { startSimulator, type Simulator } from '../simulator/simulator.js';
import { freePort, startEmbeddedPostgres, type RunningPostgres } from './embedded-postgres.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = path.join(ROOT, 'dist', 'main.js');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const STACK_FLAG = 'QBHEALTH_DEMO_STACK';
const DEMO_REALM = '9341453050';
const DEMO_COMPANY = 'Harbour Dental Clinic (demo)';
/** Ctrl-C to gone: the daemon gets this long before it is killed, PostgreSQL the rest. */
const DAEMON_STOP_MS = 7000;

const say = (text: string): void => {
  process.stdout.write(`${text.split('\n').map((l) => `demo | ${l}`).join('\n')}\n`);
};

interface DemoKeys {
  readonly postgresPassword: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly tokenEncryptionKey: string;
}

/** The demo's own random keys, made once and kept (0600) beside its database, which they unlock. */
function demoKeys(dir: string): DemoKeys {
  const file = path.join(dir, 'keys.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as DemoKeys;
  const keys: DemoKeys = {
    postgresPassword: randomBytes(18).toString('base64url'),
    clientId: `demo-client-${randomBytes(6).toString('hex')}`,
    clientSecret: randomBytes(24).toString('base64url'),
    tokenEncryptionKey: randomBytes(32).toString('base64'),
  };
  writeFileSync(file, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  return keys;
}

type Pretty = (line: string) => string;

/** pino-pretty, one line per event; the message already carries the error, so `err` is left out. */
async function prettifier(): Promise<Pretty> {
  const { prettyFactory } = await import('pino-pretty');
  return prettyFactory({
    colorize: process.stdout.isTTY === true,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname,levelName,probeId,intuitTid,refreshTokenExpiresAt,err',
    singleLine: true,
  });
}

/** Runs the built CLI to completion; its output goes to the terminal with the demo's prefix. */
function qbhealth(pretty: Pretty, args: string[], env: NodeJS.ProcessEnv, cwd: string, stdin = ''): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const relay = (stream: NodeJS.ReadableStream): void => {
      createInterface({ input: stream }).on('line', (line) => say(`  ${line.startsWith('{') ? pretty(line).trimEnd() : line}`));
    };
    relay(child.stdout);
    relay(child.stderr);
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
    child.stdin.end(stdin);
  });
}

/** SIM_PORT / WEBHOOK_PORT: a pinned port, or 0 for a free one. */
function pinnedPort(name: string): number {
  const value = process.env[name]?.trim();
  if (value === undefined || value === '') return 0;
  const port = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(port >= 1 && port <= 65_535)) throw new Error(`${name} must be a port number from 1 to 65535 (got "${value}")`);
  return port;
}

/** Listening failures say which variable pinned the port, so the fix is obvious. */
async function listening<T>(name: string, port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE' && port !== 0) {
      throw new Error(`${name}=${port} is in use: pick another port, or unset ${name} for a free one`, { cause: err });
    }
    throw err;
  }
}

/** A stand-in for Slack: prints each alert the daemon POSTs. */
async function webhookPrinter(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { text?: string };
        say(`webhook received: ${body.text ?? '(no text)'}`);
        res.writeHead(204).end();
      } catch (err) {
        say(`webhook received a body that is not JSON (${coerceError(err).message})`);
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Relays the daemon's JSON lines through pino-pretty; anything that is not JSON passes as is. */
function prettyRelay(pretty: Pretty, child: ChildProcess): void {
  if (child.stdout) createInterface({ input: child.stdout }).on('line', (line) => process.stdout.write(line.startsWith('{') ? pretty(line) : `${line}\n`));
  if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => process.stderr.write(`${line}\n`));
}

/** A path as the operator types it from the directory they ran the demo in. */
function shown(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative.startsWith('..') ? file : relative;
}

function banner(opts: { schedule: string; health: string; sim: Simulator; envFile: string; dir: string; firstRun: boolean }): string {
  const cli = `node --env-file=${shown(opts.envFile)} ${shown(CLI)}`;
  const scenario = (name: string): string => `curl -X POST '${opts.sim.url}/_sim/scenario?name=${name}'`;
  return [
    '',
    `Dashboard: ${opts.health}/   (open it in a browser; it follows every scenario below within seconds)`,
    '',
    `The monitor is up; it probes realm ${DEMO_REALM} on "${opts.schedule}" (the simulator, never Intuit).`,
    '',
    `  dashboard ${opts.health}/`,
    `  health    ${opts.health}/health          (also /health/ready, /health/live)`,
    `  metrics   ${opts.health}/metrics`,
    `  status    ${opts.health}/status   or   ${cli} status`,
    '',
    'Break the connection and watch alerts be raised and resolved; in another terminal, in this order:',
    `  ${scenario('outage')}      # Intuit answers 503: an alert after 2 failed probes`,
    `  ${scenario('healthy')}     # back to normal: that alert resolves at the next probe`,
    `  ${scenario('throttled')}   # 429: Intuit throttling the app`,
    `  ${scenario('healthy')}     # back to normal`,
    `  ${scenario('revoked')}     # invalid_grant: a critical alert at once; the realm is now`,
    '      reconnect_required and the monitor stops calling Intuit for it, as it would in production',
    `  ${scenario('healthy')}     # Intuit answers again, but a revoked realm stays reconnect_required`,
    '      (the alert stays open) until it is reconnected, as in production:',
    `  ${cli} connect`,
    '      then open the URL it prints: the simulator approves at once and redirects back to it;',
    '      the next probe succeeds and the alert resolves',
    '',
    opts.firstRun
      ? `The database lives in ${opts.dir}; history is kept for the next run.`
      : `Reusing the database in ${opts.dir}, with the history of earlier runs.`,
    'Press Ctrl-C to stop everything, PostgreSQL included.',
    '',
  ].join('\n');
}

/** The stack: runs in its own process group and stops, in order, on SIGINT/SIGTERM or when the supervisor goes. */
async function runStack(): Promise<number> {
  const dir = path.resolve(process.env.QBHEALTH_DEMO_DIR ?? path.join(ROOT, 'var', 'demo'));
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const keys = demoKeys(dir);
  const firstRun = !existsSync(path.join(dir, 'pg', 'PG_VERSION'));
  const port = process.env.PORT ?? '8080';
  const host = process.env.HOST ?? '127.0.0.1';

  let stopRequested = false;
  let pg: RunningPostgres | undefined;
  let sim: Simulator | undefined;
  let hook: Server | undefined;
  let daemon: ChildProcess | undefined;
  let daemonExit: Promise<number | null> | undefined;
  let wake: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const requestStop = (why: string): void => {
    if (stopRequested) {
      if (daemon?.exitCode === null) daemon.kill('SIGKILL');
      return;
    }
    stopRequested = true;
    say(`${why}: stopping the daemon, the simulator and PostgreSQL...`);
    wake();
  };
  process.on('SIGINT', () => requestStop('Ctrl-C'));
  process.on('SIGTERM', () => requestStop('SIGTERM'));
  process.on('disconnect', () => requestStop('the demo supervisor went away'));

  let code = 0;
  try {
    const simPort = pinnedPort('SIM_PORT');
    const webhookPort = pinnedPort('WEBHOOK_PORT');
    say(firstRun ? `starting PostgreSQL (first run: creating ${path.join(dir, 'pg')})...` : 'starting PostgreSQL...');
    pg = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), password: keys.postgresPassword, port: await freePort() });
    sim = await listening('SIM_PORT', simPort, () =>
      startSimulator({ host: '127.0.0.1', port: simPort, clientId: keys.clientId, clientSecret: keys.clientSecret, latencyMs: 40 }),
    );
    hook = await listening('WEBHOOK_PORT', webhookPort, () => webhookPrinter(webhookPort));
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      TZ: process.env.TZ,
      DATABASE_URL: pg.url,
      QBO_CLIENT_ID: keys.clientId,
      QBO_CLIENT_SECRET: keys.clientSecret,
      QBO_ENVIRONMENT: 'sandbox',
      TOKEN_ENCRYPTION_KEY: keys.tokenEncryptionKey,
      QBO_TOKEN_URL: sim.tokenUrl,
      QBO_REVOKE_URL: sim.revokeUrl,
      QBO_API_BASE_URL: sim.url,
      QBO_AUTHORIZE_URL: sim.authorizeUrl,
      QBO_REDIRECT_URI: `http://127.0.0.1:${await freePort()}/oauth/callback`,
      PROBE_SCHEDULE: process.env.PROBE_SCHEDULE ?? '*/10 * * * * *',
      PROBE_TIMEOUT_MS: '5000',
      ALERT_AFTER_FAILURES: '2',
      ALERT_REPEAT_MINUTES: '1',
      ALERT_WEBHOOK_URL: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/alerts`,
      HOST: host,
      PORT: port,
      SPOOL_DIR: path.join(dir, 'spool'),
      LOG_LEVEL: 'info',
    };
    // The CLI and the daemon read .env from their working directory: this one holds the demo's
    // own settings, so a developer's .env (perhaps pointing at real Intuit) is never read.
    const envFile = path.join(dir, '.env');
    writeFileSync(
      envFile,
      `# Written by npm run demo for this run; points only at the demo's PostgreSQL and simulator.\n${Object.entries(env)
        .filter(([k, v]) => v !== undefined && k !== 'PATH' && k !== 'TZ')
        .map(([k, v]) => `${k}=${String(v)}`)
        .join('\n')}\n`,
      { mode: 0o600 },
    );

    if (stopRequested) return 0;
    const pretty = await prettifier();
    say('$ qbhealth migrate');
    if ((await qbhealth(pretty, ['migrate'], env, dir)) !== 0) throw new Error('qbhealth migrate failed (see above)');
    const refreshToken = sim.addRealm(DEMO_REALM, DEMO_COMPANY);
    say(`$ qbhealth import-tokens --realm-id ${DEMO_REALM} < (the simulator's refresh token)`);
    if ((await qbhealth(pretty, ['import-tokens', '--realm-id', DEMO_REALM], env, dir, refreshToken)) !== 0) throw new Error('qbhealth import-tokens failed (see above)');

    if (stopRequested) return 0;
    say('$ node dist/main.js   (logs below through pino-pretty)');
    const child = spawn(process.execPath, [MAIN], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    daemon = child;
    daemonExit = new Promise((resolve) => child.on('exit', (c) => resolve(c)));
    prettyRelay(pretty, child);
    const ready = await Promise.race([
      new Promise<'ready'>((resolve) => child.on('message', (m) => m === 'ready' && resolve('ready'))),
      daemonExit.then((c) => c),
      stopped.then(() => 'stop' as const),
    ]);
    if (ready === 'stop') return 0;
    if (ready !== 'ready') {
      const hint = ready === 75 ? ` (is port ${port} in use? try PORT=8090 npm run demo)` : '';
      throw new Error(`the daemon exited with code ${String(ready)} before it was ready${hint}`);
    }
    const health = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
    say(banner({ schedule: env.PROBE_SCHEDULE ?? '', health, sim, envFile, dir, firstRun }));

    const exitedFirst = await Promise.race([daemonExit.then((c) => ({ c })), stopped.then(() => undefined)]);
    if (exitedFirst) {
      say(`the daemon exited on its own with code ${String(exitedFirst.c)}; stopping the rest`);
      code = exitedFirst.c ?? 1;
    }
  } catch (err) {
    say(`cannot run the demo: ${coerceError(err).message}`);
    code = 1;
  } finally {
    if (daemon && daemon.exitCode === null && daemonExit) {
      daemon.kill('SIGINT');
      const timer = setTimeout(() => daemon?.kill('SIGKILL'), DAEMON_STOP_MS);
      await daemonExit;
      clearTimeout(timer);
    }
    await new Promise<void>((resolve) => (hook ? hook.close(() => resolve()) : resolve()));
    await sim?.close();
    if (pg) {
      await pg.stop();
      say('stopped: daemon, simulator and PostgreSQL');
    }
  }
  return code;
}

/** The supervisor: starts the stack in a new process group and relays Ctrl-C to it. */
async function supervise(): Promise<number> {
  const stack = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [STACK_FLAG]: '1' },
  });
  // Ctrl-C under `npm run` arrives twice at once (from the terminal and relayed by npm): only a
  // signal more than 2 s after the first is a deliberate second one, which forces the stop.
  let firstAt: number | undefined;
  const relay = (signal: NodeJS.Signals): void => {
    const now = Date.now();
    if (firstAt !== undefined && now - firstAt < 2000) return;
    firstAt ??= now;
    if (stack.exitCode === null) stack.kill(signal);
  };
  process.on('SIGINT', () => relay('SIGINT'));
  process.on('SIGTERM', () => relay('SIGTERM'));
  process.on('SIGHUP', () => relay('SIGTERM'));
  return new Promise((resolve, reject) => {
    stack.on('error', reject);
    stack.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

const run = process.env[STACK_FLAG] === '1' ? runStack : supervise;
run().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: ${coerceError(err).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
