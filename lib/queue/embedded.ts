import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
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
} from './queue.ts';

// The queue of local mode: Kafka's semantics (partitions keyed by hash, consumer groups with committed
// offsets, batches per partition) in one process. With a folder it is durable: each partition is an
// append-only JSON-lines log and each group's offsets a file replaced atomically, so a crash or restart
// resumes from the last commit like Kafka would. Logs are not compacted or trimmed (small sites).

interface Stored {
  k: string | null;
  v: string | null; // base64
  h: Record<string, string>;
  t: number;
}

interface Partition {
  messages: QueueMessage[];
  file: string | undefined;
}

const MAX_BATCH = 500;
const COMMIT_FLUSH_MS = 100;

function partitionFor(key: string | undefined, partitions: number, roundRobin: number): number {
  if (key === undefined) return roundRobin % partitions;
  return createHash('md5').update(key).digest().readUInt32BE(0) % partitions;
}

function safeName(name: string): string {
  return encodeURIComponent(name);
}

export function embeddedQueue(options: { dir?: string } = {}): Queue {
  const topics = new Map<string, Partition[]>();
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
      const meta = JSON.parse(readFileSync(join(dir, 'topics', t, 'meta.json'), 'utf8')) as { topic: string; partitions: number };
      topics.set(
        meta.topic,
        Array.from({ length: meta.partitions }, (_, p) => {
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
            .map((line, offset) => toMessage(meta.topic, p, offset, JSON.parse(line) as Stored));
          return { messages, file };
        }),
      );
    }
    for (const g of readdirSync(join(dir, 'groups')).filter((f) => f.endsWith('.json'))) {
      const saved = JSON.parse(readFileSync(join(dir, 'groups', g), 'utf8')) as { group: string; offsets: Record<string, string> };
      groups.set(saved.group, new Map(Object.entries(saved.offsets)));
    }
  }

  function toMessage(topic: string, partition: number, offset: number, s: Stored): QueueMessage {
    return { topic, partition, offset: String(offset), key: s.k, value: s.v === null ? null : Buffer.from(s.v, 'base64'), headers: s.h, timestamp: s.t };
  }

  function partitionsOf(topic: string): Partition[] {
    const p = topics.get(topic);
    if (p === undefined) throw new Error(`topic "${topic}" does not exist`);
    return p;
  }

  function createTopic(spec: TopicSpec): void {
    if (topics.has(spec.topic)) return;
    let folder: string | undefined;
    if (dir !== undefined) {
      folder = join(dir, 'topics', safeName(spec.topic));
      mkdirSync(folder, { recursive: true });
      writeFileSync(join(folder, 'meta.json'), JSON.stringify({ topic: spec.topic, partitions: spec.partitions }));
    }
    topics.set(
      spec.topic,
      Array.from({ length: spec.partitions }, (_, p) => ({ messages: [], file: folder === undefined ? undefined : join(folder, `${p}.log`) })),
    );
  }

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
    flushTimer ??= setTimeout(() => {
      flushTimer = undefined;
      [...unsaved].forEach(save);
    }, COMMIT_FLUSH_MS);
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
    admin(): Promise<QueueAdmin> {
      return Promise.resolve({
        ensureTopics(specs: TopicSpec[]) {
          specs.forEach(createTopic);
          return Promise.resolve();
        },
        listTopics: () => Promise.resolve([...topics.keys()]),
        partitionCount: (topic: string) => Promise.resolve(topics.get(topic)?.length ?? 0),
        groupLag(groupId: string, topic: string): Promise<PartitionLag[]> {
          const offsets = groups.get(groupId);
          return Promise.resolve(
            partitionsOf(topic).map((p, partition) => {
              const committed = offsets?.get(`${topic}/${partition}`) ?? null;
              const high = p.messages.length;
              return { partition, committed, highWatermark: String(high), lag: high - Number(committed ?? 0) };
            }),
          );
        },
        deleteGroups,
        close: () => Promise.resolve(),
      });
    },

    producer() {
      return Promise.resolve({
        send(topic: string, records: OutgoingRecord[]) {
          const partitions = partitionsOf(topic);
          for (const r of records) {
            const p = partitionFor(r.key, partitions.length, roundRobin++);
            const part = partitions[p];
            if (part === undefined) continue;
            const value = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
            const stored: Stored = { k: r.key ?? null, v: value.toString('base64'), h: r.headers ?? {}, t: Date.now() };
            // Appended before the send resolves: an acknowledged record survives a crash.
            if (part.file !== undefined) appendFileSync(part.file, `${JSON.stringify(stored)}\n`);
            part.messages.push(toMessage(topic, p, part.messages.length, stored));
          }
          appended.emit('append');
          return Promise.resolve();
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

      const position = (topic: string, partition: number, size: number): number => {
        const committed = groups.get(opts.groupId)?.get(`${topic}/${partition}`);
        if (committed !== undefined) return Number(committed);
        return opts.fromBeginning === true ? 0 : size;
      };

      const loop = async (topic: string, partition: number, handlers: ConsumerHandlers): Promise<void> => {
        const part = partitionsOf(topic)[partition];
        if (part === undefined) return;
        let next = position(topic, partition, part.messages.length);
        while (state.running) {
          if (next >= part.messages.length) {
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
          const messages = part.messages.slice(next, next + MAX_BATCH);
          const batch: Batch = { topic, partition, messages, heartbeat: () => Promise.resolve(), isActive: () => state.running };
          try {
            await handlers.onBatch(batch);
          } catch {
            // As Kafka would after a consumer crash: continue from the last commit.
          }
          next = position(topic, partition, part.messages.length);
          if (next <= Number(messages[0]?.offset ?? next)) {
            // Nothing committed: back off before redelivering, as a restarted consumer would.
            await new Promise((r) => setTimeout(r, 1_000));
          }
        }
      };

      return Promise.resolve({
        run(handlers: ConsumerHandlers) {
          state.running = true;
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
