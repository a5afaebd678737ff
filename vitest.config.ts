import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    // Every temporary file of the run goes under one folder that is removed at the end.
    globalSetup: ['test/global-setup.ts'],
    // The kernels are CPU-bound; two forks match the two cores of the reference machine.
    pool: 'forks',
    maxWorkers: 2,
  },
});
