import { GroupedSender } from '../../lib/queue/grouped-send.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkBlobReplica } from './blob-check.ts';
import type { BlobAccount } from '../../lib/azure/account.ts';
import { DeleteObjectCommand, HeadObjectCommand, type HeadObjectCommandOutput, type S3Client } from '@aws-sdk/client-s3';
import { Type } from '@sinclair/typebox';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { consumeOrdered, Limiter, type Lease } from '../../lib/queue/ordered.ts';
import { LINGER_MS, type Queue, type QueueConsumer, type QueueMessage, type QueueProducer } from '../../lib/queue/queue.ts';
import { unquote } from '../../lib/s3/etag.ts';
import { classify, isNotFound, reasonOf } from '../../lib/s3/errors.ts';
import { ChangeFailed, type ChangeRecord } from '../../lib/journal/change.ts';
import { REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import { encode, GcTask, ObjectRef, objectKey, parseMessage, readablePart, type PlannedTask, queueNames, queueTasks, type GcState, type QueueNames, type StatusEvent, type TaskDestination } from '../../lib/queue/messages.ts';
import { reject } from '../../lib/queue/rejects.ts';
import { keyHistory } from '../../lib/s3/history.ts';

/** What replicates a version under the rules as they are now (the populator's matching). */
export interface Planner {
  plan(change: ChangeRecord): Promise<PlannedTask | undefined>;
}

export interface GcOptions {
  queue: Queue;
  /**
   * Today's rules: the destinations checked at GC time are those they name, not those the version was
   * first sent to. Without one, the destinations recorded on the task are checked.
   */
  planner?: Planner;
  /**
   * The transient source Locations as configured now: a version of any other Location is kept (a
   * Location no longer transient keeps its copies). Without it, every task is acted on.
   */
  transientSources?: ReadonlySet<string>;
  logger: Logger;
  /** S3 clients of every location, by name. */
  clients: Map<string, S3Client>;
  /** The accounts of type: azure destination locations, by name. */
  blobs?: Map<string, BlobAccount>;
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
  /** Verdicts go out grouped: many deletions finishing together make one produce call. */
  private readonly verdicts = new GroupedSender(() => this.producer);

  constructor(options: GcOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
  }

  async start(): Promise<void> {
    await this.out();
    const consumer = await this.options.queue.consumer({ groupId: this.names.gcGroup, topics: [this.names.gc], fromBeginning: true, lingerMs: LINGER_MS });
    this.consumer = consumer;
    const limiter = new Limiter(this.options.concurrency ?? 8);
    await consumeOrdered(consumer, limiter, async (message, b) => {
      let task: GcTask;
      try {
        task = parseMessage(GcTask, message.value);
      } catch (err) {
        await this.refuseMalformed(message, err as Error);
        return;
      }
      await this.waitForDelay(task, b);
      const verdict = await this.collect(task, b);
      if (verdict === undefined) return;
      const { state, reason } = verdict;
      const event: StatusEvent = { type: 'gc', object: task.object, state, ...(reason !== undefined ? { reason } : {}), at: new Date().toISOString() };
      await this.verdicts.send(this.names.status, [{ key: objectKey(task.object), value: encode(event) }]);
      // A version found already gone (a repeated task) was deleted before, and counted then.
      if (state === 'REFUSED' || reason === undefined) {
        this.counters[state === 'DELETED' ? 'deleted' : 'refused']++;
        (state === 'DELETED' ? this.options.metrics?.gcDeleted : this.options.metrics?.gcRefused)?.inc({ location: task.object.location });
      }
    });
  }

  /** A GC task that does not fit its schema: nothing deleted; REFUSED with the reason where its version can be read, and set aside. */
  private async refuseMalformed(message: QueueMessage, err: Error): Promise<void> {
    const object = readablePart(Type.Object({ object: ObjectRef }), message.value)?.object;
    if (object !== undefined) {
      const event: StatusEvent = { type: 'gc', object, state: 'REFUSED', reason: `malformed GC task refused: ${err.message}`, at: new Date().toISOString() };
      await this.verdicts.send(this.names.status, [{ key: objectKey(object), value: encode(event) }]);
    }
    await reject({ names: this.names, logger: this.options.logger, metrics: this.options.metrics, send: (topic, records) => this.verdicts.send(topic, records) }, message, err.message);
  }

  private async waitForDelay(task: GcTask, lease: Lease): Promise<void> {
    const due = Date.parse(task.completedAt) + (this.options.delayMs ?? 0);
    while (Date.now() < due) {
      if (!lease.isActive()) throw new Error('stopping before the GC delay elapsed');
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
    const key = `${target.keyPrefix ?? ''}${task.object.key}`;
    const account = this.options.blobs?.get(target.location);
    if (account !== undefined) return checkBlobReplica(account, target, key, task.object.versionId, source);
    const s3 = this.client(target.location);
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

  /**
   * The destinations today's rules send this version to. Those the version has not been sent to yet
   * (a destination added since) are queued, and the verdict waits for them: undefined then.
   */
  private async currentTargets(task: GcTask, head: HeadObjectCommandOutput): Promise<TaskDestination[] | { refused: string } | undefined> {
    const { planner } = this.options;
    if (planner === undefined) return task.targets;
    const { object } = task;
    const change: ChangeRecord = {
      ...object,
      kind: 'object',
      ...(head.ContentLength !== undefined ? { size: head.ContentLength } : {}),
      ...(head.ETag !== undefined ? { etag: unquote(head.ETag) } : {}),
      eventTime: (head.LastModified ?? new Date()).toISOString(),
      origin: 'scan',
    };
    const planned = await planner.plan(change);
    if (planned === undefined) return { refused: 'no rule replicates this version any more' };
    const known = new Set(task.targets.map((t) => t.id));
    const missing = planned.task.destinations.filter((d) => !known.has(d.id));
    if (missing.length === 0) return planned.task.destinations;
    const ids = missing.map((d) => d.id);
    this.options.logger.info('GC waits: the rules now send this version to more destinations', { key: object.key, versionId: object.versionId, destinations: ids });
    await queueTasks(await this.out(), this.names, [
      { key: planned.key, queued: { ...planned.queued, destinations: ids, targets: missing } as StatusEvent, task: { ...planned.task, destinations: missing, origin: 'retry' } },
    ]);
    return undefined;
  }

  /** Its consumer runs (false while it waits to start again after a crash). */
  get consuming(): boolean {
    return this.consumer?.consuming() === true;
  }

  private async out(): Promise<QueueProducer> {
    this.producer ??= await this.options.queue.producer();
    return this.producer;
  }

  private async collect(task: GcTask, lease: Lease): Promise<{ state: GcState; reason?: string } | undefined> {
    const { object } = task;
    if (this.options.transientSources?.has(object.location) === false) return { state: 'REFUSED', reason: `Location "${object.location}" is not a transient source (any more): the source copy stays` };
    const source = this.client(object.location);
    for (let attempt = 1; ; attempt++) {
      try {
        if (task.deleteMarker === true) return await this.expireMarker(task);
        let head: HeadObjectCommandOutput;
        try {
          head = await source.send(new HeadObjectCommand({ Bucket: object.bucket, Key: object.key, VersionId: object.versionId }));
        } catch (err) {
          if (isNotFound(err)) return { state: 'DELETED', reason: 'already gone from the source' };
          throw err;
        }
        // A superseded version goes once the version that replaced it is verified: that is what is checked.
        const { supersededBy } = task;
        const checked = supersededBy === undefined ? task : { ...task, object: supersededBy };
        let basis = head;
        if (supersededBy !== undefined) {
          try {
            basis = await source.send(new HeadObjectCommand({ Bucket: supersededBy.bucket, Key: supersededBy.key, VersionId: supersededBy.versionId }));
          } catch (err) {
            if (isNotFound(err)) return { state: 'REFUSED', reason: `superseded by version ${supersededBy.versionId}, which is no longer on the source to verify against` };
            throw err;
          }
        }
        const targets = await this.currentTargets(checked, basis);
        if (targets === undefined) return undefined;
        if (!Array.isArray(targets)) return { state: 'REFUSED', reason: targets.refused };
        if (targets.length === 0) return { state: 'REFUSED', reason: 'no destination is known for this version' };
        const problems = (await Promise.all(targets.map((t) => this.checkReplica(checked, t, basis)))).filter((p) => p !== undefined);
        if (problems.length > 0) {
          this.options.logger.warn('GC refused to delete', { key: object.key, versionId: object.versionId, reasons: problems });
          return { state: 'REFUSED', reason: problems.join('; ') };
        }
        await source.send(new DeleteObjectCommand({ Bucket: object.bucket, Key: object.key, VersionId: object.versionId }));
        this.options.logger.info('GC deleted the transient copy', { location: object.location, bucket: object.bucket, key: object.key, versionId: object.versionId });
        await this.expireUnreplicatedMarkers(object).catch((err: unknown) => {
          // The version is gone all the same; a marker left behind hides nothing.
          this.options.logger.warn('GC could not remove the delete markers left on the key', { key: object.key, error: reasonOf(err) });
        });
        return { state: 'DELETED' };
      } catch (err) {
        // Today's rules could not be matched (the version's tags unreadable): nothing to verify against.
        if (err instanceof ChangeFailed) return { state: 'REFUSED', reason: err.message };
        const kind = classify(err);
        if (kind === 'permanent' || (kind === 'transient' && attempt >= 5)) return { state: 'REFUSED', reason: `could not verify or delete: ${reasonOf(err)}` };
        if (!lease.isActive()) throw err;
        await sleep(Math.min(30_000, 500 * 2 ** attempt));
      }
    }
  }

  /**
   * Deletes a delete marker that hides nothing: no object version of its key is left on the source. One
   * still there (not collected yet, or written since) keeps it, with no verdict: the status sends the
   * marker again once that version is collected.
   */
  private async expireMarker(task: GcTask): Promise<{ state: GcState; reason?: string } | undefined> {
    const { object } = task;
    const source = this.client(object.location);
    const history = await keyHistory(source, object.bucket, object.key);
    if (history.some((e) => !e.isDeleteMarker)) return undefined;
    if (!history.some((e) => e.versionId === object.versionId)) return { state: 'DELETED', reason: 'already gone from the source' };
    await this.deleteMarker(object);
    return { state: 'DELETED' };
  }

  private async deleteMarker(marker: GcTask['object']): Promise<void> {
    await this.client(marker.location).send(new DeleteObjectCommand({ Bucket: marker.bucket, Key: marker.key, VersionId: marker.versionId }));
    this.options.logger.info('GC deleted a delete marker that hid nothing', { location: marker.location, bucket: marker.bucket, key: marker.key, versionId: marker.versionId });
  }

  /**
   * After the last object version of a key went: its delete markers that no rule replicates hide
   * nothing and are tracked nowhere else, so they go now. Markers a rule replicates are sent by the
   * status once their replication settled (expireMarker).
   */
  private async expireUnreplicatedMarkers(object: GcTask['object']): Promise<void> {
    const { planner } = this.options;
    if (planner === undefined) return;
    // Whether a rule replicates this key's markers depends on the key, not on the marker: asked once,
    // before any listing.
    const change: ChangeRecord = { ...object, kind: 'deleteMarker', eventTime: new Date().toISOString(), origin: 'scan' };
    if ((await planner.plan(change)) !== undefined) return;
    const history = await keyHistory(this.client(object.location), object.bucket, object.key);
    if (history.some((e) => !e.isDeleteMarker)) return;
    for (const marker of history) await this.deleteMarker({ ...object, versionId: marker.versionId });
  }

  async close(): Promise<void> {
    await this.consumer?.close();
    await this.producer?.close();
  }
}
