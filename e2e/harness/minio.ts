import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand, PutBucketNotificationConfigurationCommand, type S3Client } from '@aws-sdk/client-s3';
import { createS3Client, type S3Credentials } from '../../lib/s3/client.ts';
import { requireBinary } from './binaries.ts';
import { freePort, httpGet, serviceHost } from './net.ts';
import type { TestPki } from './pki.ts';
import { testSecret } from './secrets.ts';
import { ManagedProcess } from './process.ts';
import { runDir } from './run-dir.ts';
import { eventually } from './wait.ts';

export interface MinioOptions {
  /** Unique within the run; names the folder and the log. */
  name: string;
  /** Publish this server's bucket notifications to a Kafka topic. */
  notifyKafka?: { brokers: string[]; topic: string; targetId?: string; /** Default true: events survive an unreachable broker, and wait up to 3 s in the folder. */ queue?: boolean };
  /** More server environment, e.g. a notification target of the user's own. */
  env?: Record<string, string>;
  /** Serve https with this certificate (made for the run): clients must trust its CA. */
  tls?: TestPki;
}

export interface MinioServer {
  name: string;
  endpoint: string;
  region: string;
  credentials: S3Credentials;
  /** The ARN to use in a bucket notification configuration, when notifyKafka was given. */
  notificationArn: string | undefined;
  /** Where MinIO persists notifications it could not deliver yet. */
  queueDir: string | undefined;
  process: ManagedProcess;
  client(): S3Client;
  /** Stops and starts the server again on the same port and data (a site restart). */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Starts it again after stop(), on the same port and data (a site back from an outage). */
  start(): Promise<void>;
}

/** A single-drive MinIO server on a free loopback port, with its own credentials and data folder. */
export async function startMinio(options: MinioOptions): Promise<MinioServer> {
  const binary = requireBinary('minio');
  const dir = join(runDir(), `minio-${options.name}`);
  mkdirSync(join(dir, 'data'), { recursive: true });
  const [port, consolePort] = [await freePort(), await freePort()];
  const credentials = { accessKeyId: `admin-${options.name}`, secretAccessKey: testSecret(randomBytes(18).toString('base64url')) };
  const env: Record<string, string> = {
    MINIO_ROOT_USER: credentials.accessKeyId,
    MINIO_ROOT_PASSWORD: credentials.secretAccessKey,
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
    ...options.env,
  };
  let notificationArn: string | undefined;
  let queueDir: string | undefined;
  if (options.notifyKafka !== undefined) {
    const id = options.notifyKafka.targetId ?? 'BACKBEAT';
    Object.assign(env, {
      [`MINIO_NOTIFY_KAFKA_ENABLE_${id}`]: 'on',
      [`MINIO_NOTIFY_KAFKA_BROKERS_${id}`]: options.notifyKafka.brokers.join(','),
      [`MINIO_NOTIFY_KAFKA_TOPIC_${id}`]: options.notifyKafka.topic,
    });
    if (options.notifyKafka.queue !== false) {
      // With a queue folder, events survive an unreachable broker and are replayed later.
      queueDir = join(dir, 'notify-queue');
      mkdirSync(queueDir, { recursive: true });
      env[`MINIO_NOTIFY_KAFKA_QUEUE_DIR_${id}`] = queueDir;
    }
    notificationArn = `arn:minio:sqs::${id}:kafka`;
  }
  // MinIO serves https when its certs folder holds public.crt and private.key.
  const certs = join(dir, 'certs');
  mkdirSync(certs, { recursive: true });
  if (options.tls !== undefined) {
    copyFileSync(options.tls.certFile, join(certs, 'public.crt'));
    copyFileSync(options.tls.keyFile, join(certs, 'private.key'));
  }
  const proc = new ManagedProcess({
    name: `minio-${options.name}`,
    command: binary,
    args: ['server', '--quiet', '--certs-dir', certs, '--address', `${serviceHost}:${port}`, '--console-address', `127.0.0.1:${consolePort}`, join(dir, 'data')],
    env,
    logFile: join(dir, 'minio.log'),
  });
  const endpoint = `${options.tls !== undefined ? 'https' : 'http'}://${serviceHost}:${port}`;
  const ready = {
    probe: async () => (await httpGet(`${endpoint}/minio/health/ready`)).status === 200,
    timeoutMs: 60_000,
  };
  const client = (): S3Client => createS3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials, ...(options.tls !== undefined ? { tls: { ca: options.tls.ca } } : {}) });
  // MinIO answers ready before it has registered its notification targets (that runs in the background
  // of its start), and refuses a bucket configuration naming one it does not know yet: a probe bucket
  // is configured with each until that is taken, then deleted.
  const arns = Object.entries(env).flatMap(([name, value]) => {
    const m = /^MINIO_NOTIFY_([A-Z]+)_ENABLE_(\w+)$/.exec(name);
    return m !== null && value === 'on' ? [`arn:minio:sqs::${m[2] ?? ''}:${(m[1] ?? '').toLowerCase()}`] : [];
  });
  const start = async (): Promise<void> => {
    await proc.start(ready);
    if (arns.length === 0) return;
    const s3 = client();
    const Bucket = `harness-probe-${randomUUID().slice(0, 8)}`;
    await s3.send(new CreateBucketCommand({ Bucket }));
    try {
      const QueueConfigurations = arns.map((QueueArn) => ({ QueueArn, Events: ['s3:ObjectCreated:*' as const] }));
      await eventually(() => s3.send(new PutBucketNotificationConfigurationCommand({ Bucket, NotificationConfiguration: { QueueConfigurations } })), 60_000, 100);
    } finally {
      await s3.send(new DeleteBucketCommand({ Bucket }));
      s3.destroy();
    }
  };
  await start();
  return {
    name: options.name,
    endpoint,
    region: 'us-east-1',
    credentials,
    notificationArn,
    queueDir,
    process: proc,
    client,
    async restart() {
      await proc.stop();
      await start();
    },
    stop: () => proc.stop(),
    start,
  };
}
