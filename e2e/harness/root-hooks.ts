import { stopAll } from './env.ts';

// Mocha root hooks: once every suite has run, stop every component the run started.
export const mochaHooks = {
  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(60_000);
    await stopAll();
  },
};
