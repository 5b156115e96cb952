import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, httpGet } from '../harness/net.ts';
import { ManagedProcess, type ReadyCheck } from '../harness/process.ts';
import { runDir } from '../harness/run-dir.ts';
import type { Sites } from './sites.ts';

// The `backbeat` command as users run it: a real process from cli/main.ts on the test's Node.

const CLI = ['--disable-warning=TimeoutNegativeWarning', new URL('../../cli/main.ts', import.meta.url).pathname];
const execute = promisify(execFile);

/** Runs one `backbeat` command; resolves with its stdout, rejects (with code and stderr) on a non-zero exit. */
export function backbeat(...args: string[]): Promise<string> {
  return backbeatWithEnv(process.env, ...args);
}

export async function backbeatWithEnv(env: NodeJS.ProcessEnv, ...args: string[]): Promise<string> {
  return (await execute(process.execPath, [...CLI, ...args], { env })).stdout;
}

export interface RunningBackbeat {
  process: ManagedProcess;
  /** Base URL of its status API. */
  server: string;
  ready: ReadyCheck;
  /** A command against this process's API (adds --server). */
  cli(...args: string[]): Promise<string>;
}

/** `backbeat run` on the sites' manifests and Kafka, as a managed process that never outlives the test run. */
export async function startBackbeat(sites: Sites, prefix: string, extra: string[] = []): Promise<RunningBackbeat> {
  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const ready: ReadyCheck = { probe: async () => (await httpGet(`${server}/healthz`)).status === 200, timeoutMs: 60_000 };
  const proc = new ManagedProcess({
    name: `backbeat-${prefix}`,
    command: process.execPath,
    args: [...CLI, 'run', '-f', sites.dir, '--brokers', sites.brokers.join(','), '--prefix', prefix, '--listen', `127.0.0.1:${port}`, '--state-dir', join(runDir(), `state-${prefix}`), ...extra],
    logFile: join(runDir(), `backbeat-${prefix}.log`),
  });
  await proc.start(ready);
  return { process: proc, server, ready, cli: (...args) => backbeat(...args, '--server', server) };
}
