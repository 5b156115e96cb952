import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { Type } from '@sinclair/typebox';
import { Bandwidth } from '../../lib/bandwidth.ts';
import { allDestinations, type BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import type { LocationLimits } from '../../lib/config/schema.ts';
import type { Logger } from '../../lib/log/logger.ts';
import { reasonCode, type Metrics } from '../../lib/metrics.ts';
import { backoff, DEFAULT_RETRY, type RetryPolicy } from '../../lib/retry.ts';
import { consumeOrdered, Deferred, Limiter, type Lease } from '../../lib/queue/ordered.ts';
import { follow } from '../../lib/queue/follow.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import { LINGER_MS, type Queue, type QueueConsumer, type QueueMessage, type QueueProducer, type TopicPartition } from '../../lib/queue/queue.ts';
import { abortable } from '../../lib/s3/client.ts';
import { isBlobAccount, type BlobAccount } from '../../lib/azure/account.ts';
import { classify, reasonOf } from '../../lib/s3/errors.ts';
import { encode, isPaused, type MalformedMessage, ObjectRef, objectKey, parseMessage, readablePart, pauseKey, PauseState, ReplicationTask, type StatusEvent, TaskDestination, queueNames, type QueueNames } from '../../lib/queue/messages.ts';
import { reject } from '../../lib/queue/rejects.ts';
import { checkAgainstRules } from './rule-check.ts';
import { GroupedSender } from '../../lib/queue/grouped-send.ts';
import { destinationKey, ReplicaMismatch, type Outcome } from './replicate.ts';
import type { Current } from './s3-state.ts';
import { ledgerKey } from './uploads.ts';
import { blobWriter, s3Answers, s3Writer, type DestinationWriter } from './writers.ts';

/** The longest delay Node's timers keep (2^31-1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const MIB = 2 ** 20;

export interface ProcessorOptions {
  queue: Queue;
  logger: Logger;
  /** The destination location this processor writes to: one consumer group per location. */
  location: string;
  /** Its client: an S3 endpoint's, or an Azure Blob Storage account's (type: azure). */
  destination: S3Client | BlobAccount;
  /** Clients of the source locations, by name. */
  sources: Map<string, S3Client>;
  concurrency?: number;
  retry?: Partial<RetryPolicy>;
  names?: QueueNames;
  metrics?: Metrics;
  /** The per-bucket configs as this worker read them: a task is carried out only as far as its rule still asks (rule-check.ts). */
  configs: ReadonlyMap<string, BucketReplicationConfig>;
  /**
   * How long a task no rule of `configs` asks for is held when it may be newer than them (queued after
   * they were read, less CLOCK_SKEW_MS): a rollout under way replaces this worker with one that knows
   * the rule. Then it fails, with the reason. Default 5 minutes; 0 where every role reads one config
   * (local mode).
   */
  unknownRuleWaitMs?: number;
  /** How old a recorded multipart upload nobody resumed gets before it is aborted (default 24 h). */
  uploadMaxAgeMs?: number;
  /** The destination Location's spec.limits: shared by every processor of the location, by the partitions each holds. */
  limits?: LocationLimits | undefined;
  /** Messages of a partition taken in past a slow key before the partition waits for it (ordered.ts' WINDOW by default). */
  window?: number;
}

const UPLOAD_MAX_AGE_MS = 24 * 3600_000;
/** Scan tasks of one batch for one destination bucket that are read ahead with a listing rather than a HEAD each. */
const PREFETCH_MIN = 8;
const PROBE_MAX_MS = 10_000;

export interface ProcessorCounters {
  completed: number;
  skipped: number;
  failed: number;
  bytes: number;
  retries: number;
}

const UNKNOWN_RULE_WAIT_MS = 5 * 60_000;
/** Clocks of the pods that queue tasks and of this one may disagree by this much. */
const CLOCK_SKEW_MS = 60_000;
/** The parts of a task a result can be reported for, when the rest is malformed. */
const ReportableTask = Type.Object({ source: ObjectRef, destinations: Type.Array(TaskDestination, { maxItems: 1000 }) });

/** Stops the work of a partition that is no longer ours (stop, rebalance): its offset stays uncommitted. */
class Stopped extends Error {
  override name = 'Stopped';
}

export class Processor {
  readonly counters: ProcessorCounters = { completed: 0, skipped: 0, failed: 0, bytes: 0, retries: 0 };
  private readonly options: ProcessorOptions;
  private readonly retry: RetryPolicy;
  private readonly log: Logger;
  private consumer: QueueConsumer | undefined;
  private producer: QueueProducer | undefined;
  /** Results go out grouped: many copies finishing together make one produce call. */
  private readonly results = new GroupedSender(() => this.producer);
  private readonly names: QueueNames;
  private readonly limiter: Limiter;
  /** What the copies here may write per second (spec.limits.bandwidthMiBps, this processor's share). */
  private readonly bandwidth: Bandwidth | undefined;
  private pauseState: PauseState | undefined;
  private control: QueueConsumer | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private transitions: Promise<void> = Promise.resolve();
  private following = false;
  private closed = false;
  private failedTransitions = 0;
  /** The probe loop while an endpoint is unreachable (consumption paused meanwhile). */
  private outage: Promise<void> | undefined;
  /** The destination's side of each copy (S3 or Azure Blob Storage). */
  private readonly writer: DestinationWriter;
  /** Ledger keys of the copies under way here: their uploads are not old, whatever their age. */
  private readonly copying = new Set<string>();
  /** Tasks parsed ahead of their turn (by `prefetch`). */
  private readonly parsed = new WeakMap<QueueMessage, ReplicationTask>();
  /** Destination states read ahead, by message and destination id: the first attempt's, in place of a HEAD. */
  private readonly prefetched = new WeakMap<QueueMessage, Map<string, Promise<Current | undefined>>>();
  /** When `configs` were read (this worker's start): what a task queued later may be newer than. */
  private readonly configsReadAt = Date.now();
  /** The source locations that do not serve parts by number (Ceph RGW 16): learned once each, by the first multipart copy. */
  private readonly partsIgnored = new Set<string>();
  private readonly partsMemo = {
    has: (location: string): boolean => this.partsIgnored.has(location),
    add: (location: string): void => {
      if (this.partsIgnored.has(location)) return;
      this.partsIgnored.add(location);
      this.log.info('the source ignores partNumber: its multipart objects are copied whole, or in byte ranges, and checked by MD5', { source: location });
    },
  };

  constructor(options: ProcessorOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.log = options.logger.child({ role: 'processor', destination: options.location });
    this.limiter = new Limiter(this.concurrencyFor(1));
    const mibps = options.limits?.bandwidthMiBps;
    this.bandwidth = mibps !== undefined ? new Bandwidth(mibps * MIB) : undefined;
    const destination = options.destination;
    this.writer = isBlobAccount(destination)
      ? blobWriter(destination)
      : s3Writer({
          client: destination,
          buckets: allDestinations(options.configs.values()).flatMap((d) => (d.Location === options.location ? [d.Bucket] : [])),
          queue: options.queue,
          names: this.names,
          location: options.location,
          producer: () => this.producer,
          log: this.log,
          uploadMaxAgeMs: options.uploadMaxAgeMs ?? UPLOAD_MAX_AGE_MS,
          copying: (key) => this.copying.has(key),
        });
  }

  /** Copies in flight here when this processor holds `share` of the partitions. */
  private concurrencyFor(share: number): number {
    const own = this.options.concurrency ?? 16;
    const limit = this.options.limits?.concurrency;
    return limit === undefined ? own : Math.max(1, Math.min(own, Math.ceil(limit * share)));
  }

  /**
   * The Location's limits are for all its processors together: each takes its share in proportion to
   * the partitions it holds (at least one's), the whole of them when it holds every partition.
   */
  private share(assignment: TopicPartition[], partitions: number): void {
    if (this.options.limits === undefined) return;
    const share = Math.max(1, assignment.filter((tp) => tp.topic === this.names.replication).length) / partitions;
    this.limiter.resize(this.concurrencyFor(share));
    const mibps = this.options.limits.bandwidthMiBps;
    if (this.bandwidth !== undefined && mibps !== undefined) this.bandwidth.setRate(mibps * MIB * share);
    this.log.info('limits of the destination: this processor\'s share', { share, concurrency: this.limiter.max, ...(this.bandwidth !== undefined ? { bytesPerSecond: Math.round(this.bandwidth.bytesPerSecond) } : {}) });
  }

  /** The current pause state of this destination location (undefined: never paused). */
  get pause(): PauseState | undefined {
    return this.pauseState;
  }

  get paused(): boolean {
    return isPaused(this.pauseState);
  }

  get groupId(): string {
    return this.names.processorGroup(this.options.location);
  }

  /** Reads the pause state, then consumes tasks unless paused; follows pause and resume from then on. */
  async start(): Promise<void> {
    // Even paused from the start, this destination's tasks must be kept until it has read them.
    const admin = await this.options.queue.admin();
    try {
      await admin.holdForGroup?.(this.groupId, [this.names.replication]);
    } finally {
      await admin.close();
    }
    this.producer = await this.options.queue.producer();
    await this.writer.start();
    await readToEnd(this.options.queue, this.names.control, (m) => {
      this.onControl(m);
    });
    // A group of its own, so that every processor instance sees every control message.
    this.control = await follow(this.options.queue, this.names.control, (m) => {
      this.onControl(m);
    }, `${this.groupId}-control-${randomUUID()}`);
    this.following = true;
    await this.reconcile();
  }

  /**
   * Pauses consumption while an endpoint of `task` cannot be reached, and probes the source and
   * destination buckets (any answer will do) with backoff until both answer; then consumption resumes.
   */
  private endpointDown(task: ReplicationTask, d: TaskDestination, reason: string): void {
    const consumer = this.consumer;
    if (consumer === undefined || this.outage !== undefined) return;
    const source = this.options.sources.get(task.source.location);
    this.log.warn('endpoint unreachable: consumption paused until it answers', { destination: d.id, source: `${task.source.location}/${task.source.bucket}`, reason });
    consumer.pause();
    this.outage = (async () => {
      for (let attempt = 1; this.consumer === consumer && !this.closed; attempt++) {
        await sleep(Math.min(backoff(attempt, this.retry), PROBE_MAX_MS));
        if ((await this.writer.answers(d.bucket)) && (source === undefined || (await s3Answers(source, task.source.bucket)))) break;
      }
      if (this.consumer === consumer && !this.closed) {
        consumer.resume();
        this.log.info('endpoint reachable again: consumption resumed', { destination: d.id });
      }
      this.outage = undefined;
    })();
  }

  private onControl(m: QueueMessage): void {
    if (m.key !== pauseKey(this.options.location) || m.value === null) return;
    try {
      this.pauseState = parseMessage(PauseState, m.value);
    } catch (err) {
      // The pause state in force stays; the record is not ours to set aside (every processor reads it).
      this.log.warn('malformed pause state ignored', { offset: m.offset, reason: (err as Error).message });
      return;
    }
    if (this.following) void this.reconcile();
  }

  /** Consumes or stops consuming to match the pause state; transitions run one at a time. */
  private reconcile(): Promise<void> {
    this.transitions = this.transitions
      .then(async () => {
        if (this.closed) return;
        clearTimeout(this.resumeTimer);
        const paused = isPaused(this.pauseState);
        this.options.metrics?.paused.set({ location: this.options.location }, paused ? 1 : 0);
        if (paused && this.consumer !== undefined) {
          // Work in flight finishes (or hands its offset back) before the consumer leaves.
          await this.consumer.close();
          this.consumer = undefined;
          this.log.info('paused', { until: this.pauseState?.until });
        } else if (!paused && this.consumer === undefined) {
          await this.consume();
          if (this.pauseState !== undefined) this.log.info('consuming', { resumedAt: new Date().toISOString() });
        }
        const until = this.pauseState?.until;
        if (paused && until !== undefined) {
          // Node fires a delay over 2^31-1 ms at once: a far resume is re-armed from the longest one instead.
          this.resumeTimer = setTimeout(() => void this.reconcile(), Math.min(MAX_TIMER_MS, Math.max(0, Date.parse(until) - Date.now()) + 10));
        }
      })
      .then(() => {
        this.failedTransitions = 0;
      })
      .catch((err: unknown) => {
        // A (re)subscription that failed is tried again: a processor never idles while it looks healthy.
        const retryInMs = Math.min(30_000, 1_000 * 2 ** Math.min(this.failedTransitions++, 5));
        this.log.error('pause or resume failed; retrying', { error: err, retryInMs });
        clearTimeout(this.resumeTimer);
        if (!this.closed) this.resumeTimer = setTimeout(() => void this.reconcile(), retryInMs);
      });
    return this.transitions;
  }

  /** Whether this processor does what its pause state says: consuming unless paused (and its consumer not waiting to start again after a crash). */
  get settled(): boolean {
    return this.closed || (isPaused(this.pauseState) === (this.consumer === undefined) && this.consumer?.consuming() !== false);
  }

  private async consume(): Promise<void> {
    const partitions = this.options.limits !== undefined ? await this.partitionCount() : 1;
    const consumer = await this.options.queue.consumer({ groupId: this.groupId, topics: [this.names.replication], fromBeginning: true, lingerMs: LINGER_MS });
    // Set before it runs: a batch may come before consumeOrdered returns, and may need to pause it.
    this.consumer = consumer;
    try {
      await consumeOrdered(consumer, this.limiter, (message, b) => this.handle(message, b), {
        taken: (messages, lease) => {
          this.prefetch(messages, lease);
        },
        assigned: (assignment) => {
          this.share(assignment, partitions);
        },
        ...(this.options.window !== undefined ? { window: this.options.window } : {}),
      });
    } catch (err) {
      this.consumer = undefined;
      await consumer.close().catch(() => undefined);
      throw err;
    }
  }

  private async partitionCount(): Promise<number> {
    const admin = await this.options.queue.admin();
    try {
      return await admin.partitionCount(this.names.replication);
    } finally {
      await admin.close();
    }
  }

  /**
   * A backfill's tasks come in key order: the destination state of a batch's new objects is read from
   * one listing page per destination bucket rather than a HEAD each (a key absent there costs a GET and
   * a PUT). Only for messages that start their key's chain, so that nothing writes the key before the
   * task runs (ordered.ts `taken`); a key the page does not tell whole, or a failed listing, gets its HEAD.
   */
  private prefetch(messages: QueueMessage[], lease: Lease): void {
    const byBucket = new Map<string, { message: QueueMessage; id: string; key: string }[]>();
    for (const message of messages) {
      let task: ReplicationTask;
      try {
        task = parseMessage(ReplicationTask, message.value);
      } catch {
        continue;
      }
      this.parsed.set(message, task);
      if (task.kind !== 'object' || task.origin !== 'scan') continue;
      for (const d of task.destinations) {
        if (d.location !== this.options.location) continue;
        const entries = byBucket.get(d.bucket) ?? [];
        byBucket.set(d.bucket, entries);
        entries.push({ message, id: d.id, key: destinationKey(task, d) });
      }
    }
    for (const [bucket, entries] of byBucket) {
      if (entries.length < PREFETCH_MIN) continue;
      const states = this.writer.readAhead(bucket, entries.map((e) => e.key), lease.signal)?.catch((): Map<string, Current> => new Map());
      if (states === undefined) continue;
      for (const e of entries) {
        const ahead = this.prefetched.get(e.message) ?? new Map<string, Promise<Current | undefined>>();
        this.prefetched.set(e.message, ahead);
        ahead.set(e.id, states.then((s) => s.get(e.key)));
      }
    }
  }

  private async handle(message: QueueMessage, lease: Lease): Promise<void> {
    let task: ReplicationTask;
    try {
      task = this.parsed.get(message) ?? parseMessage(ReplicationTask, message.value);
    } catch (err) {
      await this.refuseMalformed(message, err as MalformedMessage);
      return;
    }
    const metrics = this.options.metrics;
    for (const d of task.destinations.filter((x) => x.location === this.options.location)) {
      metrics?.inFlight.inc({ destination: this.options.location });
      const copyKey = ledgerKey({ destination: d.id, key: destinationKey(task, d) });
      this.copying.add(copyKey);
      const { outcome, attempts, failure } = await this.attempt(task, d, lease, this.prefetched.get(message)?.get(d.id)).finally(() => {
        this.copying.delete(copyKey);
        metrics?.inFlight.dec({ destination: this.options.location });
      });
      if (outcome.resumedParts !== undefined) this.log.info('multipart copy resumed', { key: task.source.key, versionId: task.source.versionId, destination: d.id, partsAlreadyThere: outcome.resumedParts });
      // Fenced: a partition taken away meanwhile has a new owner, which redoes the task (finding it done,
      // if it is) and reports it. Two members never both report a task.
      if (!lease.isActive()) throw new Stopped('the partition was taken away: its next owner reports the task');
      const event: StatusEvent = {
        type: 'result',
        object: task.source,
        kind: task.kind,
        destination: d.id,
        state: failure !== undefined ? 'FAILED' : outcome.state,
        ...(failure !== undefined ? { reason: failure } : outcome.reason !== undefined ? { reason: outcome.reason } : {}),
        attempts,
        bytes: outcome.bytes,
        ...(outcome.replicaEtag !== undefined ? { replicaEtag: outcome.replicaEtag } : {}),
        ...(outcome.verifiedBy !== undefined ? { verifiedBy: outcome.verifiedBy } : {}),
        at: new Date().toISOString(),
      };
      // The result is durably queued before the offset can be committed: at least once, end to end.
      await this.results.send(this.names.status, [{ key: objectKey(task.source), value: encode(event) }]);
      if (failure !== undefined) {
        this.counters.failed++;
        metrics?.failures.inc({ destination: d.id, reason: reasonCode(failure) });
      } else if (outcome.state === 'SKIPPED') {
        this.counters.skipped++;
        metrics?.skipped.inc({ destination: d.id });
      } else {
        this.counters.completed++;
        this.counters.bytes += outcome.bytes;
        // A change found already applied (a duplicate, a retry) is not counted twice.
        if (outcome.reason === undefined) {
          metrics?.replicatedObjects.inc({ destination: d.id });
          metrics?.replicatedBytes.inc({ destination: d.id }, outcome.bytes);
          metrics?.latency.observe({ destination: d.id }, Math.max(0, Date.now() - Date.parse(task.eventTime)) / 1000);
        }
      }
    }
  }

  /**
   * A task that does not fit its schema: FAILED with the reason for each of this location's destinations
   * where the version and destinations can be read (the status role lists it), and set aside.
   */
  private async refuseMalformed(message: QueueMessage, err: MalformedMessage): Promise<void> {
    const reason = `malformed task refused: ${err.message}`;
    const decoded = readablePart(ReportableTask, message.value);
    if (decoded !== undefined) {
      const at = new Date().toISOString();
      const results = decoded.destinations
        .filter((d) => d.location === this.options.location)
        .map((d): StatusEvent => ({ type: 'result', object: decoded.source, destination: d.id, state: 'FAILED', reason, attempts: 0, bytes: 0, at }));
      await this.results.send(this.names.status, results.map((e) => ({ key: objectKey(decoded.source), value: encode(e) })));
      this.counters.failed += results.length;
    }
    await reject({ names: this.names, logger: this.log, metrics: this.options.metrics, send: (topic, records) => this.results.send(topic, records) }, message, err.message);
  }

  /**
   * A destination no rule asks for (checkAgainstRules). Queued before this worker read its rules: the
   * rule changed since, and nothing is done (SKIPPED, with the reason). Possibly queued after: held while
   * a rollout may replace this worker, then FAILED with the reason (a retry re-checks it).
   */
  private async unwanted(task: ReplicationTask, d: TaskDestination, refused: string, lease: Lease): Promise<{ outcome: Outcome; attempts: number; failure?: string }> {
    const queuedAt = Date.parse(task.queuedAt ?? task.eventTime);
    const what = task.kind === 'versionDelete' || task.kind === 'deleteMarker' ? 'nothing deleted' : 'nothing copied';
    const fields = { key: task.source.key, versionId: task.source.versionId, destination: d.id, reason: refused };
    if (queuedAt < this.configsReadAt - CLOCK_SKEW_MS) {
      this.log.info('task no longer wanted', fields);
      return { outcome: { state: 'SKIPPED', reason: `${refused}: ${what}`, bytes: 0 }, attempts: 0 };
    }
    const wait = this.options.unknownRuleWaitMs ?? UNKNOWN_RULE_WAIT_MS;
    if (wait > 0) this.log.warn('task for a rule this worker does not know: held while a newer worker may take it', { ...fields, waitMs: wait });
    await this.waitBeforeRetry(wait, lease);
    this.log.warn('task refused: no rule of this worker asks for it', fields);
    return { outcome: { state: 'COMPLETED', bytes: 0 }, attempts: 0, failure: `refused: ${refused}, in the rules this worker read at ${new Date(this.configsReadAt).toISOString()}: ${what}` };
  }

  /**
   * Runs one copy with the retry policy. An unreachable endpoint is waited for as long as it takes, with
   * the consumer paused (endpointDown), not inside the task.
   */
  private async attempt(task: ReplicationTask, queued: TaskDestination, lease: Lease, ahead?: Promise<Current | undefined>): Promise<{ outcome: Outcome; attempts: number; failure?: string }> {
    const checked = checkAgainstRules(this.options.configs, task, queued);
    if ('refused' in checked) return this.unwanted(task, queued, checked.refused, lease);
    const d = checked.destination;
    const source = this.options.sources.get(task.source.location);
    const none: Outcome = { state: 'COMPLETED', bytes: 0 };
    if (source === undefined) return { outcome: none, attempts: 0, failure: `unknown source location "${task.source.location}"` };
    // Every call of the copy ends when the lease is aborted (the partition taken away, drained).
    const bandwidth = this.bandwidth;
    const rule = { replicateReplicas: checked.replicateReplicas, replicateDeleteMarkers: checked.replicateDeleteMarkers, partsIgnored: this.partsMemo, ...(bandwidth !== undefined ? { throttle: () => bandwidth.stream() } : {}) };
    const copy = async (attempt: number): Promise<Outcome> => {
      // A retry reads the destination again (the first attempt may have written it), as does a task
      // whose rule now gives another key prefix (what was read ahead is the queued key's).
      const known = attempt === 1 && destinationKey(task, d) === destinationKey(task, queued) ? await ahead : undefined;
      return this.writer.copy({ source: abortable(source, lease.signal), task, destination: d, signal: lease.signal, rule, known });
    };
    for (let attempt = 1; ; attempt++) {
      try {
        return { outcome: await copy(attempt), attempts: attempt };
      } catch (err) {
        if (lease.signal.aborted) throw new Stopped('aborted: the partition was taken away');
        const kind = err instanceof ReplicaMismatch ? 'transient' : classify(err);
        const reason = err instanceof ReplicaMismatch ? err.message : reasonOf(err);
        const fields = { key: task.source.key, versionId: task.source.versionId, destination: d.id, attempt, reason };
        if (kind === 'permanent') {
          this.log.warn('replication failed', fields);
          return { outcome: none, attempts: attempt, failure: reason };
        }
        if (kind === 'transient' && attempt >= this.retry.maxAttempts) {
          this.log.warn('replication failed after retries', fields);
          return { outcome: none, attempts: attempt, failure: `gave up after ${attempt} attempts: ${reason}` };
        }
        this.counters.retries++;
        if (kind === 'unavailable') {
          // Not waited for in the task: the consumer pauses (keeping its partitions) until a probe
          // reaches the endpoints again, and this task is redelivered then.
          this.endpointDown(task, d, reason);
          throw new Deferred('an endpoint is unreachable: the task waits for it');
        }
        if (attempt === 1 || attempt % 10 === 0) this.log.info('retrying', fields);
        await this.waitBeforeRetry(backoff(attempt, this.retry), lease);
      }
    }
  }

  private async waitBeforeRetry(ms: number, lease: Lease): Promise<void> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (!lease.isActive()) throw new Stopped('stopping: the task will be redelivered');
      await sleep(Math.min(250, until - Date.now()));
    }
  }

  /** Stops taking tasks, lets copies in flight finish (or hand back their offsets), commits, leaves. */
  async close(): Promise<void> {
    this.closed = true;
    await this.transitions;
    clearTimeout(this.resumeTimer);
    await this.control?.close();
    await this.consumer?.close();
    this.consumer = undefined;
    await this.writer.close();
    await this.producer?.close();
  }
}
