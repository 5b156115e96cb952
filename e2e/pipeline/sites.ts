import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  ListObjectVersionsCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { createLogger } from '../../lib/log/logger.ts';
import type { S3Credentials } from '../../lib/s3/client.ts';
import { startLocal, type LocalOptions, type LocalRun } from '../../workers/local/local.ts';
import { minio, sharedKafka } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';

export interface Sites {
  brokers: string[];
  journalTopic: string;
  a: MinioServer;
  b: MinioServer;
  c: MinioServer;
  /** Folder of the manifests (Secrets, Locations; rules are added per test). */
  dir: string;
  /** Stops the three servers, at the end of the suite: idle, each still costs CPU until the run ends. */
  stop(): Promise<void>;
}

/** A Secret and the Location that uses it, as YAML; `spec` adds fields (journal, transient, ...). */
export function locationManifest(name: string, endpoint: string, credentials: S3Credentials, spec: Record<string, unknown> = {}): string {
  return [
    { apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-creds` }, stringData: { accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey } },
    {
      apiVersion: 'backbeat.io/v1alpha1',
      kind: 'Location',
      metadata: { name },
      // The test servers speak plain http, on loopback.
      spec: { type: 's3', endpoint, ...(endpoint.startsWith('http://') ? { insecure: true } : {}), region: 'us-east-1', credentialsSecretRef: { name: `${name}-creds` }, ...spec },
    },
  ]
    .map((d) => dump(d))
    .join('---\n');
}

/**
 * Kafka plus three MinIO sites: site A publishes its bucket notifications to Kafka (the journal).
 * `specs` adds Location spec fields per site (site A always has its Kafka journal); `brokers` is another
 * Kafka than the shared one.
 */
export async function startSites(name: string, specs: { a?: Record<string, unknown>; b?: Record<string, unknown> } = {}, brokers?: string[]): Promise<Sites> {
  const kafka = brokers !== undefined ? { brokers } : await sharedKafka();
  const journalTopic = `journal-${name}-${randomUUID().slice(0, 8)}`;
  const [a, b, c] = [
    await minio({ name: `${name}-a`, notifyKafka: { brokers: kafka.brokers, topic: journalTopic } }),
    await minio({ name: `${name}-b` }),
    await minio({ name: `${name}-c` }),
  ];
  const dir = join(runDir(), `manifests-${name}`);
  mkdirSync(dir, { recursive: true });
  const docs = [
    ['site-a', a, { journal: { kafka: { topic: journalTopic } }, ...specs.a }],
    ['site-b', b, specs.b ?? {}],
    ['site-c', c, {}],
  ] as const;
  for (const [loc, server, spec] of docs) writeFileSync(join(dir, `${loc}.yaml`), locationManifest(loc, server.endpoint, server.credentials, spec));
  return {
    brokers: kafka.brokers,
    journalTopic,
    a,
    b,
    c,
    dir,
    async stop() {
      await Promise.all([a.stop(), b.stop(), c.stop()]);
    },
  };
}

export async function versionedBucket(s3: S3Client, bucket: string): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
}

/** A versioned source bucket on site A whose changes go to the journal. */
export async function sourceBucket(sites: Sites, bucket: string): Promise<void> {
  const s3 = sites.a.client();
  await versionedBucket(s3, bucket);
  await s3.send(
    new PutBucketNotificationConfigurationCommand({
      Bucket: bucket,
      NotificationConfiguration: { QueueConfigurations: [{ QueueArn: sites.a.notificationArn, Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'] }] },
    }),
  );
}

export function writeRule(sites: Sites, name: string, spec: Record<string, unknown>): void {
  writeFileSync(join(sites.dir, `rule-${name}.yaml`), dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name }, spec }));
}

export async function body(s3: S3Client, bucket: string, key: string, versionId?: string): Promise<Buffer> {
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...(versionId !== undefined ? { VersionId: versionId } : {}) }));
  return Buffer.from((await got.Body?.transformToByteArray()) ?? []);
}

export function head(s3: S3Client, bucket: string, key: string): Promise<HeadObjectCommandOutput> {
  return s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
}

/** Versions and delete markers of exactly `key`, newest first, with their listed Last-Modified (ms). */
export async function versionsOf(s3: S3Client, bucket: string, key: string): Promise<{ versionId: string; deleteMarker: boolean; lastModified: number }[]> {
  const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key }));
  return [
    ...(page.Versions ?? []).filter((v) => v.Key === key).map((v) => ({ versionId: v.VersionId ?? '', deleteMarker: false, t: v.LastModified?.getTime() ?? 0 })),
    ...(page.DeleteMarkers ?? []).filter((v) => v.Key === key).map((v) => ({ versionId: v.VersionId ?? '', deleteMarker: true, t: v.LastModified?.getTime() ?? 0 })),
  ]
    .sort((x, y) => y.t - x.t)
    .map(({ versionId, deleteMarker, t }) => ({ versionId, deleteMarker, lastModified: t }));
}

/**
 * Local mode on the sites' manifests and Kafka, in this process: topics and groups named by `prefix`,
 * state and log in the run folder.
 */
export function startLocalOn(sites: Sites, prefix: string, extra: Partial<LocalOptions> = {}): Promise<LocalRun> {
  return startLocal({
    files: [sites.dir],
    logger: createLogger({ component: 'backbeat', stream: createWriteStream(join(runDir(), `${prefix}.log`)) }),
    brokers: sites.brokers,
    stateDir: join(runDir(), `state-${prefix}`),
    prefix,
    ...extra,
  });
}
