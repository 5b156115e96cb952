import assert from 'node:assert/strict';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import { eventually } from '../harness/wait.ts';
import { body, startLocalOn, head, sourceBucket, startSites, versionedBucket, versionsOf, writeRule, type Sites } from './sites.ts';

describe('two-way replication, three destinations, version deletes', function () {
  this.timeout(240_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    // Site A's changes come from notifications, site B's from listing scans every 10 s.
    sites = await startSites('twoway', { b: { journal: { scan: { intervalSeconds: 10 } } } });
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    await sourceBucket(sites, 'shared');
    await versionedBucket(b, 'shared');
    await versionedBucket(c, 'copy-1');
    await versionedBucket(c, 'copy-2');
    await versionedBucket(c, 'blue-only');
    writeRule(sites, 'a-to-b', {
      source: { location: 'site-a', bucket: 'shared' },
      destinations: [
        { location: 'site-b', bucket: 'shared' },
        { location: 'site-c', bucket: 'copy-1' },
        { location: 'site-c', bucket: 'copy-2', keyPrefix: 'a/' },
      ],
      replicateVersionDeletes: true,
    });
    writeRule(sites, 'blue-team', {
      source: { location: 'site-a', bucket: 'shared' },
      filter: { prefix: 'teams/', tags: [{ key: 'team', value: 'blue' }] },
      destinations: [{ location: 'site-c', bucket: 'blue-only', storageClass: 'REDUCED_REDUNDANCY' }],
    });
    writeRule(sites, 'b-to-a', { source: { location: 'site-b', bucket: 'shared' }, destinations: [{ location: 'site-a', bucket: 'shared' }] });
    local = await startLocalOn(sites, 'twoway', { retry: { baseDelayMs: 100, maxDelayMs: 1_000 } });
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  it('sends an object to three destinations, two of them on one location', async () => {
    const put = await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'from-a.txt', Body: 'written on A' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'shared', 'from-a.txt', put.VersionId)[0]?.state, 'COMPLETED'), 60_000);
    assert.deepEqual(Object.keys(local.status.lookup('site-a', 'shared', 'from-a.txt')[0]?.destinations ?? {}).sort(), ['site-b/shared', 'site-c/copy-1', 'site-c/copy-2']);
    assert.equal((await body(b, 'shared', 'from-a.txt')).toString(), 'written on A');
    assert.equal((await body(c, 'copy-1', 'from-a.txt')).toString(), 'written on A');
    assert.equal((await body(c, 'copy-2', 'a/from-a.txt')).toString(), 'written on A');
  });

  it('filters by prefix and tags, and sets or keeps the storage class', async () => {
    await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'teams/blue.txt', Body: 'blue', Tagging: 'team=blue' }));
    await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'teams/red.txt', Body: 'red', Tagging: 'team=red', StorageClass: 'REDUCED_REDUNDANCY' }));
    await eventually(() => {
      for (const key of ['teams/blue.txt', 'teams/red.txt']) assert.equal(local.status.lookup('site-a', 'shared', key)[0]?.state, 'COMPLETED', key);
    }, 60_000);
    assert.deepEqual(Object.keys(local.status.lookup('site-a', 'shared', 'teams/blue.txt')[0]?.destinations ?? {}).sort(), ['site-b/shared', 'site-c/blue-only', 'site-c/copy-1', 'site-c/copy-2']);
    assert.ok(!Object.keys(local.status.lookup('site-a', 'shared', 'teams/red.txt')[0]?.destinations ?? {}).includes('site-c/blue-only'));
    assert.equal((await head(c, 'blue-only', 'teams/blue.txt')).StorageClass, 'REDUCED_REDUNDANCY', 'set by the destination');
    assert.equal((await head(b, 'shared', 'teams/red.txt')).StorageClass, 'REDUCED_REDUNDANCY', 'kept from the source');
    assert.equal((await head(b, 'shared', 'teams/blue.txt')).StorageClass, undefined, 'STANDARD stays STANDARD');
  });

  it('does not loop: replicas are never replicated back to where they came from', async () => {
    const put = await b.send(new PutObjectCommand({ Bucket: 'shared', Key: 'from-b.txt', Body: 'written on B' }));
    // B → A through B's listing scan.
    await eventually(() => assert.equal(local.status.lookup('site-b', 'shared', 'from-b.txt', put.VersionId)[0]?.state, 'COMPLETED'), 60_000, 500);
    assert.equal((await body(a, 'shared', 'from-b.txt')).toString(), 'written on B');
    // B's scan also lists the replica of from-a.txt: the processor sees the replica mark and copies nothing back.
    await eventually(() => {
      const [back] = local.status.lookup('site-b', 'shared', 'from-a.txt');
      assert.equal(back?.state, 'SKIPPED');
      assert.match(back.destinations['site-a/shared']?.reason ?? '', /itself a replica/);
    }, 60_000, 500);
    // A's notification of the replica of from-b.txt is ignored by the populator: nothing is queued for it.
    assert.deepEqual(local.status.lookup('site-a', 'shared', 'from-b.txt'), []);
    // Let another scan cycle pass, then check that no echo version appeared on either side.
    await new Promise((r) => setTimeout(r, 12_000));
    assert.equal((await versionsOf(a, 'shared', 'from-a.txt')).length, 1);
    assert.equal((await versionsOf(b, 'shared', 'from-b.txt')).length, 1);
    assert.equal((await versionsOf(a, 'shared', 'from-b.txt')).length, 1);
    assert.equal((await versionsOf(b, 'shared', 'from-a.txt')).length, 1);
  });

  it('permanently deletes replica versions only when the rule asks for it', async () => {
    const v1 = await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'purge.txt', Body: 'one' }));
    const v2 = await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'purge.txt', Body: 'two' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'shared', 'purge.txt', v2.VersionId)[0]?.state, 'COMPLETED'), 60_000);
    await eventually(async () => assert.equal((await versionsOf(c, 'copy-1', 'purge.txt')).length, 2), 30_000);
    await a.send(new DeleteObjectCommand({ Bucket: 'shared', Key: 'purge.txt', VersionId: v1.VersionId }));
    await eventually(async () => {
      for (const [s3, bucket, key] of [[b, 'shared', 'purge.txt'], [c, 'copy-1', 'purge.txt'], [c, 'copy-2', 'a/purge.txt']] as const) {
        const left = await versionsOf(s3, bucket, key);
        assert.equal(left.length, 1, `${bucket}/${key}`);
        assert.equal((await body(s3, bucket, key, left[0]?.versionId)).toString(), 'two');
      }
    }, 60_000);
    // The rule from B to A does not ask for version deletes: deleting on B removes nothing on A.
    const [replicaOfFromB] = await versionsOf(b, 'shared', 'from-b.txt');
    await b.send(new DeleteObjectCommand({ Bucket: 'shared', Key: 'from-b.txt', VersionId: replicaOfFromB?.versionId }));
    await new Promise((r) => setTimeout(r, 12_000));
    assert.equal((await body(a, 'shared', 'from-b.txt')).toString(), 'written on B');
  });
});
