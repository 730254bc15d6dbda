import { defineConfig } from 'vitest/config';

/** `npm run bench`: the benchmarks, one file at a time (they measure; they must not compete). */
export default defineConfig({
  test: {
    include: ['test/bench/**/*.bench.ts'],
    globalSetup: ['test/support/global-postgres.ts', 'test/bench/report.ts'],
    env: { TZ: 'Asia/Kolkata' },
    pool: 'forks',
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 600_000,
    hookTimeout: 300_000,
  },
});
