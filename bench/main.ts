// `make bench`: backbeat against rclone, copying the same objects between the same two MinIO servers on
// this machine, side by side. Prints each one's median time, peak memory, CPU and S3 requests per object
// and the ratios to rclone with its best flags for the job (and rclone as usually run, a plain copier,
// MinIO's own bucket replication, for reference).
// Options: --rounds N, --concurrency N, --small N (objects of 16 KiB), --large N (objects of
// --large-mib MiB, default 64, in 8 MiB parts), --kafka (also backbeat on Kafka; --threads 1,2 adds it
// with its processors on that many worker threads; --processors 1,2,4 adds backbeat as on Kubernetes, a
// process per worker role with that many processor replicas), --profile (backbeat under V8's CPU profiler: where
// its CPU goes, by package and file), --journal R1,R2 (backbeat on Kafka fed by MinIO's notifications
// at R objects/s each, for --journal-seconds after --journal-warmup seconds at that rate reported apart,
// beside MinIO's own replication: write → replica latency).
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { minio, sharedKafka, stopAll } from '../e2e/harness/env.ts';
import { imageApp } from '../e2e/harness/image-app.ts';
import { backbeatContender, minioReplicationContender, plainCopierContender, rcloneContender, type Contender } from './contenders.ts';
import { formatReport, PUBLIC_METRICS, runBench, type Workload } from './replicate.ts';
import { count } from './process.ts';
import { formatCosts, profileCosts } from './profile.ts';
import { formatJournal, journalRun, nativeRun, type JournalRun } from './journal.ts';
import { workersContender } from './workers.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '16' },
    small: { type: 'string', default: '2000' },
    large: { type: 'string', default: '6' },
    'large-mib': { type: 'string', default: '64' },
    kafka: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    threads: { type: 'string' },
    processors: { type: 'string' },
    journal: { type: 'string' },
    'journal-seconds': { type: 'string', default: '60' },
    'journal-warmup': { type: 'string', default: '10' },
  },
  strict: true,
});
const rounds = count('rounds', values.rounds, 1);
const concurrency = count('concurrency', values.concurrency, 1);
const counts = (name: 'threads' | 'processors'): number[] =>
  (values[name] ?? '')
    .split(',')
    .filter((r) => r !== '')
    .map((r) => count(name, r, 1));
const journalRates = (values.journal ?? '').split(',').filter((r) => r !== '').map((r) => count('journal', r, 1));
const journalSeconds = count('journal-seconds', values['journal-seconds'], 1);
const journalWarmup = count('journal-warmup', values['journal-warmup'], 0);
const workloads: Workload[] = [
  { name: 'small', objects: count('small', values.small, 0), size: 16 * 1024 },
  { name: 'large', objects: count('large', values.large, 0), size: count('large-mib', values['large-mib'], 1) * 2 ** 20, partSize: 8 * 2 ** 20 },
].filter((w) => w.objects > 0);

const say = (line: string): boolean => process.stdout.write(`${line}\n`);
process.once('SIGINT', () => void stopAll().finally(() => process.exit(130)));
try {
  // backbeat as the image runs it: bundled (bin/backbeat runs BACKBEAT_BUNDLE's entry), from this checkout.
  process.env['BACKBEAT_BUNDLE'] = join(await imageApp(), 'dist');
  say('Starting two MinIO servers on loopback...');
  const [source, destination] = [await minio({ name: 'bench-src', env: PUBLIC_METRICS }), await minio({ name: 'bench-dst', env: PUBLIC_METRICS })];
  // The baseline is rclone at its best; rclone as most people run it, the ceiling and MinIO's own
  // replication, for reference.
  const profile = values.profile;
  const contenders: Contender[] = [rcloneContender({ tuned: true }), rcloneContender(), plainCopierContender(), plainCopierContender({ parts: true }), minioReplicationContender(), backbeatContender('backbeat (embedded queue)', { profile })];
  if (values.kafka) {
    say('Starting Kafka...');
    const { brokers } = await sharedKafka();
    contenders.push(backbeatContender('backbeat (Kafka)', { brokers, profile }));
    for (const n of counts('processors')) contenders.push(workersContender(brokers, n));
    for (const n of counts('threads')) contenders.push(backbeatContender(`backbeat (Kafka, ${String(n)} threads)`, { brokers, profile, processorThreads: n }));
  }
  say(`${String(rounds)} rounds of each contender in turn, ${String(concurrency)} copies in flight, on ${String(availableParallelism())} CPUs:`);
  const results = await runBench({ source, destination, workloads, contenders, rounds, concurrency, onRun: say });
  say('');
  say(formatReport(results, rounds));
  if (journalRates.length > 0) {
    const { brokers } = await sharedKafka();
    const journalTopic = 'bench-journal';
    // Without a queue folder: with one, MinIO holds each event up to 3 s before sending it.
    const notifying = await minio({ name: 'bench-journal-src', notifyKafka: { brokers, topic: journalTopic, queue: false } });
    const runs: JournalRun[] = [];
    for (const rate of journalRates) {
      say(`journal: ${String(rate)} objects/s for ${String(journalWarmup)} s of warm-up then ${String(journalSeconds)} s, MinIO's replication then backbeat...`);
      const run = { source: notifying, destination, rate, seconds: journalSeconds, warmSeconds: journalWarmup, size: 4096 };
      runs.push(await nativeRun(run), await journalRun({ ...run, brokers, journalTopic, concurrency, profile }));
    }
    say(formatJournal(runs, 4096));
    for (const r of runs.filter((x) => x.profileDir !== undefined)) {
      say(`CPU profile of ${r.name}, journal at ${String(r.rate)} objects/s (start and stop included):`);
      say(formatCosts(profileCosts([r.profileDir ?? '']), r.objects).join('\n'));
    }
  }
  if (profile) {
    for (const r of results.filter((x) => x.runs.some((m) => m.profileDir !== undefined))) {
      say(`CPU profile of ${r.contender}, ${r.workload.name}, ${String(r.runs.length)} runs (start and stop included):`);
      const dirs = r.runs.flatMap((m) => (m.profileDir !== undefined ? [m.profileDir] : []));
      say(formatCosts(profileCosts(dirs), r.workload.objects * r.runs.length).join('\n'));
    }
  }
} finally {
  await stopAll();
}
