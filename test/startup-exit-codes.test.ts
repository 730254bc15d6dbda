/**
 * Start-up exit codes PM2 acts on (78 never restarted, 75 retried with backoff, 65 needs
 * `qbhealth migrate`), each with the one line an operator acts on, against the real daemon.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSimulator, type Simulator } from '../src/simulator/simulator.js';
import { daemonEnv, spawnDaemon } from './support/daemon.js';
import { CLIENT_ID, CLIENT_SECRET, migratedDatabase } from './support/qbo.js';
import type { TestDatabase } from './support/db.js';

/**
 * A TCP proxy to PostgreSQL that lets the start-up's first `SELECT 1` through and then drops every
 * connection at the next statement, refusing new ones: the database going away mid-start.
 */
async function droppingProxy(target: URL): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let sawSelect1 = false;
  let dropped = false;
  const server: Server = createServer((client) => {
    if (dropped) return client.destroy();
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) });
    sockets.add(client).add(upstream);
    client.on('data', (chunk: Buffer) => {
      if (sawSelect1 && chunk[0] === 0x51 /* 'Q' */) {
        dropped = true;
        server.close();
        for (const s of sockets) s.destroy();
        return;
      }
      if (chunk.includes('SELECT 1')) sawSelect1 = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    for (const s of [client, upstream]) {
      s.on('error', () => s.destroy());
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        if (!server.listening) return resolve();
        server.close(() => resolve());
      }),
  };
}

describe('start-up exit codes', () => {
  let sim: Simulator;
  let db: TestDatabase;
  beforeAll(async () => {
    sim = await startSimulator({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    db = await migratedDatabase();
  });
  afterAll(async () => {
    await db?.drop();
    await sim?.close();
  });

  it('a .env that exists but cannot be read: 78 with one line naming the file, no stack trace', async () => {
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'qbhm-envdir-'));
    mkdirSync(path.join(cwd, '.env'));
    const daemon = spawnDaemon(daemonEnv(db.url, sim), cwd);
    expect((await daemon.exited).code).toBe(78);
    expect(daemon.stderr().trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`configuration invalid: cannot read ${path.join(cwd, '.env')}: EISDIR`))]);
    expect(daemon.events('config.invalid')).toHaveLength(1);
    expect(daemon.stderr()).not.toMatch(/\n\s+at /);
  });

  it('PostgreSQL dropping the connection after the first SELECT 1: 75 (retried), not 1', async () => {
    const url = new URL(db.url);
    const proxy = await droppingProxy(url);
    try {
      const proxied = new URL(db.url);
      proxied.host = `127.0.0.1:${proxy.port}`;
      const daemon = spawnDaemon({ ...daemonEnv(proxied.toString(), sim), MIGRATE_ON_START: 'true' });
      expect((await daemon.exited).code, JSON.stringify(daemon.lines) + daemon.stderr()).toBe(75);
      expect(daemon.events('daemon.fatal')).toEqual([expect.objectContaining({ exitCode: 75, msg: expect.stringMatching(/PostgreSQL is unreachable/) })]);
    } finally {
      await proxy.close();
    }
  });

  it('MIGRATE_ON_START=false with an applied migration changed since it ran: 65 naming it, once', async () => {
    await db.query(`UPDATE migrations_applied SET checksum = 'changed-on-disk' WHERE version = '0001'`);
    try {
      const daemon = spawnDaemon({ ...daemonEnv(db.url, sim), MIGRATE_ON_START: 'false' });
      expect((await daemon.exited).code).toBe(65);
      const lines = daemon.events('schema.invalid');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ level: 60, problems: [expect.stringMatching(/applied migration changed since it ran: 0001_initial_schema\.sql/)] });
      expect(daemon.events('daemon.started')).toEqual([]);
    } finally {
      const { sha256, loadMigrations } = await import('../src/db/migrate.js');
      const first = (await loadMigrations()).find((m) => m.version === '0001');
      await db.query(`UPDATE migrations_applied SET checksum = $1 WHERE version = '0001'`, [first?.checksum ?? sha256('')]);
    }
  });
});
