import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command, ListObjectVersionsCommand, PutBucketNotificationConfigurationCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { freePort, httpGet } from '../e2e/harness/net.ts';
import type { MinioServer } from '../e2e/harness/minio.ts';
import { logTail, type ManagedProcess } from '../e2e/harness/process.ts';
import { runDir } from '../e2e/harness/run-dir.ts';
import { locationManifest, versionedBucket } from '../e2e/pipeline/sites.ts';
import { configureReplication } from './contenders.ts';
import { backbeatProcess, cpuSeconds } from './process.ts';
import { directOf } from '../lib/s3/client.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import { createLogger } from '../lib/log/logger.ts';

// `make bench BENCH=--journal`: backbeat on Kafka fed by the source server's own bucket notifications,
// objects written at a steady rate. Measures, per object, the time from its source PUT's completion to
// its replica's Last-Modified on the destination (both on this machine's clock), and whether the run
// kept up: every object replicated within KEPT_UP_S of its write. backbeat's latency is also split at
// its notification's Kafka record (stamped by MinIO's producer, on the same clock): what MinIO and the
// broker took to deliver the change, and what backbeat took from there.

export interface JournalRun {
  /** What replicated: backbeat, or the baseline. */
  name: string;
  rate: number;
  seconds: number;
  objects: number;
  /** Objects per second the writer achieved (below `rate` when the source server could not take more). */
  written: number;
  replicated: number;
  /** Seconds, sorted. */
  latencies: number[];
  /** The warm-up before the run (not in its figures): its length, objects and latencies (seconds, sorted). */
  warmup?: { seconds: number; objects: number; latencies: number[] };
  /** Where the change is handed over on the way (backbeat: its notification's Kafka record): seconds, sorted. */
  split?: {
    /** From the source PUT's completion to the hand-over (MinIO's notification, the broker). */
    before: number[];
    /** From the hand-over to the replica (backbeat). */
    after: number[];
  };
  /** CPU time of the replicating process over the run, in seconds (0: in the servers). */
  cpuSeconds: number;
  /** Where its CPU profiles were written, when it was profiled. */
  profileDir?: string;
}

/** The longest an object may take to reach its destination in a run that kept up. */
export const KEPT_UP_S = 5;

/**
 * When each key first appears in `bucket`, listed every `pollMs` from the first key not seen yet (keys are
 * written in order): to the poll's resolution, for replicas whose Last-Modified is not their own.
 * `reached(key)`: every key up to `key` has been seen.
 */
function watchArrivals(s3: S3Client, bucket: string, prefix: string, pollMs = POLL_MS): { seen: Map<string, number>; reached: (key: string) => boolean; stop: () => Promise<void> } {
  const seen = new Map<string, number>();
  const state = { running: true };
  let from = '';
  const poll = async (): Promise<void> => {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, StartAfter: from, MaxKeys: 1000 }));
    const now = Date.now();
    for (const o of page.Contents ?? []) if (o.Key !== undefined && !seen.has(o.Key)) seen.set(o.Key, now);
    // Past the keys seen without a gap: the next listing starts at the first one not seen yet.
    for (const o of page.Contents ?? []) {
      if (o.Key === undefined || o.Key <= from) continue;
      if (o.Key !== keyAt(prefix, from === '' ? 0 : keyIndex(from) + 1)) break;
      from = o.Key;
    }
  };
  const loop = (async () => {
    while (state.running) {
      await poll();
      await new Promise((r) => setTimeout(r, pollMs));
    }
  })();
  return {
    seen,
    reached: (key) => from >= key,
    // One more listing after the loop: the caller stops once its own listing saw the last replica,
    // which may have landed after this loop's last one.
    stop: async () => {
      state.running = false;
      await loop;
      await poll();
    },
  };
}

const POLL_MS = 20;
/** The `i`th key written under `prefix` (`o/0000000`, `o/0000001`, …), and the index of a key. */
const keyAt = (prefix: string, i: number): string => `${prefix}${String(i).padStart(7, '0')}`;
const keyIndex = (key: string): number => Number(key.slice(key.indexOf('/') + 1));

/** Replica Last-Modified (ms) of every key under `prefix` in the destination bucket (a phase lists its own keys only). */
async function replicaTimes(s3: S3Client, bucket: string, prefix: string): Promise<Map<string, number>> {
  const times = new Map<string, number>();
  let keyMarker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix, ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}) }));
    for (const v of page.Versions ?? []) if (v.Key !== undefined) times.set(v.Key, v.LastModified?.getTime() ?? 0);
    if (page.IsTruncated !== true) return times;
    keyMarker = page.NextKeyMarker;
  }
}

/** What replicates a bucket while it is written: started before the writes, stopped after. */
interface Replicator {
  /**
   * The replica's Last-Modified is when it was written (backbeat's PUT). MinIO's replication keeps the
   * source's on its replicas: there the time a replica is first listed is taken instead.
   */
  stampsReplicas: boolean;
  /** Returns once a first object written to `bucket` would be replicated. */
  start(bucket: string, dir: string): Promise<void>;
  /** CPU time it has used so far (0 where it runs in the servers). */
  cpuSeconds(): number;
  /** When each key of `bucket` was handed over to it (ms), read after the writes; absent where nothing is. */
  handedOver?(bucket: string): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

interface RunOptions {
  source: MinioServer;
  destination: MinioServer;
  rate: number;
  seconds: number;
  /** Seconds written at `rate` first, measured apart: the broker, the servers and the replicator warm up. */
  warmSeconds: number;
  size: number;
}

/**
 * One run: a fresh pair of versioned buckets, `replicator` started on them, one object written first and
 * waited for (everything is connected), `rate` objects per second for `warmSeconds` (reported apart), then
 * for `seconds`: the run's figures.
 */
async function steadyRun(name: string, o: RunOptions, replicator: Replicator): Promise<JournalRun> {
  const bucket = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${String(o.rate)}-${String(Date.now() % 1_000_000)}`;
  const [src, dst] = [o.source.client(), o.destination.client()];
  await versionedBucket(src, bucket);
  await versionedBucket(dst, bucket);
  const dir = join(runDir(), 'bench', bucket);
  mkdirSync(dir, { recursive: true });
  const body = Buffer.alloc(o.size, 7);
  // The writes skip the SDK's middleware (lib/s3/direct.ts): the harness takes less of the CPU the
  // replicators share with it.
  const direct = directOf(src);
  const put = (key: string): Promise<unknown> => (direct !== undefined ? direct.put({ Bucket: bucket, Key: key, Body: body }) : src.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body })));

  /** `objects` keys under `prefix` written at the rate, then every replica waited for. */
  const phase = async (prefix: string, objects: number): Promise<{ done: Map<string, number>; written: number; replicaAt: Map<string, number>; latencies: number[] }> => {
    const arrivals = replicator.stampsReplicas ? undefined : watchArrivals(dst, bucket, prefix);
    const done = new Map<string, number>();
    const writes: Promise<unknown>[] = [];
    const start = performance.now();
    const origin = Date.now() - start;
    for (let i = 0; i < objects; i++) {
      const due = start + (i * 1000) / o.rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const key = keyAt(prefix, i);
      writes.push(put(key).then(() => done.set(key, origin + performance.now())));
    }
    await Promise.all(writes);
    const written = objects / ((performance.now() - start) / 1000);
    // Waits for the stragglers, up to a minute more than a run that keeps up needs, listing from the first
    // key not replicated yet: listing the whole bucket each time would take CPU from a replicator catching up.
    const last = keyAt(prefix, objects - 1);
    const frontier = arrivals ?? watchArrivals(dst, bucket, prefix, 250);
    for (let waited = 0; !frontier.reached(last) && waited < KEPT_UP_S * 1000 + 60_000; waited += 100) await new Promise((r) => setTimeout(r, 100));
    await frontier.stop();
    const replicaAt = arrivals?.seen ?? (await replicaTimes(dst, bucket, prefix));
    const latencies = [...done].flatMap(([key, at]) => {
      const t = replicaAt.get(key);
      return t === undefined ? [] : [(t - at) / 1000];
    });
    return { done, written, replicaAt, latencies: latencies.sort((a, b) => a - b) };
  };

  try {
    await replicator.start(bucket, dir);
    await put('warm-up');
    for (let i = 0; !(await replicaTimes(dst, bucket, 'warm-up')).has('warm-up'); i++) {
      if (i > 600) throw new Error(`${name}: no first object replicated within 60 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const warm = o.warmSeconds > 0 ? await phase('w/', o.rate * o.warmSeconds) : undefined;
    const cpuBefore = replicator.cpuSeconds();
    const objects = o.rate * o.seconds;
    const run = await phase('o/', objects);
    const cpu = replicator.cpuSeconds() - cpuBefore;
    const handed = await replicator.handedOver?.(bucket);
    const split = handed === undefined ? undefined : splitAt(run.done, handed, run.replicaAt);
    return {
      name,
      rate: o.rate,
      seconds: o.seconds,
      objects,
      written: run.written,
      replicated: run.latencies.length,
      latencies: run.latencies,
      cpuSeconds: cpu,
      ...(warm !== undefined ? { warmup: { seconds: o.warmSeconds, objects: o.rate * o.warmSeconds, latencies: warm.latencies } } : {}),
      ...(split !== undefined ? { split } : {}),
    };
  } finally {
    await replicator.stop();
  }
}

/** Each replicated key's latency cut in two where it was handed over (seconds, each list sorted). */
function splitAt(done: Map<string, number>, handed: Map<string, number>, replicaAt: Map<string, number>): NonNullable<JournalRun['split']> {
  const before: number[] = [];
  const after: number[] = [];
  for (const [key, at] of done) {
    const h = handed.get(key);
    const r = replicaAt.get(key);
    if (h === undefined || r === undefined) continue;
    before.push((h - at) / 1000);
    after.push((r - h) / 1000);
  }
  const sorted = (xs: number[]): number[] => xs.sort((a, b) => a - b);
  return { before: sorted(before), after: sorted(after) };
}

/** When MinIO's producer stamped each object's notification of `bucket` (its record's timestamp, ms), by object key. */
async function notificationTimes(brokers: string[], topic: string, bucket: string): Promise<Map<string, number>> {
  const queue = kafkaQueue({ brokers, clientId: 'bench-journal', logger: createLogger({ component: 'bench-journal', level: 'error' }) });
  const admin = await queue.admin();
  const partitions = await admin.partitionCount(topic).finally(() => admin.close());
  const times = new Map<string, number>();
  // MinIO keys its records `bucket/key`; a key's first notification is its PUT's (each is written once).
  const prefix = `${bucket}/`;
  await queue.replay(topic, new Map(Array.from({ length: partitions }, (_, p) => [p, '0'])), (m) => {
    const key = m.key?.startsWith(prefix) === true ? m.key.slice(prefix.length) : undefined;
    if (key !== undefined && !times.has(key)) times.set(key, m.timestamp);
  });
  return times;
}

/**
 * `backbeat run` on Kafka following `journalTopic`, where `source` publishes its bucket notifications;
 * `profile`: under V8's CPU profiler (written when it stops, start and stop included).
 */
export async function journalRun(o: RunOptions & { brokers: string[]; journalTopic: string; concurrency: number; profile?: boolean }): Promise<JournalRun> {
  let proc: ManagedProcess | undefined;
  let profileDir: string | undefined;
  const run = await steadyRun('backbeat', o, {
    stampsReplicas: true,
    async start(bucket, dir) {
      const src = o.source.client();
      await src.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { QueueConfigurations: [{ QueueArn: o.source.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] } }));
      const manifests = join(dir, 'manifests');
      mkdirSync(manifests, { recursive: true });
      writeFileSync(join(manifests, 'locations.yaml'), `${locationManifest('src', o.source.endpoint, o.source.credentials, { journal: { kafka: { topic: o.journalTopic } } })}---\n${locationManifest('dst', o.destination.endpoint, o.destination.credentials)}`);
      writeFileSync(join(manifests, 'rule.yaml'), dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'bench' }, spec: { source: { location: 'src', bucket }, destinations: [{ location: 'dst', bucket }] } }));
      const listen = `127.0.0.1:${String(await freePort())}`;
      const args = ['run', '-f', manifests, '--state-dir', join(dir, 'state'), '--listen', listen, '--concurrency', String(o.concurrency), '--prefix', `bench-${bucket}`, '--brokers', o.brokers.join(',')];
      if (o.profile === true) profileDir = join(dir, 'profile');
      proc = backbeatProcess({ name: bucket, args, logFile: join(dir, 'backbeat.log'), ...(profileDir !== undefined ? { nodeOptions: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {}) });
      await proc.start({ probe: async () => (await httpGet(`http://${listen}/v1/summary`)).status === 200, timeoutMs: 60_000, intervalMs: 200 });
    },
    cpuSeconds: () => cpuSeconds(proc?.pid),
    handedOver: (bucket) => notificationTimes(o.brokers, o.journalTopic, bucket),
    stop: async () => {
      await proc?.stop();
    },
  }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${proc !== undefined ? logTail(proc.spec.logFile) : ''}`, { cause: err });
  });
  return { ...run, ...(profileDir !== undefined ? { profileDir } : {}) };
}

/** MinIO's own bucket replication from `source` to `destination` (configured with mc), the baseline. */
export function nativeRun(o: RunOptions): Promise<JournalRun> {
  return steadyRun('MinIO replication', o, {
    stampsReplicas: false,
    async start(bucket, dir) {
      await configureReplication(o.source, bucket, o.destination, bucket, dir);
    },
    cpuSeconds: () => 0,
    stop: () => Promise.resolve(),
  });
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;

export function formatJournal(runs: JournalRun[], size: number): string {
  const rows = runs.map((r) => {
    const kept = r.replicated === r.objects && (r.latencies.at(-1) ?? Infinity) <= KEPT_UP_S;
    const s = (x: number): string => `${x.toFixed(2)} s`;
    const cpu = r.cpuSeconds > 0 ? `CPU ${((r.cpuSeconds * 1000) / r.objects).toFixed(2)} ms/object` : 'CPU in the servers';
    const spread = (sorted: number[]): string => `p50 ${s(quantile(sorted, 0.5))}, p99 ${s(quantile(sorted, 0.99))}, max ${s(sorted.at(-1) ?? Number.NaN)}`;
    const line = `  ${r.name.padEnd(17)} ${String(r.rate).padStart(4)}/s for ${String(r.seconds)} s: written at ${r.written.toFixed(0)}/s, replicated ${String(r.replicated)}/${String(r.objects)}, latency ${spread(r.latencies)}; ${cpu}; ${kept ? 'kept up' : 'FELL BEHIND'}`;
    const warm = r.warmup !== undefined ? [`    warm-up before it, ${String(r.warmup.seconds)} s at the same rate (not counted above): replicated ${String(r.warmup.latencies.length)}/${String(r.warmup.objects)}, latency ${spread(r.warmup.latencies)}`] : [];
    const split = r.split !== undefined ? [`    split at the notification's Kafka record: MinIO's notification (PUT done → record) ${spread(r.split.before)}; backbeat (record → replica) ${spread(r.split.after)}`] : [];
    return [line, ...warm, ...split].join('\n');
  });
  return [`objects of ${String(Math.round(size / 1024))} KiB written at a steady rate, latency = replica Last-Modified − source PUT done (kept up: all replicated, none later than ${String(KEPT_UP_S)} s); backbeat on Kafka fed by MinIO's notifications, and MinIO's own replication`, ...rows].join('\n');
}
