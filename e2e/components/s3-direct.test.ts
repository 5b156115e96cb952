import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type DeleteMarkerEntry,
  type GetObjectCommandOutput,
  type ListObjectVersionsCommandOutput,
  type ObjectVersion,
  type HeadObjectCommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { abortable, createS3Client, directOf } from '../../lib/s3/client.ts';
import { classify, isNotFound } from '../../lib/s3/errors.ts';
import { getObject, headObject, listVersions, putObject, uploadPart } from '../../lib/s3/objects.ts';
import { parseVersionListing } from '../../lib/s3/listing-xml.ts';
import { minio } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { freePort } from '../harness/net.ts';
import { versionedBucket } from '../pipeline/sites.ts';

// The copy's GET, HEAD, PUT and part uploads go around the SDK's middleware (lib/s3/direct.ts): each answer and each
// error is compared here with the SDK's own for the same request, on a real server.

/** The answer fields the engine reads. */
const FIELDS = ['ETag', 'VersionId', 'LastModified', 'ContentLength', 'ContentRange', 'ContentType', 'CacheControl', 'ContentDisposition', 'ContentEncoding', 'ContentLanguage', 'ExpiresString', 'StorageClass', 'TagCount', 'PartsCount', 'Metadata'] as const;
const fieldsOf = (o: GetObjectCommandOutput | HeadObjectCommandOutput): Record<string, unknown> => Object.fromEntries(FIELDS.map((f) => [f, o[f]]));
const bodyOf = async (o: GetObjectCommandOutput): Promise<Buffer> => Buffer.concat(await (o.Body as Readable).toArray());

/** The error a request ends with, as the engine reads it. */
async function failureOf(request: Promise<unknown>): Promise<{ name: string; status: number | undefined; deleteMarker: string | undefined; kind: string; notFound: boolean }> {
  try {
    await request;
  } catch (err) {
    const e = err as { name: string; $metadata?: { httpStatusCode?: number }; $response?: { headers?: Record<string, string | undefined> } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, deleteMarker: e.$response?.headers?.['x-amz-delete-marker'], kind: classify(err), notFound: isNotFound(err) };
  }
  throw new Error('the request succeeded');
}

describe('the direct S3 path for GET, HEAD, PUT, part uploads and version listings answers as the SDK does (real MinIO)', function () {
  this.timeout(120_000);
  let server: MinioServer;
  let s3: S3Client;
  const bucket = 'direct';
  const key = '/dir/ünï cödé %2F+!*()\'~.txt';

  before(async () => {
    server = await minio({ name: 'direct' });
    s3 = server.client();
    await versionedBucket(s3, bucket);
  });

  after(async () => {
    await server.stop();
  });

  it('is the path of clients of path-style endpoints, and not of AWS itself', () => {
    assert.ok(directOf(s3) !== undefined);
    assert.equal(directOf(createS3Client({ region: 'eu-west-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })), undefined);
  });

  it('PUTs what the SDK would (headers, metadata, tags), and GETs and HEADs the same answers as the SDK', async () => {
    const body = randomBytes(20_000);
    const put = await putObject(s3, {
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      Metadata: { colour: 'blue', 'x-y': 'a b' },
      ContentType: 'image/x-test',
      CacheControl: 'max-age=60',
      ContentDisposition: 'attachment; filename="a b.txt"',
      ContentEncoding: 'identity',
      ContentLanguage: 'fr',
      Expires: new Date('2031-02-03T04:05:06Z'),
      Tagging: 'team=a%20b&k=v',
    });
    assert.match(put.VersionId ?? '', /^[0-9a-f-]{36}$/);
    const viaSdk = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: put.VersionId }));
    const direct = await getObject(s3, { Bucket: bucket, Key: key, VersionId: put.VersionId });
    assert.deepEqual(fieldsOf(direct), fieldsOf(viaSdk));
    assert.equal(direct.ETag, put.ETag);
    assert.deepEqual(direct.Metadata, { colour: 'blue', 'x-y': 'a b' });
    assert.equal(direct.TagCount, 2);
    assert.equal(direct.ExpiresString, 'Mon, 03 Feb 2031 04:05:06 GMT');
    assert.deepEqual(await bodyOf(direct), body);
    assert.deepEqual(await bodyOf(viaSdk), body);
    assert.deepEqual(fieldsOf(await headObject(s3, { Bucket: bucket, Key: key })), fieldsOf(await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))));
    // A body given as a stream of known length, and an empty one.
    const copy = await putObject(s3, { Bucket: bucket, Key: 'copy', Body: (await getObject(s3, { Bucket: bucket, Key: key })).Body as Readable, ContentLength: body.length });
    assert.equal(copy.ETag, put.ETag);
    await putObject(s3, { Bucket: bucket, Key: 'empty', Body: Buffer.alloc(0), ContentLength: 0 });
    assert.equal((await headObject(s3, { Bucket: bucket, Key: 'empty' })).ContentLength, 0);
  });

  it('uploads parts (a stream, a buffer) as the SDK does, and GETs a part of a multipart object as it does (Content-Range, parts count)', async () => {
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(1000)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'multi' }));
    const etags = [];
    for (const [i, part] of parts.entries()) {
      const Body = i === 0 ? Readable.from([part.subarray(0, 1000), part.subarray(1000)]) : part;
      etags.push((await uploadPart(s3, { Bucket: bucket, Key: 'multi', UploadId, PartNumber: i + 1, Body, ContentLength: part.length })).ETag);
    }
    assert.deepEqual(etags, parts.map((p) => `"${createHash('md5').update(p).digest('hex')}"`));
    const bogus = { Bucket: bucket, Key: 'multi', UploadId: 'no-such-upload', PartNumber: 1, Body: Buffer.alloc(1000), ContentLength: 1000 };
    assert.deepEqual(await failureOf(uploadPart(s3, bogus)), await failureOf(s3.send(new UploadPartCommand(bogus))));
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: 'multi', UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    for (const PartNumber of [1, 2]) {
      const direct = await getObject(s3, { Bucket: bucket, Key: 'multi', PartNumber });
      assert.deepEqual(fieldsOf(direct), fieldsOf(await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'multi', PartNumber }))));
      assert.equal(direct.PartsCount, 2);
      assert.deepEqual(await bodyOf(direct), parts[PartNumber - 1]);
    }
  });

  it('fails as the SDK does: missing key, version, bucket; a delete marker; wrong credentials', async () => {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'gone', Body: 'x' }));
    const marker = await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'gone' }));
    const stranger = createS3Client({ endpoint: server.endpoint, credentials: { accessKeyId: 'nobody-here', secretAccessKey: 'not-the-secret-at-all' } });
    const cases: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
      ['GET of a missing key', () => getObject(s3, { Bucket: bucket, Key: 'none' }), () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'none' }))],
      ['GET of a missing version', () => getObject(s3, { Bucket: bucket, Key: key, VersionId: '00000000-0000-0000-0000-000000000000' }), () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, VersionId: '00000000-0000-0000-0000-000000000000' }))],
      ['GET in a missing bucket', () => getObject(s3, { Bucket: 'no-such-bucket', Key: 'k' }), () => s3.send(new GetObjectCommand({ Bucket: 'no-such-bucket', Key: 'k' }))],
      ['HEAD of a missing key', () => headObject(s3, { Bucket: bucket, Key: 'none' }), () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'none' }))],
      ['HEAD of a key whose current version is a delete marker', () => headObject(s3, { Bucket: bucket, Key: 'gone' }), () => s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'gone' }))],
      ['GET of a delete marker', () => getObject(s3, { Bucket: bucket, Key: 'gone', VersionId: marker.VersionId }), () => s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'gone', VersionId: marker.VersionId }))],
      ['PUT into a missing bucket', () => putObject(s3, { Bucket: 'no-such-bucket', Key: 'k', Body: 'x' }), () => s3.send(new PutObjectCommand({ Bucket: 'no-such-bucket', Key: 'k', Body: 'x' }))],
      ['GET with unknown credentials', () => getObject(stranger, { Bucket: bucket, Key: key }), () => stranger.send(new GetObjectCommand({ Bucket: bucket, Key: key }))],
      ['PUT with unknown credentials', () => putObject(stranger, { Bucket: bucket, Key: 'k', Body: 'x' }), () => stranger.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: 'x' }))],
    ];
    for (const [what, direct, viaSdk] of cases) assert.deepEqual(await failureOf(direct()), await failureOf(viaSdk()), what);
    const deleted = await failureOf(headObject(s3, { Bucket: bucket, Key: 'gone' }));
    assert.equal(deleted.deleteMarker, 'true');
    assert.equal((await failureOf(getObject(s3, { Bucket: bucket, Key: 'none' }))).name, 'NoSuchKey');
  });

  it('lists versions and delete markers as the SDK does: escaped and odd keys, every page, a prefix, markers', async () => {
    const keys = ['list/a&b<c>"d\'e', 'list/tab\there', 'list/ünï cödé', 'list/%2F+ ?#', 'list/emoji 🎉', 'list/x'];
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Key }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'list/x', Body: 'second' }));
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'list/ünï cödé' }));
    const { Versions, DeleteMarkers, ...rest } = await listVersions(s3, { Bucket: bucket, Prefix: 'list/' });
    const viaSdk = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'list/' }));
    const entry = (e: ObjectVersion | DeleteMarkerEntry) => ({ Key: e.Key, VersionId: e.VersionId, IsLatest: e.IsLatest, LastModified: e.LastModified?.getTime(), ETag: 'ETag' in e ? e.ETag : undefined, Size: 'Size' in e ? e.Size : undefined, StorageClass: 'StorageClass' in e ? e.StorageClass : undefined });
    assert.deepEqual(Versions?.map(entry), viaSdk.Versions?.map(entry));
    assert.deepEqual(DeleteMarkers?.map(entry), viaSdk.DeleteMarkers?.map(entry));
    assert.equal(Versions?.length, keys.length + 1);
    assert.equal(DeleteMarkers?.length, 1);
    assert.equal(rest.IsTruncated, false);
    // Page after page, two entries at a time, from a key marker: the same pages as the SDK's.
    let [direct, sdk]: [{ KeyMarker?: string; VersionIdMarker?: string } | undefined, { KeyMarker?: string; VersionIdMarker?: string } | undefined] = [{}, {}];
    for (let pages = 0; direct !== undefined; pages++) {
      assert.ok(pages < 10);
      const a = await listVersions(s3, { Bucket: bucket, Prefix: 'list/', MaxKeys: 2, ...direct });
      const b: ListObjectVersionsCommandOutput = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'list/', MaxKeys: 2, ...sdk }));
      // The next markers are MinIO's tokens, another one per call: each side follows its own.
      assert.deepEqual([a.Versions?.map(entry), a.DeleteMarkers?.map(entry), a.IsTruncated, a.NextKeyMarker !== undefined], [b.Versions?.map(entry), b.DeleteMarkers?.map(entry), b.IsTruncated, b.NextKeyMarker !== undefined]);
      direct = a.IsTruncated === true ? { KeyMarker: a.NextKeyMarker ?? '', VersionIdMarker: a.NextVersionIdMarker ?? '' } : undefined;
      sdk = b.IsTruncated === true ? { KeyMarker: b.NextKeyMarker ?? '', VersionIdMarker: b.NextVersionIdMarker ?? '' } : undefined;
    }
    assert.deepEqual(await listVersions(s3, { Bucket: bucket, Prefix: 'none/' }).then((p) => [p.Versions, p.DeleteMarkers, p.IsTruncated]), [undefined, undefined, false]);
    const missing = { Bucket: 'no-such-bucket' };
    assert.deepEqual(await failureOf(listVersions(s3, missing)), await failureOf(s3.send(new ListObjectVersionsCommand(missing))));
  });

  it('reads character references and empty fields in a listing', () => {
    const xml = '<ListVersionsResult><IsTruncated>true</IsTruncated><NextKeyMarker>a&amp;&#60;&#x1F389;</NextKeyMarker><Version><Key>k&#13;&quot;</Key><VersionId>null</VersionId><IsLatest>true</IsLatest><LastModified>2026-01-02T03:04:05.678Z</LastModified><ETag>&#34;e&#34;</ETag><Size>0</Size><Owner><ID>o</ID><DisplayName/></Owner><StorageClass>STANDARD</StorageClass></Version><DeleteMarker><Key/><VersionId>v</VersionId><IsLatest>false</IsLatest><LastModified>2026-01-02T03:04:05Z</LastModified></DeleteMarker></ListVersionsResult>';
    assert.deepEqual(parseVersionListing(xml), {
      Versions: [{ Key: 'k\r"', VersionId: 'null', IsLatest: true, LastModified: new Date('2026-01-02T03:04:05.678Z'), ETag: '"e"', Size: 0, StorageClass: 'STANDARD' }],
      DeleteMarkers: [{ Key: '', VersionId: 'v', IsLatest: false, LastModified: new Date('2026-01-02T03:04:05Z') }],
      IsTruncated: true,
      NextKeyMarker: 'a&<🎉',
    });
  });

  it('is unavailable where nothing listens, and ends when its signal aborts', async () => {
    const nowhere = createS3Client({ endpoint: `http://127.0.0.1:${String(await freePort())}`, credentials: server.credentials, maxAttempts: 1 });
    assert.equal((await failureOf(getObject(nowhere, { Bucket: bucket, Key: key }))).kind, 'unavailable');
    const aborted = new AbortController();
    aborted.abort(new Error('stop'));
    await assert.rejects(getObject(abortable(s3, aborted.signal), { Bucket: bucket, Key: key }));
    // A GET under way: its body ends with the abort.
    const later = new AbortController();
    const got = await getObject(abortable(s3, later.signal), { Bucket: bucket, Key: 'multi', PartNumber: 1 });
    later.abort(new Error('stop'));
    await assert.rejects((got.Body as Readable).toArray());
  });

  it('leaves what it does not know to the SDK (a byte range)', async () => {
    const ranged = await getObject(s3, { Bucket: bucket, Key: key, Range: 'bytes=0-9' });
    assert.equal(ranged.ContentLength, 10);
    assert.match(ranged.ContentRange ?? '', /^bytes 0-9\/20000$/);
  });
});
