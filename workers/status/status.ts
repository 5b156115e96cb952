import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { follow } from '../../lib/queue/follow.ts';
import { commitBatch } from '../../lib/queue/ordered.ts';
import type { Batch, OutgoingRecord, Queue, QueueAdmin, QueueConsumer, QueueMessage, QueueProducer } from '../../lib/queue/queue.ts';
import { encode, type Figures, objectKey, parseMessage, versionKey, type GcTask, type PlannedTask, queueTasks, StatusEvent, queueNames, type QueueNames } from '../../lib/queue/messages.ts';
import { reject, type Rejecter } from '../../lib/queue/rejects.ts';
import type { PeerKey } from './peers.ts';
import { fold, ObjectStatus, type ObjectState } from './fold.ts';
import { type FailedCursor, type FailedEntry, type FailedQuery, PartitionTotals, recount, StatusStore, TOTALS_KEY } from './store.ts';

export type { FailedEntry } from './store.ts';

export interface StatusOptions {
  queue: Queue;
  logger: Logger;
  names?: QueueNames;
  /** Source locations marked transient: their COMPLETED object versions go to the GC. */
  transientSources?: Set<string>;
  /** The SQLite file of the local store (kept across restarts); in memory without one. */
  storeFile?: string;
  /** This replica's API URL, announced as the owner of its partitions so that other replicas forward to it. */
  advertiseUrl?: string;
  /**
   * How long the status of a version that is gone (collected by the GC, or permanently deleted and that
   * deletion replicated) stays visible before its record is dropped (a tombstone in the changelog:
   * memory and restore time stay flat however many versions go through). Default 24 hours.
   */
  collectedRetentionMs?: number;
  metrics?: Metrics;
  /** What the replicas trust each other by (peers.ts): owner records are signed with it, and only signed ones count. */
  peerKey?: PeerKey;
}

/** A partition's restore, as /readyz and the log show it. */
export interface RestoreProgress {
  partition: number;
  read: number;
  /** Records between the local copy's offset and the changelog's end when the restore began. */
  total: number;
}

/** A delete marker every destination has settled (replicated, or nothing to do): its source copy is no longer needed. */
const markerSettled = (s: ObjectStatus): boolean => s.state === 'COMPLETED' || s.state === 'SKIPPED';

/** Owner records of the owners topic. */
const Owner = Type.Object({ partition: Type.Integer({ minimum: 0 }), url: Type.String({ pattern: '^https?://[^/?#@]+$', maxLength: 512 }), at: Type.String(), sig: Type.Optional(Type.String()) });
type Owner = Static<typeof Owner>;

/** Encoded changelog records of one batch stay under this (the topic allows 16 MiB per record batch). */
const FLUSH_BYTES = 4 * 1024 * 1024;
/** Restored records held at most before they are written to the local store (all partitions together: memory stays bounded). */
const RESTORE_CHUNK = 10_000;
/**
 * A local copy older than this is restored from the beginning: compaction removes a tombstone after
 * the changelog's delete.retention.ms (24 h by default), and a copy that missed it would keep the row.
 */
const STALE_COPY_MS = 12 * 3600_000;
/** Records of collected versions dropped per flush, at most: the sweep rides on the folding of new events. */
const SWEEP_LIMIT = 500;

/**
 * Folds per-destination results into one status per object version, partition by partition: each replica
 * owns the partitions of the status topic the group assigns it, keeps their state in a local store, and
 * writes every change to a compacted changelog (same partition) before it commits its input. On each
 * assignment it catches its partitions up from the changelog before folding anything, so two replicas
 * never fold one key from different copies, and a restart with an intact copy reads only what it missed.
 */
export class StatusProcessor {
  /** Changelog records read by restores since start (0 after a restart with a current local copy). */
  restoredRecords = 0;
  private readonly options: StatusOptions;
  private readonly names: QueueNames;
  private store: StatusStore | undefined;
  /** Partitions assigned and caught up: the ones this replica folds and answers for. */
  private readonly owned = new Set<number>();
  private assigned = new Set<number>();
  private assignment = 0;
  private restoring: Promise<void> = Promise.resolve();
  private readonly progress = new Map<number, RestoreProgress>();
  private readonly owners = new Map<number, Owner>();
  private joined = false;
  private readonly readyWaiters: (() => void)[] = [];
  private lagAdmin: Promise<QueueAdmin> | undefined;
  private consumer: QueueConsumer | undefined;
  private ownersFollower: QueueConsumer | undefined;
  private producer: QueueProducer | undefined;

  constructor(options: StatusOptions) {
    this.options = options;
    this.names = options.names ?? queueNames();
  }

  private get log(): Logger {
    return this.options.logger;
  }

  /** Where a record that fails its check is set aside (see rejects.ts). */
  private rejecter(): Rejecter {
    return { names: this.names, logger: this.log, metrics: this.options.metrics, send: async (topic, records) => (await this.out()).send(topic, records) };
  }

  private async out(): Promise<QueueProducer> {
    this.producer ??= await this.options.queue.producer();
    return this.producer;
  }

  private db(): StatusStore {
    if (this.store === undefined) throw new Error('the status processor has not started');
    return this.store;
  }

  async start(): Promise<void> {
    const { queue } = this.options;
    const admin = await queue.admin();
    try {
      const [input, changelog] = await Promise.all([admin.partitionCount(this.names.status), admin.partitionCount(this.names.statusStore)]);
      if (input !== changelog) {
        throw new Error(`topic ${this.names.statusStore} has ${String(changelog)} partitions and ${this.names.status} ${String(input)}: a changelog needs as many partitions as its input`);
      }
    } finally {
      await admin.close();
    }
    this.store = StatusStore.open(this.options.storeFile, this.log);
    await this.out();
    this.ownersFollower = await follow(queue, this.names.statusOwners, (m) => {
      try {
        const owner = parseMessage(Owner, m.value);
        if (this.options.peerKey !== undefined && !this.options.peerKey.ownerSigned(owner)) {
          this.log.warn('owner record not signed with the peer key: ignored', { partition: owner.partition, url: owner.url, signed: owner.sig !== undefined, offset: m.offset });
          return;
        }
        this.owners.set(owner.partition, owner);
      } catch {
        // a tombstone, or a record this version cannot read: no owner to learn
      }
    });
    // Events of up to 300 ms fold together: each fold's fixed cost (its SQLite transaction, totals,
    // changelog append, commit) is paid less often, and a version queued and copied within that is
    // written once. The copies do not wait for it: only what the status reports is up to that much later.
    const consumer = await queue.consumer({ groupId: this.names.statusGroup, topics: [this.names.status], fromBeginning: true, gatherMs: 300 });
    this.consumer = consumer;
    await consumer.run({
      onAssign: (tps) => {
        this.assign(tps.filter((tp) => tp.topic === this.names.status).map((tp) => tp.partition));
      },
      onBatch: async (batch) => {
        await this.foldBatch(consumer, batch);
      },
    });
  }

  /** A new assignment: nothing is folded or answered until its partitions are caught up. */
  private assign(partitions: number[]): void {
    this.joined = true;
    const id = ++this.assignment;
    this.assigned = new Set(partitions);
    this.owned.clear();
    this.log.info('status partitions assigned', { partitions });
    // After the restore in progress: one changelog reader at a time.
    this.restoring = this.restoring
      .then(() => this.restore(partitions, id))
      .catch((err: unknown) => {
        this.log.error('restoring status partitions failed', { partitions, error: (err as Error).message });
      });
  }

  /** Catches `partitions` up from the changelog, then owns them (unless a newer assignment came). */
  private async restore(partitions: number[], id: number): Promise<void> {
    const store = this.db();
    const from = new Map<number, string>();
    for (const p of partitions) {
      const at = store.position(p);
      if (at !== undefined && Date.now() - at.at > STALE_COPY_MS) {
        this.log.info('local copy too old: restoring the partition from the beginning', { partition: p });
        store.reset(p);
      }
      from.set(p, store.position(p)?.next ?? '0');
    }
    for (;;) {
      try {
        await this.replay(from);
        break;
      } catch (err) {
        if (id !== this.assignment) return;
        this.log.warn('restoring status partitions failed; trying again', { partitions, error: (err as Error).message });
        await new Promise((r) => setTimeout(r, 2_000));
      }
    }
    if (id !== this.assignment) return;
    for (const p of partitions) this.owned.add(p);
    this.progress.clear();
    this.wakeIfReady();
    await this.announce(partitions);
  }

  private async replay(from: Map<number, string>): Promise<void> {
    const store = this.db();
    const started = Date.now();
    const pending = new Map<number, { changes: Map<string, ObjectStatus | null>; totals?: PartitionTotals; next?: string }>();
    const flush = (partition: number): void => {
      const p = pending.get(partition);
      if (p === undefined || p.next === undefined) return;
      store.apply(partition, p.changes, { ...(p.totals !== undefined ? { totals: p.totals } : {}), next: p.next });
      pending.delete(partition);
    };
    for (const partition of from.keys()) this.progress.set(partition, { partition, read: 0, total: 0 });
    let logged = Date.now();
    let held = 0;
    const refused: { message: QueueMessage; reason: string }[] = [];
    const ends = await this.options.queue.replay(this.names.statusStore, from, (m: QueueMessage) => {
      let p = pending.get(m.partition);
      if (p === undefined) pending.set(m.partition, (p = { changes: new Map() }));
      try {
        // Written by the replicas only, yet read as any record is: a forged one is set aside, not folded.
        if (m.key === TOTALS_KEY) {
          if (m.value !== null) p.totals = parseMessage(PartitionTotals, m.value);
        } else if (m.key !== null) {
          p.changes.set(m.key, m.value === null ? null : parseMessage(ObjectStatus, m.value));
        }
      } catch (err) {
        refused.push({ message: m, reason: (err as Error).message });
      }
      p.next = (BigInt(m.offset) + 1n).toString();
      const progress = this.progress.get(m.partition);
      if (progress !== undefined) progress.read++;
      this.restoredRecords++;
      if (++held >= RESTORE_CHUNK) {
        for (const partition of [...pending.keys()]) flush(partition);
        held = 0;
      }
      if (Date.now() - logged > 5_000) {
        logged = Date.now();
        this.log.info('restoring status partitions', { progress: [...this.progress.values()] });
      }
    }, (ends) => {
      for (const [partition, end] of ends) {
        const progress = this.progress.get(partition);
        if (progress !== undefined) progress.total = Math.max(0, Number(BigInt(end) - BigInt(from.get(partition) ?? '0')));
      }
    });
    for (const partition of pending.keys()) flush(partition);
    for (const { message, reason } of refused) await reject(this.rejecter(), message, reason);
    for (const [partition, end] of ends) {
      if (store.position(partition)?.next !== end) store.apply(partition, [], { next: end });
    }
    const read = [...this.progress.values()].reduce((n, p) => n + p.read, 0);
    this.log.info('status partitions caught up', { partitions: [...from.keys()], records: read, ms: Date.now() - started });
  }

  /** Tells the other replicas where the API of `partitions` is now. */
  private async announce(partitions: number[]): Promise<void> {
    const url = this.options.advertiseUrl;
    if (url === undefined || partitions.length === 0) return;
    const at = new Date().toISOString();
    try {
      const records = partitions.map((partition): Owner => ({ partition, url, at, ...(this.options.peerKey !== undefined ? { sig: this.options.peerKey.signOwner({ partition, url, at }) } : {}) }));
      await (await this.out()).send(this.names.statusOwners, records.map((o) => ({ key: `owner/${String(o.partition)}`, value: encode(o) })));
    } catch (err) {
      this.log.warn('could not announce the status partitions owned here', { error: (err as Error).message });
    }
  }

  private async foldBatch(consumer: QueueConsumer, batch: Batch): Promise<void> {
    const { partition } = batch;
    while (!this.owned.has(partition)) {
      // Not folded here until caught up; a partition gone meanwhile is left uncommitted for its new owner.
      if (!batch.isActive() || !this.assigned.has(partition)) return;
      const current = this.restoring;
      // Heartbeats go on while a restore runs (minutes at millions of versions): the membership stays.
      const restored = await Promise.race([current.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 3_000))]);
      await batch.heartbeat().catch(() => undefined);
      if (restored && current === this.restoring && !this.owned.has(partition)) await new Promise((r) => setTimeout(r, 1_000));
    }
    const store = this.db();
    let totals = store.totalsOf(partition);
    // Per version touched: its state before this chunk, and now (null once it is gone).
    let touched = new Map<string, { before: ObjectStatus | undefined; now: ObjectStatus | null; last: ObjectStatus }>();
    let gcTasks: GcTask[] = [];
    let bytes = 0;
    const flush = async (upTo: QueueMessage): Promise<void> => {
      const producer = await this.out();
      const retention = this.options.collectedRetentionMs ?? 24 * 3600_000;
      for (const [vk, status] of store.collectedBefore(partition, new Date(Date.now() - retention).toISOString(), SWEEP_LIMIT)) {
        if (!touched.has(vk)) touched.set(vk, { before: status, now: null, last: status });
      }
      // Sent before the status is saved: a crash in between repeats a GC task (the GC is idempotent)
      // rather than losing it.
      for (let i = 0; i < gcTasks.length; i += 100) {
        await producer.send(this.names.gc, gcTasks.slice(i, i + 100).map((t) => ({ key: objectKey(t.object), value: encode(t) })));
      }
      for (const t of touched.values()) recount(totals, t.before, t.last);
      const records: OutgoingRecord[] = [...touched].map(([vk, t]) => ({ key: vk, value: t.now === null ? null : encode(t.now), partition }));
      records.push({ key: TOTALS_KEY, value: encode(totals), partition });
      // One send: the partition's records of a chunk are appended together, rows and totals alike.
      const written = await producer.send(this.names.statusStore, records);
      store.apply(partition, [...touched].map(([vk, t]) => [vk, t.now] as [string, ObjectStatus | null]), { totals, ...(written[0] !== undefined ? { next: written[0].next } : {}) });
      await commitBatch(consumer, { ...batch, messages: [upTo] });
      totals = store.totalsOf(partition);
      touched = new Map();
      gcTasks = [];
      bytes = 0;
    };
    for (const message of batch.messages) {
      let event: StatusEvent;
      let vk: string;
      try {
        event = parseMessage(StatusEvent, message.value);
        vk = versionKey(event.object);
      } catch (err) {
        // Not ours to fix by retrying: set aside, so the partition goes on.
        await reject(this.rejecter(), message, (err as Error).message);
        continue;
      }
      const t = touched.get(vk);
      const previous = t === undefined ? store.get(vk) : (t.now ?? undefined);
      if (t?.now === null || (previous === undefined && event.type !== 'queued')) {
        // A version whose record was dropped after the GC collected it, or one never queued: nothing to fold into.
        continue;
      }
      const next = fold(previous, event);
      if (this.collectable(previous, next) || this.rescanned(previous, next, event)) {
        // Older versions it superseded first: one key's GC tasks are handled in order, and they need
        // this version still on the source to verify it.
        for (const older of this.superseded(next, touched)) gcTasks.push({ object: older.object, targets: next.targets ?? [], completedAt: next.updatedAt, supersededBy: next.object });
        gcTasks.push({ object: next.object, targets: next.targets ?? [], completedAt: next.updatedAt });
      } else if (this.uncovering(previous, next)) {
        // The last object version of the key collected, or a delete marker settled: markers left with
        // nothing under them go too.
        for (const marker of this.expiredMarkers(next, touched)) gcTasks.push({ object: marker.object, targets: [], completedAt: marker.updatedAt, deleteMarker: true });
      } else if (this.skippedAsSuperseded(previous, next)) {
        // Superseded after the newer version completed (it arrived late): collected against that one.
        const newer = this.newestCompleted(next, touched);
        if (newer !== undefined) gcTasks.push({ object: next.object, targets: newer.targets ?? [], completedAt: next.updatedAt, supersededBy: newer.object });
      }
      if (next === previous) continue;
      touched.set(vk, { before: t === undefined ? previous : t.before, now: next, last: next });
      bytes += (message.value?.length ?? 0) + vk.length;
      if (bytes >= FLUSH_BYTES) await flush(message);
    }
    const last = batch.messages.at(-1);
    if (last !== undefined) await flush(last);
  }

  /** From a transient source: by the mark its `queued` event carried, or by this replica's config. */
  private fromTransient(status: ObjectStatus): boolean {
    return status.transient === true || this.options.transientSources?.has(status.object.location) === true;
  }

  /** An object version (not a marker or a delete) of a transient source. */
  private transient(status: ObjectStatus): boolean {
    return status.kind === 'object' && this.fromTransient(status);
  }

  /** COMPLETED just now, on a transient source: the source copy can go once the GC has verified it. */
  private collectable(previous: ObjectStatus | undefined, next: ObjectStatus): boolean {
    return next.state === 'COMPLETED' && previous?.state !== 'COMPLETED' && this.transient(next);
  }

  /** The destinations where a delete marker of the key newer than `status` is COMPLETED. */
  private deletedSince(status: ObjectStatus): Set<string> {
    const markers = this.versionsOfKey(status, new Map()).filter((s) => s.kind === 'deleteMarker' && s.eventTime > status.eventTime);
    return new Set(markers.flatMap((m) => Object.entries(m.destinations).filter(([, d]) => d.state === 'COMPLETED').map(([id]) => id)));
  }

  /** Every version of the key held here, as this chunk left them. */
  private versionsOfKey(status: ObjectStatus, touched: Map<string, { now: ObjectStatus | null }>): ObjectStatus[] {
    const { location, bucket, key } = status.object;
    const byVk = new Map(this.db().versionsOf(location, bucket, key, this.owned).map((s) => [versionKey(s.object), s]));
    for (const [vk, t] of touched) if (t.now !== null && objectKey(t.now.object) === objectKey(status.object)) byVk.set(vk, t.now);
    return [...byVk.values()].filter((s) => s.gc?.state !== 'DELETED');
  }

  /** SKIPPED on every destination because a newer version was already there: nothing else will collect it. */
  private isSuperseded(s: ObjectStatus): boolean {
    const ds = Object.values(s.destinations);
    return s.state === 'SKIPPED' && ds.length > 0 && ds.every((d) => d.reason?.startsWith('superseded') === true);
  }

  private skippedAsSuperseded(previous: ObjectStatus | undefined, next: ObjectStatus): boolean {
    return previous?.state !== 'SKIPPED' && this.isSuperseded(next) && this.transient(next);
  }

  /** Older versions of the key that `newer` superseded everywhere, not collected yet. */
  private superseded(newer: ObjectStatus, touched: Map<string, { now: ObjectStatus | null }>): ObjectStatus[] {
    return this.versionsOfKey(newer, touched).filter((s) => s.object.versionId !== newer.object.versionId && this.isSuperseded(s) && s.eventTime <= newer.eventTime);
  }

  /** The newest COMPLETED version of the key, newer than `older`. */
  private newestCompleted(older: ObjectStatus, touched: Map<string, { now: ObjectStatus | null }>): ObjectStatus | undefined {
    return this.versionsOfKey(older, touched)
      .filter((s) => s.state === 'COMPLETED' && s.kind === 'object' && s.eventTime >= older.eventTime && s.object.versionId !== older.object.versionId)
      .sort((a, b) => b.eventTime.localeCompare(a.eventTime))[0];
  }

  /** A delete marker just settled, or an object version just collected, on a transient source. */
  private uncovering(previous: ObjectStatus | undefined, next: ObjectStatus): boolean {
    if (!this.fromTransient(next)) return false;
    if (next.kind === 'deleteMarker') return markerSettled(next) && (previous === undefined || !markerSettled(previous));
    return next.kind === 'object' && next.gc?.state === 'DELETED' && previous?.gc?.state !== 'DELETED';
  }

  /** The key's settled delete markers not collected yet, once no object version of the key awaits the GC. */
  private expiredMarkers(status: ObjectStatus, touched: Map<string, { now: ObjectStatus | null }>): ObjectStatus[] {
    // `status` as it is now, not as the store or the chunk held it before this event.
    const versions = this.versionsOfKey(status, touched).filter((s) => versionKey(s.object) !== versionKey(status.object));
    if (status.gc?.state !== 'DELETED') versions.push(status);
    if (versions.some((s) => s.kind === 'object')) return [];
    return versions.filter((s) => s.kind === 'deleteMarker' && markerSettled(s) && s.gc === undefined);
  }

  /** Queued again (a rescan) although COMPLETED and not collected: the GC task may have been lost. */
  private rescanned(previous: ObjectStatus | undefined, next: ObjectStatus, event: StatusEvent): boolean {
    return event.type === 'queued' && previous?.state === 'COMPLETED' && next.state === 'COMPLETED' && next.gc?.state !== 'DELETED' && this.transient(next);
  }

  /** True once the group has assigned partitions to this replica and each of them is caught up. */
  ready(): boolean {
    return this.joined && [...this.assigned].every((p) => this.owned.has(p));
  }

  /** Resolves once ready (local mode waits for it: one replica owns every partition). */
  whenReady(): Promise<void> {
    return this.ready() ? Promise.resolve() : new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Wakes whenReady() callers, once ready. */
  private wakeIfReady(): void {
    if (this.ready()) for (const wake of this.readyWaiters.splice(0)) wake();
  }

  /** The restores in progress (empty when ready). */
  restores(): RestoreProgress[] {
    return [...this.progress.values()];
  }

  /** The partition of the status topic an object's records go to. */
  partitionOf(location: string, bucket: string, key: string): Promise<number> {
    return this.options.queue.partitionOf(this.names.status, objectKey({ location, bucket, key }));
  }

  ownsPartition(partition: number): boolean {
    return this.owned.has(partition);
  }

  /** The API URL of the replica that owns `partition`, as last announced; undefined when unknown. */
  ownerOf(partition: number): string | undefined {
    return this.owners.get(partition)?.url;
  }

  /** Every other replica's API URL, as announced (one per URL). */
  peers(): string[] {
    return [...new Set([...this.owners.values()].map((o) => o.url))].filter((u) => u !== this.options.advertiseUrl);
  }

  /** One version's status, or, without a version id, every known version of the key, newest first (owned keys only). */
  lookup(location: string, bucket: string, key: string, versionId?: string): ObjectStatus[] {
    const store = this.db();
    if (versionId !== undefined) {
      const one = store.get(versionKey({ location, bucket, key, versionId }));
      return one === undefined ? [] : [one];
    }
    return store.versionsOf(location, bucket, key, this.owned);
  }

  /** Failed destinations and failed later changes of the versions owned here, a page at a time. */
  failed(query: FailedQuery): { entries: FailedEntry[]; next?: FailedCursor } {
    return this.db().failed(this.owned, query);
  }

  /** Every failed entry owned here that `select` keeps, page by page. */
  *allFailed(destination?: string): Generator<FailedEntry> {
    let after: FailedCursor | undefined;
    do {
      const page = this.failed({ limit: 1_000, ...(destination !== undefined ? { destination } : {}), ...(after !== undefined ? { after } : {}) });
      yield* page.entries;
      after = page.next;
    } while (after !== undefined);
  }

  /**
   * Sends failed destinations of the selected entries back through the pipeline: the task first, then
   * the `queued` event that makes them PENDING, so that a failed send leaves them FAILED (and listed)
   * rather than PENDING with no task. Returns how many destinations were re-queued.
   */
  async retry(entries: Iterable<FailedEntry>): Promise<number> {
    // One task per version and kind: a failed copy and a failed tag change of one version are two.
    const byChange = new Map<string, FailedEntry[]>();
    for (const e of entries) {
      const id = `${versionKey(e.object)} ${e.kind}`;
      byChange.set(id, [...(byChange.get(id) ?? []), e]);
    }
    let count = 0;
    const planned: PlannedTask[] = [];
    const collect: GcTask[] = [];
    const superseded: OutgoingRecord[] = [];
    for (const failed of byChange.values()) {
      const [first] = failed;
      const status = first === undefined ? undefined : this.db().get(versionKey(first.object));
      if (first === undefined || status === undefined) continue;
      if (first.kind === 'gc') {
        // A refused deletion: the GC checks again, against the rules as they are now.
        collect.push({ object: status.object, targets: status.targets ?? [], completedAt: new Date(0).toISOString() });
        count++;
        continue;
      }
      const ids = new Set(failed.map((f) => f.destination));
      const kind = first.kind;
      // A delete replicated since is not undone by copying the older version now (a server that never
      // held the key keeps no marker of it to weigh the copy against): the version is settled as superseded.
      const deletedSince = kind === 'object' ? this.deletedSince(status) : new Set<string>();
      for (const id of [...ids].filter((i) => deletedSince.has(i))) {
        superseded.push({ key: objectKey(status.object), value: encode({ type: 'result', object: status.object, kind, destination: id, state: 'SKIPPED', reason: 'superseded: a newer delete marker is already replicated', attempts: 0, bytes: 0, at: new Date().toISOString() } satisfies StatusEvent) });
        count++;
      }
      const targets = (status.targets ?? []).filter((t) => ids.has(t.id) && !deletedSince.has(t.id));
      if (targets.length === 0) continue;
      planned.push({
        key: objectKey(status.object),
        queued: { type: 'queued', object: status.object, kind, eventTime: status.eventTime, destinations: targets.map((t) => t.id), targets, at: new Date().toISOString() },
        task: { source: status.object, kind, eventTime: status.eventTime, destinations: targets, origin: 'retry', ...(status.size !== undefined ? { size: status.size } : {}) },
      });
      count += targets.length;
    }
    if (superseded.length > 0) await (await this.out()).send(this.names.status, superseded);
    if (planned.length > 0) await queueTasks(await this.out(), this.names, planned, { tasksFirst: true });
    if (collect.length > 0) await (await this.out()).send(this.names.gc, collect.map((t) => ({ key: objectKey(t.object), value: encode(t) })));
    return count;
  }

  /** Object versions still pending per destination, over the partitions owned here. */
  pendingByDestination(): Map<string, number> {
    const out = new Map<string, number>();
    for (const f of this.db().figures(this.owned).values()) if (f.pending > 0) out.set(f.destination, (out.get(f.destination) ?? 0) + f.pending);
    return out;
  }

  /** Per source bucket and destination: replicated, pending, failed versions over the partitions owned here. */
  figures(): Map<string, Omit<Figures, 'at'>> {
    return this.db().figures(this.owned);
  }

  /** The figures of each partition owned here, for the operator (which adds up every partition's). */
  partitionFigures(): Map<number, Omit<Figures, 'at'>[]> {
    return new Map([...this.owned].map((p) => [p, [...this.db().figures([p]).values()]]));
  }

  /** Status events written but not yet folded, by any replica (the group's lag): figures read now miss them. */
  async unfolded(): Promise<number> {
    // One admin client for every call: `backfill --wait` asks once a second.
    this.lagAdmin ??= this.options.queue.admin().catch((err: unknown) => {
      this.lagAdmin = undefined;
      throw err;
    });
    return (await (await this.lagAdmin).groupLag(this.names.statusGroup, this.names.status)).reduce((n, p) => n + p.lag, 0);
  }

  /** How many object versions of the partitions owned here are in each state. */
  summary(): Record<ObjectState, number> {
    return this.db().summary(this.owned);
  }

  async close(): Promise<void> {
    await this.consumer?.close();
    await (await this.lagAdmin?.catch(() => undefined))?.close();
    this.lagAdmin = undefined;
    await this.ownersFollower?.close();
    await this.producer?.close();
    this.store?.close();
    this.store = undefined;
  }
}
