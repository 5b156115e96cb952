import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  PutBucketNotificationConfigurationCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import { startLocal, type LocalRun } from '../../workers/local/local.ts';
import { minio, rgw, seaweed, sharedKafka } from '../harness/env.ts';
import { runDir } from '../harness/run-dir.ts';
import type { TestS3Server } from '../harness/seaweed.ts';
import { eventually } from '../harness/wait.ts';
import { body, locationManifest, versionedBucket, versionsOf } from './sites.ts';

const MiB = 1024 * 1024;

/** A multipart object of unequal parts (the last one shorter): what a part-by-part copy must reproduce. */
async function multipart(s3: S3Client, bucket: string, key: string, parts: Buffer[]): Promise<string> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/x-big', Metadata: { kind: 'mpu' } }));
  const done = [];
  for (const [i, p] of parts.entries()) done.push({ PartNumber: i + 1, ETag: (await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body: p }))).ETag ?? '' });
  return (await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: done } }))).ETag ?? '';
}

interface Target {
  server: string;
  start(name: string): Promise<TestS3Server>;
}

/** Local mode on these manifests and the shared Kafka, its log and state in the run folder. */
async function startOn(dir: string, prefix: string): Promise<LocalRun> {
  return startLocal({
    files: [dir],
    logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), `${prefix}.log`)) }),
    brokers: (await sharedKafka()).brokers,
    stateDir: join(runDir(), `state-${prefix}`),
    prefix,
    retry: { baseDelayMs: 100, maxDelayMs: 1_000 },
  });
}

function manifests(name: string, docs: string[], rules: Record<string, unknown>[]): string {
  const dir = join(runDir(), `manifests-${name}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'all.yaml'), [...docs, ...rules.map((spec, i) => dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: `${name}-${String(i)}` }, spec }))].join('---\n'));
  return dir;
}

const completedIn = (local: () => LocalRun) => (location: string, bucket: string, key: string, versionId?: string): Promise<void> =>
  eventually(() => {
    const [v] = local().status.lookup(location, bucket, key, versionId);
    assert.equal(v?.state, 'COMPLETED', `${location}/${bucket}/${key}: ${JSON.stringify(v)}`);
  }, 90_000);

// The README promises any S3-compatible endpoint: each server below, started by the harness from what
// `make deps` obtained, is a destination of a MinIO source fed by its Kafka notifications. A failure names
// the server in the suite's title.
const targets: Target[] = [
  { server: 'SeaweedFS', start: (name) => seaweed({ name }) },
  { server: 'Ceph RGW', start: (name) => rgw({ name }) },
];

for (const target of targets) {
  const tag = target.server.toLowerCase().replace(/[^a-z]/g, '');
  describe(`MinIO → ${target.server} (real ${target.server}, MinIO, Kafka)`, function () {
    this.timeout(300_000);
    let sa: S3Client, sd: S3Client;
    let local: LocalRun;
    const completed = completedIn(() => local);

    before(async () => {
      const kafka = await sharedKafka();
      const journalTopic = `journal-${tag}-${randomUUID().slice(0, 8)}`;
      const [a, d] = await Promise.all([minio({ name: `${tag}-a`, notifyKafka: { brokers: kafka.brokers, topic: journalTopic } }), target.start(`${tag}-d`)]);
      [sa, sd] = [a.client(), d.client()];
      await versionedBucket(sa, 'docs');
      await sa.send(new PutBucketNotificationConfigurationCommand({ Bucket: 'docs', NotificationConfiguration: { QueueConfigurations: [{ QueueArn: a.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] } }));
      await versionedBucket(sd, 'docs-copy');
      const dir = manifests(
        tag,
        [locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic: journalTopic } } }), locationManifest('target', d.endpoint, d.credentials)],
        [{ source: { location: 'minio-a', bucket: 'docs' }, destinations: [{ location: 'target', bucket: 'docs-copy' }], replicateDeleteMarkers: true }],
      );
      local = await startOn(dir, tag);
    });

    after(async () => {
      await local.stop();
    });

    it('data, metadata, tags and content headers of each version', async () => {
      const first = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'report.txt', Body: 'first draft', ContentType: 'text/plain', CacheControl: 'no-cache', Metadata: { author: 'ann' }, Tagging: 'team=blue&stage=draft' }));
      const second = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'report.txt', Body: 'final text', ContentType: 'text/markdown', Metadata: { author: 'bob' } }));
      await completed('minio-a', 'docs', 'report.txt', first.VersionId);
      await completed('minio-a', 'docs', 'report.txt', second.VersionId);
      assert.equal((await body(sd, 'docs-copy', 'report.txt')).toString(), 'final text', 'the newest version is the current one');
      const versions = await versionsOf(sd, 'docs-copy', 'report.txt');
      assert.equal(versions.length, 2, `both versions are there: ${JSON.stringify(versions)}`);
      const older = versions[1]?.versionId ?? '';
      assert.equal((await body(sd, 'docs-copy', 'report.txt', older)).toString(), 'first draft');
      const h = await sd.send(new HeadObjectCommand({ Bucket: 'docs-copy', Key: 'report.txt', VersionId: older }));
      assert.equal(h.ContentType, 'text/plain');
      assert.equal(h.CacheControl, 'no-cache');
      assert.equal(h.Metadata?.['author'], 'ann');
      const tags = await sd.send(new GetObjectTaggingCommand({ Bucket: 'docs-copy', Key: 'report.txt', VersionId: older }));
      assert.deepEqual(Object.fromEntries((tags.TagSet ?? []).map((t) => [t.Key, t.Value])), { team: 'blue', stage: 'draft' });
    });

    it('a multipart object of unequal parts, part by part, with its ETag', async () => {
      const parts = [Buffer.alloc(5 * MiB, 1), Buffer.alloc(6 * MiB, 2), Buffer.alloc(MiB + 17, 3)];
      const etag = await multipart(sa, 'docs', 'big.bin', parts);
      await completed('minio-a', 'docs', 'big.bin');
      const h = await sd.send(new HeadObjectCommand({ Bucket: 'docs-copy', Key: 'big.bin' }));
      assert.equal(h.ETag, etag, 'the replica has the source ETag (same parts)');
      assert.equal(h.ContentLength, 12 * MiB + 17);
      assert.equal(h.Metadata?.['kind'], 'mpu');
      assert.ok((await body(sd, 'docs-copy', 'big.bin')).equals(Buffer.concat(parts)));
      assert.equal((await versionsOf(sd, 'docs-copy', 'big.bin')).length, 1, 'one replica version');
      // Copied at the first attempt: an answer without the ETag (Ceph RGW's) is read back, not retried.
      assert.equal(local.status.lookup('minio-a', 'docs', 'big.bin')[0]?.destinations['target/docs-copy']?.attempts, 1);
    });

    it('a delete makes a delete marker there, the versions stay', async () => {
      await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'gone.txt', Body: 'short-lived' }));
      await completed('minio-a', 'docs', 'gone.txt');
      const marker = await sa.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'gone.txt' }));
      await completed('minio-a', 'docs', 'gone.txt', marker.VersionId);
      await eventually(async () => {
        const versions = await versionsOf(sd, 'docs-copy', 'gone.txt');
        assert.deepEqual(versions.map((v) => v.deleteMarker), [true, false], JSON.stringify(versions));
      }, 30_000);
    });
  });
}

// SeaweedFS takes no bucket notifications: as a source it is read by listing scans.
describe('SeaweedFS → MinIO by listing scans (real SeaweedFS, MinIO, Kafka)', function () {
  this.timeout(300_000);
  let sm: S3Client, sw: S3Client;
  let local: LocalRun;
  const completed = completedIn(() => local);

  before(async () => {
    const [m, w] = await Promise.all([minio({ name: 'scan-m' }), seaweed({ name: 'scan-w' })]);
    [sm, sw] = [m.client(), w.client()];
    await versionedBucket(sw, 'inbox');
    await versionedBucket(sm, 'inbox-copy');
    // Written before the rule exists: the backfill.
    await sw.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'before/one.txt', Body: 'there before', ContentType: 'text/plain', Metadata: { origin: 'seaweed' }, Tagging: 'stage=old' }));
    const dir = manifests(
      'scan',
      [locationManifest('seaweed', w.endpoint, w.credentials, { journal: { scan: { intervalSeconds: 10 } } }), locationManifest('minio-m', m.endpoint, m.credentials)],
      [{ source: { location: 'seaweed', bucket: 'inbox' }, destinations: [{ location: 'minio-m', bucket: 'inbox-copy' }], replicateExistingObjects: true }],
    );
    local = await startOn(dir, 'scan');
  });

  after(async () => {
    await local.stop();
  });

  it('what was there before the rule, and what is written after', async () => {
    await completed('seaweed', 'inbox', 'before/one.txt');
    const h = await sm.send(new HeadObjectCommand({ Bucket: 'inbox-copy', Key: 'before/one.txt' }));
    assert.equal(h.ContentType, 'text/plain');
    assert.equal(h.Metadata?.['origin'], 'seaweed');
    const tags = await sm.send(new GetObjectTaggingCommand({ Bucket: 'inbox-copy', Key: 'before/one.txt' }));
    assert.deepEqual(tags.TagSet?.map((t) => `${t.Key ?? ''}=${t.Value ?? ''}`), ['stage=old']);
    // After the start: found by the next scan (every 10 s).
    await sw.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'after/two.txt', Body: 'written later' }));
    await completed('seaweed', 'inbox', 'after/two.txt');
    assert.equal((await body(sm, 'inbox-copy', 'after/two.txt')).toString(), 'written later');
  });
});
