import { readFileSync } from 'node:fs';

// What both benchmarks need of their command line and of the processes they measure.

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

/** An integer option of at least `min`; anything else ends the benchmark with exit code 2. */
export function count(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer of at least ${String(min)}, got ${text}\n`);
    process.exit(2);
  }
  return n;
}
