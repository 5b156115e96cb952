import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel as KafkaLogLevel, PartitionAssigners, Partitioners, type Admin, type ConsumerRunConfig, type IHeaders, type KafkaMessage, type LogEntry, type Message, type PartitionMetadata, type Producer } from 'kafkajs';
import type { Logger } from '../log/logger.ts';
import { batched } from './batched.ts';
import { busyFirstAssigner } from './busy-first.ts';
import { retryKafka } from './kafka-retry.ts';
import { groupedSends, protocolType, renewingProducer, type PartitionBatch } from './kafka-sequence.ts';
import { kafkajsSecurity, type KafkaSecurity } from './kafka-security.ts';
import {
  DRAIN_MS,
  tpKey,
  type CommitPoint,
  type ConsumerHandlers,
  type ConsumerOptions,
  type PartitionLag,
  type Queue,
  type QueueAdmin,
  type QueueConsumer,
  type QueueMessage,
  type QueueProducer,
  type OutgoingRecord,
  type TopicSpec,
  type Written,
} from './queue.ts';
// Loaded for its fix of kafkajs' request queue (an endless 1 ms timer per connection).
import './kafkajs-request-queue.ts';

/**
 * Consumers retry at most 5 s apart: one that gave up during a broker outage restarts after its last
 * retry's delay, which kafkajs' default cap (30 s) lets grow to 15 s and more once the broker is back;
 * more retries keep the default's patience (about 20 s). Producers keep kafkajs' own: an idempotent
 * producer retries without end, and a limit would void its guarantee.
 */
const CONSUMER_RETRY = { initialRetryTime: 300, maxRetryTime: 5_000, retries: 8 } as const;

/** Group errors that mean this member's partitions are being (or were) given to others. */
const LOSING_PARTITIONS = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'NOT_COORDINATOR_FOR_GROUP', 'FENCED_INSTANCE_ID']);

/**
 * Group timings, set rather than left to kafkajs: a member that stops heartbeating (a crash) is out
 * after the session timeout, so its partitions move within seconds; long batches heartbeat every 3 s (a
 * status restore, a full window). A rebalance waits up to the rebalance timeout for members to give up
 * their partitions, and work in flight gets DRAIN_MS (less than that) before it is aborted.
 */
export const GROUP_TIMINGS = { sessionTimeout: 10_000, rebalanceTimeout: 60_000, heartbeatInterval: 3_000 } as const;
/**
 * Without a heartbeat answered for this long (and no join under way), a member may have been evicted
 * (the coordinator's session timeout, counted from a heartbeat sent earlier still): the work it runs
 * outside batches stops before another member can be given its partitions.
 */
const LEASE_MS = GROUP_TIMINGS.sessionTimeout - GROUP_TIMINGS.heartbeatInterval;
/** What a gathering consumer's fetch waits for, at most gatherMs: more than a busy fold takes in at once. */
const GATHER_BYTES = 1024 * 1024;

export interface KafkaOptions {
  brokers: string[];
  clientId: string;
  logger: Logger;
  connectionTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Replicas of each topic this engine creates; default min(3, the brokers of the cluster). */
  replicationFactor?: number;
  /** TLS and SASL to the brokers; plaintext without. */
  security?: KafkaSecurity;
}

/**
 * Replicas and min.insync.replicas of a topic: by default as many replicas as brokers up to 3, and
 * writes acknowledged (acks=all) by all but one, so that one broker can be lost without losing an
 * acknowledged record or stopping writes.
 */
export function topicReplicas(wanted: number | undefined, brokers: number): { factor: number; minInSync: number } {
  const factor = wanted ?? Math.max(1, Math.min(3, brokers));
  if (factor > brokers) throw new Error(`replication factor ${String(factor)} needs ${String(factor)} brokers; the cluster has ${String(brokers)}`);
  return { factor, minInSync: Math.max(1, factor - 1) };
}

// kafkajs' enum is not among the named exports Node finds in its CommonJS: taken from require.
const { ConfigResourceTypes } = createRequire(import.meta.url)('kafkajs') as typeof import('kafkajs');

/** How an existing topic differs from its spec: fewer partitions, fewer replicas, another setting. */
async function topicDrift(admin: Admin, specs: TopicSpec[], replicas: { factor: number; minInSync: number }): Promise<{ topic: string; setting: string; expected: string; actual: string }[]> {
  if (specs.length === 0) return [];
  const drift: { topic: string; setting: string; expected: string; actual: string }[] = [];
  const meta = await admin.fetchTopicMetadata({ topics: specs.map((s) => s.topic) });
  for (const t of meta.topics) {
    const spec = specs.find((s) => s.topic === t.name);
    if (spec === undefined) continue;
    if (t.partitions.length < spec.partitions) drift.push({ topic: t.name, setting: 'partitions', expected: String(spec.partitions), actual: String(t.partitions.length) });
    const fewest = Math.min(...t.partitions.map((p) => p.replicas.length));
    if (fewest < replicas.factor) drift.push({ topic: t.name, setting: 'replication factor', expected: String(replicas.factor), actual: String(fewest) });
  }
  const described = await admin.describeConfigs({ includeSynonyms: false, resources: specs.map((s) => ({ type: ConfigResourceTypes.TOPIC, name: s.topic })) });
  for (const r of described.resources) {
    const spec = specs.find((s) => s.topic === r.resourceName);
    for (const [name, expected] of Object.entries(spec?.config ?? {})) {
      const actual = r.configEntries.find((e) => e.configName === name)?.configValue ?? '';
      if (actual !== expected) drift.push({ topic: r.resourceName, setting: name, expected, actual });
    }
  }
  return drift;
}

const LEVELS: Record<number, string> = {
  [KafkaLogLevel.ERROR]: 'error',
  [KafkaLogLevel.WARN]: 'warn',
  [KafkaLogLevel.INFO]: 'info',
  [KafkaLogLevel.DEBUG]: 'debug',
};

/**
 * The messages of the broker errors kafkajs handles by itself: those its own table marks retriable (a
 * coordinator loading or moving, a leader being elected; the package is frozen at 2.2.4), and a group
 * rebalancing, which its consumer answers by joining again.
 */
const ROUTINE = new Set(
  (createRequire(import.meta.url)('kafkajs/src/protocol/error.js') as { errorCodes: { type: string; retriable: boolean; message: string }[] }).errorCodes
    .filter((e) => e.retriable || e.type === 'REBALANCE_IN_PROGRESS')
    .map((e) => e.message),
);

/**
 * The level of a kafkajs log line here: a response carrying a retriable error is routine (every start
 * meets a coordinator that is not available yet, every rebalance asks members to rejoin), so it is
 * debug, not error; what kafkajs gives up on still reaches the caller as an error.
 */
export function kafkaLogLevel(level: KafkaLogLevel, entry: { message: string; error?: unknown }): string {
  if (level === KafkaLogLevel.ERROR && typeof entry.error === 'string' && ROUTINE.has(entry.error)) return 'debug';
  return LEVELS[level] ?? 'info';
}

function headersOf(raw: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw ?? {})) {
    if (v === undefined) continue;
    out[k] = (Array.isArray(v) ? v[0] : v)?.toString() ?? '';
  }
  return out;
}

/**
 * The Queue interface on Kafka through kafkajs. kafkajs 2.2.4 is unmaintained: its busy timer on idle
 * connections is fixed by kafkajs-request-queue.ts.
 */
export function kafkaQueue(options: KafkaOptions): Queue {
  const log = options.logger.child({ subsystem: 'kafka' });
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    connectionTimeout: options.connectionTimeoutMs ?? 5_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    ...kafkajsSecurity(options.security),
    // kafkajs INFO lines are per connection and per group join: useful only when debugging.
    logLevel: KafkaLogLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...rest } = entry;
        log.log(kafkaLogLevel(level, entry), message, rest);
      },
  });

  // Start-up and metadata calls ride out a cluster that is still settling (a topic just created, a
  // leader being elected, a coordinator loading) instead of failing the role.
  const settle = <T>(what: string, fn: () => Promise<T>): Promise<T> => retryKafka(what, fn, log);

  const toMessage = (topic: string, partition: number, message: KafkaMessage): QueueMessage => ({
    topic,
    partition,
    offset: message.offset,
    key: message.key?.toString('utf8') ?? null,
    value: message.value,
    headers: headersOf(message.headers),
    timestamp: Number(message.timestamp),
  });
  // The producer's own partitioner, asked with a topic's partitions: where a key's records go.
  const partitioner = Partitioners.DefaultPartitioner();
  const topicPartitions = new Map<string, PartitionMetadata[]>();
  // Each partition's leader as last fetched, to send each broker's partitions (of every topic) in one request;
  // forgotten after a failed send (a leader moved). Stale, it costs only a send kafkajs splits by broker.
  // The same fetch gives the topic's partition count, kept for good (partitions are never removed).
  const topicLeaders = new Map<string, Promise<Map<number, number>>>();
  const leadersOf = (topic: string): Promise<Map<number, number>> => {
    let leaders = topicLeaders.get(topic);
    if (leaders === undefined) {
      const admin = kafka.admin();
      leaders = settle(`partitions of ${topic}`, async () => {
        await admin.connect();
        try {
          return (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0]?.partitions ?? [];
        } finally {
          await admin.disconnect();
        }
      }).then((partitions) => {
        if (partitions.length === 0) throw new Error(`topic "${topic}" has no partitions`);
        if (!topicPartitions.has(topic)) topicPartitions.set(topic, Array.from({ length: partitions.length }, (_, partitionId): PartitionMetadata => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] })));
        return new Map(partitions.map((p) => [p.partitionId, p.leader]));
      });
      leaders.catch(() => topicLeaders.delete(topic));
      topicLeaders.set(topic, leaders);
    }
    return leaders;
  };
  const partitionsOfTopic = async (topic: string): Promise<PartitionMetadata[]> => {
    if (!topicPartitions.has(topic)) await leadersOf(topic);
    const partitions = topicPartitions.get(topic);
    if (partitions === undefined) throw new Error(`topic "${topic}" has no partitions`);
    return partitions;
  };
  const partitionFor = (topic: string, partitionMetadata: PartitionMetadata[], key: string | null): number => partitioner({ topic, partitionMetadata, message: { key, value: null } });

  return {
    partitionOf: async (topic: string, key: string): Promise<number> => partitionFor(topic, await partitionsOfTopic(topic), key),

    async replay(topic: string, from: Map<number, string>, onMessage: (m: QueueMessage) => void, onEnds?: (ends: Map<number, string>) => void): Promise<Map<number, string>> {
      const admin = kafka.admin();
      const offsets = await settle(`offsets of ${topic}`, async () => {
        await admin.connect();
        try {
          return await admin.fetchTopicOffsets(topic);
        } finally {
          await admin.disconnect();
        }
      });
      const ends = new Map<number, string>();
      // Per partition still to read: where to start, and the last offset to read.
      const todo = new Map<number, { start: bigint; last: bigint }>();
      for (const [partition, given] of from) {
        const o = offsets.find((x) => x.partition === partition);
        if (o === undefined) throw new Error(`topic "${topic}" has no partition ${String(partition)}`);
        ends.set(partition, o.high);
        const start = BigInt(given) > BigInt(o.low) ? BigInt(given) : BigInt(o.low);
        if (start < BigInt(o.high)) todo.set(partition, { start, last: BigInt(o.high) - 1n });
      }
      onEnds?.(ends);
      if (todo.size === 0) return ends;
      // kafkajs has no group-less consumer: a group of its own, deleted afterwards, seeks each partition.
      const groupId = `backbeat-replay-${randomUUID()}`;
      const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false });
      try {
        await settle(`reading ${topic}`, async () => {
          await consumer.connect();
          await consumer.subscribe({ topic, fromBeginning: true });
        });
        await new Promise<void>((resolve, reject) => {
          consumer
            .run({
              autoCommit: false,
              eachBatch: async ({ batch }) => {
                const range = todo.get(batch.partition);
                if (range === undefined) return;
                for (const message of batch.messages) {
                  const offset = BigInt(message.offset);
                  if (offset < range.start) continue;
                  if (offset > range.last) break;
                  onMessage(toMessage(topic, batch.partition, message));
                }
                if (BigInt(batch.lastOffset()) >= range.last) {
                  todo.delete(batch.partition);
                  consumer.pause([{ topic, partitions: [batch.partition] }]);
                  if (todo.size === 0) resolve();
                }
                return Promise.resolve();
              },
            })
            .then(() => {
              for (const [partition, range] of todo) consumer.seek({ topic, partition, offset: range.start.toString() });
              const idle = offsets.map((o) => o.partition).filter((p) => !todo.has(p));
              if (idle.length > 0) consumer.pause([{ topic, partitions: idle }]);
            })
            .catch((err: unknown) => {
              reject(err instanceof Error ? err : new Error(String(err)));
            });
        });
      } finally {
        await consumer.disconnect();
        const admin2 = kafka.admin();
        await admin2.connect().then(() => admin2.deleteGroups([groupId])).catch(() => undefined);
        await admin2.disconnect().catch(() => undefined);
      }
      return ends;
    },

    async admin(): Promise<QueueAdmin> {
      const admin = kafka.admin();
      await settle('admin connection', () => admin.connect());
      const groupLag = async (groupId: string, topic: string): Promise<PartitionLag[]> => {
        // Not retried: a scrape answers now, and the next one asks again.
        const [ends, committedByTopic] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
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
      };
      return {
        ensureTopics: (specs: TopicSpec[]) => settle('creating topics', async () => {
          const existing = new Set(await admin.listTopics());
          const missing = specs.filter((s) => !existing.has(s.topic));
          const brokers = (await admin.describeCluster()).brokers.length;
          const replicas = topicReplicas(options.replicationFactor, brokers);
          if (missing.length > 0) {
            await admin.createTopics({
              waitForLeaders: true,
              topics: missing.map((s) => ({
                topic: s.topic,
                numPartitions: s.partitions,
                replicationFactor: replicas.factor,
                configEntries: Object.entries({ 'min.insync.replicas': String(replicas.minInSync), ...s.config }).map(([name, value]) => ({ name, value })),
              })),
            });
          }
          const drift = await topicDrift(admin, specs.filter((s) => existing.has(s.topic)), replicas);
          for (const d of drift) log.warn('topic settings differ from what this installation expects', { ...d });
        }),
        listTopics: () => admin.listTopics(),
        async partitionCount(topic: string) {
          const meta = await settle(`partitions of ${topic}`, () => admin.fetchTopicMetadata({ topics: [topic] }));
          return meta.topics[0]?.partitions.length ?? 0;
        },
        groupLag,
        async unconsumedOlderThan(groupId: string, topic: string, ageMs: number) {
          // The first offset at or after the cut-off time, per partition: everything before it is older.
          const [cut, lag] = await Promise.all([admin.fetchTopicOffsetsByTimestamp(topic, Date.now() - ageMs), groupLag(groupId, topic)]);
          return lag.reduce((n, p) => {
            const at = cut.find((c) => c.partition === p.partition)?.offset;
            const older = at === undefined || at === '-1' ? BigInt(p.highWatermark) : BigInt(at);
            const from = BigInt(p.highWatermark) - BigInt(p.lag);
            return n + Number(older > from ? older - from : 0n);
          }, 0);
        },
        async deleteGroups(groupIds: string[]) {
          // A group that still has members (or is gone already) is refused; Kafka expires what is left.
          await admin.deleteGroups(groupIds).catch(() => undefined);
        },
        close: () => admin.disconnect(),
      };
    },

    async producer(): Promise<QueueProducer> {
      // Idempotent producer: kafkajs' own retries never duplicate a record within a partition. One send
      // per partition at a time, and a producer never used again once a send of it failed (kafka-sequence.ts).
      const connected = async (): Promise<Producer> => {
        const made = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, idempotent: true, maxInFlightRequests: 1 });
        await settle('producer connection', () => made.connect());
        return made;
      };
      const producer = renewingProducer(await connected(), connected, log);
      const grouped = groupedSends((batches) => producer.send(batches));
      const sendAll = async (sends: { topic: string; records: OutgoingRecord[] }[]): Promise<Written[][]> => {
        // One request per leader for every topic's records, grouped with the sends made meanwhile (kafka-sequence.ts).
        const byLeader = new Map<number, PartitionBatch[]>();
        for (const { topic, records } of sends) {
          // Each record's partition chosen here, as kafkajs would.
          const partitions = records.every((r) => r.partition !== undefined) ? [] : await partitionsOfTopic(topic);
          const byPartition = new Map<number, Message[]>();
          for (const r of records) {
            const partition = r.partition ?? partitionFor(topic, partitions, r.key ?? null);
            const batch = byPartition.get(partition) ?? [];
            batch.push({ key: r.key ?? null, value: r.value, ...(r.headers !== undefined ? { headers: r.headers } : {}) });
            byPartition.set(partition, batch);
          }
          const leaders = await leadersOf(topic);
          for (const [partition, messages] of byPartition) {
            const leader = leaders.get(partition) ?? -1;
            byLeader.set(leader, [...(byLeader.get(leader) ?? []), { topic, partition, messages }]);
          }
        }
        const written = (
          await Promise.all(
            [...byLeader].map(([leader, batches]) =>
              grouped(leader, batches).catch((err: unknown) => {
                for (const b of batches) topicLeaders.delete(b.topic);
                throw err;
              }),
            ),
          )
        ).flat();
        return sends.map(({ topic }) => written.filter((w) => w.topic === topic).map(({ partition, next }) => ({ partition, next })));
      };
      return {
        sendAll,
        send: async (topic, records) => (await sendAll([{ topic, records }]))[0] ?? [],
        close: () => producer.close(),
      };
    },

    async consumer(opts: ConsumerOptions): Promise<QueueConsumer> {
      // A stop waits for the fetch under way: a long poll of 1 s, not kafkajs' 5 s, keeps stops short.
      // Partitions with work in flight stay put through a rebalance where every member knows how
      // (busy-first); a group with older members falls back to round robin.
      let handlers: ConsumerHandlers | undefined;
      const consumer = kafka.consumer({
        groupId: opts.groupId,
        allowAutoTopicCreation: false,
        // A consumer that gathers has the broker hold each fetch for gatherMs, unless a large batch is there
        // already: fewer, larger batches where each costs a write and a commit (the status fold).
        maxWaitTimeInMs: opts.gatherMs ?? 1_000,
        minBytes: opts.gatherMs !== undefined ? GATHER_BYTES : 1,
        retry: CONSUMER_RETRY,
        ...GROUP_TIMINGS,
        partitionAssigners: [busyFirstAssigner(() => handlers?.windowed?.busy() ?? []), PartitionAssigners.roundRobin],
      });
      await settle(`joining ${opts.groupId}`, async () => {
        await consumer.connect();
        await consumer.subscribe({ topics: opts.topics, fromBeginning: opts.fromBeginning ?? false });
      });
      // Next offset committed per topic/partition: after a batch, kafkajs fetches from there (resolveOffset),
      // so what a stopped batch left undone is fetched again, and nothing beyond it is skipped.
      const committed = new Map<string, string>();
      let running = false;
      // The lease of a windowed consumer's partitions: renewed by each heartbeat answered and each join.
      let assigned = false;
      let joined = false;
      let joining = false;
      let lastBeat = Date.now();
      let leaseTimer: NodeJS.Timeout | undefined;
      const loseAll = (why: string): void => {
        if (!assigned) return;
        assigned = false;
        log.warn('partitions may be given to another member: work in flight is aborted', { group: opts.groupId, why });
        handlers?.onAssign?.([]);
      };
      // Commits made while one is under way go out together (the partition windows' ticks, the batches of
      // several partitions): one request, each partition at the offset last asked.
      const commits = batched(async (calls: CommitPoint[][]) => {
        const latest = new Map(calls.flat().map((p) => [tpKey(p), p]));
        await consumer.commitOffsets([...latest.values()]);
        for (const [key, p] of latest) committed.set(key, p.offset);
        return calls.map(() => undefined);
      });
      // What run() was given, to start again after a crash kafkajs does not restart from.
      let runConfig: ConsumerRunConfig | undefined;
      let closed = false;
      let restartTimer: NodeJS.Timeout | undefined;
      let restarts = 0;
      let committedAdmin: Admin | undefined;
      // The commits of a topic being asked for: windows made together wait on the same answer.
      const asking = new Map<string, Promise<{ partition: number; offset: string }[]>>();
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        // kafkajs has left the group before it says so.
        if (handlers?.windowed !== undefined) loseAll('the consumer crashed');
        if (payload.restart) return;
        running = false;
        if (closed || runConfig === undefined) return;
        // kafkajs stops for good on an error it calls non-retriable, such as no group coordinator found
        // while the broker shuts down: the role would idle. It is started again here, later each time.
        const config = runConfig;
        const retryInMs = Math.min(30_000, 1_000 * 2 ** Math.min(restarts++, 5));
        log.error('consumer crashed and kafkajs does not restart it: starting it again', { group: opts.groupId, error: payload.error, retryInMs });
        restartTimer = setTimeout(() => {
          if (closed) return;
          running = true;
          consumer.run(config).catch((err: unknown) => {
            log.error('consumer restart failed', { group: opts.groupId, error: err });
          });
        }, retryInMs);
      });
      consumer.on(consumer.events.GROUP_JOIN, () => {
        restarts = 0;
      });
      consumer.on(consumer.events.HEARTBEAT, () => {
        lastBeat = Date.now();
        // Answered: this member still holds the generation's partitions, even after a lease it thought lost.
        if (!assigned && joined) {
          assigned = true;
          log.info('heartbeat answered again: the partitions are still ours', { group: opts.groupId });
        }
      });
      consumer.on(consumer.events.REBALANCING, () => {
        joining = true;
      });
      return {
        consuming: () => running,
        async run(given: ConsumerHandlers) {
          running = true;
          handlers = given;
          const windowed = given.windowed;
          if (windowed !== undefined) {
            leaseTimer = setInterval(() => {
              if (!joining && Date.now() - lastBeat > LEASE_MS) loseAll(`no heartbeat answered for ${String(LEASE_MS)} ms`);
            }, 1_000);
            leaseTimer.unref();
          }
          if (given.onAssign !== undefined) {
            consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
              joining = false;
              assigned = true;
              joined = true;
              lastBeat = Date.now();
              const assignment = Object.entries(payload.memberAssignment).flatMap(([topic, partitions]) => partitions.map((partition) => ({ topic, partition })));
              log.info('partitions assigned', { group: opts.groupId, partitions: assignment.map(tpKey).sort() });
              given.onAssign?.(assignment);
            });
          }
          runConfig = {
            autoCommit: false,
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: opts.partitionsConsumedConcurrently ?? 8,
            eachBatch: async (payload) => {
              const { batch } = payload;
              const messages = batch.messages.map((message) => toMessage(batch.topic, batch.partition, message));
              // What was committed is not fetched again, whether the batch ended or failed.
              const resolveCommitted = (): void => {
                const done = committed.get(`${batch.topic}/${batch.partition}`);
                if (done !== undefined && BigInt(done) > BigInt(batch.firstOffset() ?? done)) payload.resolveOffset((BigInt(done) - 1n).toString());
              };
              // The fence of this batch: once the group takes the partition away (a heartbeat says a
              // rebalance is under way, or this member was evicted) or the consumer stops, no new work
              // starts, and what runs is aborted after DRAIN_MS.
              const fence = new AbortController();
              let losing = false;
              let drain: NodeJS.Timeout | undefined;
              const lose = (why: string): void => {
                if (drain !== undefined) return;
                losing = true;
                if (windowed !== undefined) return;
                log.info('partition being taken away: no new work, work in flight drains', { group: opts.groupId, topic: batch.topic, partition: batch.partition, why, drainMs: DRAIN_MS });
                drain = setTimeout(() => fence.abort(new Error(`${batch.topic}/${String(batch.partition)} is no longer ours`)), DRAIN_MS);
              };
              // A windowed consumer whose lease ran out takes nothing in until the group answers again.
              const isActive = (): boolean => !losing && (windowed === undefined || assigned) && payload.isRunning() && !payload.isStale();
              try {
                await given.onBatch({
                  topic: batch.topic,
                  partition: batch.partition,
                  messages,
                  async heartbeat() {
                    if (!payload.isRunning()) lose('the consumer is stopping');
                    try {
                      await payload.heartbeat();
                    } catch (err) {
                      const type = protocolType(err);
                      if (LOSING_PARTITIONS.has(type)) lose(type);
                      throw err;
                    }
                  },
                  isActive,
                  signal: fence.signal,
                });
              } catch (err) {
                resolveCommitted();
                // This member unknown to the group, or a rebalance (a commit refused): kafkajs rejoins on
                // these, so they reach it as they are.
                if (LOSING_PARTITIONS.has(protocolType(err))) throw err;
                // Any other error would stop the consumer for good, leaving the role idle: marked retriable,
                // the batch is fetched again from its last commit, and after kafkajs' retries the consumer
                // restarts and rejoins. A bug repeats, loudly, instead of idling.
                log.error('batch failed; it is fetched again from its last commit', { group: opts.groupId, topic: batch.topic, partition: batch.partition, error: err });
                throw Object.assign(new Error(`batch of ${batch.topic}/${String(batch.partition)} failed: ${(err as Error).message}`), { retriable: true });
              } finally {
                clearTimeout(drain);
              }
              // A window took the batch in: the next fetch goes on after it, unless the window rewound or
              // the lease ran out before (then it is fetched again).
              if (windowed !== undefined) {
                if (isActive()) payload.resolveOffset(batch.lastOffset());
              } else resolveCommitted();
              // Caught up: what comes next is gathered for lingerMs, not fetched as it comes.
              if (opts.lingerMs !== undefined && batch.offsetLag() === '0' && payload.isRunning()) await sleep(opts.lingerMs);
            },
          };
          await consumer.run(runConfig);
        },
        commit: (points: CommitPoint[]) => commits(points),
        async committed({ topic, partition }) {
          // One admin client per consumer; the windows a join makes at once share one request per topic.
          committedAdmin ??= kafka.admin();
          const admin = committedAdmin;
          let asked = asking.get(topic);
          if (asked === undefined) {
            // Briefly: the batch waiting on this sends no heartbeat; a failure has it fetched again.
            asked = retryKafka(`commits of ${opts.groupId}`, async () => {
              await admin.connect();
              return (await admin.fetchOffsets({ groupId: opts.groupId, topics: [topic] }))[0]?.partitions ?? [];
            }, log, { forMs: 10_000 }).finally(() => asking.delete(topic));
            asking.set(topic, asked);
          }
          const offset = (await asked).find((p) => p.partition === partition)?.offset;
          return offset === undefined || BigInt(offset) < 0n ? null : offset;
        },
        rewind: ({ topic, partition, offset }) => {
          try {
            consumer.seek({ topic, partition, offset });
          } catch {
            // Not running (crashed, closing): the next run starts from the commits anyway.
          }
        },
        pause: () => {
          consumer.pause(opts.topics.map((topic) => ({ topic })));
        },
        resume: () => {
          consumer.resume(opts.topics.map((topic) => ({ topic })));
        },
        async close() {
          running = false;
          closed = true;
          clearTimeout(restartTimer);
          clearInterval(leaseTimer);
          if (handlers?.windowed !== undefined) {
            // Windows finish (or abort) their work while the partitions are still this member's.
            consumer.pause(opts.topics.map((topic) => ({ topic })));
            await handlers.windowed.drain();
          }
          await consumer.disconnect();
          await committedAdmin?.disconnect();
        },
      };
    },
  };
}
