import { readFileSync } from 'node:fs';
import { ManagedProcess } from '../e2e/harness/process.ts';

// What both benchmarks need of their command line and of the processes they measure.

const BIN = new URL('../bin/backbeat', import.meta.url).pathname;

/**
 * backbeat as a user of a checkout runs it: `bin/backbeat`, with its Node and heap flags; `nodeOptions`
 * (a CPU profiler, say) are added to NODE_OPTIONS after them.
 */
export function backbeatProcess(spec: { name: string; args: string[]; logFile: string; nodeOptions?: string[] }): ManagedProcess {
  const extra = [process.env['NODE_OPTIONS'] ?? '', ...(spec.nodeOptions ?? [])].filter((o) => o !== '').join(' ');
  return new ManagedProcess({ name: spec.name, command: BIN, args: spec.args, logFile: spec.logFile, ...(extra !== '' ? { env: { NODE_OPTIONS: extra } } : {}) });
}

/** VmHWM of a live process: its peak resident memory so far, in bytes; 0 once it is gone. */
export function peakRss(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${String(pid)}/status`, 'utf8'))?.[1];
    return kib === undefined ? 0 : Number(kib) * 1024;
  } catch {
    return 0;
  }
}

/**
 * CPU time a live process has used so far (user + system, its own and its waited-for children's), in
 * seconds; 0 once it is gone. Linux counts it in clock ticks of 1/100 s.
 */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime the 14th.
    const fields = readFileSync(`/proc/${String(pid)}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    return [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i] ?? 0), 0) / 100;
  } catch {
    return 0;
  }
}

/** An integer option of at least `min`; anything else ends the benchmark with exit code 2. */
export function count(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer of at least ${String(min)}, got ${text}\n`);
    process.exit(2);
  }
  return n;
}
