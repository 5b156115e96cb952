import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import fs, { appendFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { createLogger } from '../../lib/log/logger.ts';
import { embeddedQueue } from '../../lib/queue/embedded.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { RequestQueue, type RequestQueueState } from '../../lib/queue/kafkajs-request-queue.ts';
import { commitBatch, consumeOrdered, Limiter, type Lease } from '../../lib/queue/ordered.ts';
import { assignBusyFirst } from '../../lib/queue/busy-first.ts';
import { GroupedSender } from '../../lib/queue/grouped-send.ts';
import type { ConsumerOptions, Queue, QueueConsumer, QueueMessage, QueueProducer } from '../../lib/queue/queue.ts';
import { sharedKafka } from '../harness/env.ts';
import { follow } from '../../lib/queue/follow.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import { eventually } from '../harness/wait.ts';

const { ConfigResourceTypes, Kafka, logLevel } = createRequire(import.meta.url)('kafkajs') as typeof import('kafkajs');
/** The first segment file of a partition of the embedded queue, named by its first offset. */
const firstSegment = (dir: string, topic: string, partition = 0): string => join(dir, 'topics', topic, String(partition), `${'0'.repeat(20)}.log`);

const quiet = createLogger({ component: 'test', stream: new PassThrough() });

async function collect(queue: Queue, topic: string, group: string): Promise<{ seen: QueueMessage[]; consumer: QueueConsumer }> {
  const seen: QueueMessage[] = [];
  const consumer = await follow(queue, topic, (m) => seen.push(m), group);
  return { seen, consumer };
}

/**
 * As collect, with a group that outlives the consumer (follow deletes its group on close); `batches`
 * holds when each batch came.
 */
async function collectInGroup(queue: Queue, topic: string, group: string, options: Partial<ConsumerOptions> = {}): Promise<{ seen: QueueMessage[]; batches: number[]; consumer: QueueConsumer }> {
  const seen: QueueMessage[] = [];
  const batches: number[] = [];
  const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true, ...options });
  await consumer.run({
    onBatch: async (batch) => {
      batches.push(performance.now());
      seen.push(...batch.messages);
      await commitBatch(consumer, batch);
    },
  });
  return { seen, batches, consumer };
}

// One contract, two implementations: the real Kafka broker and the embedded queue of local mode.
const implementations: [string, () => Promise<Queue>][] = [
  ['Kafka (real broker)', async () => kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: quiet })],
  ['embedded queue', () => Promise.resolve(embeddedQueue())],
];

for (const [name, open] of implementations) {
  describe(`queue contract: ${name}`, function () {
    this.timeout(120_000);
    let queue: Queue;
    before(async () => {
      queue = await open();
    });

    it('round-trips keyed records with headers, in order per key, and reports group lag', async () => {
      const topic = `roundtrip-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 3 }]);
      await admin.ensureTopics([{ topic, partitions: 3 }]); // idempotent
      assert.equal(await admin.partitionCount(topic), 3);

      const producer = await queue.producer();
      const sent = Array.from({ length: 30 }, (_, i) => ({ key: `bucket/key-${i % 5}`, value: JSON.stringify({ seq: i }), headers: { 'x-seq': String(i) } }));
      await producer.send(topic, sent);
      const group = `g-${randomUUID()}`;
      assert.equal((await admin.groupLag(group, topic)).reduce((n, p) => n + p.lag, 0), 30);

      const { seen, consumer } = await collect(queue, topic, group);
      await eventually(() => assert.equal(seen.length, 30), 60_000);
      for (let k = 0; k < 5; k++) {
        const forKey = seen.filter((m) => m.key === `bucket/key-${k}`);
        assert.equal(new Set(forKey.map((m) => m.partition)).size, 1, 'one key, one partition');
        assert.deepEqual(
          forKey.map((m) => Number(m.headers['x-seq'])),
          sent.flatMap((s, i) => (s.key === `bucket/key-${k}` ? [i] : [])),
        );
      }
      const first = seen[0];
      assert.ok(first);
      assert.deepEqual(JSON.parse(first.value?.toString() ?? ''), { seq: Number(first.headers['x-seq']) });
      await eventually(async () => assert.equal((await admin.groupLag(group, topic)).reduce((n, p) => n + p.lag, 0), 0));
      await consumer.close();
      await producer.close();
      await admin.close();
    });

    it('runs one key at a time in order, keys concurrently within the bound, and commits only contiguous offsets', async () => {
      const topic = `ordered-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 1 }]);
      const producer = await queue.producer();
      // a0 is slow; b*, c* are quick. The commit may not pass a0 until it is done.
      await producer.send(topic, ['a0', 'b0', 'c0', 'b1', 'a1', 'c1', 'b2'].map((v) => ({ key: v[0] ?? '', value: v })));
      const group = `g-${randomUUID()}`;
      const limiter = new Limiter(2);
      const order: string[] = [];
      let peak = 0;
      let releaseA0: () => void = () => undefined;
      const a0Gate = new Promise<void>((r) => (releaseA0 = r));
      const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
      await consumeOrdered(
        consumer,
        limiter,
        async (m) => {
          peak = Math.max(peak, limiter.inFlight);
          const v = m.value?.toString() ?? '';
          if (v === 'a0') await a0Gate;
          else await sleep(20);
          order.push(v);
        },
        { commitIntervalMs: 50 },
      );
      // Everything but a's chain finishes while a0 is held; the commit stays at offset 0.
      await eventually(() => assert.deepEqual(order.filter((v) => v[0] !== 'a').sort(), ['b0', 'b1', 'b2', 'c0', 'c1']));
      // A slow key holds up only itself: what comes later, in later batches, goes on past it.
      await producer.send(topic, ['b3', 'd0', 'c2'].map((v) => ({ key: v[0] ?? '', value: v })));
      await eventually(() => assert.deepEqual(order.filter((v) => v[0] !== 'a').sort(), ['b0', 'b1', 'b2', 'b3', 'c0', 'c1', 'c2', 'd0']));
      await sleep(200);
      assert.deepEqual((await admin.groupLag(group, topic)).map((p) => p.committed ?? '0'), ['0'], 'nothing is committed past a message not done');
      releaseA0();
      await eventually(() => assert.equal(order.length, 10));
      assert.ok(order.indexOf('a0') < order.indexOf('a1'));
      assert.ok(order.indexOf('b0') < order.indexOf('b1') && order.indexOf('b1') < order.indexOf('b2'));
      assert.ok(order.indexOf('c0') < order.indexOf('c1'));
      assert.ok(peak <= 2, `at most 2 in flight, saw ${peak}`);
      await eventually(async () => assert.deepEqual((await admin.groupLag(group, topic)).map((p) => p.lag), [0]));
      await consumer.close();
      await producer.close();
      await admin.close();
    });

    it('deletes the group of a follower when it closes, so that restarts leave no groups behind', async () => {
      const topic = `follower-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 1 }]);
      const producer = await queue.producer();
      await producer.send(topic, [{ key: 'k', value: 'v' }]);
      const group = `g-${randomUUID()}`;
      const { seen, consumer } = await collect(queue, topic, group);
      await eventually(async () => {
        assert.equal(seen.length, 1);
        assert.deepEqual((await admin.groupLag(group, topic)).map((p) => p.committed), ['1']);
      });
      await consumer.close();
      // Gone with its offsets: a new group of that name would start from the beginning.
      await eventually(async () => assert.deepEqual((await admin.groupLag(group, topic)).map((p) => [p.committed, p.lag]), [[null, 1]]));
      await producer.close();
      await admin.close();
    });

    it('writes to a named partition, tells where each send ended, replays ranges to their end, and places keys where partitionOf says', async () => {
      const topic = `changelog-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 3, config: { 'cleanup.policy': 'compact' } }]);
      const producer = await queue.producer();
      assert.deepEqual(await producer.send(topic, [{ key: 'a', value: '1', partition: 2 }, { key: 'b', value: null, partition: 2 }]), [{ partition: 2, next: '2' }]);
      assert.deepEqual(await producer.send(topic, [{ key: 'a', value: '2', partition: 2 }]), [{ partition: 2, next: '3' }]);
      const read: [number, string, string | null][] = [];
      const ends = await queue.replay(topic, new Map([[2, '1'], [0, '0']]), (m) => read.push([m.partition, m.offset, m.value?.toString() ?? null]));
      assert.deepEqual(read, [[2, '1', null], [2, '2', '2']], 'from the offset asked, a tombstone included, to the end');
      assert.deepEqual([...ends].sort(), [[0, '0'], [2, '3']]);
      read.length = 0;
      assert.deepEqual([...(await queue.replay(topic, new Map([[2, '3']]), (m) => read.push([m.partition, m.offset, null])))], [[2, '3']]);
      assert.deepEqual(read, [], 'nothing past the end');

      // Keyed records without a partition land where partitionOf says, and a consumer hears its assignment.
      const keys = Array.from({ length: 12 }, (_, i) => `loc/bucket/key-${String(i)}`);
      await producer.send(topic, keys.map((key) => ({ key, value: 'x' })));
      const expected = new Map(await Promise.all(keys.map(async (k) => [k, await queue.partitionOf(topic, k)] as const)));
      const assigned: number[][] = [];
      const seen = new Map<string, number>();
      const group = `g-${randomUUID()}`;
      const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
      await consumer.run({
        onAssign: (tps) => assigned.push(tps.map((tp) => tp.partition).sort()),
        onBatch: async (batch) => {
          for (const m of batch.messages) if (m.key?.startsWith('loc/') === true) seen.set(m.key, m.partition);
          await commitBatch(consumer, batch);
        },
      });
      await eventually(() => assert.equal(seen.size, keys.length));
      assert.deepEqual(seen, expected);
      assert.deepEqual(assigned.at(-1), [0, 1, 2]);
      await consumer.close();
      await admin.deleteGroups([group]);
      await producer.close();
      await admin.close();
    });

    it('groups sends made while one is in flight into one produce call, each call resolved once its records are written, in call order', async () => {
      const topic = `grouped-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 1 }]);
      const producer = await queue.producer();
      const calls: number[] = [];
      const counting: QueueProducer = {
        send: (t, records) => producer.send(t, records),
        sendAll: (sends) => (calls.push(sends.reduce((n, s) => n + s.records.length, 0)), producer.sendAll(sends)),
        close: () => producer.close(),
      };
      const grouped = new GroupedSender(() => counting);
      await Promise.all(Array.from({ length: 50 }, (_, i) => grouped.send(topic, [{ key: 'k', value: String(i) }])));
      assert.equal(calls.reduce((a, b) => a + b, 0), 50);
      assert.equal(calls[0], 1, 'the first send goes out at once, alone');
      assert.ok(calls.length <= 3, `50 sends made together take a few produce calls, not ${String(calls.length)}`);
      const { seen, consumer } = await collect(queue, topic, `g-${randomUUID()}`);
      await eventually(() => assert.equal(seen.length, 50));
      assert.deepEqual(seen.map((m) => m.value?.toString()), Array.from({ length: 50 }, (_, i) => String(i)));
      assert.equal(consumer.consuming(), true);
      await consumer.close();
      assert.equal(consumer.consuming(), false, 'a closed consumer does not consume (what /readyz reports)');
      // A producer gone: every waiting send is refused, none is dropped silently.
      await assert.rejects(new GroupedSender(() => undefined).send(topic, [{ value: 'x' }]), /producer is closed/);
      await producer.close();
      await admin.close();
    });

    it('redelivers what was not committed to the next consumer of the group', async () => {
      const topic = `redeliver-${randomUUID()}`;
      const admin = await queue.admin();
      await admin.ensureTopics([{ topic, partitions: 1 }]);
      const producer = await queue.producer();
      await producer.send(topic, ['a', 'b', 'c', 'd'].map((v) => ({ key: 'k', value: v })));
      const group = `g-${randomUUID()}`;

      // The first consumer finishes a and b, then fails on c, as a crash would.
      const first = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
      const seenFirst: string[] = [];
      await consumeOrdered(first, new Limiter(4), (m) => {
        const v = m.value?.toString() ?? '';
        if (v === 'c') return Promise.reject(new Error('crash'));
        seenFirst.push(v);
        return Promise.resolve();
      });
      await eventually(() => assert.deepEqual(seenFirst.slice(0, 2), ['a', 'b']));
      await first.close();
      await eventually(async () => assert.deepEqual((await admin.groupLag(group, topic)).map((p) => [p.committed, p.lag]), [['2', 2]]));

      const { seen, consumer } = await collect(queue, topic, group);
      await eventually(() => assert.deepEqual(seen.map((m) => m.value?.toString()), ['c', 'd']));
      await consumer.close();
      await producer.close();
      await admin.close();
    });
  });
}

describe('partitions with work in flight (real broker)', function () {
  this.timeout(120_000);

  it('leaves a partition whose work still runs with its member through a rebalance; the new member gets the idle ones', async () => {
    // The assignment itself: claimed partitions stay (first claimant by id), the rest even out the counts.
    const tp = (partition: number): { topic: string; partition: number } => ({ topic: 't', partition });
    const plan = assignBusyFirst([0, 1, 2, 3].map(tp), [{ id: 'b', busy: [tp(2)] }, { id: 'a', busy: [tp(0), tp(1), tp(2)] }, { id: 'c', busy: [] }]);
    assert.deepEqual(Object.fromEntries([...plan].map(([id, tps]) => [id, tps.map((x) => x.partition)])), { a: [0, 1, 2], b: [3], c: [] });

    const queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: quiet });
    const topic = `sticky-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 3 }]);
    const producer = await queue.producer();
    // Work held on partitions 0 and 1; partition 2 idle. Round robin would give b one of the busy two.
    await producer.send(topic, [{ key: 'slow', value: 'slow-0', partition: 0 }, { key: 'slow', value: 'slow-1', partition: 1 }]);
    const group = `g-${randomUUID()}`;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const leases = new Map<string, Lease>();
    const seen: Record<'a' | 'b', string[]> = { a: [], b: [] };
    const member = async (name: 'a' | 'b'): Promise<QueueConsumer> => {
      const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
      await consumeOrdered(consumer, new Limiter(4), async (m, lease) => {
        const v = m.value?.toString() ?? '';
        seen[name].push(v);
        if (v.startsWith('slow')) {
          leases.set(v, lease);
          await gate;
        }
      });
      return consumer;
    };
    const a = await member('a');
    await eventually(() => assert.equal(leases.size, 2));
    const b = await member('b');
    // Once b reads partition 2, the group has rebalanced; 0 and 1 stayed with a, whose work went on.
    await producer.send(topic, [{ key: 'after', value: 'after-2', partition: 2 }]);
    await eventually(() => assert.deepEqual(seen.b, ['after-2']), 60_000);
    await producer.send(topic, [{ key: 'other', value: 'after-0', partition: 0 }]);
    await eventually(() => assert.ok(seen.a.includes('after-0'), 'partition 0 is still a\'s, and its other keys go on'));
    for (const [v, lease] of leases) {
      assert.equal(lease.signal.aborted, false, `the work in flight on ${v} was not aborted by the rebalance`);
      assert.equal(lease.isActive(), true);
    }
    assert.deepEqual(seen.b, ['after-2'], 'the new member never redid the work in flight');
    release();
    await eventually(async () => assert.deepEqual((await admin.groupLag(group, topic)).map((p) => [p.committed, p.lag]), [['2', 0], ['1', 0], ['1', 0]]));
    await Promise.all([a.close(), b.close()]);
    await producer.close();
    await admin.close();
  });
});

describe('Kafka settings and recovery (real broker)', function () {
  this.timeout(120_000);

  it('creates topics with as many replicas as it can up to 3 and min.insync.replicas one less, and reports drift', async () => {
    const lines: { message: string; topic?: string; setting?: string; expected?: string; actual?: string }[] = [];
    const stream = new PassThrough();
    stream.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n').filter((l) => l !== '')) lines.push(JSON.parse(line) as (typeof lines)[number]);
    });
    const queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: createLogger({ component: 'test', stream }) });
    const admin = await queue.admin();
    const [fresh, existing] = [`settings-${randomUUID()}`, `settings-${randomUUID()}`];
    // Made elsewhere before: two partitions, no compaction.
    await admin.ensureTopics([{ topic: existing, partitions: 2 }]);
    await admin.ensureTopics([{ topic: fresh, partitions: 3, config: { 'cleanup.policy': 'compact' } }, { topic: existing, partitions: 4, config: { 'cleanup.policy': 'compact' } }]);
    await admin.close();
    const raw = new Kafka({ clientId: 'test-raw', brokers: (await sharedKafka()).brokers, logLevel: logLevel.NOTHING }).admin();
    await raw.connect();
    try {
      const described = await raw.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: fresh }] });
      const config = Object.fromEntries((described.resources[0]?.configEntries ?? []).map((e) => [e.configName, e.configValue]));
      // One broker here: one replica, and writes acknowledged by it alone.
      assert.deepEqual([config['min.insync.replicas'], config['cleanup.policy']], ['1', 'compact']);
      const meta = await raw.fetchTopicMetadata({ topics: [fresh] });
      assert.deepEqual(meta.topics[0]?.partitions.map((p) => p.replicas.length), [1, 1, 1]);
    } finally {
      await raw.disconnect();
    }
    const drift = lines.filter((l) => l.message === 'topic settings differ from what this installation expects').map((l) => [l.topic, l.setting, l.expected, l.actual]);
    assert.deepEqual(drift, [[existing, 'partitions', '4', '2'], [existing, 'cleanup.policy', 'compact', 'delete']]);
  });

  it('counts the messages a group has not consumed that are older than an age (those retention deletes first)', async () => {
    const kafka = await sharedKafka();
    const queue = kafkaQueue({ brokers: kafka.brokers, clientId: 'test', logger: quiet });
    const topic = `expiring-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 1, config: { 'retention.ms': String(30 * 24 * 3600_000) } }]);
    // Two messages written 5 days ago (as the broker records them), one now.
    const raw = new Kafka({ clientId: 'test-raw', brokers: kafka.brokers, logLevel: logLevel.NOTHING }).producer();
    await raw.connect();
    const old = String(Date.now() - 5 * 24 * 3600_000);
    await raw.send({ topic, messages: [{ key: 'k', value: 'a', timestamp: old }, { key: 'k', value: 'b', timestamp: old }, { key: 'k', value: 'c' }] });
    await raw.disconnect();
    const group = `expiring-${randomUUID()}`;
    assert.equal(await admin.unconsumedOlderThan?.(group, topic, 3 * 24 * 3600_000), 2);
    assert.equal(await admin.unconsumedOlderThan?.(group, topic, 6 * 24 * 3600_000), 0);
    const reader = await collectInGroup(queue, topic, group);
    await eventually(() => assert.equal(reader.seen.length, 3));
    await reader.consumer.close();
    assert.equal(await admin.unconsumedOlderThan?.(group, topic, 3 * 24 * 3600_000), 0);
    await admin.close();
  });

  it('lets members that start together, racing to create the same topics, all read them at once', async () => {
    // As worker pods of a new installation do: each creates what is missing; the one whose creation
    // loses the race must still wait for the topics' leaders before it reads them.
    const { brokers } = await sharedKafka();
    for (let round = 0; round < 3; round++) {
      const topics = Array.from({ length: 4 }, (_, i) => ({ topic: `racing-${String(i)}-${randomUUID()}`, partitions: 8 }));
      await Promise.all(
        Array.from({ length: 4 }, async (_, member) => {
          const queue = kafkaQueue({ brokers, clientId: `racer-${String(member)}`, logger: quiet });
          const admin = await queue.admin();
          try {
            await admin.ensureTopics(topics);
            for (const { topic } of topics) assert.equal(await readToEnd(queue, topic, () => undefined), 0);
          } finally {
            await admin.close();
          }
        }),
      );
    }
  });

  it('restarts a consumer whose batch handler threw, from the last commit, instead of leaving it idle', async () => {
    const queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: quiet });
    const topic = `handler-errors-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 1 }]);
    await admin.close();
    const producer = await queue.producer();
    await producer.send(topic, ['a', 'b', 'c'].map((value) => ({ key: 'k', value })));
    const seen: string[] = [];
    let throws = 1;
    const consumer = await queue.consumer({ groupId: `handler-errors-${randomUUID()}`, topics: [topic], fromBeginning: true });
    await consumer.run({
      onBatch: async (batch) => {
        for (const m of batch.messages) {
          if (m.value?.toString() === 'b' && throws-- > 0) throw new Error('a bug, once');
          seen.push(m.value?.toString() ?? '');
          await consumer.commit([{ topic, partition: batch.partition, offset: (BigInt(m.offset) + 1n).toString() }]);
        }
      },
    });
    try {
      await eventually(() => assert.deepEqual(seen, ['a', 'b', 'c']), 60_000, 200);
    } finally {
      await consumer.close();
      await producer.close();
    }
  });

  it('fetches a trickle in a few batches when it lingers after catching up, and a backlog without lingering; loses nothing', async () => {
    const queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: quiet });
    const [trickle, backlog] = [`trickle-${randomUUID()}`, `backlog-${randomUUID()}`];
    const admin = await queue.admin();
    await admin.ensureTopics([trickle, backlog].map((topic) => ({ topic, partitions: 1 })));
    await admin.close();
    const producer = await queue.producer();
    // Over 2 MiB: more than one fetch (1 MiB per partition), so the first batch ends short of the end.
    const big = 'x'.repeat(1_024);
    for (let i = 0; i < 2_500; i += 500) await producer.send(backlog, Array.from({ length: 500 }, (_, j) => ({ key: String(i + j), value: big })));
    const [lingering, eager, behind] = await Promise.all([collectInGroup(queue, trickle, `linger-${randomUUID()}`, { lingerMs: 250 }), collectInGroup(queue, trickle, `eager-${randomUUID()}`), collectInGroup(queue, backlog, `behind-${randomUUID()}`, { lingerMs: 5_000 })]);
    const offsets = (r: { seen: QueueMessage[] }): string[] => r.seen.map((m) => m.offset);
    try {
      await sleep(1_000);
      const start = performance.now();
      for (let i = 0; i < 60; i++) {
        await producer.send(trickle, [{ key: 'k', value: String(i) }]);
        await sleep(20);
      }
      const elapsed = performance.now() - start;
      const all = Array.from({ length: 60 }, (_, i) => String(i));
      await eventually(() => {
        assert.deepEqual(offsets(lingering), all);
        assert.deepEqual(offsets(eager), all);
      }, 30_000, 100);
      // One batch per linger at most, against about one per message.
      assert.ok(lingering.batches.length <= elapsed / 250 + 3, `${String(lingering.batches.length)} batches lingering, over ${elapsed.toFixed(0)} ms`);
      assert.ok(eager.batches.length >= 2 * lingering.batches.length, `${String(eager.batches.length)} batches without lingering, ${String(lingering.batches.length)} with`);
      await eventually(() => assert.equal(behind.seen.length, 2_500), 30_000, 100);
      assert.deepEqual(offsets(behind), Array.from({ length: 2_500 }, (_, i) => String(i)));
      assert.ok(behind.batches.length >= 2, 'the backlog came in one batch');
      // A batch that did not reach the end is not followed by a linger.
      const spread = (behind.batches.at(-1) ?? 0) - (behind.batches[0] ?? 0);
      assert.ok(spread < 5_000, `the backlog's batches spread over ${spread.toFixed(0)} ms`);
    } finally {
      await Promise.all([lingering, eager, behind].map((r) => r.consumer.close()));
      await producer.close();
    }
  });

  it('leaves idle connections without timers: no check of pending requests between answers', async () => {
    // kafkajs 2.2.4 re-armed a 1 ms timer on every connection forever (kafkajs-request-queue.ts).
    const queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'test', logger: quiet });
    const topic = `idle-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 2 }]);
    await admin.close();
    const producer = await queue.producer();
    await producer.send(topic, [{ key: 'k', value: 'v' }]);
    const consumer = await queue.consumer({ groupId: `idle-${randomUUID()}`, topics: [topic], fromBeginning: true });
    const seen: string[] = [];
    await consumer.run({ onBatch: (batch) => commitBatch(consumer, batch).then(() => void seen.push(...batch.messages.map((m) => m.offset))) });
    const proto = RequestQueue.prototype;
    const original = proto.checkPendingRequests;
    let checks = 0;
    try {
      await eventually(() => assert.deepEqual(seen, ['0']), 60_000, 100);
      proto.checkPendingRequests = function (this: RequestQueueState) {
        checks++;
        original.call(this);
      };
      // Idle: a fetch held by the broker, heartbeats. With the endless timer: thousands of checks.
      await sleep(2_000);
      assert.ok(checks < 40, `${String(checks)} checks of pending requests in 2 s of idleness`);
    } finally {
      proto.checkPendingRequests = original;
      await consumer.close();
      await producer.close();
    }
  });
});

describe('embedded queue durability', () => {
  // Each test gets a folder of its own, removed afterwards.
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bb-embedded-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('cuts off a torn last line (a crash mid-append) and keeps every acknowledged record', async () => {
    const first = embeddedQueue({ dir });
    await (await first.admin()).ensureTopics([{ topic: 't', partitions: 1 }]);
    await (await first.producer()).send('t', [{ key: 'k', value: 'one' }]);
    appendFileSync(firstSegment(dir, 't'), '{"k":"k","v":"dHdv');
    const second = embeddedQueue({ dir });
    await (await second.producer()).send('t', [{ key: 'k', value: 'three' }]);
    const third = embeddedQueue({ dir });
    const c = await collect(third, 't', 'g');
    await eventually(() => assert.deepEqual(c.seen.map((m) => [m.offset, m.value?.toString()]), [['0', 'one'], ['1', 'three']]));
    await c.consumer.close();
  });

  it('shares fsyncs among concurrent sends, across segment rolls, and lets no consumer read a record before it is on disk', async () => {
    // Segments of 300 bytes: a new segment every few records, often while an fsync runs on the last one.
    const queue = embeddedQueue({ dir, segmentBytes: 300 });
    await (await queue.admin()).ensureTopics([{ topic: 't', partitions: 1 }]);
    // Which records an fsync made durable, told by node:fs itself (the log's named imports are bound to
    // it): those written before it started. A send writes its records at once, when called.
    const written: string[] = [];
    const durable = new Set<string>();
    let fsyncs = 0;
    const { fsync, fsyncSync } = fs;
    fs.fsync = ((fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => {
      fsyncs++;
      const covered = [...written];
      fsync(fd, (err) => {
        if (err === null) covered.forEach((v) => durable.add(v));
        cb(err);
      });
    }) as typeof fs.fsync;
    fs.fsyncSync = (fd: number) => {
      fsyncSync(fd);
      written.forEach((v) => durable.add(v));
    };
    syncBuiltinESMExports();
    const early: string[] = [];
    const read: string[] = [];
    const consumer = await queue.consumer({ groupId: 'g', topics: ['t'], fromBeginning: true });
    const values = Array.from({ length: 600 }, (_, i) => `v${String(i)}`);
    try {
      await consumer.run({
        onBatch: async (batch) => {
          for (const m of batch.messages) {
            const v = m.value?.toString() ?? '';
            if (!durable.has(v)) early.push(v);
            read.push(v);
          }
          await commitBatch(consumer, batch);
        },
      });
      const producer = await queue.producer();
      // Waves of sends a moment apart: each written while the fsync of the ones before may still run.
      const sends: Promise<unknown>[] = [];
      for (const [i, v] of values.entries()) {
        written.push(v);
        sends.push(producer.send('t', [{ key: v, value: v }]).then(() => assert.ok(durable.has(v), `${v} acknowledged before it was on disk`)));
        if (i % 30 === 29) await new Promise((resolve) => setImmediate(resolve));
      }
      await Promise.all(sends);
      await eventually(() => assert.equal(read.length, 600));
    } finally {
      Object.assign(fs, { fsync, fsyncSync });
      syncBuiltinESMExports();
      await consumer.close();
    }
    assert.ok(fsyncs > 0 && fsyncs < 100, `${String(fsyncs)} fsyncs for 600 sends`);
    assert.deepEqual(early, [], 'records read before they were on disk');
    assert.deepEqual(read, values);
    // On disk, all of them, in many segments.
    const again = await collectInGroup(embeddedQueue({ dir }), 't', 'other');
    await eventually(() => assert.equal(again.seen.length, 600));
    await again.consumer.close();
    assert.ok(readdirSync(join(dir, 'topics', 't', '0')).length > 10);
    assert.deepEqual(again.seen.map((m) => m.value?.toString()), values);
  });

  it('takes over the single-file logs of earlier versions', async () => {
    mkdirSync(join(dir, 'topics', 'old'), { recursive: true });
    writeFileSync(join(dir, 'topics', 'old', 'meta.json'), JSON.stringify({ topic: 'old', partitions: 1, compact: false }));
    // Lines of the first format carry no offset: their line number is.
    writeFileSync(join(dir, 'topics', 'old', '0.log'), ['a', 'b'].map((v) => `${JSON.stringify({ k: v, v: Buffer.from(v).toString('base64'), h: {}, t: 1 })}\n`).join(''));
    const queue = embeddedQueue({ dir });
    await (await queue.producer()).send('old', [{ key: 'c', value: 'c' }]);
    const read = await collectInGroup(queue, 'old', 'g');
    await eventually(() => assert.deepEqual(read.seen.map((m) => [m.offset, m.value?.toString()]), [['0', 'a'], ['1', 'b'], ['2', 'c']]));
    await read.consumer.close();
    assert.ok(existsSync(firstSegment(dir, 'old')));
  });

  it('keeps records and committed offsets across a restart from its folder', async () => {
    const before = embeddedQueue({ dir });
    await (await before.admin()).ensureTopics([{ topic: 't', partitions: 2 }]);
    await (await before.producer()).send('t', ['x', 'y', 'z'].map((v) => ({ key: v, value: v })));
    const c1 = await collectInGroup(before, 't', 'g');
    await eventually(() => assert.equal(c1.seen.length, 3));
    await c1.consumer.close();
    await (await before.producer()).send('t', [{ key: 'w', value: 'w' }]);

    const after = embeddedQueue({ dir });
    assert.deepEqual(await (await after.admin()).listTopics(), ['t']);
    const c2 = await collectInGroup(after, 't', 'g');
    await eventually(() => assert.deepEqual(c2.seen.map((m) => m.value?.toString()), ['w']));
    await c2.consumer.close();
  });

  it('compacts a compacted topic to the newest record per key, keeping offsets, on disk too', async () => {
    const queue = embeddedQueue({ dir });
    await (await queue.admin()).ensureTopics([{ topic: 'c', partitions: 1, config: { 'cleanup.policy': 'compact' } }]);
    const producer = await queue.producer();
    await producer.send('c', ['v1', 'v2', 'v3'].map((v) => ({ key: 'k', value: v })));
    await producer.send('c', [{ key: 'j', value: 'j1' }]);
    assert.equal(queue.retain(), 2);

    const reopened = embeddedQueue({ dir });
    const read = await collectInGroup(reopened, 'c', 'reader');
    await eventually(() => assert.deepEqual(read.seen.map((m) => [m.offset, m.value?.toString()]), [['2', 'v3'], ['3', 'j1']]));
    await (await reopened.producer()).send('c', [{ key: 'k', value: 'v4' }]);
    await eventually(() => assert.deepEqual(read.seen.map((m) => m.offset), ['2', '3', '4']));
    await read.consumer.close();
  });

  it('drops records of other topics only once every subscribed group has committed past them', async () => {
    // Tiny segments, one per send: retention drops whole segments, never the one appended to.
    const queue = embeddedQueue({ dir, segmentBytes: 1 });
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic: 't', partitions: 1 }]);
    for (let i = 0; i < 10; i++) await (await queue.producer()).send('t', [{ key: 'k', value: String(i) }]);
    const fast = await collectInGroup(queue, 't', 'fast');
    await eventually(() => assert.equal(fast.seen.length, 10));
    // A second group that has subscribed but holds its first batch (a paused destination): nothing goes.
    let release: () => void = () => undefined;
    const held = new Promise<void>((r) => (release = r));
    const slow = await queue.consumer({ groupId: 'slow', topics: ['t'], fromBeginning: true });
    let slowSeen = 0;
    await slow.run({
      onBatch: async (batch) => {
        await held;
        slowSeen += batch.messages.length;
        await commitBatch(slow, batch);
      },
    });
    await sleep(100);
    assert.equal(queue.retain(), 0);
    release();
    await eventually(() => assert.equal(slowSeen, 10));
    // The last segment stays: it carries the next offset across a restart.
    assert.equal(queue.retain(), 9);
    assert.deepEqual((await admin.groupLag('slow', 't')).map((p) => [p.committed, p.highWatermark, p.lag]), [['10', '10', 0]]);
    await fast.consumer.close();
    await slow.close();

    const reopened = embeddedQueue({ dir });
    await (await reopened.producer()).send('t', [{ key: 'k', value: 'after' }]);
    const again = await collectInGroup(reopened, 't', 'fast');
    await eventually(() => assert.deepEqual(again.seen.map((m) => [m.offset, m.value?.toString()]), [['10', 'after']]));
    await again.consumer.close();
  });

  it('keeps what a held group has not read, what a topic of unknown policy holds, and offsets past a cut log', async () => {
    const queue = embeddedQueue({ dir });
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic: 't', partitions: 1 }, { topic: 'c', partitions: 1, config: { 'cleanup.policy': 'compact' } }]);
    const producer = await queue.producer();
    await producer.send('t', Array.from({ length: 8 }, (_, i) => ({ key: 'k', value: String(i) })));
    await producer.send('c', ['1', '2', '3', '4'].map((v) => ({ key: 'k', value: v })));
    // A destination paused from the start never subscribes, but holds its tasks.
    await admin.holdForGroup?.('paused', ['t']);
    const reader = await collectInGroup(queue, 't', 'other');
    await eventually(() => assert.equal(reader.seen.length, 8));
    await reader.consumer.close();
    assert.equal(queue.retain(), 3, 'only the compacted topic loses records');

    // A folder from before the policy was recorded: nothing goes until the topic is declared again.
    writeFileSync(join(dir, 'topics', 'c', 'meta.json'), JSON.stringify({ topic: 'c', partitions: 1 }));
    await producer.send('c', ['5', '6'].map((v) => ({ key: 'k', value: v })));
    const legacy = embeddedQueue({ dir });
    assert.equal(legacy.retain(), 0);
    await (await legacy.admin()).ensureTopics([{ topic: 'c', partitions: 1, config: { 'cleanup.policy': 'compact' } }]);
    assert.equal(legacy.retain(), 2);

    // A log cut short under a group's committed offset (a power loss): new records still reach it.
    writeFileSync(firstSegment(dir, 't'), '');
    const cut = embeddedQueue({ dir });
    await (await cut.producer()).send('t', [{ key: 'k', value: 'after' }]);
    const again = await collectInGroup(cut, 't', 'other');
    await eventually(() => assert.deepEqual(again.seen.map((m) => [m.offset, m.value?.toString()]), [['8', 'after']]));
    await again.consumer.close();
    const paused = await collectInGroup(cut, 't', 'paused');
    await eventually(() => assert.deepEqual(paused.seen.map((m) => m.offset), ['8']));
    await paused.consumer.close();
  });

  it('opens a log with a zero-filled block and a torn last record, says what it cut, and goes on from the commits', async () => {
    const first = embeddedQueue({ dir });
    await (await first.admin()).ensureTopics([{ topic: 't', partitions: 1 }]);
    for (let i = 0; i < 20; i++) await (await first.producer()).send('t', [{ key: 'k', value: `record ${String(i)}` }]);
    const g = await collectInGroup(first, 't', 'g');
    await eventually(() => assert.equal(g.seen.length, 20));
    await g.consumer.close();
    // A block of the file zeroed (a crash with the block allocated but not written) and a record cut mid-write.
    const file = firstSegment(dir, 't');
    const size = statSync(file).size;
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.alloc(150), 0, 150, Math.floor(size / 2));
    closeSync(fd);
    appendFileSync(file, '{"o":20,"k":"k","v":"cmVj');
    const repairs: string[] = [];
    const reopened = embeddedQueue({ dir, onRepair: (what) => repairs.push(what) });
    assert.equal(repairs.length, 2, repairs.join('\n'));
    assert.match(repairs.join('\n'), /cut 25 bytes after the last whole record/);
    assert.match(repairs.join('\n'), /skipped [1-9]\d* unreadable lines/);
    // The group goes on from its commit; new records get new offsets.
    await (await reopened.producer()).send('t', [{ key: 'k', value: 'after' }]);
    const again = await collectInGroup(reopened, 't', 'g');
    await eventually(() => assert.deepEqual(again.seen.map((m) => [m.offset, m.value?.toString()]), [['20', 'after']]));
    await again.consumer.close();
    // Everything outside the damaged block is still there, in order.
    const all = await collectInGroup(reopened, 't', 'everything');
    await eventually(() => assert.equal(all.seen.at(-1)?.value?.toString(), 'after'));
    const offsets = all.seen.map((m) => Number(m.offset));
    assert.deepEqual(offsets, [...offsets].sort((x, y) => x - y));
    assert.ok(offsets.length >= 17 && offsets.length < 21, `${String(offsets.length)} records kept`);
    assert.ok(all.seen.every((m) => m.value?.toString() === (m.offset === '20' ? 'after' : `record ${m.offset}`)));
    await all.consumer.close();
  });

  it('keeps memory bounded through 2 million records of one partition, read back from disk in order', async function () {
    this.timeout(300_000);
    // In a process of its own, under a heap limit the records themselves would exceed if held in memory.
    const script = new URL('../tools/embedded-load.ts', import.meta.url).pathname;
    const { stdout } = await promisify(execFile)(process.execPath, ['--max-old-space-size=512', script, join(dir, 'load'), '2000000'], { maxBuffer: 1 << 20 });
    const result = JSON.parse(stdout) as { seen: number; inOrder: boolean; maxRssMiB: number; writeMs: number; readMs: number };
    assert.deepEqual([result.seen, result.inOrder], [2_000_000, true]);
    assert.ok(result.maxRssMiB < 700, `peak RSS ${String(result.maxRssMiB)} MiB`);
    console.log(`      2 M records: written in ${String(result.writeMs)} ms, read back in ${String(result.readMs)} ms, peak RSS ${String(result.maxRssMiB)} MiB`);
  });

  it('saves the offsets of a consumer that never closes (a crash) within a moment of the commit', async () => {
    const crashed = embeddedQueue({ dir });
    await (await crashed.admin()).ensureTopics([{ topic: 't', partitions: 1 }]);
    await (await crashed.producer()).send('t', ['a', 'b'].map((v) => ({ key: v, value: v })));
    const c1 = await collectInGroup(crashed, 't', 'g');
    await eventually(() => assert.equal(c1.seen.length, 2));
    // Commits are written at most every 100 ms; this consumer is abandoned, not closed.
    await sleep(300);
    await (await crashed.producer()).send('t', [{ key: 'c', value: 'c' }]);
    await eventually(() => assert.equal(c1.seen.length, 3));

    const restarted = embeddedQueue({ dir });
    const lag = await (await restarted.admin()).groupLag('g', 't');
    assert.ok(['2', '3'].includes(lag[0]?.committed ?? ''), `committed ${String(lag[0]?.committed)}`);
    await c1.consumer.close();
  });
});
