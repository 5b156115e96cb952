import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { GetBucketNotificationConfigurationCommand, PutBucketNotificationConfigurationCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import { minio, sharedKafka } from '../harness/env.ts';
import { completedIn, manifests, startOn } from './servers.ts';
import { body, locationManifest, versionedBucket } from './sites.ts';

// Local mode wires a source bucket's notifications as the operator does, where its Location names the
// server's Kafka target (journal.kafka.targetId): nothing is set by hand here, and nothing scans.
describe('local mode wires the journal of a Location with a targetId (real MinIO, Kafka)', function () {
  this.timeout(120_000);
  let local: LocalRun;
  const completed = completedIn(() => local);

  after(async () => {
    await local.stop();
  });

  it('adds its notification beside the user\'s own, and what is written replicates through it', async () => {
    const kafka = await sharedKafka();
    const topic = `journal-wire-${randomUUID().slice(0, 8)}`;
    const [a, b] = await Promise.all([minio({ name: 'wire-a', notifyKafka: { brokers: kafka.brokers, topic } }), minio({ name: 'wire-b' })]);
    const [sa, sb] = [a.client(), b.client()];
    await versionedBucket(sa, 'inbox');
    await versionedBucket(sb, 'inbox-copy');
    await sa.send(new PutBucketNotificationConfigurationCommand({ Bucket: 'inbox', NotificationConfiguration: { QueueConfigurations: [{ Id: 'users-own', QueueArn: a.notificationArn, Events: ['s3:ObjectRemoved:*'], Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'audit/' }] } } }] } }));
    const dir = manifests(
      'wire',
      [locationManifest('minio-a', a.endpoint, a.credentials, { journal: { kafka: { topic, targetId: 'BACKBEAT' } } }), locationManifest('minio-b', b.endpoint, b.credentials)],
      [{ source: { location: 'minio-a', bucket: 'inbox' }, destinations: [{ location: 'minio-b', bucket: 'inbox-copy' }] }],
    );
    local = await startOn(dir, 'wire');
    const wired = await sa.send(new GetBucketNotificationConfigurationCommand({ Bucket: 'inbox' }));
    assert.deepEqual(wired.QueueConfigurations?.map((q) => q.Id).sort(), ['backbeat-journal', 'users-own']);
    const put = await sa.send(new PutObjectCommand({ Bucket: 'inbox', Key: 'hello.txt', Body: 'wired by backbeat run' }));
    await completed('minio-a', 'inbox', 'hello.txt', put.VersionId);
    assert.equal((await body(sb, 'inbox-copy', 'hello.txt')).toString(), 'wired by backbeat run');
  });
});
