import assert from 'node:assert/strict';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, HeadObjectCommand, ListMultipartUploadsCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { createLogger } from '../../lib/log/logger.ts';
import { startLocal, type LocalRun } from '../../workers/local/local.ts';
import { minio } from '../harness/env.ts';
import { faultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { body, locationManifest, versionedBucket } from './sites.ts';

describe('failures on the destination (real MinIO behind a fault-injecting proxy)', function () {
  this.timeout(180_000);
  let src: MinioServer, dst: MinioServer;
  let proxy: FaultProxy;
  let local: LocalRun;
  const flakyPuts = { left: 3 };
  const failedParts = { left: 1 };

  before(async () => {
    [src, dst] = [await minio({ name: 'faults-src' }), await minio({ name: 'faults-dst' })];
    await versionedBucket(src.client(), 'data');
    await versionedBucket(dst.client(), 'data');
    // PUTs of "flaky" fail 3 times; PUTs of "hopeless" always fail; a missing bucket is a real 404.
    proxy = await faultProxy(dst.endpoint, (req) => {
      if (req.method !== 'PUT') return false;
      if (req.url?.startsWith('/data/hopeless') === true) return true;
      if (req.url?.startsWith('/data/parted?') === true && req.url.includes('partNumber=3') && failedParts.left > 0) {
        failedParts.left--;
        return true;
      }
      if (req.url?.startsWith('/data/flaky') === true && flakyPuts.left > 0) {
        flakyPuts.left--;
        return true;
      }
      return false;
    });
    const dir = join(runDir(), 'manifests-faults');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'locations.yaml'), `${locationManifest('src', src.endpoint, src.credentials, { journal: { scan: { intervalSeconds: 10 } } })}---\n${locationManifest('dst', proxy.endpoint, dst.credentials)}`);
    writeFileSync(
      join(dir, 'rules.yaml'),
      [
        { name: 'data', spec: { source: { location: 'src', bucket: 'data' }, destinations: [{ location: 'dst', bucket: 'data' }, { location: 'dst', bucket: 'no-such-bucket' }] } },
      ]
        .map(({ name, spec }) => JSON.stringify({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name }, spec }))
        .join('\n---\n'),
    );
    local = await startLocal({
      files: [dir],
      logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), 'faults.log')) }),
      stateDir: join(runDir(), 'state-faults'),
      retry: { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 5 },
    });
  });

  after(async () => {
    await local.stop();
    await proxy.close();
    await Promise.all([src.stop(), dst.stop()]);
  });

  it('retries transient 5xx errors with backoff until the copy succeeds', async () => {
    await src.client().send(new PutObjectCommand({ Bucket: 'data', Key: 'flaky', Body: 'eventually there' }));
    await eventually(() => assert.equal(local.status.lookup('src', 'data', 'flaky')[0]?.destinations['dst/data']?.state, 'COMPLETED'), 60_000, 250);
    const d = local.status.lookup('src', 'data', 'flaky')[0]?.destinations['dst/data'];
    assert.equal(d?.attempts, 4, 'three injected failures, then success');
    assert.equal((await body(dst.client(), 'data', 'flaky')).toString(), 'eventually there');
  });

  it('aborts a multipart copy whose part fails (two parts in flight), retries it, and leaves no upload behind', async () => {
    const s3 = src.client();
    const parts = Array.from({ length: 4 }, (_, i) => Buffer.alloc(5 * 2 ** 20, i + 1));
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'data', Key: 'parted' }));
    const etags = [];
    for (const [i, part] of parts.entries()) etags.push((await s3.send(new UploadPartCommand({ Bucket: 'data', Key: 'parted', UploadId, PartNumber: i + 1, Body: part }))).ETag);
    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: 'data', Key: 'parted', UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    await eventually(() => assert.equal(local.status.lookup('src', 'data', 'parted')[0]?.destinations['dst/data']?.state, 'COMPLETED'), 60_000, 250);
    assert.equal(failedParts.left, 0, 'the third part failed once');
    assert.equal(local.status.lookup('src', 'data', 'parted')[0]?.destinations['dst/data']?.attempts, 2);
    assert.equal((await dst.client().send(new HeadObjectCommand({ Bucket: 'data', Key: 'parted' }))).ETag, done.ETag);
    assert.deepEqual((await dst.client().send(new ListMultipartUploadsCommand({ Bucket: 'data' }))).Uploads ?? [], []);
  });

  it('fails after the configured attempts with the reason, and fails a missing bucket at once', async () => {
    await src.client().send(new PutObjectCommand({ Bucket: 'data', Key: 'hopeless', Body: 'never' }));
    await eventually(() => assert.equal(local.status.lookup('src', 'data', 'hopeless')[0]?.state, 'FAILED'), 60_000, 250);
    const [status] = local.status.lookup('src', 'data', 'hopeless');
    const flaky = status?.destinations['dst/data'];
    const missing = status?.destinations['dst/no-such-bucket'];
    assert.ok(flaky && missing);
    assert.deepEqual([flaky.state, flaky.attempts], ['FAILED', 5]);
    assert.match(flaky.reason ?? '', /^gave up after 5 attempts: ServiceUnavailable \(HTTP 503\)/);
    // The destination bucket that does not exist: a permanent error, no retry, the cause named.
    assert.deepEqual([missing.state, missing.attempts], ['FAILED', 1]);
    assert.match(missing.reason ?? '', /^NoSuchBucket \(HTTP 404\)/);
  });
});
