import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, PutBucketNotificationConfigurationCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import { startLocal, type LocalOptions, type LocalRun } from '../../workers/local/local.ts';
import { minio, sharedKafka } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { versionedBucket } from './sites.ts';

// Local mode on manifests written for one suite, and the sources and objects of the suites that pair servers.

/** A multipart object of unequal parts (the last one shorter): what a part-by-part copy must reproduce. */
export async function multipart(s3: S3Client, bucket: string, key: string, parts: Buffer[], sse = false): Promise<string> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/x-big', Metadata: { kind: 'mpu' }, ...(sse ? { ServerSideEncryption: 'AES256' as const } : {}) }));
  const done = [];
  for (const [i, p] of parts.entries()) done.push({ PartNumber: i + 1, ETag: (await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body: p }))).ETag ?? '' });
  return (await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: done } }))).ETag ?? '';
}

/** A MinIO source whose `bucket` (versioned) sends its bucket notifications to a new journal topic. */
export async function journaledSource(name: string, bucket: string, env: Record<string, string> = {}): Promise<{ server: MinioServer; client: S3Client; journalTopic: string }> {
  const kafka = await sharedKafka();
  const journalTopic = `journal-${name}-${randomUUID().slice(0, 8)}`;
  const server = await minio({ name, notifyKafka: { brokers: kafka.brokers, topic: journalTopic }, env });
  const client = server.client();
  await versionedBucket(client, bucket);
  await client.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { QueueConfigurations: [{ QueueArn: server.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] } }));
  return { server, client, journalTopic };
}

/** Local mode on these manifests and the shared Kafka, its log and state in the run folder. */
export async function startOn(dir: string, prefix: string, more: Partial<LocalOptions> = {}): Promise<LocalRun> {
  return startLocal({
    files: [dir],
    logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), `${prefix}.log`)) }),
    brokers: (await sharedKafka()).brokers,
    stateDir: join(runDir(), `state-${prefix}`),
    prefix,
    retry: { baseDelayMs: 100, maxDelayMs: 1_000 },
    ...more,
  });
}

/** A folder of these manifests and one ReplicationRule per spec (named `<name>-<i>`). */
export function manifests(name: string, docs: string[], rules: Record<string, unknown>[]): string {
  const dir = join(runDir(), `manifests-${name}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'all.yaml'), [...docs, ...rules.map((spec, i) => dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: `${name}-${String(i)}` }, spec }))].join('---\n'));
  return dir;
}

/** Waits until the status of a version says COMPLETED. */
export const completedIn = (local: () => LocalRun) => (location: string, bucket: string, key: string, versionId?: string): Promise<void> =>
  eventually(() => {
    const [v] = local().status.lookup(location, bucket, key, versionId);
    assert.equal(v?.state, 'COMPLETED', `${location}/${bucket}/${key}: ${JSON.stringify(v)}`);
  }, 90_000);
