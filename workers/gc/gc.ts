import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { consumeOrdered, Limiter } from '../../lib/queue/ordered.ts';
import type { Batch, Queue, QueueConsumer, QueueProducer } from '../../lib/queue/queue.ts';
import { unquote } from '../../lib/s3/etag.ts';
import { classify, isNotFound, reasonOf } from '../../lib/s3/errors.ts';
import { REPLICA_VERSION_META } from '../journal/change.ts';
import { decode, encode, objectKey, queueNames, type GcState, type GcTask, type QueueNames, type StatusEvent, type TaskDestination } from '../messages.ts';
import { keyHistory } from '../processor/s3-state.ts';

export interface GcOptions {
  queue: Queue;
  logger: Logger;
  /** S3 clients of every location, by name. */
  clients: Map<string, S3Client>;
  /** Waits this long after an object completed before deleting its source copy. */
  delayMs?: number;
  names?: QueueNames;
  concurrency?: number;
  metrics?: Metrics;
}

export interface GcCounters {
  deleted: number;
  refused: number;
}


/**
 * Deletes object versions from a transient source, each only after re-verifying that every destination
 * holds a replica of that very version (marked with its version id, same size, same ETag). When any
 * check fails it deletes nothing and records why.
 */
export class GarbageCollector {
  readonly counters: GcCounters = { deleted: 0, refused: 0 };
  private readonly options: GcOptions;
  private readonly names: QueueNames;
  private consumer: QueueConsumer | undefined;
  private producer: QueueProducer | undefined;

  constructor(options: GcOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
  }

  async start(): Promise<void> {
    this.producer = await this.options.queue.producer();
    const consumer = await this.options.queue.consumer({ groupId: this.names.gcGroup, topics: [this.names.gc], fromBeginning: true });
    this.consumer = consumer;
    const limiter = new Limiter(this.options.concurrency ?? 8);
    await consumeOrdered(consumer, limiter, async (message, b) => {
      let task: GcTask;
      try {
        task = decode(message.value) as GcTask;
        objectKey(task.object);
      } catch (err) {
        this.options.logger.error('unreadable GC task skipped', { partition: message.partition, offset: message.offset, error: (err as Error).message });
        return;
      }
      await this.waitForDelay(task, b);
      const { state, reason } = await this.collect(task, b);
      const event: StatusEvent = { type: 'gc', object: task.object, state, ...(reason !== undefined ? { reason } : {}), at: new Date().toISOString() };
      await this.producer?.send(this.names.status, [{ key: objectKey(task.object), value: encode(event) }]);
      this.counters[state === 'DELETED' ? 'deleted' : 'refused']++;
      (state === 'DELETED' ? this.options.metrics?.gcDeleted : this.options.metrics?.gcRefused)?.inc({ location: task.object.location });
    });
  }

  private async waitForDelay(task: GcTask, batch: Batch): Promise<void> {
    const due = Date.parse(task.completedAt) + (this.options.delayMs ?? 0);
    while (Date.now() < due) {
      if (!batch.isActive()) throw new Error('stopping before the GC delay elapsed');
      await sleep(Math.min(250, due - Date.now()));
    }
  }

  private client(location: string): S3Client {
    const c = this.options.clients.get(location);
    if (c === undefined) throw new Error(`no S3 client for location "${location}"`);
    return c;
  }

  /** Why `target` does not verifiably hold the source version, or undefined when it does. */
  private async checkReplica(task: GcTask, target: TaskDestination, source: HeadObjectCommandOutput): Promise<string | undefined> {
    const s3 = this.client(target.location);
    const key = `${target.keyPrefix ?? ''}${task.object.key}`;
    const marked: HeadObjectCommandOutput[] = [];
    for (const entry of await keyHistory(s3, target.bucket, key)) {
      if (entry.isDeleteMarker) continue;
      let head: HeadObjectCommandOutput;
      try {
        head = await s3.send(new HeadObjectCommand({ Bucket: target.bucket, Key: key, VersionId: entry.versionId }));
      } catch (err) {
        if (isNotFound(err)) continue;
        throw err;
      }
      if (head.Metadata?.[REPLICA_VERSION_META] === task.object.versionId) marked.push(head);
    }
    if (marked.length === 0) return `${target.id}: no replica of this version`;
    const good = marked.find((h) => h.ContentLength === source.ContentLength && unquote(h.ETag) === unquote(source.ETag));
    if (good !== undefined) return undefined;
    const [h] = marked;
    if (h === undefined || h.ContentLength !== source.ContentLength) {
      return `${target.id}: replica size ${String(h?.ContentLength)} differs from source size ${String(source.ContentLength)}`;
    }
    return `${target.id}: replica ETag ${unquote(h.ETag)} differs from source ETag ${unquote(source.ETag)}`;
  }

  private async collect(task: GcTask, batch: Batch): Promise<{ state: GcState; reason?: string }> {
    const { object } = task;
    const source = this.client(object.location);
    for (let attempt = 1; ; attempt++) {
      try {
        let head: HeadObjectCommandOutput;
        try {
          head = await source.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key, VersionId: object.versionId }));
        } catch (err) {
          if (isNotFound(err)) return { state: 'DELETED', reason: 'already gone from the source' };
          throw err;
        }
        if (task.targets.length === 0) return { state: 'REFUSED', reason: 'no destination is known for this version' };
        const problems = (await Promise.all(task.targets.map((t) => this.checkReplica(task, t, head)))).filter((p) => p !== undefined);
        if (problems.length > 0) {
          this.options.logger.warn('GC refused to delete', { key: object.key, versionId: object.versionId, reasons: problems });
          return { state: 'REFUSED', reason: problems.join('; ') };
        }
        await source.send(new DeleteObjectCommand({ Bucket: object.bucket, Key: object.key, VersionId: object.versionId }));
        this.options.logger.info('GC deleted the transient copy', { location: object.location, bucket: object.bucket, key: object.key, versionId: object.versionId });
        return { state: 'DELETED' };
      } catch (err) {
        const kind = classify(err);
        if (kind === 'permanent' || (kind === 'transient' && attempt >= 5)) return { state: 'REFUSED', reason: `could not verify or delete: ${reasonOf(err)}` };
        if (!batch.isActive()) throw err;
        await sleep(Math.min(30_000, 500 * 2 ** attempt));
      }
    }
  }

  async close(): Promise<void> {
    await this.consumer?.close();
    await this.producer?.close();
  }
}
