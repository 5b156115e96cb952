import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DeleteObjectCommand,
  GetObjectTaggingCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketEncryptionCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { PROBE_PREFIX, probeDestination } from '../../lib/s3/capabilities.ts';
import { testSecret } from '../harness/secrets.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import type { ReplicationTask } from '../../lib/queue/messages.ts';
import { replicate } from '../../workers/processor/replicate.ts';
import { minio, rgw, seaweed } from '../harness/env.ts';
import type { TestS3Server } from '../harness/seaweed.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { completedIn, journaledSource, manifests, multipart, startOn } from './servers.ts';
import { body, locationManifest, versionedBucket, versionsOf } from './sites.ts';

const MiB = 1024 * 1024;

interface Server {
  server: string;
  start(name: string): Promise<TestS3Server>;
  /** Whether a GET of one part answers that part, so that a copy keeps the source's parts and ETag. */
  partsKept: boolean;
  /** Whether a HEAD of a key whose current version is a delete marker says so. */
  markersOnHead: boolean;
}

// The README promises any S3-compatible endpoint: each server below, started by the harness from what
// `make deps` obtained, is a destination of a MinIO source fed by its Kafka notifications. A failure names
// the server in the suite's title.
const servers: Server[] = [
  { server: 'SeaweedFS', start: (name) => seaweed({ name }), partsKept: true, markersOnHead: true },
  { server: 'Ceph RGW', start: (name) => rgw({ name }), partsKept: false, markersOnHead: false },
];

for (const target of servers) {
  const tag = target.server.toLowerCase().replace(/[^a-z]/g, '');
  describe(`MinIO → ${target.server} (real ${target.server}, MinIO, Kafka)`, function () {
    this.timeout(300_000);
    let sa: S3Client, sd: S3Client;
    let local: LocalRun;
    const completed = completedIn(() => local);

    before(async () => {
      const [{ server: a, client, journalTopic }, d] = await Promise.all([journaledSource(`${tag}-a`, 'docs'), target.start(`${tag}-d`)]);
      [sa, sd] = [client, d.client()];
      await versionedBucket(sd, 'docs-copy');
      const dir = manifests(
        tag,
        [locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic: journalTopic } } }), locationManifest('target', d.endpoint, d.credentials)],
        [{ source: { location: 'minio-a', bucket: 'docs' }, destinations: [{ location: 'target', bucket: 'docs-copy' }], replicateDeleteMarkers: true, replicateVersionDeletes: true }],
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

    it('a zero-byte object, and a version deleted at the source deleted there', async () => {
      const kept = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'empty', Body: Buffer.alloc(0), Metadata: { note: 'nothing' } }));
      const dropped = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'empty', Body: 'brief' }));
      await completed('minio-a', 'docs', 'empty', kept.VersionId);
      await completed('minio-a', 'docs', 'empty', dropped.VersionId);
      assert.equal((await versionsOf(sd, 'docs-copy', 'empty')).length, 2);
      await sa.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'empty', VersionId: dropped.VersionId }));
      await eventually(async () => {
        const versions = await versionsOf(sd, 'docs-copy', 'empty');
        assert.equal(versions.length, 1, `the replica of the deleted version is gone: ${JSON.stringify(versions)}`);
      }, 60_000);
      const h = await sd.send(new HeadObjectCommand({ Bucket: 'docs-copy', Key: 'empty' }));
      assert.equal(h.ContentLength, 0);
      assert.equal(h.Metadata?.['note'], 'nothing');
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

    it('an older version retried after the delete marker does not come back', async () => {
      const probed = await probeDestination(sd, 'docs-copy');
      assert.deepEqual(probed, { traits: { markersOnHead: target.markersOnHead } }, 'the probe learned what the server does, and left nothing');
      const left = await sd.send(new ListObjectVersionsCommand({ Bucket: 'docs-copy', Prefix: PROBE_PREFIX }));
      assert.deepEqual([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])], [], 'no probe version is left');
      const old = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'late.txt', Body: 'stale' }));
      await completed('minio-a', 'docs', 'late.txt');
      const marker = await sa.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'late.txt' }));
      await completed('minio-a', 'docs', 'late.txt', marker.VersionId);
      // The first version's task again, as a retry redelivered after the marker was replicated.
      const task: ReplicationTask = {
        source: { location: 'minio-a', bucket: 'docs', key: 'late.txt', versionId: old.VersionId ?? '' },
        kind: 'object',
        eventTime: new Date().toISOString(),
        destinations: [{ id: 'target/docs-copy', location: 'target', bucket: 'docs-copy', rule: `${tag}-0` }],
        origin: 'retry',
      };
      const [d] = task.destinations;
      assert.ok(d !== undefined);
      const outcome = await replicate({ source: sa, destination: sd, traits: () => probed.traits }, task, d);
      assert.equal(outcome.state, 'SKIPPED', JSON.stringify(outcome));
      const versions = await versionsOf(sd, 'docs-copy', 'late.txt');
      assert.deepEqual(versions.map((v) => v.deleteMarker), [true, false], `still deleted: ${JSON.stringify(versions)}`);
    });
  });
}

// As sources, both are read by listing scans here: SeaweedFS takes no bucket notifications, and RGW's
// reach only an HTTP endpoint. RGW's GET ignores partNumber: its multipart objects are copied whole,
// checked by the MD5 of the bytes read (their ETag, made of the source's parts, cannot be matched).
for (const source of servers) {
  const tag = `scan${source.server.toLowerCase().replace(/[^a-z]/g, '')}`;
  describe(`${source.server} → MinIO by listing scans (real ${source.server}, MinIO, Kafka)`, function () {
    this.timeout(300_000);
    let sm: S3Client, ss: S3Client;
    let local: LocalRun;
    const completed = completedIn(() => local);

    before(async () => {
      const [m, src] = await Promise.all([minio({ name: `${tag}-m` }), source.start(`${tag}-s`)]);
      [sm, ss] = [m.client(), src.client()];
      await versionedBucket(ss, 'inbox');
      await versionedBucket(sm, 'inbox-copy');
      // Written before the rule exists: the backfill.
      await ss.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'before/one.txt', Body: 'there before', ContentType: 'text/plain', Metadata: { origin: 'elsewhere' }, Tagging: 'stage=old' }));
      const dir = manifests(
        tag,
        [locationManifest('other', src.endpoint, src.credentials, { journal: { scan: { intervalSeconds: 10 } } }), locationManifest('minio-m', m.endpoint, m.credentials)],
        [{ source: { location: 'other', bucket: 'inbox' }, destinations: [{ location: 'minio-m', bucket: 'inbox-copy' }], replicateExistingObjects: true, replicateDeleteMarkers: true }],
      );
      local = await startOn(dir, tag);
    });

    after(async () => {
      await local.stop();
    });

    it('what was there before the rule, and what is written after', async () => {
      await completed('other', 'inbox', 'before/one.txt');
      const h = await sm.send(new HeadObjectCommand({ Bucket: 'inbox-copy', Key: 'before/one.txt' }));
      assert.equal(h.ContentType, 'text/plain');
      assert.equal(h.Metadata?.['origin'], 'elsewhere');
      const tags = await sm.send(new GetObjectTaggingCommand({ Bucket: 'inbox-copy', Key: 'before/one.txt' }));
      assert.deepEqual(tags.TagSet?.map((t) => `${t.Key ?? ''}=${t.Value ?? ''}`), ['stage=old']);
      // After the start: found by the next scan (every 10 s).
      await ss.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'after/two.txt', Body: 'written later' }));
      await completed('other', 'inbox', 'after/two.txt');
      assert.equal((await body(sm, 'inbox-copy', 'after/two.txt')).toString(), 'written later');
    });

    it('a zero-byte object, then its delete marker', async () => {
      await ss.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'empty', Body: Buffer.alloc(0) }));
      await completed('other', 'inbox', 'empty');
      assert.equal((await sm.send(new HeadObjectCommand({ Bucket: 'inbox-copy', Key: 'empty' }))).ContentLength, 0);
      const marker = await ss.send(new DeleteObjectCommand({ Bucket: 'inbox', Key: 'empty' }));
      await completed('other', 'inbox', 'empty', marker.VersionId);
      const versions = await versionsOf(sm, 'inbox-copy', 'empty');
      assert.deepEqual(versions.map((v) => v.deleteMarker), [true, false], JSON.stringify(versions));
    });

    it(source.partsKept ? 'a multipart object, part by part, with its ETag' : 'a multipart object, whole (partNumber ignored), checked by its MD5', async () => {
      const parts = [Buffer.alloc(5 * MiB, 4), Buffer.alloc(5 * MiB + 3, 5), Buffer.alloc(MiB, 6)];
      const etag = await multipart(ss, 'inbox', 'big.bin', parts);
      await completed('other', 'inbox', 'big.bin');
      assert.ok((await body(sm, 'inbox-copy', 'big.bin')).equals(Buffer.concat(parts)), 'the same bytes');
      const h = await sm.send(new HeadObjectCommand({ Bucket: 'inbox-copy', Key: 'big.bin' }));
      assert.equal(h.Metadata?.['kind'], 'mpu');
      const d = local.status.lookup('other', 'inbox', 'big.bin')[0]?.destinations['minio-m/inbox-copy'];
      assert.equal(d?.attempts, 1, JSON.stringify(d));
      if (source.partsKept) {
        assert.equal(h.ETag, etag);
        assert.equal(d.verifiedBy, undefined);
      } else {
        assert.notEqual(h.ETag, etag, 'one part where the source had three');
        assert.equal(d.verifiedBy, 'md5', 'the status says how the replica was checked');
        // Learned once for the location: a second multipart object goes whole at once.
        await multipart(ss, 'inbox', 'big2.bin', parts);
        await completed('other', 'inbox', 'big2.bin');
        assert.ok((await body(sm, 'inbox-copy', 'big2.bin')).equals(Buffer.concat(parts)), 'the same bytes');
        const learned = readFileSync(join(runDir(), `${tag}.log`), 'utf8').split('\n').filter((l) => l.includes('the source ignores partNumber'));
        assert.equal(learned.length, 1, learned.join('\n'));
      }
    });

    // Past the 5 GiB one PUT takes, such an object goes in byte ranges: here with the limit lowered.
    if (!source.partsKept) {
      it('a multipart object past what one PUT takes: in byte ranges, each checked by the MD5 of its bytes', async () => {
        const parts = [Buffer.alloc(5 * MiB, 7), Buffer.alloc(5 * MiB + 3, 8), Buffer.alloc(MiB, 9)];
        const etag = await multipart(ss, 'inbox', 'huge.bin', parts);
        const { VersionId } = await ss.send(new HeadObjectCommand({ Bucket: 'inbox', Key: 'huge.bin' }));
        const task: ReplicationTask = {
          source: { location: 'other', bucket: 'inbox', key: 'huge.bin', versionId: VersionId ?? '' },
          kind: 'object',
          etag,
          eventTime: new Date().toISOString(),
          destinations: [{ id: 'minio-m/ranges', location: 'minio-m', bucket: 'ranges', rule: `${tag}-0` }],
          origin: 'retry',
        };
        await versionedBucket(sm, 'ranges');
        const [d] = task.destinations;
        assert.ok(d !== undefined);
        const outcome = await replicate({ source: ss, destination: sm, wholeMaxBytes: 8 * MiB, rangeMinBytes: 5 * MiB }, task, d);
        assert.deepEqual([outcome.state, outcome.verifiedBy, outcome.bytes], ['COMPLETED', 'md5', 11 * MiB + 3]);
        assert.ok((await body(sm, 'ranges', 'huge.bin')).equals(Buffer.concat(parts)), 'the same bytes');
        assert.match((await sm.send(new HeadObjectCommand({ Bucket: 'ranges', Key: 'huge.bin' }))).ETag ?? '', /-3"$/, 'three ranges of 5 MiB at most');
      });
    }
  });
}

// A chain across the three servers: one rule MinIO → SeaweedFS, one SeaweedFS → RGW that replicates
// replicas, and one RGW → SeaweedFS that closes a cycle: a replica goes on along the chain, never back
// into a bucket it came through.
describe('a chain MinIO → SeaweedFS → Ceph RGW, and a cycle back (real MinIO, SeaweedFS, Ceph RGW, Kafka)', function () {
  this.timeout(300_000);
  let sa: S3Client, sw: S3Client, sr: S3Client;
  let local: LocalRun;
  const completed = completedIn(() => local);

  before(async () => {
    const [{ server: a, client, journalTopic }, w, r] = await Promise.all([journaledSource('chain-a', 'docs'), seaweed({ name: 'chain-w' }), rgw({ name: 'chain-r' })]);
    [sa, sw, sr] = [client, w.client(), r.client()];
    await versionedBucket(sw, 'relay');
    await versionedBucket(sr, 'final');
    const scan = { journal: { scan: { intervalSeconds: 10 } } };
    const dir = manifests(
      'chain',
      [locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic: journalTopic } } }), locationManifest('weed', w.endpoint, w.credentials, scan), locationManifest('rgw', r.endpoint, r.credentials, scan)],
      [
        { source: { location: 'minio-a', bucket: 'docs' }, destinations: [{ location: 'weed', bucket: 'relay' }] },
        { source: { location: 'weed', bucket: 'relay' }, destinations: [{ location: 'rgw', bucket: 'final' }], replicateReplicas: true },
        { source: { location: 'rgw', bucket: 'final' }, destinations: [{ location: 'weed', bucket: 'relay' }], replicateReplicas: true },
      ],
    );
    local = await startOn(dir, 'chain');
  });

  after(async () => {
    await local.stop();
  });

  it('an object and a multipart one reach the end of the chain with their metadata, tags and the path they took', async () => {
    await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'chain.txt', Body: 'three hops', ContentType: 'text/plain', Metadata: { author: 'ann' }, Tagging: 'hop=any' }));
    const parts = [Buffer.alloc(5 * MiB, 1), Buffer.alloc(5 * MiB + 1, 2), Buffer.alloc(7, 3)];
    await multipart(sa, 'docs', 'chain.bin', parts);
    for (const key of ['chain.txt', 'chain.bin']) {
      await completed('minio-a', 'docs', key);
      await completed('weed', 'relay', key);
    }
    assert.equal((await body(sr, 'final', 'chain.txt')).toString(), 'three hops');
    assert.ok((await body(sr, 'final', 'chain.bin')).equals(Buffer.concat(parts)));
    const h = await sr.send(new HeadObjectCommand({ Bucket: 'final', Key: 'chain.txt' }));
    assert.equal(h.ContentType, 'text/plain');
    assert.equal(h.Metadata?.['author'], 'ann');
    assert.equal(h.Metadata['backbeat-path'], 'minio-a/docs,weed/relay', 'the buckets it came through');
    const tags = await sr.send(new GetObjectTaggingCommand({ Bucket: 'final', Key: 'chain.txt' }));
    assert.deepEqual(tags.TagSet?.map((t) => `${t.Key ?? ''}=${t.Value ?? ''}`), ['hop=any']);
  });

  it('the cycle RGW → SeaweedFS copies nothing back into a bucket the replica came through', async () => {
    // RGW's scan lists the replica of chain.txt: its rule back to SeaweedFS finds weed/relay on its path.
    await eventually(() => {
      const [back] = local.status.lookup('rgw', 'final', 'chain.txt');
      assert.equal(back?.state, 'SKIPPED', JSON.stringify(back));
      assert.match(back.destinations['weed/relay']?.reason ?? '', /came through weed\/relay: copying it there would loop/);
    }, 60_000, 500);
    assert.equal((await versionsOf(sw, 'relay', 'chain.txt')).length, 1, 'no echo version on SeaweedFS');
    assert.equal((await versionsOf(sr, 'final', 'chain.txt')).length, 1, 'nor on RGW');
  });
});

// MinIO encrypts at rest (SSE-S3) with a KMS key of its own (MINIO_KMS_SECRET_KEY). An encrypted
// version's ETag need not be the MD5 of its bytes (SSE-KMS on AWS; a multipart one's is made of encrypted
// parts): it is copied whole and checked by the MD5 of the bytes read. MinIO's SSE-S3 ETags are the MD5 of
// the plaintext, so a replica in a bucket that encrypts by default matches it (the check by size, for
// destinations whose ETags under encryption are their own, is not reached here).
const KMS_KEY = 'backbeat-test';

describe('encrypted at rest: SSE-S3 on MinIO, as source and as destination (real MinIO, Kafka)', function () {
  this.timeout(300_000);
  let sa: S3Client, sd: S3Client;
  let local: LocalRun;
  const completed = completedIn(() => local);

  before(async () => {
    const kms = (): Record<string, string> => ({ MINIO_KMS_SECRET_KEY: `${KMS_KEY}:${testSecret(randomBytes(32).toString('base64'))}` });
    const [{ server: a, client, journalTopic }, d] = await Promise.all([journaledSource('sse-a', 'vault', kms()), minio({ name: 'sse-d', env: kms() })]);
    [sa, sd] = [client, d.client()];
    await versionedBucket(sd, 'plain');
    await versionedBucket(sd, 'sealed');
    await sd.send(new PutBucketEncryptionCommand({ Bucket: 'sealed', ServerSideEncryptionConfiguration: { Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] } }));
    // Buckets that do not encrypt by default, whose replicas the rule has encrypted.
    await versionedBucket(sd, 'by-rule');
    await versionedBucket(sd, 'by-kms');
    const dir = manifests(
      'sse',
      [locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic: journalTopic } } }), locationManifest('minio-d', d.endpoint, d.credentials)],
      [
        {
          source: { location: 'minio-a', bucket: 'vault' },
          destinations: [
            { location: 'minio-d', bucket: 'plain' },
            { location: 'minio-d', bucket: 'sealed' },
            { location: 'minio-d', bucket: 'by-rule', serverSideEncryption: 'AES256' },
            { location: 'minio-d', bucket: 'by-kms', serverSideEncryption: 'aws:kms', kmsKeyId: KMS_KEY },
          ],
        },
      ],
    );
    local = await startOn(dir, 'sse');
  });

  after(async () => {
    await local.stop();
  });

  const checks = (key: string): Record<string, string | undefined> => {
    const v = local.status.lookup('minio-a', 'vault', key)[0];
    return { plain: v?.destinations['minio-d/plain']?.verifiedBy, sealed: v?.destinations['minio-d/sealed']?.verifiedBy };
  };

  it('an encrypted object, single-part and multipart, reaches both buckets byte for byte', async () => {
    await sa.send(new PutObjectCommand({ Bucket: 'vault', Key: 'secret.txt', Body: 'under lock', ServerSideEncryption: 'AES256', Metadata: { level: 'high' } }));
    const parts = [Buffer.alloc(5 * MiB, 7), Buffer.alloc(5 * MiB + 9, 8)];
    await multipart(sa, 'vault', 'secret.bin', parts, true);
    await completed('minio-a', 'vault', 'secret.txt');
    await completed('minio-a', 'vault', 'secret.bin');
    for (const bucket of ['plain', 'sealed']) {
      assert.equal((await body(sd, bucket, 'secret.txt')).toString(), 'under lock', bucket);
      assert.ok((await body(sd, bucket, 'secret.bin')).equals(Buffer.concat(parts)), bucket);
      assert.equal((await sd.send(new HeadObjectCommand({ Bucket: bucket, Key: 'secret.txt' }))).Metadata?.['level'], 'high');
    }
    assert.equal((await sd.send(new HeadObjectCommand({ Bucket: 'sealed', Key: 'secret.bin' }))).ServerSideEncryption, 'AES256', 'the sealed bucket encrypts its replicas');
    assert.deepEqual(checks('secret.txt'), { plain: 'md5', sealed: 'md5' });
    assert.deepEqual(checks('secret.bin'), { plain: 'md5', sealed: 'md5' });
  });

  it('a plain object into a bucket that encrypts: encrypted there, its ETag the same', async () => {
    await sa.send(new PutObjectCommand({ Bucket: 'vault', Key: 'open.txt', Body: 'in the clear' }));
    await completed('minio-a', 'vault', 'open.txt');
    assert.equal((await body(sd, 'sealed', 'open.txt')).toString(), 'in the clear');
    assert.equal((await sd.send(new HeadObjectCommand({ Bucket: 'sealed', Key: 'open.txt' }))).ServerSideEncryption, 'AES256');
    assert.deepEqual(checks('open.txt'), { plain: undefined, sealed: undefined });
  });

  it('a rule that asks for encryption has replicas encrypted where the bucket would not: SSE-S3 and SSE-KMS, single-part and multipart', async () => {
    const parts = [Buffer.alloc(5 * MiB, 4), Buffer.alloc(MiB + 5, 5)];
    await sa.send(new PutObjectCommand({ Bucket: 'vault', Key: 'asked.txt', Body: 'seal it there' }));
    await multipart(sa, 'vault', 'asked.bin', parts);
    await completed('minio-a', 'vault', 'asked.txt');
    await completed('minio-a', 'vault', 'asked.bin');
    for (const [bucket, sse] of [['by-rule', 'AES256'], ['by-kms', 'aws:kms'], ['plain', undefined]] as const) {
      assert.equal((await body(sd, bucket, 'asked.txt')).toString(), 'seal it there', bucket);
      assert.ok((await body(sd, bucket, 'asked.bin')).equals(Buffer.concat(parts)), bucket);
      for (const key of ['asked.txt', 'asked.bin']) assert.equal((await sd.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ServerSideEncryption, sse, `${bucket}/${key}`);
    }
    // MinIO's SSE-S3 ETags are the MD5s of the bytes (the source's ETag kept); its SSE-KMS ETags are its own.
    const verified = (key: string): (string | undefined)[] => ['by-rule', 'by-kms'].map((b) => local.status.lookup('minio-a', 'vault', key)[0]?.destinations[`minio-d/${b}`]?.verifiedBy);
    assert.deepEqual([verified('asked.txt'), verified('asked.bin')], [[undefined, 'size'], [undefined, 'size']]);
  });
});
