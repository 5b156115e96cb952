import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { faultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat } from './backbeat.ts';
import { locationManifest, sourceBucket, startLocalOn, startSites, versionedBucket, versionsOf, writeRule, type Sites } from './sites.ts';

/** The source version the destination's current version replicates; 'deleted' for a delete marker or nothing. */
async function currentReplicaOf(s3: S3Client, bucket: string, key: string): Promise<string> {
  try {
    return (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata?.[REPLICA_VERSION_META] ?? 'not a replica';
  } catch {
    return 'deleted';
  }
}

// Reorderings scripted on real servers: an old version retried after newer changes reached the
// destination. Site B is reached through a proxy that refuses (403) the PUTs of chosen keys while asked
// to, so a version FAILs at once and comes back later with `failed retry`.
describe('adversarial orderings: an older version never replaces what is newer (real Kafka, real MinIO)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let proxy: FaultProxy;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;
  const refused = new Set<string>();
  /** The requests site B saw for bucket `ahead`, while recorded. */
  const seen: { on: boolean; requests: string[] } = { on: false, requests: [] };

  before(async () => {
    // Site A, a transient source with a Kafka journal; site C, a kept source listed every 10 s.
    sites = await startSites('ordering', { a: { transient: true } });
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    proxy = await faultProxy(
      sites.b.endpoint,
      (req) => {
        if (seen.on && (req.url ?? '').startsWith('/ahead')) seen.requests.push(`${req.method ?? ''} ${decodeURIComponent(req.url ?? '')}`);
        return req.method === 'PUT' && [...refused].some((k) => (req.url ?? '').startsWith(`/kept/${k}`) || (req.url ?? '').startsWith(`/gone/${k}`));
      },
      403,
      'AccessDenied',
    );
    writeFileSync(join(sites.dir, 'site-b.yaml'), locationManifest('site-b', proxy.endpoint, sites.b.credentials));
    writeFileSync(join(sites.dir, 'site-c.yaml'), locationManifest('site-c', sites.c.endpoint, sites.c.credentials, { journal: { scan: { intervalSeconds: 10 } } }));
    await sourceBucket(sites, 'gone');
    await versionedBucket(c, 'kept');
    await versionedBucket(b, 'kept');
    await versionedBucket(b, 'gone');
    writeRule(sites, 'kept', { source: { location: 'site-c', bucket: 'kept' }, destinations: [{ location: 'site-b', bucket: 'kept' }], replicateDeleteMarkers: true });
    writeRule(sites, 'gone', { source: { location: 'site-a', bucket: 'gone' }, destinations: [{ location: 'site-b', bucket: 'gone' }] });
    // Site D: site C's server again, listed at start (empty) and then hourly: only a backfill queues what the test writes.
    writeFileSync(join(sites.dir, 'site-d.yaml'), locationManifest('site-d', sites.c.endpoint, sites.c.credentials, { listPageSize: 50, journal: { scan: { intervalSeconds: 3600 } } }));
    await versionedBucket(c, 'paged');
    await versionedBucket(b, 'paged');
    writeRule(sites, 'paged', { source: { location: 'site-d', bucket: 'paged' }, destinations: [{ location: 'site-b', bucket: 'paged' }], replicateDeleteMarkers: true });
    await versionedBucket(c, 'ahead');
    await versionedBucket(b, 'ahead');
    writeRule(sites, 'ahead', { source: { location: 'site-d', bucket: 'ahead' }, destinations: [{ location: 'site-b', bucket: 'ahead' }], replicateDeleteMarkers: true });
    local = await startLocalOn(sites, 'ordering', { retry: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 200 } });
  });

  after(async () => {
    await local.stop();
    await proxy.close();
    await sites.stop();
  });

  const state = (location: string, bucket: string, key: string, versionId: string | undefined): string | undefined => local.status.lookup(location, bucket, key, versionId)[0]?.state;

  it('a deleted key stays deleted when an older version is retried after the delete marker', async () => {
    const v0 = await c.send(new PutObjectCommand({ Bucket: 'kept', Key: 'doc', Body: 'v0' }));
    await eventually(() => assert.equal(state('site-c', 'kept', 'doc', v0.VersionId), 'COMPLETED'), 60_000, 250);
    refused.add('doc');
    const v1 = await c.send(new PutObjectCommand({ Bucket: 'kept', Key: 'doc', Body: 'v1' }));
    await eventually(() => assert.equal(state('site-c', 'kept', 'doc', v1.VersionId), 'FAILED'), 60_000, 250);
    const marker = await c.send(new DeleteObjectCommand({ Bucket: 'kept', Key: 'doc' }));
    await eventually(() => assert.equal(state('site-c', 'kept', 'doc', marker.VersionId), 'COMPLETED'), 60_000, 250);
    refused.delete('doc');
    await backbeat('failed', 'retry', '--all', '--server', local.url);
    // (A periodic scan may queue it again first: the outcome is the same.)
    await eventually(() => assert.equal(state('site-c', 'kept', 'doc', v1.VersionId), 'SKIPPED'), 60_000, 250);
    // Deleted on the source: deleted on the destination, not brought back by the late copy.
    assert.equal(await currentReplicaOf(b, 'kept', 'doc'), 'deleted');
    await assert.rejects(b.send(new GetObjectCommand({ Bucket: 'kept', Key: 'doc' })), /NoSuchKey|NotFound/);
  });

  it('a key the destination never held stays deleted when its only version is retried after the delete marker', async () => {
    refused.add('fresh');
    const v1 = await c.send(new PutObjectCommand({ Bucket: 'kept', Key: 'fresh', Body: 'v1' }));
    await eventually(() => assert.equal(state('site-c', 'kept', 'fresh', v1.VersionId), 'FAILED'), 60_000, 250);
    // Site B never held the key: MinIO writes no marker for it, so the destination keeps no trace of the delete.
    const marker = await c.send(new DeleteObjectCommand({ Bucket: 'kept', Key: 'fresh' }));
    await eventually(() => assert.equal(state('site-c', 'kept', 'fresh', marker.VersionId), 'COMPLETED'), 60_000, 250);
    refused.delete('fresh');
    await backbeat('failed', 'retry', '--all', '--server', local.url);
    await eventually(() => assert.equal(state('site-c', 'kept', 'fresh', v1.VersionId), 'SKIPPED'), 60_000, 250);
    assert.equal(await currentReplicaOf(b, 'kept', 'fresh'), 'deleted');
  });

  it('on a transient source, an older version retried after the newer one was collected stays below it', async () => {
    refused.add('report');
    const v1 = await a.send(new PutObjectCommand({ Bucket: 'gone', Key: 'report', Body: 'v1' }));
    await eventually(() => assert.equal(state('site-a', 'gone', 'report', v1.VersionId), 'FAILED'), 60_000, 250);
    refused.delete('report');
    const v2 = await a.send(new PutObjectCommand({ Bucket: 'gone', Key: 'report', Body: 'v2' }));
    // v2 reaches B, then the GC collects it from the source: the source's history no longer knows it.
    await eventually(async () => assert.ok(!(await versionsOf(a, 'gone', 'report')).some((v) => v.versionId === v2.VersionId), 'v2 not collected yet'), 90_000, 500);
    assert.equal(await currentReplicaOf(b, 'gone', 'report'), v2.VersionId);
    await backbeat('failed', 'retry', '--all', '--server', local.url);
    await eventually(() => assert.equal(state('site-a', 'gone', 'report', v1.VersionId), 'SKIPPED'), 60_000, 250);
    assert.equal(await currentReplicaOf(b, 'gone', 'report'), v2.VersionId, 'the newest write stays current');
  });

  it("a backfill reads the destination ahead, a listing page for a batch: a new key costs its PUT there, and a key's older version still finds the newer one copied", async () => {
    const d = sites.c.client();
    const fresh = Array.from({ length: 120 }, (_, i) => `new/${String(i).padStart(3, '0')}`);
    await Promise.all(fresh.map((k) => d.send(new PutObjectCommand({ Bucket: 'ahead', Key: k, Body: k }))));
    // Two versions of a key, backfilled twice over: queued older, newer, older, newer (scan.ts), in one
    // batch. Only the first is read ahead; the second older version must find the newer one copied (a
    // state read ahead for it would copy it again, on top).
    const twice = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const key = `twice/${String(i)}`;
        await d.send(new PutObjectCommand({ Bucket: 'ahead', Key: key, Body: 'older' }));
        return { key, newer: (await d.send(new PutObjectCommand({ Bucket: 'ahead', Key: key, Body: 'newer' }))).VersionId };
      }),
    );
    // A key deleted at the destination (by hand): read ahead as a delete marker, weighed as after a HEAD.
    const kept = (await d.send(new PutObjectCommand({ Bucket: 'ahead', Key: 'marked', Body: 'm' }))).VersionId;
    await b.send(new PutObjectCommand({ Bucket: 'ahead', Key: 'marked', Body: 'local' }));
    await b.send(new DeleteObjectCommand({ Bucket: 'ahead', Key: 'marked' }));
    // Paused while both backfills queue: the processor then takes each partition's backlog at once.
    await backbeat('pause', 'site-b', '--server', local.url);
    for (let round = 0; round < 2; round++) {
      await backbeat('backfill', 'ahead', '--server', local.url);
      await eventually(() => assert.ok([...fresh.map((k) => state('site-d', 'ahead', k, undefined)), state('site-d', 'ahead', 'marked', kept)].every((s) => s === 'PENDING')), 60_000, 250);
    }
    const counters = local.processors.get('site-b')?.counters;
    assert.ok(counters !== undefined);
    const results = (): number => counters.completed + counters.skipped + counters.failed;
    const before = results();
    seen.on = true;
    await backbeat('resume', 'site-b', '--server', local.url);
    const tasks = 2 * (fresh.length + 2 * twice.length + 1);
    await eventually(() => assert.ok(results() - before >= tasks, `${String(results() - before)} of ${String(tasks)} tasks done`), 120_000, 250);
    seen.on = false;
    assert.ok(fresh.every((k) => state('site-d', 'ahead', k, undefined) === 'COMPLETED'));
    for (const t of twice) {
      assert.equal(await currentReplicaOf(b, 'ahead', t.key), t.newer, `${t.key}: the newer version stays current`);
      assert.equal((await versionsOf(b, 'ahead', t.key)).filter((v) => !v.deleteMarker).length, 2, `${t.key}: each version copied once`);
    }
    assert.equal(await currentReplicaOf(b, 'ahead', 'marked'), kept);
    // A new key: no HEAD in the first round (the listing told it absent), one in the second (it is there).
    const on = (method: string, prefix: string): number => seen.requests.filter((r) => r.startsWith(`${method} /ahead/${prefix}`)).length;
    assert.equal(on('PUT', 'new/'), fresh.length);
    assert.equal(on('HEAD', 'new/'), fresh.length);
    const listings = seen.requests.filter((r) => /^GET \/ahead\/?\?.*versions/.test(r)).length;
    assert.ok(listings >= 1 && listings <= 16, `a listing page per partition's batch, not per key: ${String(listings)}`);
  });

  // Last: fifty copies of one key hold up its partition while they run.
  it('a backfill that meets a key across a listing page boundary (51 entries, 50 to a page, a delete marker newest) leaves it deleted', async function () {
    this.timeout(300_000);
    const d = sites.c.client();
    const first = (await d.send(new PutObjectCommand({ Bucket: 'paged', Key: 'paged', Body: 'v1' }))).VersionId;
    for (let i = 2; i <= 50; i += 25) {
      await Promise.all(Array.from({ length: Math.min(25, 51 - i) }, (_, j) => d.send(new PutObjectCommand({ Bucket: 'paged', Key: 'paged', Body: `v${i + j}` }))));
    }
    const marker = (await d.send(new DeleteObjectCommand({ Bucket: 'paged', Key: 'paged' }))).VersionId;
    // The listing gives a key's versions newest first, site D's listPageSize (50) to a page: the newest
    // 50 (the marker among them) are queued before the oldest version, which reaches the processor last.
    await backbeat('backfill', 'paged', '--server', local.url);
    await eventually(() => assert.equal(state('site-d', 'paged', 'paged', marker), 'COMPLETED'), 240_000, 1_000);
    await eventually(() => assert.equal(state('site-d', 'paged', 'paged', first), 'SKIPPED'), 120_000, 500);
    assert.equal(await currentReplicaOf(b, 'paged', 'paged'), 'deleted');
    const replicas = await versionsOf(b, 'paged', 'paged');
    assert.equal(replicas.filter((v) => !v.deleteMarker).length, 49, 'every version between them is copied');
  });
});
