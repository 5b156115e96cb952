import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

// What node-http.ts is for: a start of the workers does not pay for undici, which an ESM import of
// 'node:http' anywhere in their modules would load (see there).
describe('node:http taken as CommonJS (node-http)', () => {
  it('loads the modules of local mode and of a worker pod without undici', () => {
    const script = "await import('./workers/local/local.ts'); await import('./workers/worker/worker.ts'); process.stdout.write(JSON.stringify(process.moduleLoadList.filter((m) => m.includes('undici'))));";
    const loaded = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: new URL('../..', import.meta.url).pathname, encoding: 'utf8' })) as string[];
    assert.deepEqual(loaded, []);
  });
});
