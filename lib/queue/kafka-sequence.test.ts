import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Message, RecordMetadata } from 'kafkajs';
import { createLogger } from '../log/logger.ts';
import { groupedSends, partitionTurns, renewingProducer, type PartitionBatch, type ProducerClient } from './kafka-sequence.ts';

// kafkajs losing count of a partition's numbers takes a leader moving between two sends in flight, which
// no broker does on demand (broker-loss.test.ts attacks it on a real cluster, by chance; a lost answer is
// attacked on a real broker in kafka-lost-answers.test.ts): scripted producers answer here as kafkajs and
// the brokers then do, in the orders that matter.

const log = createLogger({ component: 'test', stream: createWriteStream('/dev/null') });
const refused = (type: string): Error => Object.assign(new Error(`refused: ${type}`), { type });
/** A promise held until release() is called. */
function gate(): { held: Promise<void>; release: () => void } {
  let release = (): void => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  return { held, release };
}

/** One record for tasks/0. */
const one = (value: string): PartitionBatch[] => [{ topic: 'tasks', partition: 0, messages: [{ value }] }];

class Scripted implements ProducerClient {
  sent: string[] = [];
  disconnected = false;
  private readonly answer: (topic: string) => Error | undefined;
  /** The partition its answers name (one not sent to: kafkajs leaving the others out); by default, each one sent to. */
  private readonly answered: number | undefined;
  constructor(answer: (topic: string) => Error | undefined, answered?: number) {
    this.answer = answer;
    this.answered = answered;
  }
  async sendBatch({ topicMessages }: { topicMessages: { topic: string; messages: Message[] }[] }): Promise<RecordMetadata[]> {
    await sleep(5);
    const err = this.answer(topicMessages.map((t) => t.topic).join(','));
    if (err !== undefined) throw err;
    this.sent.push(...topicMessages.flatMap((t) => t.messages.map((m) => String(m.value))));
    return topicMessages.flatMap(({ topic, messages }) => {
      const partitions = this.answered !== undefined ? [this.answered] : [...new Set(messages.map((m) => m.partition ?? 0))];
      return partitions.map((partition) => ({ topicName: topic, partition, errorCode: 0, baseOffset: '0' }));
    });
  }
  disconnect(): Promise<void> {
    this.disconnected = true;
    return Promise.resolve();
  }
}

/** A renewing producer over `first` whose replacements are `next`, and how many it connected. */
function renewing(first: Scripted, next: Scripted): { producer: ReturnType<typeof renewingProducer>; connects: () => number } {
  let connects = 0;
  const producer = renewingProducer(first, () => {
    connects++;
    return Promise.resolve(next);
  }, log);
  return { producer, connects: () => connects };
}

describe('kafkajs record numbers (kafka-sequence)', () => {
  it('replaces a producer whose numbers the brokers refuse, once for the sends that fail together', async () => {
    const broken = new Scripted(() => refused('OUT_OF_ORDER_SEQUENCE_NUMBER'));
    const next = new Scripted(() => undefined);
    const { producer, connects } = renewing(broken, next);
    await Promise.all([producer.send(one('a')), producer.send(one('b'))]);
    assert.equal(connects(), 1, 'one replacement');
    assert.deepEqual(next.sent.sort(), ['a', 'b']);
    assert.ok(broken.disconnected);
    await producer.send(one('c'));
    assert.equal(next.sent.at(-1), 'c', 'later sends go through the replacement');
    await producer.close();
    assert.ok(next.disconnected);
  });

  it('passes other errors on, sends what follows through a new producer, and retires the old one once its sends end', async () => {
    // The first send fails (its answer lost: the broker may have written it); one more is in flight on it.
    let calls = 0;
    const first = new Scripted(() => (++calls === 1 ? refused('REQUEST_TIMED_OUT') : undefined));
    const next = new Scripted(() => undefined);
    const { producer, connects } = renewing(first, next);
    const [failed, inFlight] = [producer.send(one('a')), producer.send(one('b'))];
    await assert.rejects(failed, /REQUEST_TIMED_OUT/);
    assert.equal(first.disconnected, false, 'not disconnected under a send in flight');
    await inFlight;
    assert.ok(first.disconnected, 'disconnected once that send ended');
    await producer.send(one('c'));
    assert.equal(connects(), 1);
    assert.deepEqual([first.sent, next.sent], [['b'], ['c']], 'nothing after the failure went through the old producer');
  });

  it('tries again to connect a new producer at the next send when the last attempt failed', async () => {
    const first = new Scripted(() => refused('NOT_ENOUGH_REPLICAS'));
    const next = new Scripted(() => undefined);
    let connects = 0;
    const producer = renewingProducer(first, () => (++connects === 1 ? Promise.reject(new Error('brokers down')) : Promise.resolve(next)), log);
    await assert.rejects(producer.send(one('a')), /NOT_ENOUGH_REPLICAS/);
    await assert.rejects(producer.send(one('a')), /brokers down/);
    await producer.send(one('a'));
    assert.deepEqual([connects, next.sent, first.sent], [2, ['a'], []]);
    await producer.close();
    assert.ok(next.disconnected);
  });

  it('takes an answer that leaves the partition out for a failed send', async () => {
    const first = new Scripted(() => undefined, 1);
    const next = new Scripted(() => undefined);
    const producer = renewingProducer(first, () => Promise.resolve(next), log);
    await assert.rejects(producer.send(one('a')), /without partition 0/);
    assert.deepEqual(await producer.send(one('a')), new Map([['tasks/0', '0']]));
    assert.deepEqual([first.disconnected, next.sent], [true, ['a']]);
  });

  it('sends several partitions in one request, and takes an answer that leaves one of them out for a failed send', async () => {
    const first = new Scripted(() => undefined, 0);
    const next = new Scripted(() => undefined);
    const producer = renewingProducer(first, () => Promise.resolve(next), log);
    const two: PartitionBatch[] = [{ topic: 'tasks', partition: 0, messages: [{ value: 'a' }] }, { topic: 'tasks', partition: 1, messages: [{ value: 'b' }, { value: 'c' }] }];
    await assert.rejects(producer.send(two), /without partition 1/);
    assert.deepEqual(await producer.send(two), new Map([['tasks/0', '0'], ['tasks/1', '0']]));
    assert.deepEqual([first.disconnected, next.sent], [true, ['a', 'b', 'c']]);
  });

  it('once closed, sends nothing and connects no new producer; a send under way ends before the disconnect', async () => {
    let fail = false;
    const first = new Scripted(() => (fail ? refused('REQUEST_TIMED_OUT') : undefined));
    const { producer, connects } = renewing(first, new Scripted(() => undefined));
    const inFlight = assert.rejects(producer.send(one('a')), /REQUEST_TIMED_OUT/);
    fail = true;
    const closing = producer.close();
    assert.equal(first.disconnected, false, 'not under a send in flight');
    await closing;
    await inFlight;
    await assert.rejects(producer.send(one('b')), /closed/);
    assert.deepEqual([connects(), first.disconnected], [0, true]);
  });

  it('runs one send per partition at a time, in the order asked, while other partitions go on', async () => {
    const inTurn = partitionTurns();
    const events: string[] = [];
    const { held, release } = gate();
    const a = inTurn(['t/0'], async () => {
      events.push('a+');
      await held;
      events.push('a-');
      throw new Error('a');
    });
    const b = inTurn(['t/0'], () => Promise.resolve(void events.push('b')));
    await inTurn(['t/1'], () => Promise.resolve(void events.push('c')));
    assert.deepEqual(events, ['a+', 'c'], 'another partition goes on while a holds t/0');
    release();
    await assert.rejects(a, /a/);
    await b;
    assert.deepEqual(events, ['a+', 'c', 'a-', 'b'], 'b waits for a, even though a failed');
  });

  it('runs a send of several partitions once each of them is free, and the next send of any of them after it', async () => {
    const inTurn = partitionTurns();
    const events: string[] = [];
    const { held, release } = gate();
    const a = inTurn(['t/0'], async () => {
      await held;
      events.push('a');
    });
    const both = inTurn(['t/0', 't/1'], () => Promise.resolve(void events.push('both')));
    const c = inTurn(['t/1'], () => Promise.resolve(void events.push('c')));
    await inTurn(['t/2'], () => Promise.resolve(void events.push('d')));
    assert.deepEqual(events, ['d'], 't/1 waits behind the send that holds t/0 as well');
    release();
    await Promise.all([a, both, c]);
    assert.deepEqual(events, ['d', 'a', 'both', 'c']);
  });

  it('groups the sends made while one to the same broker is under way into one request, each answered with its own offsets', async () => {
    const requests: string[][] = [];
    const { held, release } = gate();
    // Each partition's records are written from offset 10; the first request waits for release().
    const grouped = groupedSends(async (batches) => {
      requests.push(batches.map((b) => `${b.topic}/${String(b.partition)}:${b.messages.map((m) => String(m.value)).join('')}`));
      if (requests.length === 1) await held;
      return new Map(batches.map((b) => [`${b.topic}/${String(b.partition)}`, '10']));
    });
    const first = grouped(1, [{ topic: 't', partition: 0, messages: [{ value: 'a' }] }]);
    const b = grouped(1, [{ topic: 't', partition: 0, messages: [{ value: 'b' }] }]);
    const c = grouped(1, [{ topic: 'u', partition: 1, messages: [{ value: 'c' }] }]);
    const d = grouped(1, [{ topic: 't', partition: 0, messages: [{ value: 'd' }, { value: 'e' }] }]);
    const other = await grouped(2, [{ topic: 't', partition: 2, messages: [{ value: 'x' }] }]);
    assert.deepEqual(other, [{ topic: 't', partition: 2, next: '11' }], 'another broker\'s send goes on meanwhile');
    release();
    assert.deepEqual(await first, [{ topic: 't', partition: 0, next: '11' }]);
    assert.deepEqual(await Promise.all([b, c, d]), [[{ topic: 't', partition: 0, next: '11' }], [{ topic: 'u', partition: 1, next: '11' }], [{ topic: 't', partition: 0, next: '13' }]]);
    assert.deepEqual(requests, [['t/0:a'], ['t/2:x'], ['t/0:bde', 'u/1:c']], 'one request for the three sends made meanwhile, in the order of the calls');
  });

  it('fails every send a failed request carried, and goes on with the next', async () => {
    let requests = 0;
    const grouped = groupedSends(async (batches) => {
      await sleep(5);
      if (++requests === 2) throw new Error('NOT_ENOUGH_REPLICAS');
      return new Map(batches.map((b) => [`${b.topic}/${String(b.partition)}`, '0']));
    });
    const first = grouped(1, one('a'));
    const [b, c] = [grouped(1, one('b')), grouped(1, one('c'))];
    assert.deepEqual(await first, [{ topic: 'tasks', partition: 0, next: '1' }]);
    await assert.rejects(b, /NOT_ENOUGH_REPLICAS/);
    await assert.rejects(c, /NOT_ENOUGH_REPLICAS/);
    assert.deepEqual(await grouped(1, one('d')), [{ topic: 'tasks', partition: 0, next: '1' }]);
    assert.equal(requests, 3);
  });
});
