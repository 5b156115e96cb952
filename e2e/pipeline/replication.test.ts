import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectTaggingCommand,
  PutObjectCommand,
  PutObjectTaggingCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { follow } from '../../lib/queue/follow.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { body, startLocalOn, head, sourceBucket, startSites, versionedBucket, versionsOf, writeRule, type Sites } from './sites.ts';

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

async function multipart(s3: S3Client, bucket: string, key: string, parts: Buffer[]): Promise<string> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/x-big', Metadata: { kind: 'mpu' }, Tagging: 'size=big' }));
  const etags = [];
  for (const [i, p] of parts.entries()) {
    const r = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body: p }));
    etags.push({ ETag: r.ETag ?? '', PartNumber: i + 1 });
  }
  const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: etags } }));
  return (done.ETag ?? '').replace(/"/g, '');
}

describe('replication pipeline (Kafka journal, three MinIO sites)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    sites = await startSites('pipe');
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    await sourceBucket(sites, 'photos');
    await versionedBucket(b, 'photos-b');
    await versionedBucket(c, 'photos-c');
    writeRule(sites, 'photos', {
      source: { location: 'site-a', bucket: 'photos' },
      destinations: [
        { location: 'site-b', bucket: 'photos-b' },
        { location: 'site-c', bucket: 'photos-c', keyPrefix: 'from-a/' },
      ],
      replicateDeleteMarkers: true,
    });
    local = await startLocalOn(sites, 'pipe', { retry: { baseDelayMs: 100, maxDelayMs: 1_000 } });
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  const completed = async (key: string, versionId?: string): Promise<void> => {
    await eventually(() => {
      const [v] = local.status.lookup('site-a', 'photos', key, versionId);
      assert.equal(v?.state, 'COMPLETED', JSON.stringify(v));
    }, 60_000);
  };

  it('copies data, content headers, user metadata and tags to every destination', async () => {
    const data = randomBytes(300_000);
    const put = await a.send(
      new PutObjectCommand({
        Bucket: 'photos',
        Key: 'cat.jpg',
        Body: data,
        ContentType: 'image/jpeg',
        CacheControl: 'max-age=3600',
        ContentDisposition: 'inline',
        ContentLanguage: 'fr',
        Metadata: { camera: 'x100', owner: 'ada' },
        Tagging: 'team=blue&year=2026',
      }),
    );
    await completed('cat.jpg', put.VersionId);
    // As listed: to the millisecond (a HEAD gives whole seconds).
    const sourceTime = String((await versionsOf(a, 'photos', 'cat.jpg')).find((v) => v.versionId === put.VersionId)?.lastModified);
    for (const [s3, bucket, key] of [[b, 'photos-b', 'cat.jpg'], [c, 'photos-c', 'from-a/cat.jpg']] as const) {
      assert.ok((await body(s3, bucket, key)).equals(data));
      const h = await head(s3, bucket, key);
      assert.equal(h.ContentType, 'image/jpeg');
      assert.equal(h.CacheControl, 'max-age=3600');
      assert.equal(h.ContentDisposition, 'inline');
      assert.equal(h.ContentLanguage, 'fr');
      assert.equal(h.ETag, put.ETag);
      // The user's metadata, and the replica's marks: its source version, source, and that version's listed Last-Modified.
      assert.deepEqual(h.Metadata, { camera: 'x100', owner: 'ada', 'backbeat-source-version-id': put.VersionId, 'backbeat-source': 'site-a/photos', 'backbeat-path': 'site-a/photos', 'backbeat-source-time': sourceTime });
      const tags = await s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }));
      assert.deepEqual(tags.TagSet?.map((t) => `${t.Key}=${t.Value}`).sort(), ['team=blue', 'year=2026']);
    }
    const [status] = local.status.lookup('site-a', 'photos', 'cat.jpg');
    assert.deepEqual(Object.keys(status?.destinations ?? {}).sort(), ['site-b/photos-b', 'site-c/photos-c']);
    assert.equal(status?.destinations['site-b/photos-b']?.replicaEtag, put.ETag?.replace(/"/g, ''));
  });

  it('copies a multipart object part by part, so the replica ETag equals the source ETag', async () => {
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(6 * 1024 * 1024), randomBytes(777)];
    const etag = await multipart(a, 'photos', 'big/video.bin', parts);
    assert.match(etag, /-3$/);
    await completed('big/video.bin');
    for (const [s3, bucket, key] of [[b, 'photos-b', 'big/video.bin'], [c, 'photos-c', 'from-a/big/video.bin']] as const) {
      const h = await head(s3, bucket, key);
      assert.equal(h.ETag?.replace(/"/g, ''), etag);
      assert.equal(h.ContentType, 'application/x-big');
      assert.equal(h.Metadata?.['kind'], 'mpu');
      assert.equal(md5(await body(s3, bucket, key)), md5(Buffer.concat(parts)));
      // Its tags too, asked for because its first part's GET reported them.
      assert.deepEqual((await s3.send(new GetObjectTaggingCommand({ Bucket: bucket, Key: key }))).TagSet?.map((t) => `${t.Key}=${t.Value}`), ['size=big']);
    }
  });

  it('copies zero-byte objects', async () => {
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'empty', Body: '' }));
    await completed('empty');
    assert.equal((await head(b, 'photos-b', 'empty')).ContentLength, 0);
  });

  it('replicates delete markers when the rule enables them, keeping the data as a noncurrent version', async () => {
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'doomed.txt', Body: 'bye' }));
    await completed('doomed.txt');
    const del = await a.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'doomed.txt' }));
    await completed('doomed.txt', del.VersionId);
    const versions = await versionsOf(b, 'photos-b', 'doomed.txt');
    assert.deepEqual(versions.map((v) => v.deleteMarker), [true, false]);
    assert.equal((await body(b, 'photos-b', 'doomed.txt', versions[1]?.versionId)).toString(), 'bye');
  });

  it('replicates a tag change of an already replicated version', async () => {
    const put = await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'retag.txt', Body: 'x', Tagging: 'state=draft' }));
    await completed('retag.txt', put.VersionId);
    await a.send(new PutObjectTaggingCommand({ Bucket: 'photos', Key: 'retag.txt', VersionId: put.VersionId, Tagging: { TagSet: [{ Key: 'state', Value: 'final' }] } }));
    await eventually(async () => {
      const tags = await b.send(new GetObjectTaggingCommand({ Bucket: 'photos-b', Key: 'retag.txt' }));
      assert.deepEqual(tags.TagSet, [{ Key: 'state', Value: 'final' }]);
    }, 60_000);
    assert.equal((await versionsOf(b, 'photos-b', 'retag.txt')).length, 1, 'a tag change adds no version');
  });

  it('replicates keys with unicode, spaces, %, +, a leading / and 1 024 bytes, byte-exact', async () => {
    // 1 024 bytes in segments of at most 255: MinIO stores keys as paths and limits each segment.
    const long = `long/${['k'.repeat(255), 'k'.repeat(255), 'k'.repeat(255), 'k'.repeat(251)].join('/')}`;
    const keys = ['ünïcödé/日本語/ファイル.txt', 'with spaces and  double', 'percent%20literal%', 'plus+sign+', '/leading-slash', long];
    assert.equal(Buffer.byteLength(long), 1024);
    for (const key of keys) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: `content of ${key}` }));
    for (const key of keys) {
      // MinIO stores "/x" as "x" (its events and listings say "x"); the engine passes keys through as given.
      const stored = key.replace(/^\/+/, '');
      const where = `key ${JSON.stringify(key.slice(0, 40))}`;
      await eventually(() => {
        const [v] = local.status.lookup('site-a', 'photos', stored);
        assert.equal(v?.destinations['site-b/photos-b']?.state, 'COMPLETED', where);
        assert.notEqual(v.destinations['site-c/photos-c']?.state, 'PENDING', where);
      }, 60_000);
      assert.equal((await body(b, 'photos-b', key)).toString(), `content of ${key}`, where);
      if (key !== long) assert.equal((await body(c, 'photos-c', `from-a/${stored}`)).toString(), `content of ${key}`, where);
    }
    // With site C's "from-a/" prefix the 1 024-byte key is too long there: a permanent error, failed at once.
    const [longStatus] = local.status.lookup('site-a', 'photos', long);
    assert.equal(longStatus?.state, 'FAILED');
    assert.equal(longStatus.destinations['site-c/photos-c']?.attempts, 1);
    assert.match(longStatus.destinations['site-c/photos-c'].reason ?? '', /^KeyTooLongError/);
  });

  it('converges on the final version after rapid overwrites of one key', async () => {
    let last = '';
    for (let i = 0; i < 15; i++) {
      last = `version ${i}`;
      await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'hot-key', Body: last }));
    }
    const [newest] = await versionsOf(a, 'photos', 'hot-key');
    await completed('hot-key', newest?.versionId);
    await eventually(async () => {
      assert.equal((await body(b, 'photos-b', 'hot-key')).toString(), last);
      assert.equal((await head(b, 'photos-b', 'hot-key')).Metadata?.['backbeat-source-version-id'], newest?.versionId);
    });
    // Every source version is settled for both destinations: replicated, or superseded by a newer one.
    await eventually(() => {
      const states = local.status.lookup('site-a', 'photos', 'hot-key').map((s) => s.state);
      assert.equal(states.length, 15);
      assert.ok(states.every((s) => s === 'COMPLETED' || s === 'SKIPPED'), states.join(','));
    }, 60_000);
  });

  it('does no visible work twice for duplicate journal events', async () => {
    const put = await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'dup.txt', Body: 'once' }));
    await completed('dup.txt', put.VersionId);
    // Replay the journal message for that PUT three times.
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const copies: Buffer[] = [];
    const reader = await follow(queue, sites.journalTopic, (m) => {
      if (m.key === 'photos/dup.txt' && m.value !== null) copies.push(m.value);
    });
    await eventually(() => assert.equal(copies.length, 1));
    await reader.close();
    const producer = await queue.producer();
    const original = copies[0];
    assert.ok(original);
    await producer.send(sites.journalTopic, [1, 2, 3].map(() => ({ key: 'photos/dup.txt', value: original })));
    await producer.close();
    await eventually(() => assert.ok(local.processors.get('site-b')?.counters.completed !== undefined));
    // Give the duplicates time to flow through, then check nothing changed on the destination.
    await eventually(async () => {
      const lag = await (await queue.admin()).groupLag('pipe-processor-site-b', 'pipe-replication');
      assert.equal(lag.reduce((n, p) => n + p.lag, 0), 0);
    }, 60_000);
    assert.equal((await versionsOf(b, 'photos-b', 'dup.txt')).length, 1);
    assert.equal(local.status.lookup('site-a', 'photos', 'dup.txt', put.VersionId)[0]?.state, 'COMPLETED');
  });

  it("weighs a late or forged journal event by its version's stamp: the older version never goes above the newer replica", async () => {
    const v1 = await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'late.txt', Body: 'older' }));
    const v2 = await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'late.txt', Body: 'newer' }));
    await completed('late.txt', v2.VersionId);
    const replicaOf = async (): Promise<string | undefined> => (await head(b, 'photos-b', 'late.txt')).Metadata?.['backbeat-source-version-id'];
    assert.equal(await replicaOf(), v2.VersionId);
    const replicas = (await versionsOf(b, 'photos-b', 'late.txt')).length;
    // v1's own event, as MinIO published it.
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const events: Buffer[] = [];
    const reader = await follow(queue, sites.journalTopic, (m) => {
      if (m.value?.toString().includes(`"versionId":"${v1.VersionId ?? ''}"`) === true) events.push(m.value);
    });
    await eventually(() => assert.equal(events.length, 1));
    await reader.close();
    const original = events[0] ?? Buffer.alloc(0);
    const skippedBefore = ['site-b', 'site-c'].map((l) => local.processors.get(l)?.counters.skipped ?? 0);
    // The same event claiming to be a second newer than v2 (its sequencer is the version's ModTime in ns).
    const v2Time = (await versionsOf(a, 'photos', 'late.txt')).find((v) => v.versionId === v2.VersionId)?.lastModified ?? 0;
    const record = (JSON.parse(original.toString()) as { Records: { eventTime: string; s3: { object: { sequencer: string } } }[] }).Records[0];
    assert.ok(record !== undefined);
    record.s3.object.sequencer = (BigInt(v2Time + 1000) * 1_000_000n).toString(16).toUpperCase();
    record.eventTime = new Date(v2Time + 1001).toISOString();
    const forged = Buffer.from(JSON.stringify({ Records: [record] }));
    const producer = await queue.producer();
    await producer.send(sites.journalTopic, [{ key: 'photos/late.txt', value: original }, { key: 'photos/late.txt', value: forged }]);
    await producer.close();
    // Both came through as tasks to both destinations, and each was skipped: v1 was not copied again.
    await eventually(() => assert.deepEqual(['site-b', 'site-c'].map((l, i) => (local.processors.get(l)?.counters.skipped ?? 0) - (skippedBefore[i] ?? 0)), [2, 2]), 60_000);
    assert.equal(await replicaOf(), v2.VersionId, 'the newest write stays current');
    assert.equal((await versionsOf(b, 'photos-b', 'late.txt')).length, replicas);
    assert.equal((await head(c, 'photos-c', 'from-a/late.txt')).Metadata?.['backbeat-source-version-id'], v2.VersionId);
  });

  it('keeps replicating to the other destinations while one is down, and catches up when it returns', async () => {
    await sites.c.stop();
    try {
      for (let i = 0; i < 5; i++) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: `outage/${i}`, Body: `during outage ${i}` }));
      await eventually(() => {
        for (let i = 0; i < 5; i++) {
          const [v] = local.status.lookup('site-a', 'photos', `outage/${i}`);
          assert.equal(v?.destinations['site-b/photos-b']?.state, 'COMPLETED');
          assert.equal(v.destinations['site-c/photos-c']?.state, 'PENDING');
          assert.equal(v.state, 'PENDING');
        }
      }, 60_000);
      // Site C's processor paused its consumer rather than hold a batch open: no copy in flight there.
      await eventually(() => assert.match(readFileSync(join(runDir(), 'pipe.log'), 'utf8'), /"destination":"site-c\/photos-c".*"message":"endpoint unreachable: consumption paused until it answers"/), 30_000);
      await eventually(async () => assert.match(await (await fetch(`${local.url}/metrics`)).text(), /backbeat_copies_in_flight\{destination="site-c"\} 0/), 30_000);
    } finally {
      await sites.c.process.start({ probe: async () => (await fetch(`${sites.c.endpoint}/minio/health/ready`)).ok, timeoutMs: 60_000 });
    }
    await eventually(() => assert.match(readFileSync(join(runDir(), 'pipe.log'), 'utf8'), /"message":"endpoint reachable again: consumption resumed"/), 60_000);
    for (let i = 0; i < 5; i++) {
      await completed(`outage/${i}`);
      assert.equal((await body(c, 'photos-c', `from-a/outage/${i}`)).toString(), `during outage ${i}`);
    }
  });

  it('sets a malformed journal message aside with its reason, and goes on', async () => {
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const producer = await queue.producer();
    await producer.send(sites.journalTopic, [
      { key: 'photos/bad', value: 'this is not json' },
      { key: 'photos/bad2', value: JSON.stringify({ Records: [{ eventName: 's3:ObjectCreated:Put', s3: { bucket: { name: 'photos' } } }] }) },
    ]);
    await producer.close();
    const failed: { reason: string }[] = [];
    const reader = await follow(queue, 'pipe-journal-failed', (m) => failed.push(JSON.parse(m.value?.toString() ?? '{}') as { reason: string }));
    try {
      await eventually(() => assert.deepEqual(failed.map((f) => f.reason.split(':')[0]).sort(), ['Records[0].s3.object.key is missing', 'not JSON']), 60_000);
    } finally {
      await reader.close();
    }
    assert.equal(local.populator.counters.malformed, 2);
    const put = await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'after-bad.txt', Body: 'still flowing' }));
    await completed('after-bad.txt', put.VersionId);
  });

  it('replicates a run of 1 000 objects, every one COMPLETED', async () => {
    const keys = Array.from({ length: 1000 }, (_, i) => `bulk/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(keys.slice(i, i + 50).map((key) => a.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: key }))));
    }
    await eventually(
      () => {
        const states = keys.map((key) => local.status.lookup('site-a', 'photos', key)[0]?.state);
        assert.equal(states.filter((st) => st === 'COMPLETED').length, 1000, `not yet: ${JSON.stringify(states.filter((st) => st !== 'COMPLETED').length)} left`);
      },
      240_000,
      1_000,
    );
    assert.equal((await body(b, 'photos-b', 'bulk/0999')).toString(), 'bulk/0999');
    assert.equal((await body(c, 'photos-c', 'from-a/bulk/0500')).toString(), 'bulk/0500');
  });
});
