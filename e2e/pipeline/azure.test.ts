import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, PutObjectTaggingCommand, type S3Client } from '@aws-sdk/client-s3';
import type { ContainerClient } from '@azure/storage-blob';
import { dump, loadAll } from 'js-yaml';
import { blobAccountOf, resolveAzureCredentials } from '../../lib/config/credentials.ts';
import { parseManifests } from '../../lib/config/manifests.ts';
import type { BlobAccount } from '../../lib/azure/account.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import type { ReplicationTask, TaskDestination } from '../../lib/queue/messages.ts';
import { replicateToBlob } from '../../workers/processor/blob.ts';
import type { TestBlobServer } from '../harness/azurite.ts';
import { azurite } from '../harness/env.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';
import { completedIn, journaledSource, manifests, multipart, startOn } from './servers.ts';
import { locationManifest, versionedBucket, versionsOf } from './sites.ts';

const MiB = 1024 * 1024;
const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');
const KMS = 'backbeat-test';

/** A type: azure Location and its Secret, for an Azurite account. */
function blobLocation(name: string, accountName: string, endpoint: string, accountKey: string): string {
  return [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-creds` }, stringData: { accountKey } },
    { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name }, spec: { type: 'azure', azure: { accountName }, endpoint, insecure: true, credentialsSecretRef: { name: `${name}-creds` } } },
  ]
    .map((d) => dump(d))
    .join('---\n');
}

// Azure Blob Storage as a destination, as Zenko's replication offers: a MinIO source on its Kafka
// notifications, replicated into a container of Azurite (the npm package, on loopback).
describe('MinIO → Azure Blob Storage (real Azurite, MinIO, Kafka)', function () {
  this.timeout(300_000);
  let sa: S3Client;
  let account: BlobAccount;
  let az: TestBlobServer;
  let container: ContainerClient;
  let local: LocalRun;
  const completed = completedIn(() => local);
  const blob = (key: string) => container.getBlockBlobClient(key);
  const bytes = async (key: string): Promise<Buffer> => blob(key).downloadToBuffer();
  /** A retried task of a version of docs, and its destination: a container of the account. */
  const retry = (key: string, versionId: string | undefined, bucket: string): [ReplicationTask, TaskDestination] => {
    const d = { id: `azure-b/${bucket}`, location: 'azure-b', bucket, rule: 'blob-0' };
    return [{ source: { location: 'minio-a', bucket: 'docs', key, versionId: versionId ?? '' }, kind: 'object', eventTime: new Date().toISOString(), destinations: [d], origin: 'retry' }, d];
  };

  before(async () => {
    const kms = { MINIO_KMS_SECRET_KEY: `${KMS}:${testSecret(randomBytes(32).toString('base64'))}` };
    const [{ server: a, client, journalTopic }, blobs] = await Promise.all([journaledSource('blob-a', 'docs', kms), azurite({ name: 'blob' })]);
    [sa, az] = [client, blobs];
    account = az.account();
    container = account.service.getContainerClient('docs-copy');
    await container.create();
    await versionedBucket(sa, 'staging');
    await account.service.getContainerClient('staging-copy').create();
    const dir = manifests(
      'blob',
      [
        locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic: journalTopic } } }),
        // The same server as a transient source, read by scans: what reached the blobs is collected from it.
        locationManifest('minio-t', a.endpoint, a.credentials, { journal: { scan: { intervalSeconds: 10 } }, transient: true }),
        blobLocation('azure-b', az.accountName, az.endpoint, az.accountKey),
      ],
      [
        { source: { location: 'minio-a', bucket: 'docs' }, destinations: [{ location: 'azure-b', bucket: 'docs-copy' }], replicateDeleteMarkers: true, replicateVersionDeletes: true },
        { source: { location: 'minio-t', bucket: 'staging' }, destinations: [{ location: 'azure-b', bucket: 'staging-copy' }] },
      ],
    );
    local = await startOn(dir, 'blob');
  });

  after(async () => {
    await local.stop();
  });

  it('the newest version as the blob, with content headers, metadata, the replica marks and index tags, checked by MD5', async () => {
    const first = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'report.txt', Body: 'first draft', ContentType: 'text/plain' }));
    const second = await sa.send(
      new PutObjectCommand({
        Bucket: 'docs',
        Key: 'report.txt',
        Body: 'final text',
        ContentType: 'text/markdown',
        CacheControl: 'no-cache',
        ContentDisposition: 'inline',
        ContentLanguage: 'en',
        Metadata: { author: 'bob', 'content-owner': 'team-a' },
        Tagging: 'team=blue&stage=final',
      }),
    );
    await completed('minio-a', 'docs', 'report.txt', first.VersionId);
    await completed('minio-a', 'docs', 'report.txt', second.VersionId);
    assert.equal((await bytes('report.txt')).toString(), 'final text', 'the newest version is the blob');
    const p = await blob('report.txt').getProperties();
    assert.deepEqual([p.contentType, p.cacheControl, p.contentDisposition, p.contentLanguage], ['text/markdown', 'no-cache', 'inline', 'en']);
    assert.equal(Buffer.from(p.contentMD5 ?? []).toString('hex'), md5(Buffer.from('final text')));
    assert.equal(p.metadata?.['author'], 'bob');
    assert.equal(p.metadata['content_owner'], 'team-a', 'a metadata name made a C# identifier');
    assert.equal(p.metadata['backbeat_source_version_id'], second.VersionId);
    assert.equal(p.metadata['backbeat_source'], 'minio-a/docs');
    assert.deepEqual((await blob('report.txt').getTags()).tags, { team: 'blue', stage: 'final' });
    const d = local.status.lookup('minio-a', 'docs', 'report.txt', second.VersionId)[0]?.destinations['azure-b/docs-copy'];
    assert.equal(d?.verifiedBy, 'md5', JSON.stringify(d));
  });

  it('a multipart object of unequal parts, staged as blocks of its part sizes', async () => {
    const parts = [Buffer.alloc(5 * MiB, 1), Buffer.alloc(6 * MiB, 2), Buffer.alloc(MiB + 17, 3)];
    await multipart(sa, 'docs', 'big.bin', parts);
    await completed('minio-a', 'docs', 'big.bin');
    assert.ok((await bytes('big.bin')).equals(Buffer.concat(parts)), 'the same bytes');
    const blocks = await blob('big.bin').getBlockList('committed');
    assert.deepEqual(blocks.committedBlocks?.map((b) => b.size), parts.map((p) => p.length), 'one block per source part');
    const p = await blob('big.bin').getProperties();
    assert.equal(Buffer.from(p.contentMD5 ?? []).toString('hex'), md5(Buffer.concat(parts)), 'the MD5 of the whole content');
    assert.deepEqual([p.contentType, p.metadata?.['kind']], ['application/x-big', 'mpu']);
    assert.equal(local.status.lookup('minio-a', 'docs', 'big.bin')[0]?.destinations['azure-b/docs-copy']?.verifiedBy, 'md5');
  });

  it('a zero-byte object; one encrypted at rest on the source (SSE-S3), single-part and multipart', async () => {
    await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'empty', Body: Buffer.alloc(0), Metadata: { note: 'nothing' } }));
    await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'sealed.txt', Body: 'kept secret', ServerSideEncryption: 'AES256' }));
    const parts = [Buffer.alloc(5 * MiB, 7), Buffer.alloc(2 * MiB, 8)];
    await multipart(sa, 'docs', 'sealed.bin', parts, true);
    for (const key of ['empty', 'sealed.txt', 'sealed.bin']) await completed('minio-a', 'docs', key);
    const empty = await blob('empty').getProperties();
    assert.deepEqual([empty.contentLength, empty.metadata?.['note']], [0, 'nothing']);
    assert.equal((await bytes('sealed.txt')).toString(), 'kept secret');
    assert.ok((await bytes('sealed.bin')).equals(Buffer.concat(parts)));
    for (const key of ['sealed.txt', 'sealed.bin']) assert.equal(local.status.lookup('minio-a', 'docs', key)[0]?.destinations['azure-b/docs-copy']?.verifiedBy, 'md5', key);
  });

  it('a tag change on the source is set on the blob; a tag blob index tags refuse fails with the reason, nothing written', async () => {
    await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'tagged.txt', Body: 'labels' }));
    await completed('minio-a', 'docs', 'tagged.txt');
    await sa.send(new PutObjectTaggingCommand({ Bucket: 'docs', Key: 'tagged.txt', Tagging: { TagSet: [{ Key: 'state', Value: 'reviewed' }] } }));
    await eventually(async () => assert.deepEqual((await blob('tagged.txt').getTags()).tags, { state: 'reviewed' }), 60_000);
    await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'odd-tag.txt', Body: 'x', Tagging: 'owner=ann%40example.com' }));
    await eventually(() => {
      const [v] = local.status.lookup('minio-a', 'docs', 'odd-tag.txt');
      assert.equal(v?.state, 'FAILED', JSON.stringify(v));
      assert.match(v.destinations['azure-b/docs-copy']?.reason ?? '', /tag "owner" has characters blob index tags refuse/);
    }, 60_000);
    assert.equal(await blob('odd-tag.txt').exists(), false);
  });

  it('a delete marker deletes the blob; the version before it, replayed late, does not come back', async () => {
    const old = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'gone.txt', Body: 'short-lived' }));
    await completed('minio-a', 'docs', 'gone.txt');
    assert.equal(await blob('gone.txt').exists(), true);
    const marker = await sa.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'gone.txt' }));
    await completed('minio-a', 'docs', 'gone.txt', marker.VersionId);
    assert.equal(await blob('gone.txt').exists(), false);
    const outcome = await replicateToBlob({ source: sa, account, replicateDeleteMarkers: true }, ...retry('gone.txt', old.VersionId, 'docs-copy'));
    assert.deepEqual([outcome.state, outcome.reason], ['SKIPPED', 'superseded: a newer delete marker deleted the blob']);
    assert.equal(await blob('gone.txt').exists(), false, 'still deleted');
  });

  it('the version the blob holds, deleted at the source: the blob takes the version now current there', async () => {
    const kept = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'undo.txt', Body: 'keep me' }));
    const dropped = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'undo.txt', Body: 'a mistake' }));
    await completed('minio-a', 'docs', 'undo.txt', kept.VersionId);
    await completed('minio-a', 'docs', 'undo.txt', dropped.VersionId);
    assert.equal((await bytes('undo.txt')).toString(), 'a mistake');
    await sa.send(new DeleteObjectCommand({ Bucket: 'docs', Key: 'undo.txt', VersionId: dropped.VersionId }));
    await eventually(async () => assert.equal((await bytes('undo.txt')).toString(), 'keep me'), 60_000);
    assert.equal((await blob('undo.txt').getProperties()).metadata?.['backbeat_source_version_id'], kept.VersionId);
  });

  it('past what one Put Blob takes, a single-part object is staged in byte ranges', async () => {
    const data = randomBytes(3 * MiB + 5);
    const put = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'ranged.bin', Body: data }));
    await account.service.getContainerClient('ranges').create();
    const outcome = await replicateToBlob({ source: sa, account, wholeMaxBytes: MiB, rangeMinBytes: MiB }, ...retry('ranged.bin', put.VersionId, 'ranges'));
    assert.deepEqual([outcome.state, outcome.verifiedBy, outcome.bytes], ['COMPLETED', 'md5', data.length]);
    const ranged = account.service.getContainerClient('ranges').getBlockBlobClient('ranged.bin');
    assert.ok((await ranged.downloadToBuffer()).equals(data));
    assert.deepEqual((await ranged.getBlockList('committed')).committedBlocks?.map((b) => b.size), [MiB, MiB, MiB, 5]);
  });

  it('a transient source: a version is deleted there once its blob is verified (marks, size, MD5)', async () => {
    const put = await sa.send(new PutObjectCommand({ Bucket: 'staging', Key: 'drop.bin', Body: randomBytes(4096) }));
    await eventually(async () => assert.deepEqual(await versionsOf(sa, 'staging', 'drop.bin'), [], 'collected from the source'), 90_000, 500);
    const p = await account.service.getContainerClient('staging-copy').getBlockBlobClient('drop.bin').getProperties();
    assert.deepEqual([p.contentLength, p.metadata?.['backbeat_source_version_id']], [4096, put.VersionId]);
    // The collector deletes first and reports after, so the status store may not have folded the report yet.
    await eventually(() => {
      const [v] = local.status.lookup('minio-t', 'staging', 'drop.bin', put.VersionId);
      assert.equal(v?.gc?.state, 'DELETED', JSON.stringify(v));
    }, 30_000, 200);
  });

  it('with a SAS token instead of the account key: read from the Location\'s Secret, the copy made, the token in no log', async () => {
    const { AccountSASPermissions, generateAccountSASQueryParameters, StorageSharedKeyCredential } = await import('@azure/storage-blob');
    const sas = generateAccountSASQueryParameters(
      { expiresOn: new Date(Date.now() + 3600_000), permissions: AccountSASPermissions.parse('rwdlact'), services: 'b', resourceTypes: 'sco' },
      new StorageSharedKeyCredential(az.accountName, az.accountKey),
    ).toString();
    // Azurite's access log has each request's URL, the signature in its query: that log alone may hold it.
    const sig = new URLSearchParams(sas).get('sig') ?? '';
    const azuriteLog = /^azurite-[^/]+\/azurite\.log$/;
    testSecret(sig, azuriteLog);
    testSecret(encodeURIComponent(sig), azuriteLog);
    const location = parseManifests(loadAll(blobLocation('azure-sas', az.accountName, az.endpoint, 'unused')).map((doc) => ({ file: 'm.yaml', doc: doc as Record<string, unknown> }))).locations.get('azure-sas');
    assert.ok(location !== undefined);
    const secrets = new Map([['azure-sas-creds', { apiVersion: 'v1' as const, kind: 'Secret' as const, metadata: { name: 'azure-sas-creds' }, stringData: { sasToken: `?${sas}` } }]]);
    const viaSas = blobAccountOf(location, resolveAzureCredentials(location, { secrets }, {}));
    await viaSas.service.getContainerClient('by-sas').create();
    const put = await sa.send(new PutObjectCommand({ Bucket: 'docs', Key: 'sas.txt', Body: 'signed by a token', Tagging: 'via=sas' }));
    const outcome = await replicateToBlob({ source: sa, account: viaSas }, ...retry('sas.txt', put.VersionId, 'by-sas'));
    assert.deepEqual([outcome.state, outcome.verifiedBy], ['COMPLETED', 'md5']);
    const copied = account.service.getContainerClient('by-sas').getBlockBlobClient('sas.txt');
    assert.equal((await copied.downloadToBuffer()).toString(), 'signed by a token');
    assert.deepEqual((await copied.getTags()).tags, { via: 'sas' });
  });
});
