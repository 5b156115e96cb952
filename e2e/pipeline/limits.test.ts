import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import { eventually } from '../harness/wait.ts';
import { body, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// A Location's spec.limits: the copies to it take no more than its bandwidth, while a destination
// without limits copies the same object at full speed, side by side in one run.

describe('limits per destination Location (real Kafka, MinIO, local mode)', function () {
  this.timeout(180_000);
  let sites: Sites;
  let local: LocalRun | undefined;

  before(async () => {
    sites = await startSites('limits', { b: { limits: { bandwidthMiBps: 16, concurrency: 2 } } });
    await sourceBucket(sites, 'big');
    await versionedBucket(sites.b.client(), 'big-b');
    await versionedBucket(sites.c.client(), 'big-c');
    writeRule(sites, 'big', { source: { location: 'site-a', bucket: 'big' }, destinations: [{ location: 'site-b', bucket: 'big-b' }, { location: 'site-c', bucket: 'big-c' }] });
    local = await startLocalOn(sites, 'limits');
  });
  after(async () => {
    await local?.stop();
    await sites.stop();
  });

  it('copies 64 MiB to a Location limited to 16 MiB/s in about 4 s, and to an unlimited one much faster', async () => {
    const data = randomBytes(64 * 2 ** 20);
    const put = await sites.a.client().send(new PutObjectCommand({ Bucket: 'big', Key: 'video.bin', Body: data }));
    const written = performance.now();
    const done = new Map<string, number>();
    await eventually(
      () => {
        const status = local?.status.lookup('site-a', 'big', 'video.bin', put.VersionId)[0];
        for (const [id, d] of Object.entries(status?.destinations ?? {})) if (d.state === 'COMPLETED' && !done.has(id)) done.set(id, (performance.now() - written) / 1000);
        assert.equal(done.size, 2);
      },
      120_000,
      25,
    );
    const [limited, unlimited] = [done.get('site-b/big-b') ?? 0, done.get('site-c/big-c') ?? 0];
    process.stdout.write(`      64 MiB: limited to 16 MiB/s ${limited.toFixed(2)} s, unlimited ${unlimited.toFixed(2)} s (×${(limited / unlimited).toFixed(1)})\n`);
    // The limit is a floor on the time whatever the machine's load (64 MiB at 16 MiB/s, less a bucket of
    // 0.8 MiB); the ratio is printed, not judged (both times share the journal's latency, which load stretches).
    assert.ok(limited >= 3.8, `limited copy took ${limited.toFixed(2)} s`);
    assert.ok(unlimited < limited, `the other destination is not held back: ${unlimited.toFixed(2)} s against ${limited.toFixed(2)} s`);
    assert.deepEqual(await body(sites.b.client(), 'big-b', 'video.bin'), data);
    assert.deepEqual(await body(sites.c.client(), 'big-c', 'video.bin'), data);
  });
});
