import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createS3Client } from '../../lib/s3/client.ts';
import { minio } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

describe('MinIO (real S3 server)', function () {
  this.timeout(120_000);
  let server: MinioServer;
  let s3: S3Client;

  before(async () => {
    server = await minio({ name: 'component' });
    s3 = server.client();
    await s3.send(new CreateBucketCommand({ Bucket: 'plain' }));
  });

  after(async () => {
    await server.stop();
  });

  it('PUTs and GETs an object with its content headers and user metadata', async () => {
    const body = randomBytes(100_000);
    const put = await s3.send(
      new PutObjectCommand({
        Bucket: 'plain',
        Key: 'dir/ünïcode key+%.bin',
        Body: body,
        ContentType: 'application/x-test',
        CacheControl: 'max-age=60',
        Metadata: { origin: 'site-a' },
      }),
    );
    assert.equal(put.ETag, `"${md5(body)}"`);
    const got = await s3.send(new GetObjectCommand({ Bucket: 'plain', Key: 'dir/ünïcode key+%.bin' }));
    assert.ok(got.Body !== undefined);
    assert.ok(Buffer.from(await got.Body.transformToByteArray()).equals(body));
    assert.equal(got.ContentType, 'application/x-test');
    assert.equal(got.CacheControl, 'max-age=60');
    assert.deepEqual(got.Metadata, { origin: 'site-a' });
  });

  it('keeps every version of an object once versioning is on', async () => {
    await s3.send(new CreateBucketCommand({ Bucket: 'versioned' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'versioned', VersioningConfiguration: { Status: 'Enabled' } }));
    assert.equal((await s3.send(new GetBucketVersioningCommand({ Bucket: 'versioned' }))).Status, 'Enabled');
    const v1 = await s3.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'one' }));
    const v2 = await s3.send(new PutObjectCommand({ Bucket: 'versioned', Key: 'k', Body: 'two' }));
    assert.ok(v1.VersionId !== undefined && v2.VersionId !== undefined && v1.VersionId !== v2.VersionId);
    const old = await s3.send(new GetObjectCommand({ Bucket: 'versioned', Key: 'k', VersionId: v1.VersionId }));
    assert.equal(await old.Body?.transformToString(), 'one');
    const latest = await s3.send(new GetObjectCommand({ Bucket: 'versioned', Key: 'k' }));
    assert.equal(await latest.Body?.transformToString(), 'two');
    const versions = await s3.send(new ListObjectVersionsCommand({ Bucket: 'versioned', Prefix: 'k' }));
    assert.deepEqual(
      versions.Versions?.map((v) => [v.VersionId, v.IsLatest]),
      [
        [v2.VersionId, true],
        [v1.VersionId, false],
      ],
    );
  });

  it('assembles a multipart upload whose ETag is the MD5 of its part MD5s, suffixed with the part count', async () => {
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(5 * 1024 * 1024), randomBytes(1234)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'plain', Key: 'mp' }));
    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      const r = await s3.send(new UploadPartCommand({ Bucket: 'plain', Key: 'mp', UploadId, PartNumber: i + 1, Body: part }));
      etags.push(r.ETag ?? '');
    }
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: 'plain',
        Key: 'mp',
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    const expected = `${md5(Buffer.concat(parts.map((p) => Buffer.from(md5(p), 'hex'))))}-3`;
    assert.equal(done.ETag, `"${expected}"`);
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'plain', Key: 'mp', PartNumber: 2 }));
    assert.equal(head.PartsCount, 3);
    assert.equal(head.ContentLength, 5 * 1024 * 1024);
  });

  it('serves the client in both checksum modes, and refuses wrong credentials', async () => {
    const strict = createS3Client({ endpoint: server.endpoint, credentials: server.credentials, checksumMode: 'whenSupported' });
    await strict.send(new PutObjectCommand({ Bucket: 'plain', Key: 'crc', Body: 'checksummed' }));
    const got = await strict.send(new GetObjectCommand({ Bucket: 'plain', Key: 'crc' }));
    assert.equal(await got.Body?.transformToString(), 'checksummed');

    const wrong = createS3Client({
      endpoint: server.endpoint,
      credentials: { accessKeyId: server.credentials.accessKeyId, secretAccessKey: 'not-the-password' },
      maxAttempts: 1,
    });
    await assert.rejects(wrong.send(new GetObjectCommand({ Bucket: 'plain', Key: 'crc' })), (err: Error & { $metadata?: { httpStatusCode?: number } }) => {
      assert.equal(err.name, 'SignatureDoesNotMatch');
      assert.equal(err.$metadata?.httpStatusCode, 403);
      return true;
    });
  });
});
