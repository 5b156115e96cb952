import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, httpGet } from '../harness/net.ts';
import { ManagedProcess, type ReadyCheck } from '../harness/process.ts';
import { runDir } from '../harness/run-dir.ts';
import { testSecret } from '../harness/secrets.ts';
import type { Sites } from './sites.ts';

// The `backbeat` command as users run it: a real process from cli/main.ts on the test's Node.

const MAIN = new URL('../../cli/main.ts', import.meta.url).pathname;
const CLI = [MAIN];
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
  /** A command against this process's API (adds --server, and --token-file when the API has a token). */
  cli(...args: string[]): Promise<string>;
  /** The headers a direct API request needs. */
  headers: Record<string, string>;
}

/**
 * `backbeat run` on the sites' manifests and Kafka, as a managed process that never outlives the test run;
 * with `apiToken`, its status API takes that token (--api-token-file) and nothing without it; with
 * `entry`, run from that file (a bundle's main.mjs) instead of cli/main.ts.
 */
export async function startBackbeat(sites: Sites, prefix: string, extra: string[] = [], apiToken?: string, entry?: string): Promise<RunningBackbeat> {
  const port = await freePort();
  const server = `http://127.0.0.1:${port}`;
  const ready: ReadyCheck = { probe: async () => (await httpGet(`${server}/healthz`)).status === 200, timeoutMs: 60_000 };
  const tokenFile = join(runDir(), `token-${prefix}`);
  if (apiToken !== undefined) writeFileSync(tokenFile, testSecret(apiToken), { mode: 0o600 });
  const withToken = apiToken !== undefined ? ['--api-token-file', tokenFile] : [];
  const proc = new ManagedProcess({
    name: `backbeat-${prefix}`,
    command: process.execPath,
    args: [entry ?? MAIN, 'run', '-f', sites.dir, '--brokers', sites.brokers.join(','), '--prefix', prefix, '--listen', `127.0.0.1:${port}`, '--state-dir', join(runDir(), `state-${prefix}`), ...withToken, ...extra],
    logFile: join(runDir(), `backbeat-${prefix}.log`),
  });
  await proc.start(ready);
  return {
    process: proc,
    server,
    ready,
    cli: (...args) => backbeat(...args, '--server', server, ...(apiToken !== undefined ? ['--token-file', tokenFile] : [])),
    headers: apiToken !== undefined ? { authorization: `Bearer ${apiToken}` } : {},
  };
}
