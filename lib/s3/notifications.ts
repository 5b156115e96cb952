import {
  DeleteBucketTaggingCommand,
  GetBucketNotificationConfigurationCommand,
  PutBucketNotificationConfigurationCommand,
  type NotificationConfiguration,
  type QueueConfiguration,
  type S3Client,
  type TopicConfiguration,
} from '@aws-sdk/client-s3';
import type { SNSClient } from '@aws-sdk/client-sns';
import type { Location } from '../config/schema.ts';

// The journal: the source bucket's event notifications, sent to the Kafka target its Location names.
// Only the one queue configuration with this id is ever added or removed; the user's own are kept.
export const NOTIFICATION_ID = 'backbeat-journal';
const EVENTS = ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'];

/** MinIO's ARNs of a Kafka target: without a region when the server has none configured, else with it. */
export function journalArns(location: Location): string[] {
  const id = location.spec.journal?.kafka?.targetId;
  if (id === undefined) return [];
  return [`arn:minio:sqs::${id}:kafka`, `arn:minio:sqs:${location.spec.region}:${id}:kafka`];
}

async function current(client: S3Client, bucket: string): Promise<NotificationConfiguration> {
  const answer = await client.send(new GetBucketNotificationConfigurationCommand({ Bucket: bucket }));
  const { QueueConfigurations, TopicConfigurations, LambdaFunctionConfigurations, EventBridgeConfiguration } = answer;
  return { QueueConfigurations, TopicConfigurations, LambdaFunctionConfigurations, EventBridgeConfiguration };
}

const isOurs = (c: { Id?: string | undefined }): boolean => c.Id === NOTIFICATION_ID;

/**
 * Adds our queue configuration to the bucket's notifications, keeping everything else. Returns what it
 * did; a bucket already sending these events to one of `arns` (ours or the user's) is left alone.
 */
export async function wireJournal(client: S3Client, bucket: string, arns: string[]): Promise<'present' | 'added'> {
  const config = await current(client, bucket);
  const queues = config.QueueConfigurations ?? [];
  if (queues.some((q) => arns.includes(q.QueueArn ?? '') && EVENTS.every((e) => q.Events?.includes(e as never) === true) && q.Filter === undefined)) return 'present';
  let lastError: Error = new Error('the Location names no notification target (spec.journal.kafka.targetId)');
  for (const arn of arns) {
    try {
      const mine: QueueConfiguration = { Id: NOTIFICATION_ID, QueueArn: arn, Events: EVENTS as never[] };
      await client.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { ...config, QueueConfigurations: [...queues.filter((q) => !isOurs(q)), mine] } }));
      return 'added';
    } catch (err) {
      // An ARN the server does not know: try the next form.
      lastError = err as Error;
    }
  }
  throw lastError;
}

/**
 * The SNS client package, loaded when a topic is wired, not by every process start. From source, Node
 * loads its CommonJS build, whose exports object is `default`; the bundle (scripts/bundle.ts) takes its
 * ES module build, which has no `default`.
 */
type SnsPackage = typeof import('@aws-sdk/client-sns');
const snsPackage = async (): Promise<SnsPackage> => {
  const sns = await import('@aws-sdk/client-sns');
  return (sns as { default?: SnsPackage }).default ?? sns;
};

/**
 * A client of the server's SNS-style topics (Ceph RGW), on the S3 client's endpoint, credentials and
 * connections.
 */
export async function topicsClient(s3: S3Client): Promise<SNSClient> {
  const { SNSClient } = await snsPackage();
  const { endpoint, region, credentials, requestHandler } = s3.config;
  return new SNSClient({ ...(endpoint !== undefined ? { endpoint } : {}), region, credentials, requestHandler: requestHandler as never, maxAttempts: 2 });
}

/**
 * Sends the bucket's events to the webhook journal through a topic, where the server takes SNS-style
 * topics with an HTTP push endpoint (Ceph RGW). The topic is persistent: the server keeps the events the
 * receiver did not take and delivers them again. Creating an existing topic updates its endpoint. Only
 * the topic configuration with our id is replaced; the user's own are kept.
 */
export async function wireWebhookTopic(client: S3Client, sns: SNSClient, bucket: string, topic: string, pushEndpoint: string): Promise<'present' | 'added'> {
  const { CreateTopicCommand } = await snsPackage();
  const { TopicArn } = await sns.send(new CreateTopicCommand({ Name: topic, Attributes: { 'push-endpoint': pushEndpoint, persistent: 'true' } }));
  const config = await current(client, bucket);
  const topics = config.TopicConfigurations ?? [];
  if (topics.some((t) => isOurs(t) && t.TopicArn === TopicArn && EVENTS.every((e) => t.Events?.includes(e as never) === true))) return 'present';
  const mine: TopicConfiguration = { Id: NOTIFICATION_ID, TopicArn, Events: EVENTS as never[] };
  await client.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: { ...config, TopicConfigurations: [...topics.filter((t) => !isOurs(t)), mine] } }));
  return 'added';
}

/** Removes our queue or topic configuration only; true when there was one. */
export async function unwireJournal(client: S3Client, bucket: string): Promise<boolean> {
  const config = await current(client, bucket);
  const queues = config.QueueConfigurations ?? [];
  const topics = config.TopicConfigurations ?? [];
  if (!queues.some(isOurs) && !topics.some(isOurs)) return false;
  const rest = { ...config, QueueConfigurations: queues.filter((q) => !isOurs(q)), TopicConfigurations: topics.filter((t) => !isOurs(t)) };
  try {
    await client.send(new PutBucketNotificationConfigurationCommand({ Bucket: bucket, NotificationConfiguration: rest }));
  } catch (err) {
    // Ceph RGW refuses a configuration with nothing left in it (MalformedXML), and takes its own
    // extension instead: DELETE ?notification=<id> removes that one notification.
    if ((err as { name?: string }).name !== 'MalformedXML' || topics.length === 0) throw err;
    await client.send(deleteNotification(bucket, NOTIFICATION_ID));
  }
  return true;
}

/** `DELETE /<bucket>?notification=<id>` (RGW): a tagging delete, signed as usual, its query replaced before signing. */
function deleteNotification(bucket: string, id: string): DeleteBucketTaggingCommand {
  const command = new DeleteBucketTaggingCommand({ Bucket: bucket });
  command.middlewareStack.add(
    (next) => (args) => {
      (args.request as { query: Record<string, string> }).query = { notification: id };
      return next(args);
    },
    { step: 'build', name: 'rgwDeleteNotification' },
  );
  return command;
}
