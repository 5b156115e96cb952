// `make demo`: two MinIO sites and Kafka on loopback, local mode running the manifests of examples/
// (their endpoints and credentials swapped for the servers started here), sample objects written to
// site A, and a table of what reached site B.
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { dump, loadAll } from 'js-yaml';
import { minio, sharedKafka, stopAll } from '../e2e/harness/env.ts';
import type { MinioServer } from '../e2e/harness/minio.ts';
import { runDir } from '../e2e/harness/run-dir.ts';
import { eventually } from '../e2e/harness/wait.ts';
import { printStatus } from '../cli/status.ts';
import { createLogger } from '../lib/log/logger.ts';
import { startLocal } from '../workers/local/local.ts';
import { keyHistory } from '../lib/s3/history.ts';

const EXAMPLES = new URL('../examples/', import.meta.url).pathname;
const say = (line = ''): boolean => process.stdout.write(`${line}\n`);

/** The example manifests, pointed at the servers started here. */
function manifestsFor(servers: Record<string, MinioServer>, dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const file of readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml'))) {
    const docs = loadAll(readFileSync(join(EXAMPLES, file), 'utf8')) as { kind: string; metadata: { name: string }; spec?: { endpoint?: string }; stringData?: unknown }[];
    for (const doc of docs) {
      const site = servers[doc.metadata.name.replace(/-creds$/, '')];
      if (site === undefined) continue;
      if (doc.kind === 'Location' && doc.spec !== undefined) doc.spec.endpoint = site.endpoint;
      if (doc.kind === 'Secret') doc.stringData = { accessKeyId: site.credentials.accessKeyId, secretAccessKey: site.credentials.secretAccessKey };
    }
    writeFileSync(join(dir, file), docs.map((d) => dump(d)).join('---\n'));
  }
}

async function replicaEtag(s3: S3Client, key: string, sourceVersion: string): Promise<string> {
  for (const v of await keyHistory(s3, 'photos-replica', key)) {
    if (v.isDeleteMarker) continue;
    const h = await s3.send(new HeadObjectCommand({ Bucket: 'photos-replica', Key: key, VersionId: v.versionId }));
    if (h.Metadata?.['backbeat-source-version-id'] === sourceVersion) return (h.ETag ?? '').replace(/"/g, '');
  }
  return '(none)';
}

/** One row of the demo's table: a source version, what the status says, the etags on both sides. */
export interface DemoRow {
  key: string;
  versionId: string;
  change: 'object' | 'delete marker';
  state: string;
  sourceEtag: string;
  replicaEtag: string;
}

/**
 * The demo: servers started, local mode run, objects written, and the table of what reached site B.
 * `prefix` names its topics on the run's Kafka (a test shares that Kafka with others).
 */
export async function demo(say: (line?: string) => unknown, prefix?: string): Promise<DemoRow[]> {
  say('Starting Kafka (KRaft) and two MinIO sites on free loopback ports...');
  const kafka = await sharedKafka();
  const siteA = await minio({ name: 'site-a', notifyKafka: { brokers: kafka.brokers, topic: 'site-a-events' } });
  const siteB = await minio({ name: 'site-b' });
  let local: Awaited<ReturnType<typeof startLocal>> | undefined;
  try {
    const [a, b] = [siteA.client(), siteB.client()];
    for (const [s3, bucket] of [[a, 'photos'], [b, 'photos-replica']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    // (backbeat run wires photos' notifications itself: site-a names its Kafka target, BACKBEAT.)
    say(`  Kafka ${kafka.brokers.join(',')}   site A ${siteA.endpoint}   site B ${siteB.endpoint}`);

    const work = mkdtempSync(join(runDir(), 'demo-'));
    const dir = join(work, 'manifests');
    manifestsFor({ 'site-a': siteA, 'site-b': siteB }, dir);
    const logFile = join(work, 'backbeat.log');
    say(`Running local mode on examples/ (rule "photos": site-a/photos → site-b/photos-replica); log: ${logFile}`);
    local = await startLocal({ files: [dir], logger: createLogger({ component: 'backbeat', stream: createWriteStream(logFile) }), brokers: kafka.brokers, stateDir: join(work, 'state'), ...(prefix !== undefined ? { prefix } : {}) });

    say('Writing to site A: one multipart object, one with tags and metadata, one written then deleted...');
    await new Upload({ client: a, params: { Bucket: 'photos', Key: 'big/multipart.bin', Body: randomBytes(12 * 1024 * 1024) }, partSize: 5 * 1024 * 1024 }).done();
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'tagged.txt', Body: 'hello', ContentType: 'text/plain', Metadata: { owner: 'demo' }, Tagging: 'team=blue' }));
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'gone.txt', Body: 'bye' }));
    await a.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'gone.txt' }));

    const keys = ['big/multipart.bin', 'tagged.txt', 'gone.txt'];
    const status = local.status;
    await eventually(() => {
      const versions = keys.flatMap((k) => status.lookup('site-a', 'photos', k));
      if (versions.length < 4 || versions.some((v) => v.state === 'PENDING')) throw new Error('still replicating');
    }, 120_000);

    const rows: DemoRow[] = [];
    for (const key of keys) {
      for (const v of status.lookup('site-a', 'photos', key).reverse()) {
        const sourceEtag = v.kind === 'object' ? ((await a.send(new HeadObjectCommand({ Bucket: 'photos', Key: key, VersionId: v.object.versionId }))).ETag ?? '').replace(/"/g, '') : '-';
        const replica = v.kind === 'object' ? await replicaEtag(b, key, v.object.versionId) : '-';
        rows.push({ key, versionId: v.object.versionId, change: v.kind === 'deleteMarker' ? 'delete marker' : 'object', state: v.state, sourceEtag, replicaEtag: replica });
      }
    }
    say('\nsite A → site B');
    const table = [['KEY', 'SOURCE VERSION', 'CHANGE', 'STATUS', 'SOURCE ETAG', 'REPLICA ETAG'], ...rows.map((r) => [r.key, r.versionId, r.change, r.state, r.sourceEtag, r.replicaEtag])];
    const widths = table[0]?.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length))) ?? [];
    for (const r of table) say(`  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()}`);
    say('\n$ backbeat status site-a/photos/tagged.txt');
    await printStatus({ location: 'site-a', bucket: 'photos', key: 'tagged.txt', server: { url: local.url }, output: 'text' });
    return rows;
  } finally {
    await local?.stop();
    await Promise.all([siteA.stop(), siteB.stop()]);
  }
}

if (import.meta.main) {
  try {
    await demo(say);
  } finally {
    await stopAll();
    say('Stopped every component.');
  }
}
