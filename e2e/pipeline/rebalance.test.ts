import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createWriteStream, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { compileBucketConfigs } from '../../lib/config/bucket-config.ts';
import { locationClient, resolveCredentials } from '../../lib/config/credentials.ts';
import { loadManifests } from '../../lib/config/manifests.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { encode, queueNames } from '../../lib/queue/messages.ts';
import { Processor } from '../../workers/processor/processor.ts';
import { faultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { locationManifest, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

const PART = 16 * 1024 * 1024;
const BIG_PARTS = 16; // 256 MiB

/** Per key: the source version each version of it replicates, newest first (destination side). */
async function replicaHistory(s3: S3Client, bucket: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  do {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, ...(keyMarker !== undefined ? { KeyMarker: keyMarker, VersionIdMarker: versionIdMarker } : {}) }));
    for (const v of page.Versions ?? []) {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: v.Key, VersionId: v.VersionId }));
      out.set(v.Key ?? '', [...(out.get(v.Key ?? '') ?? []), head.Metadata?.[REPLICA_VERSION_META] ?? '?']);
    }
    keyMarker = page.IsTruncated === true ? page.NextKeyMarker : undefined;
    versionIdMarker = page.NextVersionIdMarker;
  } while (keyMarker !== undefined);
  return out;
}

/** Per key, the current source version (what every destination must end on). */
async function currentVersions(s3: S3Client, bucket: string): Promise<Map<string, string>> {
  const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket }));
  return new Map((page.Versions ?? []).filter((v) => v.IsLatest === true).map((v) => [v.Key ?? '', v.VersionId ?? '']));
}

// Processors scaled 1 → 3 → 1 while 256 MiB multipart copies run and one destination is down: the
// partitions move with copies in flight, twice. Fenced batches hand their work over; resumed uploads
// finish what was cut short.
describe('rebalance with work in flight: processors 1 → 3 → 1 (real Kafka, real MinIO)', function () {
  this.timeout(600_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;
  const extra: Processor[] = [];
  let proxy: FaultProxy;
  let scaled = 0;

  before(async () => {
    sites = await startSites('rebalance');
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    // Site B through a slow link: each part of a multipart copy takes a second, so copies are in flight
    // when the partitions move.
    proxy = await faultProxy(sites.b.endpoint, () => false, 503, 'ServiceUnavailable', { delayMs: (req) => (req.method === 'PUT' && /[?&]partNumber=/.test(req.url ?? '') ? 1_000 : 0) });
    writeFileSync(join(sites.dir, 'site-b.yaml'), locationManifest('site-b', proxy.endpoint, sites.b.credentials));
    await sourceBucket(sites, 'data');
    await versionedBucket(b, 'data');
    await versionedBucket(c, 'data');
    writeRule(sites, 'data', { source: { location: 'site-a', bucket: 'data' }, destinations: [{ location: 'site-b', bucket: 'data' }, { location: 'site-c', bucket: 'data' }] });
    local = await startLocalOn(sites, 'rb', { concurrency: 4, retry: { baseDelayMs: 200, maxDelayMs: 2_000 } });
  });

  after(async () => {
    await Promise.all(extra.map((p) => p.close()));
    await local.stop();
    await proxy.close();
    await sites.stop();
  });

  /** Another processor of `location` in the same group: a replica scaled up. */
  const scaleUp = async (location: string): Promise<Processor> => {
    const manifests = loadManifests([sites.dir]);
    const client = (name: string): S3Client => {
      const l = manifests.locations.get(name);
      assert.ok(l !== undefined);
      return locationClient(l, resolveCredentials(l, manifests));
    };
    const logger = createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), `rb-extra-${location}-${String(++scaled)}.log`)) });
    const p = new Processor({ queue: kafkaQueue({ brokers: sites.brokers, clientId: 'extra', logger }), names: queueNames('rb'), logger, location, destination: client(location), sources: new Map([['site-a', client('site-a')]]), configs: compileBucketConfigs(manifests), concurrency: 4, retry: { baseDelayMs: 200, maxDelayMs: 2_000 } });
    await p.start();
    extra.push(p);
    return p;
  };

  it('ends with one replica per source version, the current version everywhere, and no upload left', async () => {
    await sites.c.stop();
    // Two 256 MiB objects in 16 MiB parts, and 40 keys written three times each.
    const part = randomBytes(PART);
    for (const key of ['big/1', 'big/2']) {
      const { UploadId } = await a.send(new CreateMultipartUploadCommand({ Bucket: 'data', Key: key }));
      const parts = [];
      for (let n = 1; n <= BIG_PARTS; n++) parts.push({ PartNumber: n, ETag: (await a.send(new UploadPartCommand({ Bucket: 'data', Key: key, UploadId, PartNumber: n, Body: part }))).ETag ?? '' });
      await a.send(new CompleteMultipartUploadCommand({ Bucket: 'data', Key: key, UploadId, MultipartUpload: { Parts: parts } }));
    }
    const keys = Array.from({ length: 40 }, (_, i) => `small/${String(i).padStart(2, '0')}`);
    const write = async (round: number): Promise<void> => {
      await Promise.all(keys.map((key) => a.send(new PutObjectCommand({ Bucket: 'data', Key: key, Body: `${key} round ${String(round)}` }))));
    };
    await write(1);
    // Copies of the big objects under way on site B: scale to three processors of each destination.
    await eventually(async () => assert.ok(((await b.send(new ListMultipartUploadsCommand({ Bucket: 'data' }))).Uploads ?? []).length > 0, 'no copy under way yet'), 60_000, 50);
    await Promise.all([scaleUp('site-b'), scaleUp('site-b'), scaleUp('site-c'), scaleUp('site-c')]);
    await write(2);
    await sleep(3_000);
    // And back to one: the two extra replicas of each leave, with copies in flight again.
    await write(3);
    await Promise.all(extra.splice(0).map((p) => p.close()));
    await sites.c.process.start({ probe: async () => (await fetch(`${sites.c.endpoint}/minio/health/ready`)).ok, timeoutMs: 60_000 });

    await eventually(
      () => {
        const left = [...keys, 'big/1', 'big/2'].filter((key) => local.status.lookup('site-a', 'data', key).some((v) => v.state !== 'COMPLETED'));
        assert.deepEqual(left, []);
      },
      400_000,
      1_000,
    );
    const current = await currentVersions(a, 'data');
    for (const s3 of [b, c]) {
      const history = await replicaHistory(s3, 'data');
      for (const [key, versions] of history) {
        assert.equal(new Set(versions).size, versions.length, `${key}: a source version with two replica versions: ${versions.join(', ')}`);
        assert.equal(versions[0], current.get(key), `${key}: the current replica is not of the current source version`);
      }
      assert.equal(history.size, current.size);
      assert.deepEqual((await s3.send(new ListMultipartUploadsCommand({ Bucket: 'data' }))).Uploads ?? [], [], 'an upload was left behind');
    }
    // The partitions did move: some group's members were given more than one set of partitions.
    const assigned = new Map<string, Set<string>>();
    for (const file of readdirSync(runDir()).filter((f) => f.startsWith('rb'))) {
      for (const line of readFileSync(join(runDir(), file), 'utf8').split('\n')) {
        if (!line.includes('"partitions assigned"')) continue;
        const entry = JSON.parse(line) as { group: string; partitions: string[] };
        assigned.set(entry.group, (assigned.get(entry.group) ?? new Set()).add(entry.partitions.join(',')));
      }
    }
    assert.ok([...assigned.values()].some((sets) => sets.size > 1), `no partition moved: ${JSON.stringify([...assigned].map(([g, s]) => [g, [...s]]))}`);
  });

  it('aborts an upload of its own that nobody resumed once old, and never one it did not start', async () => {
    const own = await b.send(new CreateMultipartUploadCommand({ Bucket: 'data', Key: 'orphan' }));
    const foreign = await b.send(new CreateMultipartUploadCommand({ Bucket: 'data', Key: 'foreign' }));
    // As a processor killed long ago would have left it in the ledger.
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const producer = await queue.producer();
    await producer.send('rb-uploads', [{ key: 'site-b/data/orphan', value: encode({ uploadId: own.UploadId, sourceVersionId: 'v-old', initiated: new Date(Date.now() - 25 * 3600_000).toISOString() }) }]);
    await producer.close();
    await scaleUp('site-b');
    await eventually(async () => {
      const left = ((await sites.b.client().send(new ListMultipartUploadsCommand({ Bucket: 'data' }))).Uploads ?? []).map((u) => u.UploadId);
      assert.deepEqual(left, [foreign.UploadId]);
    }, 30_000, 250);
  });
});
