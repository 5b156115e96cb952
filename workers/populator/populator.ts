import { GetObjectTaggingCommand, type S3Client } from '@aws-sdk/client-s3';
import { matchDestinations, needsTags, type BucketReplicationConfig, type MatchedDestination } from '../../lib/config/bucket-config.ts';
import type { Logger } from '../../lib/log/logger.ts';
import { reasonCode, type Metrics } from '../../lib/metrics.ts';
import { GroupedSender } from '../../lib/queue/grouped-send.ts';
import { consumeOrdered, Limiter } from '../../lib/queue/ordered.ts';
import { LINGER_MS, type Queue, type QueueConsumer, type QueueMessage, type QueueProducer } from '../../lib/queue/queue.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoff, type RetryPolicy } from '../../lib/retry.ts';
import { isProbeKey } from '../../lib/s3/capabilities.ts';
import { keyHistory } from '../../lib/s3/history.ts';
import { classify, isNotFound, reasonOf } from '../../lib/s3/errors.ts';
import { ChangeFailed, type ChangeRecord } from '../../lib/journal/change.ts';
import { MAX_HOPS } from '../../lib/s3/replica-marks.ts';
import { MalformedEvent, parseNotification } from '../journal/notifications.ts';
import { scanBucket } from '../journal/scan.ts';
import { encode, objectKey, queueTasks, taskDestination, type PlannedTask, type ReplicationTask, type StatusEvent, type TaskDestination, queueNames, type QueueNames } from '../../lib/queue/messages.ts';

export interface PopulatorOptions {
  queue: Queue;
  logger: Logger;
  /** Per-bucket configs, keyed `location/bucket`. */
  configs: Map<string, BucketReplicationConfig>;
  /** S3 clients of the source locations, for tag lookups. */
  sources: Map<string, S3Client>;
  /** Reads of the sources (tags, unnamed delete markers) at once; 16 by default. */
  concurrency?: number;
  names?: QueueNames;
  metrics?: Metrics;
  /** Transient source Locations: their `queued` events say so (the status role and the GC act on it). */
  transientSources?: ReadonlySet<string>;
}

export interface PopulatorCounters {
  changes: number;
  queued: number;
  /** Changes that match no enabled destination, or replicas written by this engine. */
  ignored: number;
  malformed: number;
  /** Changes set aside because the source could not tell what they need (their tags). */
  failed: number;
}

/**
 * Journal changes handled at once. Most of them wait for their two sends, grouped into one produce per
 * topic, so more in flight costs no more requests. With 16, two round trips of a loaded broker per 16
 * changes left the populator behind at 200 changes per second (docs/benchmarks.md). Reads of the source
 * are bounded on their own (`concurrency`).
 */
const JOURNAL_IN_FLIGHT = 256;

/** Tag lookups: a few quick retries of a transient error, then the change is set aside (the SDK retries too). */
const TAG_RETRY: RetryPolicy = { maxAttempts: 4, baseDelayMs: 200, maxDelayMs: 5_000 };

function wanted(change: ChangeRecord, d: MatchedDestination): boolean {
  // A replica goes on only where its rule chains replicas, and never into a bucket it came through
  // (two-way setups and cycles do not loop).
  if (change.replicaPath !== undefined && (!d.ReplicateReplicas || change.replicaPath.includes(d.Id))) return false;
  if (change.kind === 'deleteMarker') return d.ReplicateDeleteMarkers;
  if (change.kind === 'versionDelete') return d.ReplicateVersionDeletes;
  return true;
}

/** Matches changes against the per-bucket configs and queues one task per object version. */
export class Populator {
  readonly counters: PopulatorCounters = { changes: 0, queued: 0, ignored: 0, malformed: 0, failed: 0 };
  private readonly options: PopulatorOptions;
  private readonly consumers: QueueConsumer[] = [];
  private producer: QueueProducer | undefined;
  /** The sends of changes handled concurrently, grouped: one produce per topic for many changes. */
  private readonly grouped = new GroupedSender(() => this.producer);
  private readonly names: QueueNames;
  /** Reads of the sources under way, across the changes in flight. */
  private readonly reads: Limiter;

  constructor(options: PopulatorOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
    this.reads = new Limiter(options.concurrency ?? 16);
  }

  private async out(): Promise<QueueProducer> {
    this.producer ??= await this.options.queue.producer();
    return this.producer;
  }

  /**
   * What `read` learns from the change's source. An unreachable source is waited for while `active()` (a
   * journal partition still ours: the next change would wait for it too); without `active` (a scan), and
   * for any other error, a few retries, then ChangeFailed saying `what` could not be read. Undefined when
   * the version is gone: a later change record covers what replaced it.
   */
  private async fromSource<T>(change: ChangeRecord, what: string, read: (client: S3Client) => Promise<T>, active?: () => boolean): Promise<T | undefined> {
    const client = this.options.sources.get(change.location);
    if (client === undefined) throw new Error(`no S3 client for source location "${change.location}"`);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.reads.acquire();
        try {
          return await read(client);
        } finally {
          this.reads.release();
        }
      } catch (err) {
        if (isNotFound(err)) return undefined;
        const kind = classify(err);
        const waits = kind === 'unavailable' && active !== undefined;
        if (kind === 'permanent' || (!waits && attempt >= TAG_RETRY.maxAttempts)) {
          const reason = reasonOf(err);
          throw new ChangeFailed(`${what} could not be read: ${reason}`, reasonCode(reason));
        }
        // Stopping or rebalancing: the change is redelivered to whoever owns the partition next.
        if (active?.() === false) throw err;
        await sleep(backoff(Math.min(attempt, TAG_RETRY.maxAttempts), TAG_RETRY));
      }
    }
  }

  private tagsOf(change: ChangeRecord, active?: () => boolean): Promise<Record<string, string> | undefined> {
    return this.fromSource(change, 'tags of the source version', async (client) => {
      const tagging = await client.send(new GetObjectTaggingCommand({ Bucket: change.bucket, Key: change.key, VersionId: change.versionId }));
      return Object.fromEntries((tagging.TagSet ?? []).map((t) => [t.Key ?? '', t.Value ?? '']));
    }, active);
  }

  /**
   * The version id of a delete marker whose event did not name it (Ceph RGW): the key's newest marker
   * written by the event's time (a second's slack: listed times may be rounded up). Undefined when
   * there is none.
   */
  private markerOf(change: ChangeRecord, active?: () => boolean): Promise<string | undefined> {
    const by = Date.parse(change.eventTime) + 1_000;
    return this.fromSource(change, 'the delete marker', async (client) => (await keyHistory(client, change.bucket, change.key)).find((e) => e.isDeleteMarker && e.lastModified <= by)?.versionId, active);
  }

  /** Queues the task of one change (if it replicates anywhere); resolves once it is durably queued. */
  async populate(change: ChangeRecord, active?: () => boolean): Promise<void> {
    await this.queue([await this.plan(change, { ...(active !== undefined ? { active } : {}) })], this.grouped);
  }

  /**
   * The task of one change and its `queued` status event; undefined when it replicates nowhere. With
   * `backfill`, only those rules are matched, whenever the version was written. Throws ChangeFailed when
   * the change cannot be matched (its tags, or its unnamed delete marker, unreadable).
   */
  async plan(change: ChangeRecord, { backfill, active }: { backfill?: ReadonlySet<string>; active?: () => boolean } = {}): Promise<PlannedTask | undefined> {
    this.counters.changes++;
    const config = this.options.configs.get(`${change.location}/${change.bucket}`);
    // A destination's probe objects (capabilities.ts) are the engine's own, gone once read. A replica
    // whose path is unknown, or already MAX_HOPS long, goes no further.
    const path = change.replicaPath;
    if (config === undefined || (path !== undefined && (path.length === 0 || path.length >= MAX_HOPS)) || isProbeKey(change.key)) {
      this.counters.ignored++;
      return undefined;
    }
    if (change.versionId === '') {
      const versionId = await this.markerOf(change, active);
      if (versionId === undefined) {
        this.counters.ignored++;
        return undefined;
      }
      change = { ...change, versionId };
    }
    let tags: Record<string, string> | undefined;
    if ((change.kind === 'object' || change.kind === 'tags') && needsTags(config, change.key)) {
      tags = await this.tagsOf(change, active);
      if (tags === undefined) {
        this.counters.ignored++;
        return undefined;
      }
    }
    const time = Date.parse(change.eventTime);
    const facts = { key: change.key, ...(tags !== undefined ? { tags } : {}), ...(Number.isNaN(time) ? {} : { time }) };
    const destinations: TaskDestination[] = matchDestinations(config, facts, backfill)
      .filter((d) => wanted(change, d))
      .map((d) => taskDestination(d, d.Rule));
    if (destinations.length === 0) {
      this.counters.ignored++;
      return undefined;
    }
    const source = { location: change.location, bucket: change.bucket, key: change.key, versionId: change.versionId };
    const task: ReplicationTask = {
      source,
      kind: change.kind,
      ...(change.size !== undefined ? { size: change.size } : {}),
      ...(change.etag !== undefined ? { etag: change.etag } : {}),
      eventTime: change.eventTime,
      ...(change.modTime !== undefined ? { modTime: change.modTime } : {}),
      destinations,
      origin: change.origin,
    };
    const queued: StatusEvent = {
      type: 'queued',
      object: source,
      kind: change.kind,
      eventTime: change.eventTime,
      ...(change.size !== undefined ? { size: change.size } : {}),
      destinations: destinations.map((d) => d.id),
      targets: destinations,
      ...(this.options.transientSources?.has(change.location) === true ? { transient: true } : {}),
      at: new Date().toISOString(),
    };
    return { key: objectKey(source), queued, task };
  }

  private async queue(plans: (PlannedTask | undefined)[], via?: GroupedSender): Promise<void> {
    const ready = plans.filter((p) => p !== undefined);
    if (ready.length === 0) return;
    const producer = await this.out();
    await queueTasks(via ?? producer, this.names, ready);
    this.counters.queued += ready.length;
  }

  /** Puts a journal message (or one change of it) on the journal-failed topic with the reason. */
  private async setAside(message: QueueMessage, location: string, reason: string, change?: ChangeRecord): Promise<void> {
    const where = { location, topic: message.topic, partition: message.partition, offset: message.offset };
    if (change === undefined) {
      this.counters.malformed++;
      this.options.metrics?.journalMalformed.inc({ location });
      this.options.logger.warn('malformed journal message set aside', { ...where, reason });
    } else {
      this.options.logger.warn('journal change set aside', { ...where, bucket: change.bucket, key: change.key, versionId: change.versionId, reason });
    }
    const producer = await this.out();
    await producer.send(this.names.journalFailed, [
      {
        ...(message.key !== null ? { key: message.key } : {}),
        value: encode({ ...where, reason, ...(change !== undefined ? { change } : { value: message.value?.toString('utf8') ?? null }) }),
      },
    ]);
  }

  private failed(location: string, err: ChangeFailed): void {
    this.counters.failed++;
    this.options.metrics?.populatorFailures.inc({ location, reason: err.code });
  }

  /** Follows a source location's notification topic until close(). */
  async followJournal(location: string, topic: string): Promise<void> {
    const consumer = await this.options.queue.consumer({ groupId: this.names.populatorGroup(location), topics: [topic], fromBeginning: true, lingerMs: LINGER_MS });
    this.consumers.push(consumer);
    const limiter = new Limiter(JOURNAL_IN_FLIGHT);
    await consumeOrdered(consumer, limiter, async (message, batch) => {
      let changes: ChangeRecord[];
      try {
        changes = parseNotification(location, message.value);
      } catch (err) {
        if (!(err instanceof MalformedEvent)) throw err;
        await this.setAside(message, location, err.message);
        return;
      }
      this.options.metrics?.journalChanges.inc({ location }, changes.length);
      for (const change of changes) {
        try {
          await this.populate(change, () => batch.isActive());
        } catch (err) {
          if (!(err instanceof ChangeFailed)) throw err;
          this.failed(location, err);
          await this.setAside(message, location, err.message, change);
        }
      }
    });
  }

  /**
   * Lists a source bucket and queues its versions: backfill, and the repair of missed notifications.
   * With `backfill`, those rules' destinations are queued, whenever a version was written; without, each
   * rule queues what was written since it took effect. With `since`, only versions and delete markers
   * modified at or after that time. With `seen`, a change it holds is passed over, and each change
   * queued that was modified at or after `seen.from` is added to it. A version that cannot be matched is
   * logged and counted, and the scan goes on (the next scan tries it again).
   */
  async scan(location: string, bucket: string, options: { backfill?: ReadonlySet<string>; since?: Date; seen?: { ids: Map<string, number>; from: number }; pageSize?: number } = {}): Promise<number> {
    const client = this.options.sources.get(location);
    if (client === undefined) throw new Error(`no S3 client for source location "${location}"`);
    const since = options.since?.getTime();
    const { seen } = options;
    let count = 0;
    for await (const page of scanBucket(client, location, bucket, options.pageSize !== undefined ? { pageSize: options.pageSize } : {})) {
      const plans = [];
      const queued: [string, number][] = [];
      for (const change of page) {
        const time = Date.parse(change.eventTime);
        if (since !== undefined && time < since) continue;
        const id = `${change.key}\0${change.versionId}`;
        if (seen?.ids.has(id) === true) continue;
        try {
          plans.push(await this.plan(change, options.backfill !== undefined ? { backfill: options.backfill } : {}));
          if (seen !== undefined && time >= seen.from) queued.push([id, time]);
        } catch (err) {
          if (!(err instanceof ChangeFailed)) throw err;
          this.failed(location, err);
          this.options.logger.warn('scanned version not queued', { location, bucket, key: change.key, versionId: change.versionId, reason: err.message });
        }
        count++;
      }
      await this.queue(plans);
      for (const [id, time] of queued) seen?.ids.set(id, time);
    }
    return count;
  }

  /** Every journal it follows is being consumed (false while a crashed consumer waits to start again). */
  get consuming(): boolean {
    return this.consumers.every((c) => c.consuming());
  }

  async close(): Promise<void> {
    await Promise.all(this.consumers.splice(0).map((c) => c.close()));
    await this.producer?.close();
    this.producer = undefined;
  }
}
