// `make bench-status`: the status store against the in-memory status processor it replaced, on a real
// Kafka broker started here: fold throughput, peak RSS and restart-to-ready time side by side, and their
// ratios. Options: --versions N (full size, default 1 000 000), --fold-versions N (the fold workload both
// run, default 20 000), --partitions N, --batch N (versions per produce send), --in-flight N (sends in
// flight), --stall-seconds N (a fold that changes nothing for this long is refused).
import { createWriteStream, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sharedKafka, stopAll } from '../e2e/harness/env.ts';
import { runDir } from '../e2e/harness/run-dir.ts';
import { createLogger } from '../lib/log/logger.ts';
import { formatStatusReport, runStatusBench } from './status.ts';
import { count } from './process.ts';

const { values } = parseArgs({
  options: {
    versions: { type: 'string', default: '1000000' },
    'fold-versions': { type: 'string', default: '20000' },
    partitions: { type: 'string', default: '8' },
    batch: { type: 'string', default: '1000' },
    'in-flight': { type: 'string', default: '4' },
    'stall-seconds': { type: 'string', default: '120' },
  },
  strict: true,
});
const versions = count('versions', values.versions, 1);
const foldVersions = count('fold-versions', values['fold-versions'], 1);
const partitions = count('partitions', values.partitions, 1);
const produce = { batchVersions: count('batch', values.batch, 1), inFlight: count('in-flight', values['in-flight'], 1) };
const stallMs = count('stall-seconds', values['stall-seconds'], 1) * 1000;

const say = (line: string): boolean => process.stdout.write(`${line}\n`);
process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));
const started = performance.now();
try {
  say('Starting Kafka...');
  const { brokers } = await sharedKafka();
  const dir = join(runDir(), 'bench-status');
  mkdirSync(dir, { recursive: true });
  // kafkajs warns of retried requests (a coordinator loading, a leader moving): kept out of the report.
  const logger = createLogger({ component: 'bench-status', level: 'warn', stream: createWriteStream(join(dir, 'bench.log')) });
  const result = await runStatusBench({ brokers, logger, versions, foldVersions, partitions, dir, produce, stallMs, childTimeoutMs: 6 * 3600_000, onPhase: say });
  say('');
  say(formatStatusReport(result, availableParallelism()));
  say(`(the whole benchmark took ${((performance.now() - started) / 60_000).toFixed(1)} min)`);
} finally {
  await stopAll();
}
