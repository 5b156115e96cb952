import { FormatRegistry, KindGuard, Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { CompiledDestination } from '../config/bucket-config.ts';
import type { OutgoingRecord, TopicSpec } from './queue.ts';
import type { ChangeKind } from '../journal/change.ts';

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
  /** Messages of this engine's own topics that failed their check (parseMessage), with the reason. */
  rejected: string;
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
    rejected: `${prefix}-rejected`,
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

// Every message is checked against its schema where it is read (parseMessage): a record that does not
// fit is refused with the reason, never acted on by a cast.

/** The longest name, key, version id or ETag a message carries (S3 keys are at most 1024 bytes). */
export const MAX_TEXT = 1024;
export const Str = Type.String({ minLength: 1, maxLength: MAX_TEXT });
/** An S3 object key, possibly empty in some servers' listings. */
const ObjectKeyText = Type.String({ maxLength: MAX_TEXT });
export const Time = Type.String({ format: 'date-time' });
export const Count = Type.Integer({ minimum: 0 });

export const ChangeKindSchema = Type.Union([Type.Literal('object'), Type.Literal('deleteMarker'), Type.Literal('versionDelete'), Type.Literal('tags')]);
// The schema and journal/change.ts's documented type name the same kinds (a compile error otherwise).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const KINDS_AGREE: Same<Static<typeof ChangeKindSchema>, ChangeKind> = true;

export const ObjectRef = Type.Object({ location: Str, bucket: Str, key: ObjectKeyText, versionId: Str });
export type ObjectRef = Static<typeof ObjectRef>;

export const TaskDestination = Type.Object({
  /** `location/bucket` */
  id: Str,
  location: Str,
  bucket: Str,
  storageClass: Type.Optional(Str),
  keyPrefix: Type.Optional(ObjectKeyText),
  sse: Type.Optional(Type.Union([Type.Literal('AES256'), Type.Literal('aws:kms')])),
  kmsKeyId: Type.Optional(Str),
  rule: Str,
});
export type TaskDestination = Static<typeof TaskDestination>;

/** A destination of a compiled rule, as tasks carry it. */
export function taskDestination(d: CompiledDestination, rule: string): TaskDestination {
  return {
    id: d.Id,
    location: d.Location,
    bucket: d.Bucket,
    rule,
    ...(d.StorageClass !== undefined ? { storageClass: d.StorageClass } : {}),
    ...(d.KeyPrefix !== undefined ? { keyPrefix: d.KeyPrefix } : {}),
    ...(d.ServerSideEncryption !== undefined ? { sse: d.ServerSideEncryption } : {}),
    ...(d.KMSKeyId !== undefined ? { kmsKeyId: d.KMSKeyId } : {}),
  };
}

export const ReplicationTask = Type.Object({
  source: ObjectRef,
  kind: ChangeKindSchema,
  size: Type.Optional(Count),
  etag: Type.Optional(Str),
  eventTime: Time,
  /** The version's Last-Modified to the ms, where the journal told it (see ChangeRecord.modTime). */
  modTime: Type.Optional(Type.Integer({ minimum: 0, maximum: 8_640_000_000_000_000 })),
  destinations: Type.Array(TaskDestination, { maxItems: 1000 }),
  origin: Type.Union([Type.Literal('notification'), Type.Literal('scan'), Type.Literal('retry')]),
  /**
   * When it was queued: a processor whose config was read before then may not know the rule yet (see
   * processor.ts). Absent in tasks queued before it was recorded.
   */
  queuedAt: Type.Optional(Time),
});
export type ReplicationTask = Static<typeof ReplicationTask>;

export const DestinationStateSchema = Type.Union([Type.Literal('PENDING'), Type.Literal('COMPLETED'), Type.Literal('FAILED'), Type.Literal('SKIPPED')]);
export type DestinationState = Static<typeof DestinationStateSchema>;

/** DELETED: removed from the transient source after verification; REFUSED: a check failed, nothing deleted. */
export const GcStateSchema = Type.Union([Type.Literal('DELETED'), Type.Literal('REFUSED')]);
export type GcState = Static<typeof GcStateSchema>;

export const Reason = Type.String({ maxLength: 64 * 1024 });

export const StatusEvent = Type.Union([
  Type.Object({
    type: Type.Literal('queued'),
    object: ObjectRef,
    kind: ChangeKindSchema,
    eventTime: Time,
    size: Type.Optional(Count),
    destinations: Type.Array(Str, { maxItems: 1000 }),
    targets: Type.Array(TaskDestination, { maxItems: 1000 }),
    /**
     * The source Location was transient for the worker that queued the change. The status role sends
     * the version to the GC on this mark, whatever config it started with: a status pod started before
     * the Location was published (a rollout in progress) must not fold the version to COMPLETED
     * without a GC task. The GC checks the Location is still transient before it deletes anything.
     */
    transient: Type.Optional(Type.Boolean()),
    at: Time,
  }),
  Type.Object({
    type: Type.Literal('result'),
    object: ObjectRef,
    /** The task's kind (absent in results written before it was recorded: the version's own). */
    kind: Type.Optional(ChangeKindSchema),
    destination: Str,
    state: Type.Union([Type.Literal('COMPLETED'), Type.Literal('FAILED'), Type.Literal('SKIPPED')]),
    reason: Type.Optional(Reason),
    attempts: Count,
    bytes: Count,
    replicaEtag: Type.Optional(Str),
    /** How the replica was checked when its ETag cannot be the source's (absent: the same ETag). */
    verifiedBy: Type.Optional(Type.Union([Type.Literal('md5'), Type.Literal('size')])),
    at: Time,
  }),
  Type.Object({ type: Type.Literal('gc'), object: ObjectRef, state: GcStateSchema, reason: Type.Optional(Reason), at: Time }),
]);
export type StatusEvent = Static<typeof StatusEvent>;

/** The pause state of a destination location; the newest one wins. */
export const PauseState = Type.Object({
  location: Str,
  paused: Type.Boolean(),
  /** A scheduled resume: paused only until then. */
  until: Type.Optional(Time),
  at: Time,
});
export type PauseState = Static<typeof PauseState>;

export const pauseKey = (location: string): string => `pause/${location}`;

export function isPaused(state: PauseState | undefined, now = Date.now()): boolean {
  return state?.paused === true && (state.until === undefined || Date.parse(state.until) > now);
}

/** Sent to the GC when every destination holds an object version of a transient source. */
export const GcTask = Type.Object({
  object: ObjectRef,
  targets: Type.Array(TaskDestination, { maxItems: 1000 }),
  completedAt: Time,
  /**
   * A version skipped everywhere as superseded: deleted once this newer version of the key is verified
   * on every destination (it is what the destinations hold instead).
   */
  supersededBy: Type.Optional(ObjectRef),
  /**
   * A delete marker whose replication settled, left with no object version under it that is not
   * collected yet: it hides nothing, and goes once the source confirms that (as S3 lifecycle's expired
   * object delete markers do).
   */
  deleteMarker: Type.Optional(Type.Literal(true)),
});
export type GcTask = Static<typeof GcTask>;

export const objectKey = (o: Pick<ObjectRef, 'location' | 'bucket' | 'key'>): string => `${o.location}/${o.bucket}/${o.key}`;
export const versionKey = (o: ObjectRef): string => `${objectKey(o)}?versionId=${o.versionId}`;

export const encode = (value: unknown): string => JSON.stringify(value);
export function decode(value: Buffer | null): unknown {
  if (value === null) throw new MalformedMessage('empty message');
  try {
    return JSON.parse(value.toString('utf8'));
  } catch (err) {
    throw new MalformedMessage(`not JSON: ${(err as Error).message}`);
  }
}

/** What `schema` describes of a message that failed its own check, when that much can be read (to report the refusal against its version). */
export function readablePart<T extends TSchema>(schema: T, value: Buffer | null): Static<T> | undefined {
  try {
    return parseMessage(schema, value);
  } catch {
    return undefined;
  }
}

/** A queue message that is not what its topic carries: refused with this reason, never acted on. */
export class MalformedMessage extends Error {
  override name = 'MalformedMessage';
}

/** An RFC 3339 time, as every message carries them (Date.parse alone takes "Dec 4 2026"). */
export const isTimestamp = (v: string): boolean => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v) && !Number.isNaN(Date.parse(v));
// Formats TypeBox checks only once they are registered.
if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', isTimestamp);

const checkers = new WeakMap<TSchema, TypeCheck<TSchema>>();

/** Of a union of objects told apart by `type`, the one `value` claims to be: its errors say more than "Expected union value". */
function variantOf(schema: TSchema, value: unknown): TSchema {
  if (!KindGuard.IsUnion(schema) || typeof value !== 'object' || value === null) return schema;
  const { type } = value as { type?: unknown };
  return schema.anyOf.find((s) => KindGuard.IsObject(s) && KindGuard.IsLiteral(s.properties['type']) && s.properties['type'].const === type) ?? schema;
}

/** The message decoded and checked against `schema`; MalformedMessage says where it does not fit. */
export function parseMessage<T extends TSchema>(schema: T, value: Buffer | null): Static<T> {
  const decoded = decode(value);
  let check = checkers.get(schema) as TypeCheck<T> | undefined;
  if (check === undefined) checkers.set(schema, (check = TypeCompiler.Compile(schema)));
  if (check.Check(decoded)) return decoded;
  const errors = [...Value.Errors(variantOf(schema, decoded), decoded)].slice(0, 3).map((e) => `${e.path === '' ? '/' : e.path}: ${e.message}`);
  throw new MalformedMessage(errors.join('; ').slice(0, 500));
}

/** Counts of object versions for one source bucket and one destination, as the status processor holds them. */
export const Figures = Type.Object({ source: Str, destination: Str, replicated: Count, pending: Count, failed: Count, at: Time });
export type Figures = Static<typeof Figures>;

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
    { topic: names.rejected, partitions: 1 },
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
 * a listing of thousands of versions quick on Kafka); through a GroupedSender, the tasks of concurrent
 * calls share their sends too. New tasks announce their destinations first, so
 * that the status processor knows every destination before any result arrives. A retry sends the task
 * first (`tasksFirst`): the version is already known, and a failed second send must leave it FAILED
 * (listed, retryable) rather than PENDING with no task.
 */
export async function queueTasks(producer: { send(topic: string, records: OutgoingRecord[]): Promise<unknown> }, names: QueueNames, planned: PlannedTask[], options: { tasksFirst?: boolean } = {}): Promise<void> {
  for (let i = 0; i < planned.length; i += SEND_BATCH) {
    const batch = planned.slice(i, i + SEND_BATCH);
    const queuedAt = new Date().toISOString();
    const sends: [string, OutgoingRecord[]][] = [
      [names.status, batch.map((p) => ({ key: p.key, value: encode(p.queued) }))],
      [names.replication, batch.map((p) => ({ key: p.key, value: encode({ ...p.task, queuedAt }) }))],
    ];
    if (options.tasksFirst === true) sends.reverse();
    for (const [topic, records] of sends) await producer.send(topic, records);
  }
}
