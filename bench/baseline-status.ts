// The status processor as it was before the status store (commit 8943b88), kept only as the baseline of
// `make bench-status`: every version's status in one Map, rebuilt at start by reading the whole compacted
// topic `<prefix>-object-status` (readToEnd, 120 s limit), and one produce per folded event. Frozen: it is
// changed only as far as needed to compile against today's lib/ and workers/ (import paths; the topic,
// gone from QueueNames, is named by objectStatusTopic), and folds with today's fold.ts like the new one.
// Do not fix it: its defects are what is measured.
import type { Logger } from '../lib/log/logger.ts';
import { consumeOrdered, Limiter } from '../lib/queue/ordered.ts';
import { readToEnd } from '../lib/queue/read-all.ts';
import type { Queue, QueueConsumer, QueueProducer } from '../lib/queue/queue.ts';
import { decode, encode, figuresKey, type Figures, objectKey, versionKey, type GcTask, type ObjectRef, type PlannedTask, queueTasks, type StatusEvent, queueNames, type QueueNames } from '../lib/queue/messages.ts';
import { fold, type DestinationStatus, type ObjectState, type ObjectStatus } from '../workers/status/fold.ts';

/** The compacted topic the baseline kept every version's latest status in. */
export const objectStatusTopic = (prefix: string): string => `${prefix}-object-status`;

/** One destination of one object version that failed, as `backbeat failed list` shows it. */
export type FailedEntry = { object: ObjectRef; kind: ObjectStatus['kind']; destination: string } & DestinationStatus;

export interface StatusOptions {
  queue: Queue;
  logger: Logger;
  concurrency?: number;
  names?: QueueNames;
  /** Source locations marked transient: their COMPLETED object versions go to the GC. */
  transientSources?: Set<string>;
  /** objectStatusTopic(prefix): formerly QueueNames.objectStatus. */
  objectStatus: string;
}

/**
 * Folds per-destination results into one status per object version. Every change is persisted to a
 * compacted topic before its input offset is committed, and the state is rebuilt from that topic at
 * start, so a restart loses nothing.
 */
export class StatusProcessor {
  private readonly options: StatusOptions;
  private readonly byVersion = new Map<string, ObjectStatus>();
  private readonly versionsOfKey = new Map<string, Set<string>>();
  private consumer: QueueConsumer | undefined;
  private producer: QueueProducer | undefined;

  private async out(): Promise<QueueProducer> {
    this.producer ??= await this.options.queue.producer();
    return this.producer;
  }
  private readonly names: QueueNames;

  constructor(options: StatusOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
  }

  private remember(status: ObjectStatus): void {
    const vk = versionKey(status.object);
    this.byVersion.set(vk, status);
    const ok = objectKey(status.object);
    let versions = this.versionsOfKey.get(ok);
    if (versions === undefined) this.versionsOfKey.set(ok, (versions = new Set()));
    versions.add(vk);
  }

  async start(): Promise<void> {
    const restored = await readToEnd(this.options.queue, this.options.objectStatus, (m) => {
      if (m.value !== null) this.remember(decode(m.value) as ObjectStatus);
    });
    if (restored > 0) this.options.logger.info('status restored', { records: restored, versions: this.byVersion.size });
    await this.out();
    const consumer = await this.options.queue.consumer({ groupId: this.names.statusGroup, topics: [this.names.status], fromBeginning: true });
    this.consumer = consumer;
    const limiter = new Limiter(this.options.concurrency ?? 16);
    await consumeOrdered(consumer, limiter, async (message) => {
      let event: StatusEvent;
      let vk: string;
      try {
        event = decode(message.value) as StatusEvent;
        vk = versionKey(event.object);
      } catch (err) {
        // Not ours to fix by retrying: logged and passed over, so the partition goes on.
        this.options.logger.error('unreadable status event skipped', { partition: message.partition, offset: message.offset, error: (err as Error).message });
        return;
      }
      const previous = this.byVersion.get(vk);
      const next = fold(previous, event);
      if (next === previous) return;
      const producer = await this.out();
      if (this.collectable(previous, next)) {
        // Sent before the status is saved: a crash in between repeats the GC task (the GC is
        // idempotent) rather than losing it.
        const task: GcTask = { object: next.object, targets: next.targets ?? [], completedAt: next.updatedAt };
        await producer.send(this.names.gc, [{ key: objectKey(next.object), value: encode(task) }]);
      }
      await producer.send(this.options.objectStatus, [{ key: vk, value: encode(next) }]);
      this.remember(next);
    });
  }

  private collectable(previous: ObjectStatus | undefined, next: ObjectStatus): boolean {
    return (
      next.state === 'COMPLETED' &&
      previous?.state !== 'COMPLETED' &&
      next.kind === 'object' &&
      this.options.transientSources?.has(next.object.location) === true
    );
  }

  /** One version's status, or, without a version id, every known version of the key, newest first. */
  lookup(location: string, bucket: string, key: string, versionId?: string): ObjectStatus[] {
    if (versionId !== undefined) {
      const one = this.byVersion.get(versionKey({ location, bucket, key, versionId }));
      return one === undefined ? [] : [one];
    }
    return [...(this.versionsOfKey.get(objectKey({ location, bucket, key })) ?? [])]
      .flatMap((vk) => this.byVersion.get(vk) ?? [])
      .sort((a, b) => b.eventTime.localeCompare(a.eventTime));
  }

  /**
   * Failed destinations of every object version, and failed follow-up changes (a tag change of a
   * COMPLETED version), optionally only those of one destination.
   */
  failed(destination?: (id: string) => boolean): FailedEntry[] {
    const out: FailedEntry[] = [];
    const wanted = (id: string): boolean => destination === undefined || destination(id);
    for (const status of this.byVersion.values()) {
      for (const f of Object.values(status.followUps ?? {})) if (f.state === 'FAILED' && wanted(f.destination)) out.push({ ...f, object: status.object });
      if (status.state !== 'FAILED') continue;
      for (const [id, d] of Object.entries(status.destinations)) {
        if (d.state === 'FAILED' && wanted(id)) out.push({ object: status.object, kind: status.kind, destination: id, ...d });
      }
    }
    return out.sort((x, y) => (x.lastFailureAt ?? '').localeCompare(y.lastFailureAt ?? ''));
  }

  /**
   * Sends failed destinations of the selected entries back through the pipeline: their state returns to
   * PENDING and the processors copy again. Returns how many destinations were re-queued.
   */
  async retry(entries: FailedEntry[]): Promise<number> {
    // One task per version and kind: a failed copy and a failed tag change of one version are two.
    const byChange = new Map<string, FailedEntry[]>();
    for (const e of entries) {
      const id = `${versionKey(e.object)} ${e.kind}`;
      byChange.set(id, [...(byChange.get(id) ?? []), e]);
    }
    let count = 0;
    const planned: PlannedTask[] = [];
    for (const failed of byChange.values()) {
      const [first] = failed;
      const status = first === undefined ? undefined : this.byVersion.get(versionKey(first.object));
      if (first === undefined || status === undefined) continue;
      const ids = new Set(failed.map((f) => f.destination));
      const targets = (status.targets ?? []).filter((t) => ids.has(t.id));
      if (targets.length === 0) continue;
      const { kind } = first;
      planned.push({
        key: objectKey(status.object),
        queued: { type: 'queued', object: status.object, kind, eventTime: status.eventTime, destinations: targets.map((t) => t.id), targets, at: new Date().toISOString() },
        task: { source: status.object, kind, eventTime: status.eventTime, destinations: targets, origin: 'retry', ...(status.size !== undefined ? { size: status.size } : {}) },
      });
      count += targets.length;
    }
    if (planned.length > 0) await queueTasks(await this.out(), this.names, planned);
    return count;
  }

  /** Object versions still pending, per destination. */
  pendingByDestination(): Map<string, number> {
    const out = new Map<string, number>();
    for (const status of this.byVersion.values()) {
      if (status.state !== 'PENDING') continue;
      for (const [id, d] of Object.entries(status.destinations)) if (d.state === 'PENDING') out.set(id, (out.get(id) ?? 0) + 1);
    }
    return out;
  }

  /** Per source bucket and destination: how many object versions are replicated, pending, failed. */
  figures(): Map<string, Omit<Figures, 'at'>> {
    const out = new Map<string, Omit<Figures, 'at'>>();
    for (const status of this.byVersion.values()) {
      const source = `${status.object.location}/${status.object.bucket}`;
      for (const [destination, d] of Object.entries(status.destinations)) {
        const key = figuresKey(source, destination);
        let f = out.get(key);
        if (f === undefined) out.set(key, (f = { source, destination, replicated: 0, pending: 0, failed: 0 }));
        if (d.state === 'COMPLETED') f.replicated++;
        else if (d.state === 'PENDING') f.pending++;
        else if (d.state === 'FAILED') f.failed++;
      }
    }
    return out;
  }

  /** How many object versions are in each state. */
  summary(): Record<ObjectState, number> {
    const out: Record<ObjectState, number> = { PENDING: 0, COMPLETED: 0, FAILED: 0, SKIPPED: 0 };
    for (const s of this.byVersion.values()) out[s.state]++;
    return out;
  }

  async close(): Promise<void> {
    await this.consumer?.close();
    await this.producer?.close();
  }
}
