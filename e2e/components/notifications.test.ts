import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { minio, sharedKafka } from '../harness/env.ts';
import { follow } from '../../lib/queue/follow.ts';
import { eventually } from '../harness/wait.ts';

interface S3EventRecord {
  eventName: string;
  s3: { bucket: { name: string }; object: { key: string; size?: number; eTag?: string; versionId?: string } };
}

describe('MinIO bucket notifications to Kafka', function () {
  this.timeout(120_000);

  it('publishes a PUT and a DELETE of a versioned bucket to the topic, keyed bucket/key', async () => {
    const kafka = await sharedKafka();
    const topic = `s3-events-${randomUUID()}`;
    const queue = kafkaQueue({ brokers: kafka.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: new PassThrough() }) });
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 1 }]);

    const site = await minio({ name: 'notifying', notifyKafka: { brokers: kafka.brokers, topic } });
    const s3 = site.client();
    await s3.send(new CreateBucketCommand({ Bucket: 'src' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'src', VersioningConfiguration: { Status: 'Enabled' } }));
    await s3.send(
      new PutBucketNotificationConfigurationCommand({
        Bucket: 'src',
        NotificationConfiguration: {
          QueueConfigurations: [{ QueueArn: site.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }],
        },
      }),
    );

    const put = await s3.send(new PutObjectCommand({ Bucket: 'src', Key: 'photos/cat 1.jpg', Body: 'meow' }));
    const del = await s3.send(new DeleteObjectCommand({ Bucket: 'src', Key: 'photos/cat 1.jpg' }));

    const events: { key: string | null; record: S3EventRecord }[] = [];
    const consumer = await follow(queue, topic, (m) => {
      const body = JSON.parse(m.value?.toString() ?? '{}') as { Records?: S3EventRecord[] };
      for (const record of body.Records ?? []) events.push({ key: m.key, record });
    });
    try {
      await eventually(() => assert.equal(events.length, 2), 60_000);
    } finally {
      await consumer.close();
      await admin.close();
      await site.stop();
    }

    const byName = (name: string): (typeof events)[number] => {
      const found = events.find((e) => e.record.eventName === name);
      assert.ok(found, `no ${name} event among ${JSON.stringify(events)}`);
      return found;
    };
    const created = byName('s3:ObjectCreated:Put');
    const removed = byName('s3:ObjectRemoved:DeleteMarkerCreated');
    assert.equal(created.key, 'src/photos/cat 1.jpg');
    assert.equal(created.record.s3.bucket.name, 'src');
    // Keys arrive URL-encoded in S3 event records (space as '+').
    assert.equal(decodeURIComponent(created.record.s3.object.key.replace(/\+/g, ' ')), 'photos/cat 1.jpg');
    assert.equal(created.record.s3.object.size, 4);
    assert.equal(created.record.s3.object.versionId, put.VersionId);
    assert.equal(removed.key, 'src/photos/cat 1.jpg');
    assert.equal(removed.record.s3.object.versionId, del.VersionId);
  });
});
