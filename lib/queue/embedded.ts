import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { join } from 'node:path';
import type {
  Batch,
  CommitPoint,
  ConsumerHandlers,
  ConsumerOptions,
  OutgoingRecord,
  PartitionLag,
  Queue,
  QueueAdmin,
  QueueConsumer,
  QueueMessage,
  TopicSpec,
  Written,
} from './queue.ts';

// The queue of local mode: Kafka's semantics (partitions keyed by hash, consumer groups with committed
// offsets, batches per partition) in one process. With a folder it is durable: each partition is an
// append-only JSON-lines log and each group's offsets a file replaced atomically, so a crash or restart
// resumes from the last commit like Kafka would. Logs are kept bounded (retain()): a compacted topic keeps
// the newest record per key, and any other topic drops what every group subscribed to it has committed.

interface Stored {
  /** The offset; absent in logs written before retention existed, where it is the line number. */
  o?: number;
  k: string | null;
  v: string | null; // base64
  h: Record<string, string>;
  t: number;
}

interface Partition {
  /** Ascending offsets, with gaps where retention dropped records. */
  messages: QueueMessage[];
  /** The offset the next record gets. */
  next: number;
  file: string | undefined;
}

interface Topic {
  partitions: Partition[];
  compact: boolean;
  /** False for a folder written before the policy was recorded, until the topic is declared again. */
  policyKnown: boolean;
}

/** The embedded queue, plus the retention pass it also runs on its own every RETAIN_INTERVAL_MS. */
export interface EmbeddedQueue extends Queue {
  /** Drops what retention allows now; returns how many records went. */
  retain(): number;
  /** The consumer groups with offsets here, this run's and earlier runs'. */
  groupIds(): string[];
}

/** Replaces `file` with `text` so that a crash, even a power loss, leaves the old or the new one whole. */
function replaceFile(file: string, text: string): void {
  const fd = openSync(`${file}.tmp`, 'w');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(`${file}.tmp`, file);
  const folder = openSync(dirname(file), 'r');
  try {
    fsyncSync(folder);
  } finally {
    closeSync(folder);
  }
}

const MAX_BATCH = 500;
/** The signal of a batch never taken away. */
const NEVER = new AbortController().signal;
const COMMIT_FLUSH_MS = 100;
const RETAIN_INTERVAL_MS = 60_000;

function partitionFor(key: string | undefined, partitions: number, roundRobin: number): number {
  if (key === undefined) return roundRobin % partitions;
  return createHash('md5').update(key).digest().readUInt32BE(0) % partitions;
}

function safeName(name: string): string {
  return encodeURIComponent(name);
}

/** The offset of the oldest record kept (the next one's when none is). */
function firstOffset(part: Partition): number {
  return Number(part.messages[0]?.offset ?? part.next);
}

/** The index of the first message at or after `offset`. */
function indexAt(messages: QueueMessage[], offset: number): number {
  let [lo, hi] = [0, messages.length];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (Number(messages[mid]?.offset) < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function stored(m: QueueMessage): Stored {
  return { o: Number(m.offset), k: m.key, v: m.value === null ? null : m.value.toString('base64'), h: m.headers, t: m.timestamp };
}

function isCompacted(spec: TopicSpec): boolean {
  return spec.config?.['cleanup.policy'] === 'compact';
}

export function embeddedQueue(options: { dir?: string; onError?: (what: string, err: Error) => void } = {}): EmbeddedQueue {
  const topics = new Map<string, Topic>();
  const groups = new Map<string, Map<string, string>>(); // group → "topic/partition" → next offset
  const activeGroups = new Set<string>();
  const appended = new EventEmitter();
  appended.setMaxListeners(0);
  let roundRobin = 0;
  const dir = options.dir;

  if (dir !== undefined) {
    mkdirSync(join(dir, 'topics'), { recursive: true });
    mkdirSync(join(dir, 'groups'), { recursive: true });
    for (const t of readdirSync(join(dir, 'topics'))) {
      const meta = JSON.parse(readFileSync(join(dir, 'topics', t, 'meta.json'), 'utf8')) as { topic: string; partitions: number; compact?: boolean };
      const partitions = Array.from({ length: meta.partitions }, (_, p): Partition => {
        const file = join(dir, 'topics', t, `${p}.log`);
        let text = existsSync(file) ? readFileSync(file, 'utf8') : '';
        // A torn last line (a crash mid-append; its producer got no acknowledgement) is cut off, so
        // that the next append starts on a line of its own.
        const end = text.lastIndexOf('\n') + 1;
        if (end < text.length) {
          text = text.slice(0, end);
          truncateSync(file, Buffer.byteLength(text));
        }
        const messages = text
          .split('\n')
          .filter((line) => line !== '')
          .map((line, n) => {
            const s = JSON.parse(line) as Stored;
            return toMessage(meta.topic, p, s.o ?? n, s);
          });
        return { messages, next: Number(messages.at(-1)?.offset ?? -1) + 1, file };
      });
      topics.set(meta.topic, { partitions, compact: meta.compact === true, policyKnown: meta.compact !== undefined });
    }
    for (const g of readdirSync(join(dir, 'groups')).filter((f) => f.endsWith('.json'))) {
      const saved = JSON.parse(readFileSync(join(dir, 'groups', g), 'utf8')) as { group: string; offsets: Record<string, string> };
      groups.set(saved.group, new Map(Object.entries(saved.offsets)));
    }
    // A log cut short (a power loss before the kernel wrote it) must not hand out offsets a group has
    // already committed past: its new records would be skipped.
    for (const offsets of groups.values()) {
      for (const [id, offset] of offsets) {
        const at = id.lastIndexOf('/');
        const part = topics.get(id.slice(0, at))?.partitions[Number(id.slice(at + 1))];
        if (part !== undefined) part.next = Math.max(part.next, Number(offset));
      }
    }
  }

  function toMessage(topic: string, partition: number, offset: number, s: Stored): QueueMessage {
    return { topic, partition, offset: String(offset), key: s.k, value: s.v === null ? null : Buffer.from(s.v, 'base64'), headers: s.h, timestamp: s.t };
  }

  function partitionsOf(topic: string): Partition[] {
    const t = topics.get(topic);
    if (t === undefined) throw new Error(`topic "${topic}" does not exist`);
    return t.partitions;
  }

  function saveMeta(topic: string, t: Topic): void {
    if (dir === undefined) return;
    const folder = join(dir, 'topics', safeName(topic));
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'meta.json'), JSON.stringify({ topic, partitions: t.partitions.length, compact: t.compact }));
  }

  function createTopic(spec: TopicSpec): void {
    const existing = topics.get(spec.topic);
    if (existing !== undefined) {
      // A folder from before the policy was recorded learns it from the topic's spec.
      if (!existing.policyKnown || existing.compact !== isCompacted(spec)) {
        existing.compact = isCompacted(spec);
        existing.policyKnown = true;
        saveMeta(spec.topic, existing);
      }
      return;
    }
    const folder = dir === undefined ? undefined : join(dir, 'topics', safeName(spec.topic));
    const t: Topic = {
      partitions: Array.from({ length: spec.partitions }, (_, p) => ({ messages: [], next: 0, file: folder === undefined ? undefined : join(folder, `${p}.log`) })),
      compact: isCompacted(spec),
      policyKnown: true,
    };
    saveMeta(spec.topic, t);
    topics.set(spec.topic, t);
  }

  /**
   * The records a partition keeps. Compacted: the newest per key (records without a key stay). Otherwise
   * those at or past the lowest offset committed by the groups subscribed to it (none: all stay, as for
   * the journal-failed topic nobody consumes). The last record always stays: it carries the next offset.
   */
  function kept(topic: string, partition: number, part: Partition, compact: boolean): QueueMessage[] {
    const last = part.messages.at(-1);
    if (compact) {
      const newest = new Map<string, QueueMessage>();
      for (const m of part.messages) if (m.key !== null) newest.set(m.key, m);
      return part.messages.filter((m) => m.key === null || newest.get(m.key) === m);
    }
    const floors = [...groups.values()].flatMap((offsets) => {
      const o = offsets.get(`${topic}/${partition}`);
      return o === undefined ? [] : [Number(o)];
    });
    if (floors.length === 0) return part.messages;
    const floor = Math.min(...floors);
    return part.messages.filter((m) => Number(m.offset) >= floor || m === last);
  }

  function retain(): number {
    let dropped = 0;
    for (const [topic, t] of topics) {
      // A topic whose policy is not known yet may be a compacted one: nothing of it goes.
      if (!t.policyKnown) continue;
      t.partitions.forEach((part, partition) => {
        const keep = kept(topic, partition, part, t.compact);
        const gone = part.messages.length - keep.length;
        // Rewriting a log costs its size: only when a good share of it goes.
        if (gone === 0 || (gone < 1000 && gone * 4 < part.messages.length)) return;
        if (part.file !== undefined) replaceFile(part.file, keep.map((m) => `${JSON.stringify(stored(m))}\n`).join(''));
        part.messages = keep;
        dropped += gone;
      });
    }
    return dropped;
  }
  // Not at once: the consumers of this run subscribe first. Retention only ever removes what nothing
  // needs; when it fails (a full disk), everything stays and the next round tries again.
  setInterval(() => {
    try {
      retain();
    } catch (err) {
      options.onError?.('retention', err as Error);
    }
  }, RETAIN_INTERVAL_MS).unref();

  // Offsets reach their file at most every COMMIT_FLUSH_MS per group (and at once when its consumer
  // closes): a file rewrite per commit cost more than the copies it acknowledged. A crash loses at most
  // that window of commits, whose messages are redelivered: at least once, as with any Kafka consumer.
  const unsaved = new Set<string>();
  let flushTimer: NodeJS.Timeout | undefined;

  function save(group: string): void {
    unsaved.delete(group);
    const offsets = groups.get(group);
    if (dir === undefined || offsets === undefined) return;
    const file = join(dir, 'groups', `${safeName(group)}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify({ group, offsets: Object.fromEntries(offsets) }));
    renameSync(`${file}.tmp`, file);
  }

  function commit(group: string, points: CommitPoint[]): void {
    const offsets = groups.get(group) ?? new Map<string, string>();
    for (const p of points) offsets.set(`${p.topic}/${p.partition}`, p.offset);
    groups.set(group, offsets);
    if (dir === undefined) return;
    unsaved.add(group);
    flushTimer ??= setTimeout(flush, COMMIT_FLUSH_MS);
  }

  function flush(): void {
    flushTimer = undefined;
    for (const group of [...unsaved]) {
      try {
        save(group);
      } catch (err) {
        // Kept in memory and written at the next flush; until then a crash redelivers a little more.
        unsaved.add(group);
        flushTimer ??= setTimeout(flush, 1_000);
        options.onError?.('saving consumer offsets', err as Error);
      }
    }
  }

  function deleteGroups(groupIds: string[]): Promise<void> {
    for (const g of groupIds) {
      groups.delete(g);
      unsaved.delete(g);
      if (dir !== undefined) rmSync(join(dir, 'groups', `${safeName(g)}.json`), { force: true });
    }
    return Promise.resolve();
  }

  return {
    retain,
    groupIds: () => [...groups.keys()],

    replay(topic: string, from: Map<number, string>, onMessage: (m: QueueMessage) => void, onEnds?: (ends: Map<number, string>) => void): Promise<Map<number, string>> {
      const partitions = partitionsOf(topic);
      const ends = new Map<number, string>();
      for (const partition of from.keys()) {
        const part = partitions[partition];
        if (part === undefined) return Promise.reject(new Error(`topic "${topic}" has no partition ${String(partition)}`));
        ends.set(partition, String(part.next));
      }
      onEnds?.(ends);
      for (const [partition, start] of from) {
        const part = partitions[partition];
        const end = Number(ends.get(partition));
        if (part === undefined) continue;
        for (let i = indexAt(part.messages, Number(start)); i < part.messages.length; i++) {
          const m = part.messages[i];
          if (m === undefined || Number(m.offset) >= end) break;
          onMessage(m);
        }
      }
      return Promise.resolve(ends);
    },

    partitionOf: (topic: string, key: string) => Promise.resolve(partitionFor(key, partitionsOf(topic).length, 0)),

    admin(): Promise<QueueAdmin> {
      return Promise.resolve({
        ensureTopics(specs: TopicSpec[]) {
          specs.forEach(createTopic);
          return Promise.resolve();
        },
        listTopics: () => Promise.resolve([...topics.keys()]),
        partitionCount: (topic: string) => Promise.resolve(topics.get(topic)?.partitions.length ?? 0),
        groupLag(groupId: string, topic: string): Promise<PartitionLag[]> {
          const offsets = groups.get(groupId);
          return Promise.resolve(
            partitionsOf(topic).map((p, partition) => {
              const committed = offsets?.get(`${topic}/${partition}`) ?? null;
              const low = firstOffset(p);
              return { partition, committed, highWatermark: String(p.next), lag: p.next - Math.max(low, Number(committed ?? low)) };
            }),
          );
        },
        deleteGroups,
        holdForGroup(groupId: string, topicNames: string[]) {
          const held = groups.get(groupId);
          const start = topicNames.flatMap((topic) =>
            partitionsOf(topic).flatMap((part, partition) =>
              held?.has(`${topic}/${partition}`) === true ? [] : [{ topic, partition, offset: String(firstOffset(part)) }],
            ),
          );
          if (start.length > 0) {
            commit(groupId, start);
            save(groupId);
          }
          return Promise.resolve();
        },
        close: () => Promise.resolve(),
      });
    },

    producer() {
      return Promise.resolve({
        send(topic: string, records: OutgoingRecord[]) {
          const partitions = partitionsOf(topic);
          const written = new Map<number, string>();
          for (const r of records) {
            const p = r.partition ?? partitionFor(r.key, partitions.length, roundRobin++);
            const part = partitions[p];
            if (part === undefined) return Promise.reject(new Error(`topic "${topic}" has no partition ${String(p)}`));
            const value = r.value === null ? null : (Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value)).toString('base64');
            const record: Stored = { o: part.next, k: r.key ?? null, v: value, h: r.headers ?? {}, t: Date.now() };
            // Appended before the send resolves: an acknowledged record survives a crash.
            if (part.file !== undefined) appendFileSync(part.file, `${JSON.stringify(record)}\n`);
            part.messages.push(toMessage(topic, p, part.next++, record));
            if (r.partition !== undefined) written.set(p, String(part.next));
          }
          appended.emit('append');
          return Promise.resolve([...written].map(([partition, next]): Written => ({ partition, next })));
        },
        deleteGroups,
        close: () => Promise.resolve(),
      });
    },

    consumer(opts: ConsumerOptions): Promise<QueueConsumer> {
      if (activeGroups.has(opts.groupId)) {
        return Promise.reject(new Error(`the embedded queue allows one consumer per group; "${opts.groupId}" already has one`));
      }
      for (const t of opts.topics) partitionsOf(t);
      activeGroups.add(opts.groupId);
      const state = { running: false };
      const loops: Promise<void>[] = [];

      const position = (topic: string, partition: number, part: Partition): number => {
        const committed = groups.get(opts.groupId)?.get(`${topic}/${partition}`);
        if (committed !== undefined) return Number(committed);
        const start = opts.fromBeginning === true ? firstOffset(part) : part.next;
        // Where a new group starts is its first commit: retention then keeps what it has yet to read.
        commit(opts.groupId, [{ topic, partition, offset: String(start) }]);
        return start;
      };

      const loop = async (topic: string, partition: number, handlers: ConsumerHandlers): Promise<void> => {
        const part = partitionsOf(topic)[partition];
        if (part === undefined) return;
        let next = position(topic, partition, part);
        while (state.running) {
          const from = indexAt(part.messages, next);
          if (from >= part.messages.length) {
            await new Promise<void>((resolve) => {
              const wake = (): void => {
                appended.off('append', wake);
                appended.off('stop', wake);
                resolve();
              };
              appended.on('append', wake);
              appended.on('stop', wake);
            });
            continue;
          }
          const messages = part.messages.slice(from, from + MAX_BATCH);
          // One member per group here: a partition is only taken away by a stop, which waits for the batch.
          const batch: Batch = { topic, partition, messages, heartbeat: () => Promise.resolve(), isActive: () => state.running, signal: NEVER };
          try {
            await handlers.onBatch(batch);
          } catch {
            // As Kafka would after a consumer crash: continue from the last commit.
          }
          next = position(topic, partition, part);
          if (next <= Number(messages[0]?.offset ?? next)) {
            // Nothing committed: back off before redelivering, as a restarted consumer would.
            await new Promise((r) => setTimeout(r, 1_000));
          }
        }
      };

      return Promise.resolve({
        run(handlers: ConsumerHandlers) {
          state.running = true;
          // The one consumer of its group: every partition, once.
          handlers.onAssign?.(opts.topics.flatMap((topic) => partitionsOf(topic).map((_, partition) => ({ topic, partition }))));
          for (const topic of opts.topics) {
            partitionsOf(topic).forEach((_, p) => loops.push(loop(topic, p, handlers)));
          }
          return Promise.resolve();
        },
        commit(points: CommitPoint[]) {
          commit(opts.groupId, points);
          return Promise.resolve();
        },
        async close() {
          state.running = false;
          appended.emit('stop');
          await Promise.all(loops);
          if (unsaved.has(opts.groupId)) save(opts.groupId);
          activeGroups.delete(opts.groupId);
        },
      });
    },
  };
}
