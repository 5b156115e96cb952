import { spawn, type ChildProcess } from 'node:child_process';
import { stopAll } from './env.ts';
import { forgetPid, recordPid } from './run-dir.ts';

// BACKBEAT_TEST_BUSY=N runs the suites beside N processes that each keep a core busy (make test-busy):
// the timing assumptions of the suites are attacked by the load a shared node gives.
const busyCount = Number(process.env['BACKBEAT_TEST_BUSY'] ?? '0');
const busy: ChildProcess[] = [];

// Mocha root hooks: load first if asked; once every suite has run, stop every component the run started.
export const mochaHooks = {
  beforeAll(): void {
    if (!Number.isInteger(busyCount) || busyCount < 0) throw new Error(`BACKBEAT_TEST_BUSY must be a whole number, got ${String(process.env['BACKBEAT_TEST_BUSY'])}`);
    for (let i = 0; i < busyCount; i++) {
      const child = spawn(process.execPath, ['-e', 'for (;;) {}'], { detached: true, stdio: 'ignore' });
      if (child.pid === undefined) throw new Error('could not start a busy process');
      recordPid(`busy-${String(i)}`, child.pid);
      busy.push(child);
    }
  },
  async afterAll(this: Mocha.Context): Promise<void> {
    // Stopping the test node alone takes up to a minute (its components' grace periods).
    this.timeout(180_000);
    for (const [i, child] of busy.entries()) {
      child.kill('SIGKILL');
      forgetPid(`busy-${String(i)}`);
    }
    await stopAll();
  },
};
