// `make demo`: starts the real components on loopback and shows the journal the replication pipeline
// reads: objects written to a source site arrive in Kafka as change events. Replication itself (populator,
// processors, status) is not built yet; this demo says so rather than pretending.
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { minio, sharedKafka, stopAll } from '../e2e/harness/env.ts';
import { follow } from '../e2e/harness/follow.ts';
import { eventually } from '../e2e/harness/wait.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import { createLogger } from '../lib/log/logger.ts';

interface EventRecord {
  eventName: string;
  s3: { object: { key: string; size?: number; eTag?: string; versionId?: string } };
}

const say = (line: string): boolean => process.stdout.write(`${line}\n`);

try {
  say('Starting Kafka (KRaft) and two MinIO sites on free loopback ports...');
  const kafka = await sharedKafka();
  const topic = 'site-a-journal';
  const queue = kafkaQueue({ brokers: kafka.brokers, clientId: 'demo', logger: createLogger({ component: 'demo', stream: new PassThrough() }) });
  const admin = await queue.admin();
  await admin.ensureTopics([{ topic, partitions: 1 }]);
  const siteA = await minio({ name: 'site-a', notifyKafka: { brokers: kafka.brokers, topic } });
  const siteB = await minio({ name: 'site-b' });
  say(`  Kafka ${kafka.brokers.join(',')}   site A ${siteA.endpoint}   site B ${siteB.endpoint}`);

  const a = siteA.client();
  for (const s3 of [a, siteB.client()]) {
    await s3.send(new CreateBucketCommand({ Bucket: 'photos' }));
    await s3.send(new PutBucketVersioningCommand({ Bucket: 'photos', VersioningConfiguration: { Status: 'Enabled' } }));
  }
  await a.send(
    new PutBucketNotificationConfigurationCommand({
      Bucket: 'photos',
      NotificationConfiguration: { QueueConfigurations: [{ QueueArn: siteA.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] },
    }),
  );

  say('Writing sample objects to site A: one multipart, one with tags and metadata, one deleted...');
  await new Upload({
    client: a,
    params: { Bucket: 'photos', Key: 'big/multipart.bin', Body: randomBytes(12 * 1024 * 1024) },
    partSize: 5 * 1024 * 1024,
  }).done();
  await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'tagged.txt', Body: 'hello', Metadata: { owner: 'demo' }, Tagging: 'team=blue' }));
  await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'gone.txt', Body: 'bye' }));
  await a.send(new DeleteObjectCommand({ Bucket: 'photos', Key: 'gone.txt' }));

  const events: EventRecord[] = [];
  const consumer = await follow(queue, topic, (m) => {
    events.push(...((JSON.parse(m.value?.toString() ?? '{}') as { Records?: EventRecord[] }).Records ?? []));
  });
  await eventually(() => {
    if (events.length < 4) throw new Error(`only ${events.length} of 4 events arrived`);
  }, 60_000);
  await consumer.close();
  await admin.close();

  say('\nThe journal (site A bucket notifications, read from Kafka):');
  const rows = events.map((e) => [
    decodeURIComponent(e.s3.object.key.replace(/\+/g, ' ')),
    e.eventName.replace(/^s3:/, ''),
    e.s3.object.versionId ?? '',
    String(e.s3.object.size ?? ''),
    e.s3.object.eTag ?? '',
  ]);
  const header = ['key', 'event', 'version', 'size', 'etag'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  for (const row of [header, ...rows]) say(`  ${row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}`);
  say('\nReplication of these events to site B (populator, processors, status) is not built yet.');
} finally {
  await stopAll();
  say('Stopped every component.');
}
