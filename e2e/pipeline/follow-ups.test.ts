import assert from 'node:assert/strict';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GetObjectTaggingCommand, HeadObjectCommand, ListObjectVersionsCommand, PutBucketNotificationConfigurationCommand, PutObjectCommand, PutObjectTaggingCommand } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import { REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import { startLocal, type LocalRun } from '../../workers/local/local.ts';
import { minio, sharedKafka } from '../harness/env.ts';
import { faultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat } from './backbeat.ts';
import { locationManifest, versionedBucket } from './sites.ts';

// A tag change of a version that already COMPLETED, failing on the destination: the version stays
// COMPLETED, and the failure is in the failed set, retryable, until the tags get there.

describe('failures of changes to a completed version (real Kafka journal, MinIO behind a fault proxy)', function () {
  this.timeout(120_000);
  let src: MinioServer, dst: MinioServer, proxy: FaultProxy;
  let local: LocalRun;
  const denyTagging = { on: false };

  before(async () => {
    const kafka = await sharedKafka();
    const topic = `follow-ups-${String(Date.now())}`;
    src = await minio({ name: 'followups-src', notifyKafka: { brokers: kafka.brokers, topic } });
    dst = await minio({ name: 'followups-dst' });
    await versionedBucket(src.client(), 'docs');
    await versionedBucket(dst.client(), 'docs');
    await src.client().send(
      new PutBucketNotificationConfigurationCommand({
        Bucket: 'docs',
        NotificationConfiguration: { QueueConfigurations: [{ QueueArn: src.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] },
      }),
    );
    // PutObjectTagging on the destination is refused while `denyTagging.on`: a permanent error.
    proxy = await faultProxy(dst.endpoint, (req) => denyTagging.on && req.method === 'PUT' && (req.url ?? '').includes('tagging'), 403, 'AccessDenied');
    const dir = join(runDir(), 'manifests-followups');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'all.yaml'),
      [
        locationManifest('src', src.endpoint, src.credentials, { journal: { kafka: { topic } } }),
        locationManifest('dst', proxy.endpoint, dst.credentials),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'docs' }, spec: { source: { location: 'src', bucket: 'docs' }, destinations: [{ location: 'dst', bucket: 'docs' }] } }),
      ].join('---\n'),
    );
    local = await startLocal({
      files: [dir],
      brokers: kafka.brokers,
      prefix: topic,
      logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), 'followups.log')) }),
      stateDir: join(runDir(), 'state-followups'),
      listenPort: 0,
      retry: { baseDelayMs: 50, maxDelayMs: 200, maxAttempts: 3 },
    });
  });

  after(async () => {
    await local.stop();
    await proxy.close();
    await Promise.all([src.stop(), dst.stop()]);
  });

  it('lists a failed tag change in the failed set, keeps the version COMPLETED, and retries it to the end', async () => {
    await src.client().send(new PutObjectCommand({ Bucket: 'docs', Key: 'report.pdf', Body: 'v1', Tagging: 'stage=draft' }));
    await eventually(() => assert.equal(local.status.lookup('src', 'docs', 'report.pdf')[0]?.state, 'COMPLETED'), 60_000, 250);
    const replicaTags = async (): Promise<string[]> => ((await dst.client().send(new GetObjectTaggingCommand({ Bucket: 'docs', Key: 'report.pdf' }))).TagSet ?? []).map((t) => `${t.Key ?? ''}=${t.Value ?? ''}`);
    assert.deepEqual(await replicaTags(), ['stage=draft']);

    denyTagging.on = true;
    await src.client().send(new PutObjectTaggingCommand({ Bucket: 'docs', Key: 'report.pdf', Tagging: { TagSet: [{ Key: 'stage', Value: 'final' }] } }));
    const failedList = async (): Promise<string> => backbeat('failed', 'list', '--server', local.url);
    await eventually(async () => assert.match(await failedList(), /src\/docs\/report\.pdf\s+\S+\s+dst\/docs\s+tags\s+1\s.*AccessDenied/), 60_000, 500);
    const [status] = local.status.lookup('src', 'docs', 'report.pdf');
    assert.equal(status?.state, 'COMPLETED', 'the copy itself stays done');
    assert.deepEqual([...local.status.allFailed()].map((f) => [f.kind, f.destination, f.state]), [['tags', 'dst/docs', 'FAILED']]);
    assert.deepEqual(await replicaTags(), ['stage=draft']);
    assert.match(await backbeat('status', 'src/docs/report.pdf', '--server', local.url), /COMPLETED[\s\S]*later tags change to dst\/docs: FAILED \(AccessDenied/);

    denyTagging.on = false;
    assert.match(await backbeat('failed', 'retry', '--all', '--server', local.url), /1/);
    await eventually(async () => assert.deepEqual(await replicaTags(), ['stage=final']), 60_000, 500);
    await eventually(() => assert.deepEqual([...local.status.allFailed()], []), 30_000, 250);
    assert.equal(local.status.lookup('src', 'docs', 'report.pdf')[0]?.state, 'COMPLETED');
  });

  it('sets a tag change of a non-current version on that version\'s replica', async () => {
    const v1 = await src.client().send(new PutObjectCommand({ Bucket: 'docs', Key: 'history.txt', Body: 'v1', Tagging: 'stage=draft' }));
    const v2 = await src.client().send(new PutObjectCommand({ Bucket: 'docs', Key: 'history.txt', Body: 'v2' }));
    for (const v of [v1, v2]) await eventually(() => assert.equal(local.status.lookup('src', 'docs', 'history.txt', v.VersionId)[0]?.state, 'COMPLETED'), 60_000, 250);
    // v1 is no longer current on either side; its tags change.
    await src.client().send(new PutObjectTaggingCommand({ Bucket: 'docs', Key: 'history.txt', VersionId: v1.VersionId, Tagging: { TagSet: [{ Key: 'stage', Value: 'archived' }] } }));
    const replicaOfV1 = async (): Promise<string[]> => {
      const versions = (await dst.client().send(new ListObjectVersionsCommand({ Bucket: 'docs', Prefix: 'history.txt' }))).Versions ?? [];
      for (const v of versions) {
        const head = await dst.client().send(new HeadObjectCommand({ Bucket: 'docs', Key: 'history.txt', VersionId: v.VersionId }));
        if (head.Metadata?.[REPLICA_VERSION_META] !== v1.VersionId) continue;
        return ((await dst.client().send(new GetObjectTaggingCommand({ Bucket: 'docs', Key: 'history.txt', VersionId: v.VersionId }))).TagSet ?? []).map((t) => `${t.Key ?? ''}=${t.Value ?? ''}`);
      }
      return [];
    };
    await eventually(async () => assert.deepEqual(await replicaOfV1(), ['stage=archived']), 60_000, 500);
    const current = await dst.client().send(new GetObjectTaggingCommand({ Bucket: 'docs', Key: 'history.txt' }));
    assert.deepEqual(current.TagSet ?? [], [], 'the current replica (v2) keeps its own tags');
  });
});
