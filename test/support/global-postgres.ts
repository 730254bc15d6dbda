/**
 * Vitest global setup: one PostgreSQL for the whole run. TEST_DATABASE_URL (a superuser URL to
 * an existing server) wins; otherwise an embedded server starts in a temp dir and is stopped
 * afterwards. Test files get their own databases from it (support/db.ts).
 */
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/dev/embedded-postgres.js';

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  const external = process.env.TEST_DATABASE_URL;
  if (external) {
    project.provide('pgAdminUrl', external);
    return undefined;
  }
  const started = performance.now();
  const server = await startEmbeddedPostgres({
    settings: {
      // Durability is not under test; speed is welcome.
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      // A server zone that differs from both UTC and the tests' TZ, so any instant that depends
      // on a time zone shows up as a wrong value.
      timezone: 'America/St_Johns',
      max_connections: '200',
    },
  });
  process.stderr.write(`embedded PostgreSQL on port ${server.port} (${Math.round(performance.now() - started)} ms)\n`);
  project.provide('pgAdminUrl', server.url);
  return () => server.stop();
}
