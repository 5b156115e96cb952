import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { forgetPid, recordPid } from './run-dir.ts';

export interface ProcessSpec {
  /** Unique within the run: names the pid and log files. */
  name: string;
  command: string;
  args: string[];
  env?: Record<string, string>;
  cwd?: string;
  logFile: string;
}

export interface ReadyCheck {
  /** Resolves true once the component serves; errors and false both mean "not yet". */
  probe(): Promise<boolean>;
  timeoutMs: number;
  intervalMs?: number;
}

export class ComponentStartError extends Error {
  override name = 'ComponentStartError';
}

/** The last lines of a log file, for error messages. */
export function logTail(file: string, lines = 40): string {
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).join('\n');
  } catch {
    return '(no log written)';
  }
}

/**
 * A component process in its own process group (so its children go with it), logging to a file,
 * recorded in the run folder so that nothing outlives the test run.
 */
export class ManagedProcess {
  readonly spec: ProcessSpec;
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;
  private exitCode: number | null | undefined;

  constructor(spec: ProcessSpec) {
    this.spec = spec;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** The exit code once exited (-1 when killed by a signal); undefined while running. */
  get exitStatus(): number | null | undefined {
    return this.exitCode;
  }

  get running(): boolean {
    return this.child !== undefined && this.exitCode === undefined;
  }

  /** Spawns the process and waits until `ready.probe` answers true, or fails with the log's tail. */
  async start(ready: ReadyCheck): Promise<void> {
    if (this.running) throw new Error(`${this.spec.name} is already running`);
    const out = openSync(this.spec.logFile, 'a');
    const child = spawn(this.spec.command, this.spec.args, {
      cwd: this.spec.cwd,
      env: { ...process.env, ...this.spec.env },
      detached: true,
      stdio: ['ignore', out, out],
    });
    closeSync(out);
    this.child = child;
    this.exitCode = undefined;
    const spawned = new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, sig) => {
        this.exitCode = code ?? (sig !== null ? -1 : null);
        forgetPid(this.spec.name);
        resolve(code);
      });
    });
    child.unref();
    try {
      await spawned;
    } catch (err) {
      // Never spawned: no exit event will come, so it is marked exited here (start() may be called again).
      this.exitCode = -1;
      throw new ComponentStartError(`${this.spec.name}: cannot run ${this.spec.command}: ${(err as Error).message}`);
    }
    if (child.pid !== undefined) recordPid(this.spec.name, child.pid);
    await this.waitReady(ready);
  }

  private async waitReady(ready: ReadyCheck): Promise<void> {
    const deadline = Date.now() + ready.timeoutMs;
    for (;;) {
      if (!this.running) {
        throw this.failure(`exited with code ${String(this.exitCode)} before it was ready`);
      }
      if (await ready.probe().catch(() => false)) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw this.failure(`not ready after ${ready.timeoutMs} ms`);
      }
      await sleep(ready.intervalMs ?? 250);
    }
  }

  private failure(reason: string): ComponentStartError {
    return new ComponentStartError(
      `${this.spec.name} failed to start: ${reason}\n--- last lines of ${this.spec.logFile} ---\n${logTail(this.spec.logFile)}`,
    );
  }

  /** SIGTERM to the whole group, then SIGKILL after `graceMs`. Resolves once the process has exited. */
  async stop(graceMs = 10_000): Promise<void> {
    const child = this.child;
    if (child?.pid === undefined || !this.running) return;
    signalGroup(child.pid, graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    const timer = setTimeout(() => {
      if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL');
    }, graceMs);
    await this.exited;
    clearTimeout(timer);
    // Children of the leader (e.g. a JVM's helpers) may outlive it: the group goes too.
    signalGroup(child.pid, 'SIGKILL');
  }

  /** SIGKILL, as a crash would. */
  kill(): Promise<void> {
    return this.stop(0);
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is already gone
  }
}
