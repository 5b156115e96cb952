import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { requireBinary } from './binaries.ts';
import { freePort } from './net.ts';
import { ComponentStartError, ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';
import { eventually } from './wait.ts';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Runs the fixture as a separate "test run" and returns its child process and the MinIO it started. */
async function startOrphanCheck(): Promise<{ child: ReturnType<typeof spawn>; minioPid: number; dir: string }> {
  const fixture = new URL('./fixtures/start-minio-and-wait.ts', import.meta.url).pathname;
  const child = spawn(process.execPath, [fixture], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`fixture exited with ${String(code)}`)));
  });
  const { pid, dir } = JSON.parse(first) as { pid: number; dir: string };
  assert.ok(alive(pid), 'the fixture MinIO should be running');
  return { child, minioPid: pid, dir };
}

describe('test harness', function () {
  this.timeout(90_000);

  it('reports a component that fails to start with the tail of its log', async () => {
    const port = await freePort();
    const proc = new ManagedProcess({
      name: 'bad-minio',
      command: requireBinary('minio'),
      args: ['server', '--address', `127.0.0.1:${port}`, '--no-such-flag', join(runDir(), 'bad-minio-data')],
      logFile: join(runDir(), 'bad-minio.log'),
    });
    await assert.rejects(proc.start({ probe: () => Promise.resolve(false), timeoutMs: 30_000 }), (err: Error) => {
      assert.ok(err instanceof ComponentStartError);
      assert.match(err.message, /bad-minio failed to start: exited with code [1-9]/);
      assert.match(err.message, /--- last lines of .*bad-minio\.log ---/);
      assert.match(err.message, /no-such-flag/); // minio's own complaint, from its log
      return true;
    });
  });

  it('stops a component that never becomes ready, and says so', async () => {
    const logFile = join(runDir(), 'sleeper.log');
    writeFileSync(logFile, 'still warming up\n');
    const proc = new ManagedProcess({ name: 'sleeper', command: 'sleep', args: ['300'], logFile });
    await assert.rejects(proc.start({ probe: () => Promise.resolve(false), timeoutMs: 1_000 }), /sleeper failed to start: not ready after 1000 ms[^]*still warming up/);
    assert.equal(proc.running, false);
    assert.ok(proc.pid !== undefined && !alive(proc.pid));
  });

  it('leaves no process behind when the test run is SIGKILLed', async () => {
    const { child, minioPid, dir } = await startOrphanCheck();
    child.kill('SIGKILL');
    await eventually(() => assert.ok(!alive(minioPid), `MinIO ${minioPid} outlived its test run`), 20_000);
    await eventually(() => assert.ok(!existsSync(dir), `${dir} was left behind`), 10_000);
  });

  it('leaves no process behind when the test run is interrupted (SIGINT)', async () => {
    const { child, minioPid, dir } = await startOrphanCheck();
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    assert.equal(await exited, 130);
    await eventually(() => assert.ok(!alive(minioPid), `MinIO ${minioPid} outlived its test run`), 10_000);
    assert.ok(!existsSync(dir));
  });
});
