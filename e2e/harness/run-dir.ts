import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// One folder per test run holds every component's data, logs and pid file. A guardian process watches
// this process and, should it die without cleaning up (SIGKILL, crash), stops the components for it.

let current: { dir: string; guardianPid: number | undefined } | undefined;

const GUARDIAN = new URL('./guardian.sh', import.meta.url).pathname;

export function runDir(): string {
  if (current !== undefined) return current.dir;
  const dir = mkdtempSync(join(process.env['BACKBEAT_TEST_TMP'] ?? tmpdir(), 'backbeat-e2e-'));
  mkdirSync(join(dir, 'pids'));
  const guardian = spawn('bash', [GUARDIAN, String(process.pid), dir], { detached: true, stdio: 'ignore' });
  guardian.unref();
  current = { dir, guardianPid: guardian.pid };
  installExitHandlers();
  return dir;
}

/** The run folder if one was made (runDir() would make one). */
export const existingRunDir = (): string | undefined => current?.dir;

export function recordPid(name: string, pgid: number): void {
  mkdirSync(join(runDir(), 'pids'), { recursive: true });
  // Written synchronously so that a crash right after the spawn still leaves a trace for the guardian.
  writeFileSync(join(runDir(), 'pids', `${name}.pid`), String(pgid));
}

export function forgetPid(name: string): void {
  if (current !== undefined) rmSync(join(current.dir, 'pids', `${name}.pid`), { force: true });
}

/** Process groups still recorded in the run folder. */
export function recordedGroups(): number[] {
  if (current === undefined) return [];
  const pids = join(current.dir, 'pids');
  return readdirSync(pids).map((f) => Number(readFileSync(join(pids, f), 'utf8')));
}

/** Removes the run folder and retires the guardian. Call once every component has stopped. */
export function removeRunDir(): void {
  if (current === undefined) return;
  killGroupsNow();
  if (current.guardianPid !== undefined) signal(-current.guardianPid, 'SIGKILL');
  if (process.env['BACKBEAT_KEEP_TEST_DIR'] === undefined) rmSync(current.dir, { recursive: true, force: true });
  current = undefined;
}

function killGroupsNow(): void {
  for (const g of recordedGroups()) signal(-g, 'SIGKILL');
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

let handlersInstalled = false;
function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  // 'exit' handlers must be synchronous: a last SIGKILL to whatever is still recorded.
  process.on('exit', () => {
    removeRunDir();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      removeRunDir();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}
