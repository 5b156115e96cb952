import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { kafkaQueue } from '../../lib/kafka/kafkajs.ts';
import type { Queue, QueueMessage } from '../../lib/kafka/queue.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { sharedKafka } from '../harness/env.ts';
import { eventually } from '../harness/wait.ts';

describe('Kafka (real broker)', function () {
  this.timeout(120_000);
  let queue: Queue;

  before(async () => {
    const kafka = await sharedKafka();
    queue = kafkaQueue({ brokers: kafka.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: new PassThrough() }) });
  });

  it('round-trips keyed records with headers, in order per key, and reports group lag', async () => {
    const topic = `roundtrip-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 3 }]);
    await admin.ensureTopics([{ topic, partitions: 3 }]); // idempotent
    assert.equal(await admin.partitionCount(topic), 3);

    const producer = await queue.producer();
    const sent = Array.from({ length: 30 }, (_, i) => ({
      key: `bucket/key-${i % 5}`,
      value: JSON.stringify({ seq: i }),
      headers: { 'x-seq': String(i) },
    }));
    await producer.send(topic, sent);

    const group = `g-${randomUUID()}`;
    assert.equal((await admin.groupLag(group, topic)).reduce((n, p) => n + p.lag, 0), 30);

    const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
    const got: QueueMessage[] = [];
    await consumer.run({
      onMessage: async (m) => {
        got.push(m);
        await consumer.commit([{ topic: m.topic, partition: m.partition, offset: (BigInt(m.offset) + 1n).toString() }]);
      },
    });
    await eventually(() => assert.equal(got.length, 30), 60_000);

    // Same key → same partition, in production order.
    for (let k = 0; k < 5; k++) {
      const forKey = got.filter((m) => m.key === `bucket/key-${k}`);
      assert.equal(new Set(forKey.map((m) => m.partition)).size, 1);
      assert.deepEqual(
        forKey.map((m) => Number(m.headers['x-seq'])),
        sent.map((s, i) => (s.key === `bucket/key-${k}` ? i : -1)).filter((i) => i >= 0),
      );
    }
    assert.deepEqual(JSON.parse(got[0]?.value?.toString() ?? '{}'), { seq: Number(got[0]?.headers['x-seq']) });

    // Every offset committed: no lag left for this group.
    await eventually(async () => assert.equal((await admin.groupLag(group, topic)).reduce((n, p) => n + p.lag, 0), 0));
    await consumer.close();
    await producer.close();
    await admin.close();
  });

  it('redelivers uncommitted records to the next consumer of the group', async () => {
    const topic = `redeliver-${randomUUID()}`;
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 1 }]);
    const producer = await queue.producer();
    await producer.send(topic, ['a', 'b', 'c', 'd'].map((v) => ({ key: 'k', value: v })));
    const group = `g-${randomUUID()}`;

    // First consumer commits only past "b" (offset 2 = next to read).
    const first = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
    const seenFirst: string[] = [];
    await first.run({
      onMessage: async (m) => {
        seenFirst.push(m.value?.toString() ?? '');
        if (m.value?.toString() === 'b') await first.commit([{ topic, partition: 0, offset: '2' }]);
      },
    });
    await eventually(() => assert.equal(seenFirst.length, 4));
    await first.close();
    assert.deepEqual((await admin.groupLag(group, topic)).map((p) => [p.committed, p.lag]), [['2', 2]]);

    const second = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
    const seenSecond: string[] = [];
    await second.run({
      onMessage: (m) => {
        seenSecond.push(m.value?.toString() ?? '');
        return Promise.resolve();
      },
    });
    await eventually(() => assert.deepEqual(seenSecond, ['c', 'd']));
    await second.close();
    await producer.close();
    await admin.close();
  });
});
