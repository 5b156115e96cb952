// The small surface the product needs from a message queue: Kafka (kafka.ts) for scale-out, and an embedded
// file-backed queue (embedded.ts) for local mode. Keeping callers on this interface means either can be
// swapped without touching the workers.

export interface TopicSpec {
  topic: string;
  partitions: number;
  /** Topic configs, e.g. { 'retention.ms': '604800000' } or { 'cleanup.policy': 'compact' }. */
  config?: Record<string, string>;
}

export interface OutgoingRecord {
  /** Records with the same key land on the same partition, in order. */
  key?: string;
  /** null is a tombstone: on a compacted topic it removes the key. */
  value: string | Buffer | null;
  headers?: Record<string, string>;
  /** Overrides the key's partition: a changelog is written to the partition of the input it mirrors. */
  partition?: number;
}

/** Where the records of one send landed: per partition written, the offset after its last record. */
export interface Written {
  partition: number;
  next: string;
}

/** A partition of a topic, as group assignments name them. */
export interface TopicPartition {
  topic: string;
  partition: number;
}

/** A partition's name as a map key: `topic/partition`. */
export const tpKey = (tp: TopicPartition): string => `${tp.topic}/${String(tp.partition)}`;

export interface QueueMessage {
  topic: string;
  partition: number;
  /** Kafka offsets are 64-bit; kept as decimal strings. */
  offset: string;
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
  /** Producer or broker time, milliseconds since the epoch. */
  timestamp: number;
}

export interface PartitionLag {
  partition: number;
  /** Committed offset of the group, or null when the group has committed nothing on this partition. */
  committed: string | null;
  highWatermark: string;
  lag: number;
}

export interface QueueAdmin {
  /** Creates the topics that do not exist; existing topics are left as they are. */
  ensureTopics(specs: TopicSpec[]): Promise<void>;
  listTopics(): Promise<string[]>;
  partitionCount(topic: string): Promise<number>;
  groupLag(groupId: string, topic: string): Promise<PartitionLag[]>;
  /**
   * How many messages of `topic` the group has not consumed yet and that are older than `ageMs`: those
   * a time-based retention will delete first. Absent where nothing expires unread (the embedded queue).
   */
  unconsumedOlderThan?(groupId: string, topic: string, ageMs: number): Promise<number>;
  /** Deletes consumer groups that have no member left, with their offsets. Best effort: never throws. */
  deleteGroups(groupIds: string[]): Promise<void>;
  /**
   * Where a queue drops what every group has read (the embedded queue), registers a group that will read
   * `topics` from their beginning but may not subscribe yet (a paused destination), so that nothing it
   * has to read goes. Kafka keeps records by time and does without.
   */
  holdForGroup?(groupId: string, topics: string[]): Promise<void>;
  close(): Promise<void>;
}

export interface QueueProducer {
  send(topic: string, records: OutgoingRecord[]): Promise<Written[]>;
  /** Several topics' records at once: on Kafka, one request per broker for all of them. */
  sendAll(sends: { topic: string; records: OutgoingRecord[] }[]): Promise<Written[][]>;
  close(): Promise<void>;
}

export interface CommitPoint {
  topic: string;
  partition: number;
  /** The offset of the next message to read, i.e. last processed offset + 1. */
  offset: string;
}

export interface ConsumerOptions {
  groupId: string;
  topics: string[];
  /** Where a group with no committed offset starts. */
  fromBeginning?: boolean;
  /** How many partitions' batches are handled at once. */
  partitionsConsumedConcurrently?: number;
  /**
   * How long a short batch waits for the messages that follow it before it is handled: fewer, larger
   * batches where each costs a write (the status fold). The embedded queue waits after a short batch
   * while messages keep coming; Kafka's broker holds the fetch (its fetch.max.wait), so an idle consumer
   * fetches this often.
   */
  gatherMs?: number;
  /**
   * Kafka: after a batch that reached the end of its partition, how long the next fetch waits. While
   * messages trickle in, one fetch then brings several instead of one each (each fetch is a request to
   * the broker and a pass through the window); a consumer behind fetches at once. The embedded queue,
   * in process, fetches without a request and does not wait.
   */
  lingerMs?: number;
}

/**
 * The linger of consumers on the replication path (populator, processor, GC): at 200 changes per
 * second their fetches fell fourfold and backbeat's CPU per object by 5–20 % (docs/benchmarks.md), for
 * up to this long more on each hop while traffic is light.
 */
export const LINGER_MS = 30;

/** Consecutive messages of one partition. */
export interface Batch {
  topic: string;
  partition: number;
  messages: QueueMessage[];
  /** Keeps the group membership alive during long work. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping or the partition is being taken away: start no new work. */
  isActive(): boolean;
  /**
   * Aborted when work still running on this batch must end: the partition was taken away (or the
   * consumer stops) and the drain time is over. S3 calls take it as their abortSignal; what they
   * did not finish is redelivered to the partition's next owner.
   */
  signal: AbortSignal;
}

/** How long a stop (or a partition taken away) leaves work in flight to finish before aborting it. */
export const DRAIN_MS = 15_000;

export interface ConsumerHandlers {
  /**
   * Called with batches, in order within a partition; the next batch of a partition waits until this one
   * resolves, and a rebalance waits for it too (drain before giving partitions away). Offsets are committed
   * only through commit().
   */
  onBatch(batch: Batch): Promise<void>;
  /**
   * The member's whole assignment, each time the group gives it one (a join, every rebalance), before
   * any batch of that assignment. State kept per partition is caught up here (Kafka Streams' model).
   */
  onAssign?(assignment: TopicPartition[]): void;
  /**
   * Set by handlers that keep their own window of work per partition across batches (consumeOrdered):
   * onBatch takes a batch in and may return before its messages are done, and the partition's next batch
   * starts after the last message delivered (or where rewind() says). onAssign then also hears of
   * partitions this member may have lost without a new assignment (a crash, an expired session): `[]`.
   */
  windowed?: {
    /** Partitions with work in flight: the group leaves them with this member through a rebalance. */
    busy(): TopicPartition[];
    /** Called by close() before it leaves the group: finish or abort what runs, commit what is done. */
    drain(): Promise<void>;
  };
}

export interface QueueConsumer {
  /** Starts consuming in the background; resolves once started. */
  run(handlers: ConsumerHandlers): Promise<void>;
  commit(points: CommitPoint[]): Promise<void>;
  /** The partition's next batch starts at `offset` (its last commit): what a window gave up is read again. */
  rewind(point: CommitPoint): void;
  /** The group's commit on a partition as the queue holds it (null: none yet): where a new owner starts. */
  committed(tp: TopicPartition): Promise<string | null>;
  /**
   * Whether it consumes: true from run() until close(), false while it waits to start again after a
   * crash that kafkajs does not recover from. /readyz reports a role whose consumer does not.
   */
  consuming(): boolean;
  /** Stops fetching (the group membership stays, with its partitions) until resume(). */
  pause(): void;
  resume(): void;
  /** Stops fetching, drains the batches (and windows) in progress, and leaves the group. */
  close(): Promise<void>;
}

export interface Queue {
  admin(): Promise<QueueAdmin>;
  /**
   * Reads partitions of a topic, each from its given offset to the end it had when called (a changelog
   * catching up), in offset order per partition; resolves with the offset after the end of each, which
   * `onEnds` learns before the first record (to report progress).
   */
  replay(topic: string, from: Map<number, string>, onMessage: (m: QueueMessage) => void, onEnds?: (ends: Map<number, string>) => void): Promise<Map<number, string>>;
  /** The partition a key goes to on `topic`, as the producer picks it. */
  partitionOf(topic: string, key: string): Promise<number>;
  producer(): Promise<QueueProducer>;
  consumer(options: ConsumerOptions): Promise<QueueConsumer>;
}
