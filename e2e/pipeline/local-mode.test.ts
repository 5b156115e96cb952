import assert from 'node:assert/strict';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import { embeddedQueue } from '../../lib/queue/embedded.ts';
import { startLocal, type LocalRun } from '../../workers/local/local.ts';
import { minio } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat, backbeatWithEnv } from './backbeat.ts';
import { body, locationManifest } from './sites.ts';


async function partitionsOf(stateDir: string, topic: string): Promise<number> {
  const admin = await embeddedQueue({ dir: join(stateDir, 'queue') }).admin();
  try {
    return await admin.partitionCount(topic);
  } finally {
    await admin.close();
  }
}

describe('local mode without Kafka (embedded queue, listing-scan journal)', function () {
  this.timeout(180_000);
  let src: MinioServer, dst: MinioServer;
  let dir: string;

  before(async () => {
    [src, dst] = [await minio({ name: 'local-src' }), await minio({ name: 'local-dst' })];
    for (const [server, bucket] of [[src, 'archive'], [dst, 'archive-copy']] as const) {
      await server.client().send(new CreateBucketCommand({ Bucket: bucket }));
      await server.client().send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    dir = join(runDir(), 'manifests-local');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'locations.yaml'), `${locationManifest('src', src.endpoint, src.credentials, { journal: { scan: { intervalSeconds: 10 } } })}---\n${locationManifest('dst', dst.endpoint, dst.credentials)}`);
    writeFileSync(
      join(dir, 'rule.yaml'),
      dump({
        apiVersion: 'backbeat.io/v1alpha1',
        kind: 'ReplicationRule',
        metadata: { name: 'archive' },
        spec: { source: { location: 'src', bucket: 'archive' }, destinations: [{ location: 'dst', bucket: 'archive-copy' }], replicateExistingObjects: true },
      }),
    );
  });

  after(async () => {
    await Promise.all([src.stop(), dst.stop()]);
  });

  it('backfills existing objects, picks up new ones on the next scan, and keeps its state across a restart', async () => {
    const s3 = src.client();
    for (let i = 0; i < 20; i++) await s3.send(new PutObjectCommand({ Bucket: 'archive', Key: `old/${i}`, Body: `existing ${i}` }));
    const stateDir = join(runDir(), 'state-local');
    const logger = createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), 'local-mode.log')) });
    let local: LocalRun = await startLocal({ files: [dir], logger, stateDir });
    try {
      await eventually(() => assert.equal(local.status.summary().COMPLETED, 20), 60_000);
      assert.equal((await body(dst.client(), 'archive-copy', 'old/7')).toString(), 'existing 7');

      await s3.send(new PutObjectCommand({ Bucket: 'archive', Key: 'new/after-start', Body: 'new' }));
      await eventually(() => assert.equal(local.status.lookup('src', 'archive', 'new/after-start')[0]?.state, 'COMPLETED'), 60_000, 500);
    } finally {
      await local.stop();
    }
    // A group of a destination no longer in the manifests would hold the logs for ever.
    await (await embeddedQueue({ dir: join(stateDir, 'queue') }).admin()).holdForGroup?.('backbeat-processor-gone', ['backbeat-replication']);
    // The embedded queue and the status live in the state folder: a restart remembers everything.
    local = await startLocal({ files: [dir], logger, stateDir });
    try {
      assert.equal(local.status.summary().COMPLETED, 21);
      assert.equal(local.status.lookup('src', 'archive', 'old/3')[0]?.state, 'COMPLETED');
    } finally {
      await local.stop();
    }
    // What stays is what the manifests use; the readers' and followers' groups went when they closed.
    assert.deepEqual(embeddedQueue({ dir: join(stateDir, 'queue') }).groupIds().sort(), ['backbeat-processor-dst', 'backbeat-status']);
    assert.equal(await partitionsOf(stateDir, 'backbeat-replication'), 1, 'a new embedded queue has one partition per topic');
  });

  it('keeps the four partitions of a queue an earlier version made, and goes on copying from it', async () => {
    const stateDir = join(runDir(), 'state-four');
    const logger = createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), 'local-four.log')) });
    const s3 = src.client();
    // As earlier versions made it: every topic in four partitions.
    let local: LocalRun = await startLocal({ files: [dir], logger, stateDir, partitions: 4 });
    try {
      await s3.send(new PutObjectCommand({ Bucket: 'archive', Key: 'four/before', Body: 'before' }));
      await eventually(() => assert.equal(local.status.lookup('src', 'archive', 'four/before')[0]?.state, 'COMPLETED'), 60_000, 500);
    } finally {
      await local.stop();
    }
    local = await startLocal({ files: [dir], logger, stateDir });
    try {
      assert.equal(local.status.lookup('src', 'archive', 'four/before')[0]?.state, 'COMPLETED', 'the status of the earlier run is kept');
      await s3.send(new PutObjectCommand({ Bucket: 'archive', Key: 'four/after', Body: 'after' }));
      await eventually(() => assert.equal(local.status.lookup('src', 'archive', 'four/after')[0]?.state, 'COMPLETED'), 60_000, 500);
      assert.equal((await body(dst.client(), 'archive-copy', 'four/after')).toString(), 'after');
    } finally {
      await local.stop();
    }
    for (const topic of ['backbeat-replication', 'backbeat-replication-status', 'backbeat-status-store']) assert.equal(await partitionsOf(stateDir, topic), 4, topic);
  });

  it('refuses a malformed manifest with one line per problem and its field path, without a stack trace', async () => {
    const bad = join(runDir(), 'bad.yaml');
    writeFileSync(
      bad,
      dump({
        apiVersion: 'backbeat.io/v1alpha1',
        kind: 'ReplicationRule',
        metadata: { name: 'broken' },
        spec: { source: { location: 'nowhere', bucket: 'B' }, destinations: [], priority: -1 },
      }),
    );
    await assert.rejects(backbeat('validate', '-f', bad), (err: Error & { code?: number; stderr?: string; stdout?: string }) => {
      assert.equal(err.code, 2);
      const lines = (err.stderr ?? '').trim().split('\n');
      assert.deepEqual(lines, [
        `${bad}: ReplicationRule/broken: spec.source.bucket: "B" does not match ^[a-z0-9][a-z0-9.-]*[a-z0-9]$`,
        `${bad}: ReplicationRule/broken: spec.priority: must be at least 0`,
        `${bad}: ReplicationRule/broken: spec.destinations: must have at least 1 item`,
      ]);
      assert.doesNotMatch(err.stderr ?? '', /\n\s+at /, 'no stack trace');
      return true;
    });
    await assert.rejects(backbeat('run', '-f', bad), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? '', /spec\.priority: must be at least 0/);
      return true;
    });
  });

  it('names the missing credentials of a Location instead of starting', async () => {
    const file = join(runDir(), 'no-secret.yaml');
    writeFileSync(
      file,
      [
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'a' }, spec: { type: 's3', endpoint: src.endpoint, insecure: true, credentialsSecretRef: { name: 'a-creds' }, journal: { scan: {} } } }),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'b' }, spec: { type: 's3', endpoint: dst.endpoint, insecure: true, credentialsSecretRef: { name: 'b-creds' } } }),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'r' }, spec: { source: { location: 'a', bucket: 'archive' }, destinations: [{ location: 'b', bucket: 'archive-copy' }] } }),
      ].join('---\n'),
    );
    const env = { ...process.env, B_CREDS_ACCESS_KEY_ID: dst.credentials.accessKeyId, B_CREDS_SECRET_ACCESS_KEY: dst.credentials.secretAccessKey };
    await assert.rejects(backbeatWithEnv(env, 'run', '-f', file, '--state-dir', join(runDir(), 'state-nosecret')), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.equal(
        (err.stderr ?? '').trim(),
        'Location/a: spec.credentialsSecretRef: Secret "a-creds" does not provide "accessKeyId" (or $A_CREDS_ACCESS_KEY_ID) and "secretAccessKey" (or $A_CREDS_SECRET_ACCESS_KEY)',
      );
      assert.ok(!(err.stderr ?? '').includes(dst.credentials.secretAccessKey));
      return true;
    });
  });
});
