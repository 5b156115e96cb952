import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dump } from 'js-yaml';
import { requireBinary } from '../e2e/harness/binaries.ts';
import { freePort, httpGet } from '../e2e/harness/net.ts';
import { logTail } from '../e2e/harness/process.ts';
import type { MinioServer } from '../e2e/harness/minio.ts';
import { locationManifest, versionedBucket } from '../e2e/pipeline/sites.ts';
import { backbeatProcess, cpuSeconds, peakRss } from './process.ts';
import { contents, putObjects } from './replicate.ts';

// The programs under comparison, each run as its own process so that its wall time and peak memory are
// its own: `backbeat run` (local mode, the same workers as on Kubernetes), `rclone copy` (tuned, and as
// usually run), a plain GET→PUT copier (the ceiling), and MinIO's own bucket replication (in the servers).

export interface Job {
  source: MinioServer;
  destination: MinioServer;
  sourceBucket: string;
  /** A fresh, versioned, empty bucket on the destination. */
  targetBucket: string;
  objects: number;
  /** Bytes per object. */
  size: number;
  concurrency: number;
  /** The source objects' multipart part size, when they have parts. */
  partSize?: number;
  /** A folder of this job's own (manifests, state, log). */
  dir: string;
}

export interface Measure {
  /** From spawn to the last object copied. */
  seconds: number;
  /** The kernel's high-water mark of the process's resident memory (VmHWM). */
  peakRssBytes: number;
  /** The CPU time the contender's process used (user + system), in seconds. */
  cpuSeconds: number;
  /** Where its CPU profiles were written, when it was profiled. */
  profileDir?: string;
}

export interface Contender {
  name: string;
  /** How it was run, printed under the results. */
  describe(job: Pick<Job, 'concurrency' | 'partSize'>): string;
  run(job: Job): Promise<Measure>;
  /** The workloads it runs (every one when absent). */
  runs?(workload: { partSize?: number }): boolean;
}

/** The bench's Locations and rule (it backfills the source bucket), in a folder of `job.dir`, returned. */
export function writeBenchManifests(job: Job): string {
  const manifests = join(job.dir, 'manifests');
  mkdirSync(manifests, { recursive: true });
  writeFileSync(
    join(manifests, 'locations.yaml'),
    // The longest scan interval: the one scan is the backfill at start.
    `${locationManifest('src', job.source.endpoint, job.source.credentials, { journal: { scan: { intervalSeconds: 604800 } } })}---\n${locationManifest('dst', job.destination.endpoint, job.destination.credentials)}`,
  );
  writeFileSync(
    join(manifests, 'rule.yaml'),
    dump({
      apiVersion: 'backbeat.io/v1alpha1',
      kind: 'ReplicationRule',
      metadata: { name: 'bench' },
      spec: { source: { location: 'src', bucket: job.sourceBucket }, destinations: [{ location: 'dst', bucket: job.targetBucket }], replicateExistingObjects: true },
    }),
  );
  return manifests;
}

/**
 * `backbeat run` on a rule that backfills the source bucket: a listing scan at start, populator, processor
 * and status in one process, on the embedded queue or on Kafka. Done when the status API counts every
 * object COMPLETED; the memory and CPU figures are read just then, before the process is stopped.
 * `profile`: with V8's CPU profiler on (written when the process exits, start and stop included).
 */
export function backbeatContender(name: string, options: { brokers?: string[]; profile?: boolean; processorThreads?: number } = {}): Contender {
  const { brokers } = options;
  const threads = options.processorThreads !== undefined ? ['--processor-threads', String(options.processorThreads)] : [];
  return {
    name,
    describe: ({ concurrency }) => `backbeat run --concurrency ${String(concurrency)}${brokers !== undefined ? ' --brokers <kafka>' : ''}${threads.length > 0 ? ` ${threads.join(' ')}` : ''} (bundled, as the image runs it; rule with replicateExistingObjects)`,
    async run(job) {
      const manifests = writeBenchManifests(job);
      const server = `http://127.0.0.1:${String(await freePort())}`;
      const prefix = `bench-${job.targetBucket}`;
      const args = ['run', '-f', manifests, '--state-dir', join(job.dir, 'state'), '--listen', server.slice('http://'.length), '--concurrency', String(job.concurrency), '--prefix', prefix];
      if (brokers !== undefined) args.push('--brokers', brokers.join(','), ...threads);
      const profileDir = join(job.dir, 'profile');
      const profiling = options.profile === true ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
      const proc = backbeatProcess({ name: prefix, args, logFile: join(job.dir, 'backbeat.log'), nodeOptions: profiling });
      const started = performance.now();
      let seconds = 0;
      let failure: string | undefined;
      try {
        await proc.start({
          probe: async () => {
            const res = await httpGet(`${server}/v1/summary`);
            if (res.status !== 200) return false;
            const summary = JSON.parse(res.body) as Record<string, number>;
            if ((summary.FAILED ?? 0) > 0) failure = `${String(summary.FAILED)} objects FAILED`;
            if ((summary.COMPLETED ?? 0) < job.objects && failure === undefined) return false;
            seconds = (performance.now() - started) / 1000;
            return true;
          },
          timeoutMs: 30 * 60_000,
          // Asked often: the end is known to within 20 ms, where the other contenders' is their exit.
          intervalMs: 20,
        });
        if (failure !== undefined) throw new Error(`${name}: ${failure}\n${logTail(proc.spec.logFile)}`);
        const measure = { seconds, peakRssBytes: peakRss(proc.pid), cpuSeconds: cpuSeconds(proc.pid) };
        await proc.stop();
        if (options.profile === true && proc.exitStatus !== 0) throw new Error(`${name} exited with ${String(proc.exitStatus)}: its CPU profile is not written\n${logTail(proc.spec.logFile)}`);
        return { ...measure, ...(options.profile === true ? { profileDir } : {}) };
      } finally {
        await proc.stop();
      }
    },
  };
}

/**
 * The ceiling: bench/plain-copier.ts, a GET streamed into a PUT per object with `concurrency` in flight
 * and nothing else, as its own process (its peak memory sampled as rclone's is). With `parts`, the
 * least a copier can do that keeps a multipart source's parts (and so its ETag), as backbeat does: run
 * only on workloads of multipart objects.
 */
export function plainCopierContender(options: { parts?: boolean } = {}): Contender {
  const parts = options.parts === true;
  return {
    name: parts ? 'part-by-part copier' : 'plain GET→PUT copier',
    describe: ({ concurrency }) =>
      parts ? `bench/plain-copier.ts, ${String(concurrency)} objects in flight, each part's GET into an UploadPart, 2 parts in flight per object (the ceiling for a copy that keeps the parts)` : `bench/plain-copier.ts, ${String(concurrency)} in flight (the ceiling: no checks, no status)`,
    ...(parts ? { runs: (w: { partSize?: number }) => w.partSize !== undefined } : {}),
    run(job) {
      const endpoint = (s: MinioServer, bucket: string): Record<string, string> => ({ endpoint: s.endpoint, region: s.region, accessKeyId: s.credentials.accessKeyId, secretAccessKey: s.credentials.secretAccessKey, bucket });
      const env = { ...process.env, BENCH_COPY: JSON.stringify({ source: endpoint(job.source, job.sourceBucket), destination: endpoint(job.destination, job.targetBucket), concurrency: job.concurrency, parts }) };
      return measured(process.execPath, [new URL('./plain-copier.ts', import.meta.url).pathname], env, parts ? 'the part-by-part copier' : 'the plain copier');
    },
  };
}

/**
 * Runs a program to its end, its peak memory and CPU time sampled every 20 ms (both only grow: only
 * what it added in its last 20 ms could be missed).
 */
function measured(command: string, args: string[], env: NodeJS.ProcessEnv, what: string): Promise<Measure> {
  return new Promise<Measure>((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let peak = 0;
    let cpu = 0;
    let stderr = '';
    const sample = (): void => {
      peak = Math.max(peak, peakRss(child.pid));
      cpu = Math.max(cpu, cpuSeconds(child.pid));
    };
    const timer = setInterval(sample, 20);
    child.once('spawn', sample);
    child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    child.once('error', (err) => {
      clearInterval(timer);
      reject(err);
    });
    child.once('exit', (code) => {
      clearInterval(timer);
      if (code === 0) resolve({ seconds: (performance.now() - started) / 1000, peakRssBytes: peak, cpuSeconds: cpu });
      else reject(new Error(`${what} exited with ${String(code)}:\n${stderr}`));
    });
  });
}

/**
 * The flags that make `rclone copy` a copier of new objects and nothing else: no bucket check, no
 * listing or HEAD of the destination, no HEAD before a GET or after a PUT, one recursive listing. With
 * them it makes two requests per small object (a GET and a PUT), as backbeat aims to.
 */
const RCLONE_TUNED = ['--s3-no-check-bucket', '--no-check-dest', '--s3-no-head', '--s3-no-head-object', '--use-server-modtime', '--fast-list'];

/**
 * `rclone copy` between the same two buckets, with as many transfers as backbeat has copies in flight,
 * and multipart copies in the source's part size so that both make the same S3 requests; `tuned`, with
 * its best flags for this job (RCLONE_TUNED), else as most people run it.
 */
export function rcloneContender(options: { tuned?: boolean } = {}): Contender {
  const flags = ({ concurrency, partSize }: Pick<Job, 'concurrency' | 'partSize'>): string[] => {
    const out = ['--transfers', String(concurrency), '--checkers', String(concurrency), ...(options.tuned === true ? RCLONE_TUNED : [])];
    if (partSize !== undefined) out.push('--s3-chunk-size', `${String(partSize)}B`, '--s3-upload-cutoff', `${String(partSize)}B`);
    return out;
  };
  return {
    name: options.tuned === true ? 'rclone copy (tuned)' : 'rclone copy',
    describe: (job) => `rclone copy ${flags(job).join(' ')}`,
    run(job) {
      const remote = (name: string, s: MinioServer): Record<string, string> => ({
        [`RCLONE_CONFIG_${name}_TYPE`]: 's3',
        [`RCLONE_CONFIG_${name}_PROVIDER`]: 'Minio',
        [`RCLONE_CONFIG_${name}_ENDPOINT`]: s.endpoint,
        [`RCLONE_CONFIG_${name}_REGION`]: s.region,
        [`RCLONE_CONFIG_${name}_ACCESS_KEY_ID`]: s.credentials.accessKeyId,
        [`RCLONE_CONFIG_${name}_SECRET_ACCESS_KEY`]: s.credentials.secretAccessKey,
      });
      // rclone 1.60 refuses to start when AWS_CA_BUNDLE is set (its custom transport cannot take it);
      // these endpoints are plain HTTP on loopback, so it has no use here.
      const env: NodeJS.ProcessEnv = { ...process.env, RCLONE_CONFIG: '/dev/null', ...remote('SRC', job.source), ...remote('DST', job.destination) };
      delete env.AWS_CA_BUNDLE;
      return measured(requireBinary('rclone'), ['copy', `src:${job.sourceBucket}`, `dst:${job.targetBucket}`, ...flags(job)], env, 'rclone copy');
    },
  };
}

/** The URL mc takes for a server, credentials included (given to mc in its environment only). */
function mcHost(s: MinioServer): string {
  const u = new URL(s.endpoint);
  return `${u.protocol}//${encodeURIComponent(s.credentials.accessKeyId)}:${encodeURIComponent(s.credentials.secretAccessKey)}@${u.host}`;
}

/** Sets up MinIO's own replication of `bucket` (versioned) to `target` on `to` (versioned), with mc. */
export async function configureReplication(from: MinioServer, bucket: string, to: MinioServer, target: string, dir: string): Promise<void> {
  const env = { ...process.env, MC_CONFIG_DIR: join(dir, 'mc'), MC_HOST_src: mcHost(from) };
  await promisify(execFile)(requireBinary('mc'), ['replicate', 'add', `src/${bucket}`, '--remote-bucket', `${mcHost(to)}/${target}`, '--priority', '1', '--json'], { env });
}

/**
 * MinIO's own bucket replication, configured with `mc replicate add` on a fresh source bucket that
 * replicates to the job's target; the workload is then written to it (`concurrency` PUTs in flight) and
 * timed from the first write until the target holds every object. It replicates on write, not a bucket
 * already full: its time includes the writes, its requests too (the PUTs to the source). Its work is in
 * the servers, whose CPU the report shows.
 */
export function minioReplicationContender(): Contender {
  return {
    name: 'MinIO bucket replication',
    describe: ({ concurrency }) => `mc replicate add, then the objects written with ${String(concurrency)} PUTs in flight; from the first write to the last replica (the writes included)`,
    async run(job) {
      const bucket = `${job.targetBucket}-n`;
      const src = job.source.client();
      const dst = job.destination.client();
      await versionedBucket(src, bucket);
      await configureReplication(job.source, bucket, job.destination, job.targetBucket, job.dir);
      const started = performance.now();
      await putObjects(src, bucket, job, job.concurrency);
      const wanted = job.objects * job.size;
      const deadline = Date.now() + 30 * 60_000;
      for (let c = await contents(dst, job.targetBucket); c.count < job.objects || c.bytes < wanted; c = await contents(dst, job.targetBucket)) {
        if (Date.now() > deadline) throw new Error(`MinIO replicated ${String(c.count)} of ${String(job.objects)} objects in 30 minutes`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return { seconds: (performance.now() - started) / 1000, peakRssBytes: 0, cpuSeconds: 0 };
    },
  };
}
