import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-postgres.ts'],
    // Instants must not depend on the time zone: the tests run in one that is neither UTC nor
    // the database server's.
    env: { TZ: 'Asia/Kolkata' },
    pool: 'forks',
    // Most files wait on daemons, timers and PostgreSQL rather than compute: on 2 cores, four at
    // once finish far sooner than one per core.
    maxWorkers: 4,
    testTimeout: 30_000,
    hookTimeout: 90_000,
    // The CLI tests spawn dist/; `pretest` builds it.
    restoreMocks: true,
  },
});
