import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Logger } from '../../lib/log/logger.ts';
import { reasonCode, type Metrics } from '../../lib/metrics.ts';
import { consumeOrdered, Limiter } from '../../lib/queue/ordered.ts';
import { follow } from '../../lib/queue/follow.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import type { Batch, Queue, QueueConsumer, QueueMessage, QueueProducer } from '../../lib/queue/queue.ts';
import { classify, reasonOf } from '../../lib/s3/errors.ts';
import { decode, encode, isPaused, objectKey, pauseKey, type PauseState, type ReplicationTask, type StatusEvent, type TaskDestination, queueNames, type QueueNames } from '../messages.ts';
import { replicate, ReplicaMismatch, type Outcome } from './replicate.ts';

export interface RetryPolicy {
  /** Attempts for a transient failure (5xx, throttling) before the object is FAILED. */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 500, maxDelayMs: 30_000 };

export interface ProcessorOptions {
  queue: Queue;
  logger: Logger;
  /** The destination location this processor writes to: one consumer group per location. */
  location: string;
  destination: S3Client;
  /** Clients of the source locations, by name. */
  sources: Map<string, S3Client>;
  concurrency?: number;
  retry?: Partial<RetryPolicy>;
  names?: QueueNames;
  metrics?: Metrics;
}

export interface ProcessorCounters {
  completed: number;
  skipped: number;
  failed: number;
  bytes: number;
  retries: number;
}

/** Stops the work of a batch that is no longer ours (stop, rebalance): its offset stays uncommitted. */
class Stopped extends Error {
  override name = 'Stopped';
}

/** Exponential backoff with full jitter: spreads retries of many objects after a shared outage. */
export function backoff(attempt: number, policy: RetryPolicy): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

export class Processor {
  readonly counters: ProcessorCounters = { completed: 0, skipped: 0, failed: 0, bytes: 0, retries: 0 };
  private readonly options: ProcessorOptions;
  private readonly retry: RetryPolicy;
  private readonly log: Logger;
  private consumer: QueueConsumer | undefined;
  private producer: QueueProducer | undefined;
  private readonly names: QueueNames;
  private readonly limiter: Limiter;
  private pauseState: PauseState | undefined;
  private control: QueueConsumer | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private transitions: Promise<void> = Promise.resolve();
  private following = false;
  private closed = false;

  constructor(options: ProcessorOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.log = options.logger.child({ role: 'processor', destination: options.location });
    this.limiter = new Limiter(options.concurrency ?? 16);
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

  private onControl(m: QueueMessage): void {
    if (m.key !== pauseKey(this.options.location) || m.value === null) return;
    this.pauseState = decode(m.value) as PauseState;
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
          this.resumeTimer = setTimeout(() => void this.reconcile(), Math.max(0, Date.parse(until) - Date.now()) + 10);
        }
      })
      .catch((err: unknown) => {
        this.log.error('pause or resume failed', { error: err });
      });
    return this.transitions;
  }

  private async consume(): Promise<void> {
    const consumer = await this.options.queue.consumer({ groupId: this.groupId, topics: [this.names.replication], fromBeginning: true });
    this.consumer = consumer;
    await consumeOrdered(consumer, this.limiter, (message, b) => this.handle(message, b));
  }

  private async handle(message: QueueMessage, batch: Batch): Promise<void> {
    let task: ReplicationTask;
    try {
      task = decode(message.value) as ReplicationTask;
    } catch (err) {
      this.log.error('unreadable task skipped', { partition: message.partition, offset: message.offset, error: (err as Error).message });
      return;
    }
    const metrics = this.options.metrics;
    for (const d of task.destinations.filter((x) => x.location === this.options.location)) {
      metrics?.inFlight.inc({ destination: this.options.location });
      const { outcome, attempts, failure } = await this.attempt(task, d, batch).finally(() => metrics?.inFlight.dec({ destination: this.options.location }));
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
        at: new Date().toISOString(),
      };
      // The result is durably queued before the offset can be committed: at least once, end to end.
      await this.producer?.send(this.names.status, [{ key: objectKey(task.source), value: encode(event) }]);
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

  /** Runs one copy with the retry policy; an unreachable endpoint is waited for as long as it takes. */
  private async attempt(task: ReplicationTask, d: TaskDestination, batch: Batch): Promise<{ outcome: Outcome; attempts: number; failure?: string }> {
    const source = this.options.sources.get(task.source.location);
    const none: Outcome = { state: 'COMPLETED', bytes: 0 };
    if (source === undefined) return { outcome: none, attempts: 0, failure: `unknown source location "${task.source.location}"` };
    const ctx = { source, destination: this.options.destination };
    for (let attempt = 1; ; attempt++) {
      try {
        return { outcome: await replicate(ctx, task, d), attempts: attempt };
      } catch (err) {
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
        if (attempt === 1 || attempt % 10 === 0) this.log.info(kind === 'unavailable' ? 'endpoint unavailable, waiting' : 'retrying', fields);
        await this.waitBeforeRetry(backoff(attempt, this.retry), batch);
      }
    }
  }

  private async waitBeforeRetry(ms: number, batch: Batch): Promise<void> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (!batch.isActive()) throw new Stopped('stopping: the task will be redelivered');
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
    await this.producer?.close();
  }
}
