// make test-only STREAMS=2: the suites in two mocha processes at once, each starting its own components
// (a Kafka, MinIOs; the test node for the suites that need it). A run spends much of its time waiting on
// servers (a third of the machine idle with one process), so two streams finish sooner. Each line of
// output names its stream. At the end come each stream's failures again, a line each (CI may show only
// the tail of a run, and a stream that ended early printed them long before), then a line that counts both.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const MOCHA = new URL('../node_modules/mocha/bin/mocha.js', import.meta.url).pathname;
const NODE_SUITES = ['e2e/operator/**/*.test.ts', 'e2e/components/node.test.ts'];
const STREAMS = [
  { name: 'node', globs: NODE_SUITES },
  { name: 'rest', globs: ['{lib,workers,operator,cli,bench}/**/*.test.ts', 'e2e/{components,pipeline,harness}/**/*.test.ts', ...NODE_SUITES.flatMap((g) => ['--ignore', g])] },
];

interface Totals {
  passed: number;
  failed: number;
  skipped: number;
}

interface StreamResult {
  code: number;
  totals: Totals | undefined;
  /** The reporter's "failed: ..." lines, one per failed test. */
  failures: string[];
}

function runStream(name: string, globs: string[], block: number): Promise<StreamResult> {
  // Each stream takes its servers' ports from its own block (e2e/harness/net.ts).
  const child = spawn(process.execPath, [MOCHA, ...globs], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BACKBEAT_PORT_BLOCK: String(block) } });
  let totals: Totals | undefined;
  const failures: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      // The reporter's closing line (e2e/harness/reporter.cjs).
      const m = /^tests: (\d+) passed, (\d+) failed, (\d+) skipped$/.exec(line);
      if (m !== null) totals = { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3]) };
      else if (line.startsWith('failed: ')) failures.push(line);
      process.stdout.write(`[${name}] ${line}\n`);
    });
  }
  return new Promise((resolve) => {
    child.on('close', (code) => {
      resolve({ code: code ?? 1, totals, failures });
    });
  });
}

const results = await Promise.all(STREAMS.map((s, i) => runStream(s.name, s.globs, i)));
process.stdout.write('\n');
for (const [i, r] of results.entries()) for (const f of r.failures) process.stdout.write(`[${STREAMS[i]?.name ?? ''}] ${f}\n`);
const sum = (k: keyof Totals): number => results.reduce((n, r) => n + (r.totals?.[k] ?? 0), 0);
for (const [i, r] of results.entries()) {
  if (r.totals === undefined) process.stdout.write(`stream ${STREAMS[i]?.name ?? ''} ended (exit ${String(r.code)}) without its totals\n`);
}
process.stdout.write(`tests: ${String(sum('passed'))} passed, ${String(sum('failed'))} failed, ${String(sum('skipped'))} skipped\n`);
process.exitCode = results.every((r) => r.code === 0 && r.totals !== undefined) ? 0 : 1;
