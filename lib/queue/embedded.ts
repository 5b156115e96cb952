import { hash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FileLog, MemoryLog, type PartitionLog, type Stored } from './embedded-log.ts';
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
import { tpKey } from './queue.ts';

// The queue of local mode: Kafka's semantics (partitions keyed by hash, consumer groups with committed
// offsets, batches per partition) in one process. With a folder it is durable: each partition is a log of
// segment files (embedded-log.ts), a send acknowledged once fsynced (group commit), and each group's offsets and each topic's metadata a
// file replaced atomically, so a crash or restart resumes from the last commit like Kafka would. Logs are
// kept bounded (retain()): a compacted topic keeps the newest record per key, and any other topic drops
// what every group subscribed to it has committed.

interface Topic {
  partitions: PartitionLog[];
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

/**
 * Replaces `file` with `text` so that a crash, even a power loss, leaves the old or the new one whole;
 * off the event loop (a busy run saves its offsets several times a second).
 */
async function replaceFile(file: string, text: string): Promise<void> {
  const tmp = await open(`${file}.tmp`, 'w');
  try {
    await tmp.writeFile(text);
    await tmp.sync();
  } finally {
    await tmp.close();
  }
  await rename(`${file}.tmp`, file);
  const folder = await open(dirname(file), 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}

const MAX_BATCH = 500;
/** A gathering consumer's batch is handled once this long passes without a new message (or at gatherMs). */
const GATHER_QUIET_MS = 25;
/** The signal of a batch never taken away. */
const NEVER = new AbortController().signal;
const COMMIT_FLUSH_MS = 100;
const RETAIN_INTERVAL_MS = 60_000;

function partitionFor(key: string | undefined, partitions: number, roundRobin: number): number {
  if (partitions === 1) return 0;
  if (key === undefined) return roundRobin % partitions;
  return hash('md5', key, 'buffer').readUInt32BE(0) % partitions;
}

function safeName(name: string): string {
  return encodeURIComponent(name);
}

function isCompacted(spec: TopicSpec): boolean {
  return spec.config?.['cleanup.policy'] === 'compact';
}

export interface EmbeddedOptions {
  /** The folder it keeps its logs and offsets in; in memory without one. */
  dir?: string;
  /** A background task (retention, saving offsets) failed; it is tried again. */
  onError?: (what: string, err: Error) => void;
  /** Damage found and repaired at open (a torn or corrupt log tail, an unreadable file). */
  onRepair?: (what: string) => void;
  /** Segment size of the logs (default 64 MiB). */
  segmentBytes?: number;
}

export function embeddedQueue(options: EmbeddedOptions = {}): EmbeddedQueue {
  const topics = new Map<string, Topic>();
  const groups = new Map<string, Map<string, string>>(); // group → "topic/partition" → next offset
  const activeGroups = new Set<string>();
  // Wakes idle partition loops: an event per "topic/partition" appended to (waking every loop at every
  // send cost each a read and its listeners again), and one per consumer for its rewind, resume or close.
  const appended = new EventEmitter();
  appended.setMaxListeners(0);
  let roundRobin = 0;
  const dir = options.dir;
  const report = (what: string): void => {
    options.onRepair?.(what);
  };
  const fileLog = (topic: string, partition: number, folder: string): FileLog =>
    new FileLog(topic, partition, join(folder, String(partition)), report, { legacy: join(folder, `${String(partition)}.log`), ...(options.segmentBytes !== undefined ? { segmentBytes: options.segmentBytes } : {}) });

  if (dir !== undefined) {
    mkdirSync(join(dir, 'topics'), { recursive: true });
    mkdirSync(join(dir, 'groups'), { recursive: true });
    for (const t of readdirSync(join(dir, 'topics'))) {
      const folder = join(dir, 'topics', t);
      let meta: { topic: string; partitions: number; compact?: boolean };
      try {
        meta = JSON.parse(readFileSync(join(folder, 'meta.json'), 'utf8')) as typeof meta;
      } catch {
        // Told by its folder instead; its policy is learnt when the topic is declared again.
        const partitions = new Set(readdirSync(folder).flatMap((f) => (/^\d+(\.log)?$/.test(f) ? [Number(f.replace('.log', ''))] : [])));
        meta = { topic: decodeURIComponent(t), partitions: Math.max(0, ...partitions) + 1 };
        report(`${folder}/meta.json is unreadable: ${String(meta.partitions)} partitions found in the folder`);
      }
      const partitions = Array.from({ length: meta.partitions }, (_, p) => fileLog(meta.topic, p, folder));
      topics.set(meta.topic, { partitions, compact: meta.compact === true, policyKnown: meta.compact !== undefined });
    }
    for (const g of readdirSync(join(dir, 'groups')).filter((f) => f.endsWith('.json'))) {
      try {
        const saved = JSON.parse(readFileSync(join(dir, 'groups', g), 'utf8')) as { group: string; offsets: Record<string, string> };
        groups.set(saved.group, new Map(Object.entries(saved.offsets)));
      } catch {
        report(`${join(dir, 'groups', g)} is unreadable: that group starts over from where a new one would`);
      }
    }
    // A log cut short (a power loss before the kernel wrote it) must not hand out offsets a group has
    // already committed past: its new records would be skipped.
    for (const offsets of groups.values()) {
      for (const [id, offset] of offsets) {
        const at = id.lastIndexOf('/');
        topics.get(id.slice(0, at))?.partitions[Number(id.slice(at + 1))]?.skipTo(Number(offset));
      }
    }
  }

  function partitionsOf(topic: string): PartitionLog[] {
    const t = topics.get(topic);
    if (t === undefined) throw new Error(`topic "${topic}" does not exist`);
    return t.partitions;
  }

  function saveMeta(topic: string, t: Topic): Promise<void> {
    if (dir === undefined) return Promise.resolve();
    const folder = join(dir, 'topics', safeName(topic));
    mkdirSync(folder, { recursive: true });
    const text = JSON.stringify({ topic, partitions: t.partitions.length, compact: t.compact });
    return serially(() => replaceFile(join(folder, 'meta.json'), text));
  }

  function createTopic(spec: TopicSpec): Promise<void> {
    const existing = topics.get(spec.topic);
    if (existing !== undefined) {
      // A folder from before the policy was recorded learns it from the topic's spec.
      if (!existing.policyKnown || existing.compact !== isCompacted(spec)) {
        existing.compact = isCompacted(spec);
        existing.policyKnown = true;
        return saveMeta(spec.topic, existing);
      }
      return Promise.resolve();
    }
    const folder = dir === undefined ? undefined : join(dir, 'topics', safeName(spec.topic));
    const t: Topic = {
      partitions: Array.from({ length: spec.partitions }, (_, p) => (folder === undefined ? new MemoryLog(spec.topic, p) : fileLog(spec.topic, p, folder))),
      compact: isCompacted(spec),
      policyKnown: true,
    };
    topics.set(spec.topic, t);
    return saveMeta(spec.topic, t);
  }

  /**
   * What a partition keeps. Compacted: the newest record per key (records without a key stay). Otherwise
   * what is at or past the lowest offset committed by the groups subscribed to it (none: all stays, as
   * for the journal-failed topic nobody consumes); the newest record always stays (it carries the next offset).
   */
  function retain(): number {
    let dropped = 0;
    for (const [topic, t] of topics) {
      // A topic whose policy is not known yet may be a compacted one: nothing of it goes.
      if (!t.policyKnown) continue;
      t.partitions.forEach((log, partition) => {
        if (t.compact) {
          dropped += log.compact();
          return;
        }
        const floors = [...groups.values()].flatMap((offsets) => {
          const o = offsets.get(`${topic}/${partition}`);
          return o === undefined ? [] : [Number(o)];
        });
        if (floors.length > 0) dropped += log.dropBelow(Math.min(...floors));
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
  // Saves and removals of offset files, one at a time and in order: each writes the group's offsets as
  // they are when it runs, and a removed group's file is not written again.
  let fileWork: Promise<void> = Promise.resolve();
  const serially = (work: () => Promise<void>): Promise<void> => {
    const done = fileWork.then(work);
    fileWork = done.catch(() => undefined);
    return done;
  };

  function save(group: string): Promise<void> {
    return serially(async () => {
      unsaved.delete(group);
      const offsets = groups.get(group);
      if (dir === undefined || offsets === undefined) return;
      await replaceFile(join(dir, 'groups', `${safeName(group)}.json`), JSON.stringify({ group, offsets: Object.fromEntries(offsets) }));
    });
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
      save(group).catch((err: unknown) => {
        // Kept in memory and written at the next flush; until then a crash redelivers a little more.
        unsaved.add(group);
        flushTimer ??= setTimeout(flush, 1_000);
        options.onError?.('saving consumer offsets', err as Error);
      });
    }
  }

  function deleteGroups(groupIds: string[]): Promise<void> {
    for (const g of groupIds) {
      groups.delete(g);
      unsaved.delete(g);
    }
    return dir === undefined ? Promise.resolve() : serially(async () => {
      for (const g of groupIds) await rm(join(dir, 'groups', `${safeName(g)}.json`), { force: true });
    });
  }

  return {
    retain,
    groupIds: () => [...groups.keys()],

    replay(topic: string, from: Map<number, string>, onMessage: (m: QueueMessage) => void, onEnds?: (ends: Map<number, string>) => void): Promise<Map<number, string>> {
      const partitions = partitionsOf(topic);
      const ends = new Map<number, string>();
      for (const partition of from.keys()) {
        const log = partitions[partition];
        if (log === undefined) return Promise.reject(new Error(`topic "${topic}" has no partition ${String(partition)}`));
        ends.set(partition, String(log.highWatermark()));
      }
      onEnds?.(ends);
      for (const [partition, start] of from) {
        const log = partitions[partition];
        const end = Number(ends.get(partition));
        for (let next = Number(start); log !== undefined && next < end; ) {
          const chunk = log.read(next, MAX_BATCH, end);
          if (chunk.length === 0) break;
          chunk.forEach(onMessage);
          next = Number(chunk.at(-1)?.offset) + 1;
        }
      }
      return Promise.resolve(ends);
    },

    partitionOf: (topic: string, key: string) => Promise.resolve(partitionFor(key, partitionsOf(topic).length, 0)),

    admin(): Promise<QueueAdmin> {
      return Promise.resolve({
        async ensureTopics(specs: TopicSpec[]) {
          await Promise.all(specs.map(createTopic));
        },
        listTopics: () => Promise.resolve([...topics.keys()]),
        partitionCount: (topic: string) => Promise.resolve(topics.get(topic)?.partitions.length ?? 0),
        groupLag(groupId: string, topic: string): Promise<PartitionLag[]> {
          const offsets = groups.get(groupId);
          return Promise.resolve(
            partitionsOf(topic).map((p, partition) => {
              const committed = offsets?.get(`${topic}/${partition}`) ?? null;
              const low = p.first();
              return { partition, committed, highWatermark: String(p.highWatermark()), lag: p.highWatermark() - Math.max(low, Number(committed ?? low)) };
            }),
          );
        },
        deleteGroups,
        holdForGroup(groupId: string, topicNames: string[]) {
          const held = groups.get(groupId);
          const start = topicNames.flatMap((topic) =>
            partitionsOf(topic).flatMap((part, partition) =>
              held?.has(`${topic}/${partition}`) === true ? [] : [{ topic, partition, offset: String(part.first()) }],
            ),
          );
          if (start.length === 0) return Promise.resolve();
          commit(groupId, start);
          return save(groupId);
        },
        close: () => Promise.resolve(),
      });
    },

    producer() {
      return Promise.resolve({
        send(topic: string, records: OutgoingRecord[]) {
          const partitions = partitionsOf(topic);
          const byPartition = new Map<number, Omit<Stored, 'o'>[]>();
          for (const r of records) {
            const p = r.partition ?? partitionFor(r.key, partitions.length, roundRobin++);
            if (partitions[p] === undefined) return Promise.reject(new Error(`topic "${topic}" has no partition ${String(p)}`));
            const value = r.value === null ? null : (Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value)).toString('base64');
            let list = byPartition.get(p);
            if (list === undefined) byPartition.set(p, (list = []));
            list.push({ k: r.key ?? null, v: value, h: r.headers ?? {}, t: Date.now() });
          }
          const written = new Map<number, string>();
          const logs: PartitionLog[] = [];
          try {
            for (const [p, list] of byPartition) {
              const log = partitions[p];
              if (log === undefined) continue;
              log.append(list);
              logs.push(log);
              if (records.some((r) => r.partition === p)) written.set(p, String(log.next));
            }
          } catch (err) {
            return Promise.reject(err instanceof Error ? err : new Error(String(err)));
          }
          // On disk, durable before the send resolves and before a consumer reads it: an acknowledged
          // record survives a crash, as one read does. Sends made meanwhile share the fsync (group commit).
          return Promise.all(logs.map((log) => log.flushed())).then(() => {
            for (const p of byPartition.keys()) appended.emit(tpKey({ topic, partition: p }));
            return [...written].map(([partition, next]): Written => ({ partition, next }));
          });
        },
        sendAll(sends) {
          return Promise.all(sends.map((s) => this.send(s.topic, s.records)));
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
      const state = { running: false, paused: false };
      const loops: Promise<void>[] = [];
      let windowed: ConsumerHandlers['windowed'];
      // Where a window asked a partition to be read again from.
      const rewinds = new Map<string, number>();
      const wakeAll = Symbol(opts.groupId);

      const position = (topic: string, partition: number, log: PartitionLog): number => {
        const committed = groups.get(opts.groupId)?.get(`${topic}/${partition}`);
        if (committed !== undefined) return Number(committed);
        const start = opts.fromBeginning === true ? log.first() : log.highWatermark();
        // Where a new group starts is its first commit: retention then keeps what it has yet to read.
        commit(opts.groupId, [{ topic, partition, offset: String(start) }]);
        return start;
      };

      const loop = async (topic: string, partition: number, handlers: ConsumerHandlers): Promise<void> => {
        const log = partitionsOf(topic)[partition];
        if (log === undefined) return;
        let next = position(topic, partition, log);
        const key = tpKey({ topic, partition });
        while (state.running) {
          const rewound = rewinds.get(key);
          rewinds.delete(key);
          if (rewound !== undefined) next = rewound;
          const messages = state.paused ? [] : log.read(next, MAX_BATCH);
          // Gathers while messages keep coming, up to gatherMs: at the end of a burst the batch goes at once.
          const until = performance.now() + (opts.gatherMs ?? 0);
          while (opts.gatherMs !== undefined && messages.length > 0 && messages.length < MAX_BATCH) {
            const left = until - performance.now();
            if (left <= 0) break;
            await new Promise((r) => setTimeout(r, Math.min(left, GATHER_QUIET_MS)));
            if (rewinds.has(key)) break;
            const more = log.read(Number(messages.at(-1)?.offset) + 1, MAX_BATCH - messages.length);
            if (more.length === 0) break;
            messages.push(...more);
          }
          if (messages.length === 0) {
            await new Promise<void>((resolve) => {
              const wake = (): void => {
                appended.off(key, wake);
                appended.off(wakeAll, wake);
                resolve();
              };
              appended.on(key, wake);
              appended.on(wakeAll, wake);
            });
            continue;
          }
          // One member per group here: a partition is only taken away by a stop, which waits for the batch.
          const batch: Batch = { topic, partition, messages, heartbeat: () => Promise.resolve(), isActive: () => state.running, signal: NEVER };
          let failed = false;
          try {
            await handlers.onBatch(batch);
          } catch {
            // As Kafka would after a consumer crash: continue from the last commit.
            failed = true;
          }
          // A window took the batch in: the next batch follows it (unless the window rewinds, above).
          next = handlers.windowed !== undefined && !failed ? Number(messages.at(-1)?.offset ?? next - 1) + 1 : position(topic, partition, log);
          if (failed || next <= Number(messages[0]?.offset ?? next)) {
            // Nothing committed: back off before redelivering, as a restarted consumer would.
            await new Promise((r) => setTimeout(r, 1_000));
          }
        }
      };

      return Promise.resolve({
        run(handlers: ConsumerHandlers) {
          state.running = true;
          windowed = handlers.windowed;
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
        committed: (tp) => Promise.resolve(groups.get(opts.groupId)?.get(tpKey(tp)) ?? null),
        rewind({ topic, partition, offset }) {
          rewinds.set(tpKey({ topic, partition }), Number(offset));
          appended.emit(wakeAll);
        },
        // A failed batch is redelivered here, never fatal: it consumes while it runs.
        consuming: () => state.running,
        pause() {
          state.paused = true;
        },
        resume() {
          state.paused = false;
          appended.emit(wakeAll);
        },
        async close() {
          await windowed?.drain();
          state.running = false;
          appended.emit(wakeAll);
          await Promise.all(loops);
          await (unsaved.has(opts.groupId) ? save(opts.groupId) : fileWork);
          activeGroups.delete(opts.groupId);
        },
      });
    },
  };
}
