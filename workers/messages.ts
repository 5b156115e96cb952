import type { OutgoingRecord, QueueProducer, TopicSpec } from '../lib/queue/queue.ts';
import type { ChangeKind } from './journal/change.ts';

// What flows between the roles. Records are keyed by `location/bucket/key`, so every version of a key
// stays in one partition and in order, from populator to status.

/**
 * Topic and consumer-group names of one installation. The prefix keeps installations that share a Kafka
 * cluster apart (as Backbeat's KAFKA_TOPIC_PREFIX does).
 */
export interface QueueNames {
  replication: string;
  status: string;
  /**
   * Compacted changelog of the status store: the latest status of each object version, and each
   * partition's totals, written to the partition of the status topic they come from.
   */
  statusStore: string;
  /** Compacted: which status replica (its API's URL) owns each partition of the status topic. */
  statusOwners: string;
  /** Journal messages that could not be understood, with the reason, for an operator to inspect. */
  journalFailed: string;
  /** Object versions of a transient source that every destination holds: candidates for deletion. */
  gc: string;
  /** Compacted: operator controls, e.g. the pause state of each destination location. */
  control: string;
  /** Compacted: the multipart uploads this engine has under way, by destination and key (see processor/uploads.ts). */
  uploads: string;
  /** Compacted: replicated/pending/failed counts per source bucket and destination, for the operator. */
  figures: string;
  populatorGroup(location: string): string;
  processorGroup(location: string): string;
  statusGroup: string;
  gcGroup: string;
}

export function queueNames(prefix = 'backbeat'): QueueNames {
  return {
    replication: `${prefix}-replication`,
    status: `${prefix}-replication-status`,
    statusStore: `${prefix}-status-store`,
    statusOwners: `${prefix}-status-owners`,
    journalFailed: `${prefix}-journal-failed`,
    gc: `${prefix}-gc`,
    control: `${prefix}-control`,
    uploads: `${prefix}-uploads`,
    figures: `${prefix}-figures`,
    populatorGroup: (location) => `${prefix}-populator-${location}`,
    processorGroup: (location) => `${prefix}-processor-${location}`,
    statusGroup: `${prefix}-status`,
    gcGroup: `${prefix}-gc`,
  };
}

export interface ObjectRef {
  location: string;
  bucket: string;
  key: string;
  versionId: string;
}

export interface TaskDestination {
  /** `location/bucket` */
  id: string;
  location: string;
  bucket: string;
  storageClass?: string;
  keyPrefix?: string;
  rule: string;
}

export interface ReplicationTask {
  source: ObjectRef;
  kind: ChangeKind;
  size?: number;
  etag?: string;
  eventTime: string;
  destinations: TaskDestination[];
  origin: 'notification' | 'scan' | 'retry';
}

export type DestinationState = 'PENDING' | 'COMPLETED' | 'FAILED' | 'SKIPPED';

export type StatusEvent =
  | {
      type: 'queued';
      object: ObjectRef;
      kind: ChangeKind;
      eventTime: string;
      size?: number;
      destinations: string[];
      targets: TaskDestination[];
      /**
       * The source Location was transient for the worker that queued the change. The status role sends
       * the version to the GC on this mark, whatever config it started with: a status pod started before
       * the Location was published (a rollout in progress) must not fold the version to COMPLETED
       * without a GC task. The GC checks the Location is still transient before it deletes anything.
       */
      transient?: boolean;
      at: string;
    }
  | {
      type: 'result';
      object: ObjectRef;
      /** The task's kind (absent in results written before it was recorded: the version's own). */
      kind?: ChangeKind;
      destination: string;
      state: Exclude<DestinationState, 'PENDING'>;
      reason?: string;
      attempts: number;
      bytes: number;
      replicaEtag?: string;
      at: string;
    }
  | { type: 'gc'; object: ObjectRef; state: GcState; reason?: string; at: string };

/** The pause state of a destination location; the newest one wins. */
export interface PauseState {
  location: string;
  paused: boolean;
  /** A scheduled resume: paused only until then. */
  until?: string;
  at: string;
}

export const pauseKey = (location: string): string => `pause/${location}`;

export function isPaused(state: PauseState | undefined, now = Date.now()): boolean {
  return state?.paused === true && (state.until === undefined || Date.parse(state.until) > now);
}

/** DELETED: removed from the transient source after verification; REFUSED: a check failed, nothing deleted. */
export type GcState = 'DELETED' | 'REFUSED';

/** Sent to the GC when every destination holds an object version of a transient source. */
export interface GcTask {
  object: ObjectRef;
  targets: TaskDestination[];
  completedAt: string;
  /**
   * A version skipped everywhere as superseded: deleted once this newer version of the key is verified
   * on every destination (it is what the destinations hold instead).
   */
  supersededBy?: ObjectRef;
  /**
   * A delete marker whose replication settled, left with no object version under it that is not
   * collected yet: it hides nothing, and goes once the source confirms that (as S3 lifecycle's expired
   * object delete markers do).
   */
  deleteMarker?: true;
}

export const objectKey = (o: Pick<ObjectRef, 'location' | 'bucket' | 'key'>): string => `${o.location}/${o.bucket}/${o.key}`;
export const versionKey = (o: ObjectRef): string => `${objectKey(o)}?versionId=${o.versionId}`;

export const encode = (value: unknown): string => JSON.stringify(value);
export function decode(value: Buffer | null): unknown {
  if (value === null) throw new Error('empty message');
  return JSON.parse(value.toString('utf8'));
}

/** Counts of object versions for one source bucket and one destination, as the status processor holds them. */
export interface Figures {
  source: string;
  destination: string;
  replicated: number;
  pending: number;
  failed: number;
  at: string;
}

export const figuresKey = (source: string, destination: string): string => `${source} -> ${destination}`;
/** The figures topic holds one record per status partition; the operator adds them up per figuresKey. */
export const partitionFiguresKey = (source: string, destination: string, partition: number): string => `${figuresKey(source, destination)} #${String(partition)}`;

/**
 * How long Kafka keeps the tasks and events of an installation (and the journals it creates): a
 * destination paused or down longer loses what it had not consumed. backbeat_queue_expiring_messages
 * (alert BackbeatTasksExpiring) counts unconsumed messages past half of it.
 */
export const TASK_RETENTION_MS = 7 * 24 * 3600_000;

/** Every topic of an installation, plus the journal topics of its source locations. */
export function installationTopics(names: QueueNames, partitions: number, journalTopics: Iterable<string>): TopicSpec[] {
  const compact = { 'cleanup.policy': 'compact' };
  const kept = { 'retention.ms': String(TASK_RETENTION_MS) };
  return [
    { topic: names.replication, partitions, config: kept },
    { topic: names.status, partitions, config: kept },
    // Written a folded batch per record batch (atomic per partition), so allowed larger than the default.
    // Segments of 64 MiB rather than 1 GiB: Kafka compacts only closed segments, and a full restore
    // (a new status pod) should read about one record per version, not every state each one went through.
    { topic: names.statusStore, partitions, config: { ...compact, 'max.message.bytes': String(16 * 1024 * 1024), 'segment.bytes': String(64 * 1024 * 1024) } },
    { topic: names.statusOwners, partitions: 1, config: compact },
    { topic: names.journalFailed, partitions: 1 },
    { topic: names.gc, partitions, config: kept },
    { topic: names.control, partitions: 1, config: compact },
    { topic: names.uploads, partitions: 1, config: compact },
    { topic: names.figures, partitions: 1, config: compact },
    ...[...new Set(journalTopics)].map((topic) => ({ topic, partitions, config: kept })),
  ];
}

/** A task ready to queue, with the `queued` status event that announces its destinations. */
export interface PlannedTask {
  key: string;
  queued: StatusEvent;
  task: ReplicationTask;
}

/** Records per send: well under Kafka's default 1 MB request, whatever the destinations per task. */
const SEND_BATCH = 100;

/**
 * Queues tasks SEND_BATCH at a time, in one send per batch and topic rather than two per task (what makes
 * a listing of thousands of versions quick on Kafka). New tasks announce their destinations first, so
 * that the status processor knows every destination before any result arrives. A retry sends the task
 * first (`tasksFirst`): the version is already known, and a failed second send must leave it FAILED
 * (listed, retryable) rather than PENDING with no task.
 */
export async function queueTasks(producer: QueueProducer, names: QueueNames, planned: PlannedTask[], options: { tasksFirst?: boolean } = {}): Promise<void> {
  for (let i = 0; i < planned.length; i += SEND_BATCH) {
    const batch = planned.slice(i, i + SEND_BATCH);
    const sends: [string, OutgoingRecord[]][] = [
      [names.status, batch.map((p) => ({ key: p.key, value: encode(p.queued) }))],
      [names.replication, batch.map((p) => ({ key: p.key, value: encode(p.task) }))],
    ];
    if (options.tasksFirst === true) sends.reverse();
    for (const [topic, records] of sends) await producer.send(topic, records);
  }
}
