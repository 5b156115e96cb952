import { Kafka, logLevel as KafkaLogLevel, Partitioners, type IHeaders, type LogEntry } from 'kafkajs';
import type { Logger } from '../log/logger.ts';
import type {
  CommitPoint,
  ConsumerHandlers,
  ConsumerOptions,
  PartitionLag,
  Queue,
  QueueAdmin,
  QueueConsumer,
  QueueMessage,
  QueueProducer,
  TopicSpec,
} from './queue.ts';

export interface KafkaOptions {
  brokers: string[];
  clientId: string;
  logger: Logger;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
}

const LEVELS: Record<number, string> = {
  [KafkaLogLevel.ERROR]: 'error',
  [KafkaLogLevel.WARN]: 'warn',
  [KafkaLogLevel.INFO]: 'info',
  [KafkaLogLevel.DEBUG]: 'debug',
};

function headersOf(raw: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    if (v === undefined) continue;
    out[k] = (Array.isArray(v) ? v[0] : v)?.toString() ?? '';
  }
  return out;
}

/**
 * The Queue interface on Kafka through kafkajs. kafkajs 2.2.4 is unmaintained; on Node 24 it emits a
 * harmless TimeoutNegativeWarning (tulios/kafkajs#1751), which entry points silence with
 * --disable-warning=TimeoutNegativeWarning.
 */
export function kafkaQueue(options: KafkaOptions): Queue {
  const log = options.logger.child({ subsystem: 'kafka' });
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    connectionTimeout: options.connectionTimeoutMs ?? 5_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    // kafkajs INFO lines are per connection and per group join: useful only when debugging.
    logLevel: KafkaLogLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        log.log(LEVELS[level] ?? 'info', message, rest);
      },
  });

  return {
    async admin(): Promise<QueueAdmin> {
      const admin = kafka.admin();
      await admin.connect();
      return {
        async ensureTopics(specs: TopicSpec[]) {
          const existing = new Set(await admin.listTopics());
          const missing = specs.filter((s) => !existing.has(s.topic));
          if (missing.length === 0) return;
          await admin.createTopics({
            waitForLeaders: true,
            topics: missing.map((s) => ({
              topic: s.topic,
              numPartitions: s.partitions,
              replicationFactor: -1, // the broker's default.replication.factor
              configEntries: Object.entries(s.config ?? {}).map(([name, value]) => ({ name, value })),
            })),
          });
        },
        listTopics: () => admin.listTopics(),
        async partitionCount(topic: string) {
          const meta = await admin.fetchTopicMetadata({ topics: [topic] });
          return meta.topics[0]?.partitions.length ?? 0;
        },
        async groupLag(groupId: string, topic: string): Promise<PartitionLag[]> {
          const [ends, committedByTopic] = await Promise.all([
            admin.fetchTopicOffsets(topic),
            admin.fetchOffsets({ groupId, topics: [topic] }),
          ]);
          const committed = new Map(
            (committedByTopic[0]?.partitions ?? []).map((p) => [p.partition, p.offset] as const),
          );
          return ends
            .map((end) => {
              const c = committed.get(end.partition);
              const done = c === undefined || c === '-1' ? null : c;
              // Without a commit, the group would start at the low watermark.
              const from = BigInt(done ?? end.low);
              const lag = BigInt(end.high) - from;
              return {
                partition: end.partition,
                committed: done,
                highWatermark: end.high,
                lag: Number(lag > 0n ? lag : 0n),
              };
            })
            .sort((a, b) => a.partition - b.partition);
        },
        async deleteGroups(groupIds: string[]) {
          // A group that still has members (or is gone already) is refused; Kafka expires what is left.
          await admin.deleteGroups(groupIds).catch(() => undefined);
        },
        close: () => admin.disconnect(),
      };
    },

    async producer(): Promise<QueueProducer> {
      // Idempotent producer: a retried send never duplicates a record within a partition.
      const producer = kafka.producer({
        createPartitioner: Partitioners.DefaultPartitioner,
        idempotent: true,
        maxInFlightRequests: 1,
      });
      await producer.connect();
      return {
        async send(topic, records) {
          await producer.send({
            topic,
            acks: -1,
            messages: records.map((r) => ({
              key: r.key ?? null,
              value: r.value,
              ...(r.headers !== undefined ? { headers: r.headers } : {}),
            })),
          });
        },
        close: () => producer.disconnect(),
      };
    },

    async consumer(opts: ConsumerOptions): Promise<QueueConsumer> {
      const consumer = kafka.consumer({ groupId: opts.groupId, allowAutoTopicCreation: false });
      await consumer.connect();
      for (const topic of opts.topics) {
        await consumer.subscribe({ topic, fromBeginning: opts.fromBeginning ?? false });
      }
      // Next offset committed per topic/partition: after a batch, kafkajs fetches from there (resolveOffset),
      // so what a stopped batch left undone is fetched again, and nothing beyond it is skipped.
      const committed = new Map<string, string>();
      return {
        async run(handlers: ConsumerHandlers) {
          await consumer.run({
            autoCommit: false,
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: opts.partitionsConsumedConcurrently ?? 8,
            eachBatch: async (payload) => {
              const { batch } = payload;
              const messages: QueueMessage[] = batch.messages.map((message) => ({
                topic: batch.topic,
                partition: batch.partition,
                offset: message.offset,
                key: message.key?.toString('utf8') ?? null,
                value: message.value,
                headers: headersOf(message.headers),
                timestamp: Number(message.timestamp),
              }));
              await handlers.onBatch({
                topic: batch.topic,
                partition: batch.partition,
                messages,
                heartbeat: () => payload.heartbeat(),
                isActive: () => payload.isRunning() && !payload.isStale(),
              });
              const done = committed.get(`${batch.topic}/${batch.partition}`);
              if (done !== undefined && BigInt(done) > BigInt(batch.firstOffset() ?? done)) {
                payload.resolveOffset((BigInt(done) - 1n).toString());
              }
            },
          });
        },
        async commit(points: CommitPoint[]) {
          await consumer.commitOffsets(points);
          for (const p of points) committed.set(`${p.topic}/${p.partition}`, p.offset);
        },
        close: () => consumer.disconnect(),
      };
    },
  };
}
