import assert from 'node:assert/strict';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import type { ObjectStatus } from '../../workers/status/fold.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { body, startLocalOn, sourceBucket, startSites, versionedBucket, versionsOf, writeRule, type Sites } from './sites.ts';

const GC_DELAY_MS = 4_000;

describe('transient source with garbage collection', function () {
  this.timeout(180_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    sites = await startSites('transient', { a: { transient: true } });
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    await sourceBucket(sites, 'inbox');
    await versionedBucket(b, 'inbox-b');
    await versionedBucket(c, 'inbox-c');
    writeRule(sites, 'inbox', {
      source: { location: 'site-a', bucket: 'inbox' },
      destinations: [
        { location: 'site-b', bucket: 'inbox-b' },
        { location: 'site-c', bucket: 'inbox-c', keyPrefix: 'in/' },
      ],
    });
    // Time for the adversarial tests to tamper with a replica between COMPLETED and the GC.
    local = await startLocalOn(sites, 'transient', { gcDelayMs: GC_DELAY_MS });
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  /** Writes an object and waits for COMPLETED; returns its version id. */
  async function replicated(key: string, content: string): Promise<string> {
    const put = await a.send(new PutObjectCommand({ Bucket: 'inbox', Key: key, Body: content }));
    const versionId = put.VersionId ?? '';
    await eventually(() => assert.equal(local.status.lookup('site-a', 'inbox', key, versionId)[0]?.state, 'COMPLETED'), 60_000, 100);
    return versionId;
  }

  const gcVerdict = (key: string, versionId: string): Promise<NonNullable<ObjectStatus['gc']>> =>
    eventually(() => {
      const gc = local.status.lookup('site-a', 'inbox', key, versionId)[0]?.gc;
      assert.ok(gc, 'no GC verdict yet');
      return gc;
    }, 60_000, 200);

  it('deletes the source copy once every destination holds it', async () => {
    const versionId = await replicated('report.pdf', 'quarterly numbers');
    assert.equal((await versionsOf(a, 'inbox', 'report.pdf')).length, 1, 'kept during the GC delay');
    const verdict = await gcVerdict('report.pdf', versionId);
    assert.equal(verdict.state, 'DELETED');
    assert.equal(verdict.reason, undefined);
    assert.deepEqual(await versionsOf(a, 'inbox', 'report.pdf'), []);
    assert.equal((await body(b, 'inbox-b', 'report.pdf')).toString(), 'quarterly numbers');
    assert.equal((await body(c, 'inbox-c', 'in/report.pdf')).toString(), 'quarterly numbers');
    assert.equal(local.gc?.counters.deleted, 1);
  });

  it('deletes nothing when a replica was removed before the GC ran, and says why', async () => {
    const versionId = await replicated('removed.txt', 'keep me');
    const [replica] = await versionsOf(c, 'inbox-c', 'in/removed.txt');
    await c.send(new DeleteObjectCommand({ Bucket: 'inbox-c', Key: 'in/removed.txt', VersionId: replica?.versionId }));
    const verdict = await gcVerdict('removed.txt', versionId);
    assert.equal(verdict.state, 'REFUSED');
    assert.equal(verdict.reason, 'site-c/inbox-c: no replica of this version');
    assert.equal((await body(a, 'inbox', 'removed.txt', versionId)).toString(), 'keep me');
  });

  it('deletes nothing when a replica was altered before the GC ran, and says why', async () => {
    const versionId = await replicated('altered.txt', 'original');
    const [replica] = await versionsOf(b, 'inbox-b', 'altered.txt');
    await b.send(new DeleteObjectCommand({ Bucket: 'inbox-b', Key: 'altered.txt', VersionId: replica?.versionId }));
    // Same length, other bytes, and even the replica mark forged: only the ETag check can tell.
    await b.send(new PutObjectCommand({ Bucket: 'inbox-b', Key: 'altered.txt', Body: 'ORIGINAL', Metadata: { 'backbeat-source-version-id': versionId } }));
    const verdict = await gcVerdict('altered.txt', versionId);
    assert.equal(verdict.state, 'REFUSED');
    assert.match(verdict.reason ?? '', /^site-b\/inbox-b: replica ETag \w+ differs from source ETag \w+$/);
    assert.equal((await body(a, 'inbox', 'altered.txt', versionId)).toString(), 'original');
    assert.equal(local.gc?.counters.refused, 2);
    const metrics = (await httpGet(`${local.url}/metrics`)).body;
    assert.match(metrics, /^backbeat_gc_deletions_total\{location="site-a"\} 1$/m);
    assert.match(metrics, /^backbeat_gc_refusals_total\{location="site-a"\} 2$/m);
  });
});
