import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { MinioServer } from '../e2e/harness/minio.ts';
import { runDir } from '../e2e/harness/run-dir.ts';
import { versionedBucket } from '../e2e/pipeline/sites.ts';
import type { Contender, Measure } from './contenders.ts';
import { cpuSeconds } from './process.ts';

// Runs each contender on the same workloads between the same two servers, in alternating order round
// after round (so neither always runs on a warmer machine), checks that every copy is complete, and
// reports medians and their ratios to the baseline. No figure is judged here: ratios are for people.

export interface Workload {
  name: string;
  objects: number;
  /** Bytes per object. */
  size: number;
  /** Upload the source objects in parts of this size (multipart objects). */
  partSize?: number;
}

export interface BenchOptions {
  source: MinioServer;
  destination: MinioServer;
  workloads: Workload[];
  /** The first is the baseline the others are compared with. */
  contenders: Contender[];
  rounds: number;
  concurrency: number;
  /** Called after each run, for progress. */
  onRun?: (line: string) => void;
}

export interface Result {
  workload: Workload;
  contender: string;
  description: string;
  runs: Measure[];
  median: Measure;
  /** The CPU time both servers used during the contender's runs, median of the rounds, in seconds. */
  serverCpuSeconds: number;
  /** S3 requests per object both servers answered during the runs, by API, over every round (undefined when a server's metrics are not public). */
  requests?: Record<string, number>;
}

/** The environment of a MinIO server whose request counts the report shows. */
export const PUBLIC_METRICS = { MINIO_PROMETHEUS_AUTH_TYPE: 'public' };

/**
 * The S3 requests a MinIO server has answered, by API, from its v3 metrics (current at each scrape: the v2
 * ones are cached for seconds; public where the server runs with MINIO_PROMETHEUS_AUTH_TYPE=public).
 * Undefined otherwise.
 */
async function requestCounts(server: MinioServer): Promise<Map<string, number> | undefined> {
  const res = await fetch(`${server.endpoint}/minio/metrics/v3/api/requests`).catch(() => undefined);
  if (res?.ok !== true) return undefined;
  const counts = new Map<string, number>();
  for (const m of (await res.text()).matchAll(/^minio_api_requests_total\{name="([^"]+)"[^}]*type="s3"[^}]*\} (\d+)$/gm)) counts.set(m[1] ?? '', (counts.get(m[1] ?? '') ?? 0) + Number(m[2]));
  return counts;
}

/** What both servers answered between two readings, by API (undefined when either could not be read). */
async function requestsSince(servers: MinioServer[], before: (Map<string, number> | undefined)[]): Promise<Map<string, number> | undefined> {
  const after = await Promise.all(servers.map(requestCounts));
  const sum = new Map<string, number>();
  for (const [i, a] of after.entries()) {
    const b = before[i];
    if (a === undefined || b === undefined) return undefined;
    for (const [api, n] of a) if (n - (b.get(api) ?? 0) > 0) sum.set(api, (sum.get(api) ?? 0) + n - (b.get(api) ?? 0));
  }
  return sum;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};

/** Writes the workload's objects into `bucket`, `concurrency` at a time (multipart ones in its part size). */
export async function putObjects(s3: S3Client, bucket: string, w: Pick<Workload, 'objects' | 'size' | 'partSize'>, concurrency: number): Promise<void> {
  const body = randomBytes(w.size);
  let next = 0;
  const put = async (): Promise<void> => {
    for (let i = next++; i < w.objects; i = next++) {
      const Key = `o/${String(i).padStart(6, '0')}`;
      if (w.partSize === undefined) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body }));
      else await new Upload({ client: s3, params: { Bucket: bucket, Key, Body: body }, partSize: w.partSize, queueSize: 1 }).done();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, put));
}

async function fill(s3: S3Client, bucket: string, w: Workload): Promise<void> {
  await versionedBucket(s3, bucket);
  await putObjects(s3, bucket, w, 16);
}

/** How many objects `bucket` holds, and their bytes. */
export async function contents(s3: S3Client, bucket: string): Promise<{ count: number; bytes: number }> {
  let count = 0;
  let bytes = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) {
      count++;
      bytes += o.Size ?? 0;
    }
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return { count, bytes };
}

/** Every object of the workload is in `bucket`, at its full size: a run that copied less does not count. */
async function verify(s3: S3Client, bucket: string, w: Workload, contender: string): Promise<void> {
  const { count, bytes } = await contents(s3, bucket);
  if (count !== w.objects || bytes !== w.objects * w.size) {
    throw new Error(`${contender} left ${String(count)} objects (${String(bytes)} bytes) in ${bucket}, expected ${String(w.objects)} (${String(w.objects * w.size)} bytes)`);
  }
}

export async function runBench(options: BenchOptions): Promise<Result[]> {
  const src = options.source.client();
  const dst = options.destination.client();
  const results: Result[] = [];
  for (const w of options.workloads) {
    const sourceBucket = `bench-${w.name}`;
    await fill(src, sourceBucket, w);
    const contenders = options.contenders.filter((c) => c.runs?.(w) ?? true);
    const runs = new Map<Contender, Measure[]>(contenders.map((c) => [c, []]));
    const requests = new Map<Contender, Map<string, number> | undefined>(contenders.map((c) => [c, new Map()]));
    const serverCpu = new Map<Contender, number[]>(contenders.map((c) => [c, []]));
    const serversCpu = (): number => cpuSeconds(options.source.process.pid) + cpuSeconds(options.destination.process.pid);
    const servers = [options.source, options.destination];
    for (let round = 0; round < options.rounds; round++) {
      const order = round % 2 === 0 ? contenders : [...contenders].reverse();
      for (const [i, c] of order.entries()) {
        const targetBucket = `${sourceBucket}-r${String(round)}-${String(contenders.indexOf(c))}`;
        await versionedBucket(dst, targetBucket);
        const dir = join(runDir(), 'bench', targetBucket);
        mkdirSync(dir, { recursive: true });
        const job = { source: options.source, destination: options.destination, sourceBucket, targetBucket, objects: w.objects, size: w.size, concurrency: options.concurrency, dir, ...(w.partSize !== undefined ? { partSize: w.partSize } : {}) };
        const before = await Promise.all(servers.map(requestCounts));
        const cpuBefore = serversCpu();
        const m = await c.run(job);
        serverCpu.get(c)?.push(serversCpu() - cpuBefore);
        const made = await requestsSince(servers, before);
        const sum = requests.get(c);
        if (made === undefined || sum === undefined) requests.set(c, undefined);
        else for (const [api, n] of made) sum.set(api, (sum.get(api) ?? 0) + n);
        await verify(dst, targetBucket, w, c.name);
        runs.get(c)?.push(m);
        options.onRun?.(`  ${w.name} round ${String(round + 1)}/${String(options.rounds)} #${String(i + 1)} ${c.name}: ${m.seconds.toFixed(2)} s, CPU ${m.cpuSeconds.toFixed(2)} s, peak RSS ${mib(m.peakRssBytes)}`);
      }
    }
    for (const c of contenders) {
      const ms = runs.get(c) ?? [];
      results.push({
        workload: w,
        contender: c.name,
        description: c.describe({ concurrency: options.concurrency, ...(w.partSize !== undefined ? { partSize: w.partSize } : {}) }),
        runs: ms,
        median: { seconds: median(ms.map((m) => m.seconds)), peakRssBytes: median(ms.map((m) => m.peakRssBytes)), cpuSeconds: median(ms.map((m) => m.cpuSeconds)) },
        serverCpuSeconds: median(serverCpu.get(c) ?? []),
        ...(perObject(requests.get(c), w.objects * ms.length) ?? {}),
      });
    }
  }
  return results;
}

function perObject(sum: Map<string, number> | undefined, objects: number): { requests: Record<string, number> } | undefined {
  if (sum === undefined || objects === 0) return undefined;
  return { requests: Object.fromEntries([...sum].sort(([, a], [, b]) => b - a).map(([api, n]) => [api, n / objects])) };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
}

function size(bytes: number): string {
  return bytes >= 2 ** 20 ? mib(bytes) : `${String(Math.round(bytes / 1024))} KiB`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('   '));
}

/** The report: per workload, each contender's medians, then each one's ratios to the baseline (the first). */
export function formatReport(results: Result[], rounds: number): string {
  const out: string[] = [];
  for (const w of [...new Set(results.map((r) => r.workload))]) {
    const rs = results.filter((r) => r.workload === w);
    const total = w.objects * w.size;
    out.push(`${w.name}: ${String(w.objects)} objects × ${size(w.size)}${w.partSize !== undefined ? ` in ${size(w.partSize)} parts` : ''} (${mib(total)}), median of ${String(rounds)} rounds`);
    const rows = [['contender', 'time', 'objects/s', 'MiB/s', 'peak RSS', 'CPU/object: client', 'servers']];
    const perObjectMs = (seconds: number): string => `${((seconds * 1000) / w.objects).toFixed(2)} ms`;
    for (const r of rs) {
      const s = r.median.seconds;
      // A contender without a process of its own (MinIO's replication) shows its memory and CPU as the servers'.
      const own = r.median.peakRssBytes > 0;
      rows.push([r.contender, `${s.toFixed(2)} s`, (w.objects / s).toFixed(0), (total / 2 ** 20 / s).toFixed(1), own ? mib(r.median.peakRssBytes) : 'servers', own ? perObjectMs(r.median.cpuSeconds) : '—', perObjectMs(r.serverCpuSeconds)]);
    }
    out.push(...table(rows).map((l) => `  ${l}`));
    const [base, ...others] = rs;
    if (base !== undefined) {
      for (const r of others) {
        const time = r.median.seconds / base.median.seconds;
        const rss = r.median.peakRssBytes / base.median.peakRssBytes;
        out.push(`  ratio ${r.contender} / ${base.contender}: time ×${time.toFixed(2)}, throughput ×${(1 / time).toFixed(2)}${rss > 0 ? `, peak RSS ×${rss.toFixed(2)}` : ''}`);
      }
    }
    // Backbeat's time against each contender that is not backbeat: what the targets are written in.
    for (const r of rs.filter((x) => x.contender.startsWith('backbeat'))) {
      const against = rs.filter((x) => !x.contender.startsWith('backbeat')).map((x) => `×${(r.median.seconds / x.median.seconds).toFixed(2)} ${x.contender}`);
      if (against.length > 0) out.push(`  ${r.contender}, time against each: ${against.join(', ')}`);
    }
    for (const r of rs) {
      if (r.requests === undefined) continue;
      const total = Object.values(r.requests).reduce((a, b) => a + b, 0);
      out.push(`  S3 requests per object, ${r.contender}: ${total.toFixed(2)} (${Object.entries(r.requests).map(([api, n]) => `${api} ${n.toFixed(2)}`).join(', ')})`);
    }
    for (const r of rs) out.push(`  ${r.contender}: ${r.description}`);
    out.push('');
  }
  return out.join('\n');
}
