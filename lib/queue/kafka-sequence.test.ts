import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Message, RecordMetadata } from 'kafkajs';
import { createLogger } from '../log/logger.ts';
import { partitionTurns, renewingProducer, type ProducerClient } from './kafka-sequence.ts';

// kafkajs losing count of a partition's numbers takes a leader moving between two sends in flight, which
// no broker does on demand (broker-loss.test.ts attacks it on a real cluster, by chance; a lost answer is
// attacked on a real broker in kafka-lost-answers.test.ts): scripted producers answer here as kafkajs and
// the brokers then do, in the orders that matter.

const log = createLogger({ component: 'test', stream: createWriteStream('/dev/null') });
const refused = (type: string): Error => Object.assign(new Error(`refused: ${type}`), { type });

class Scripted implements ProducerClient {
  sent: string[] = [];
  disconnected = false;
  private readonly answer: (topic: string) => Error | undefined;
  /** The partition its answers name (another than the one sent to: kafkajs leaving it out). */
  private readonly answered: number;
  constructor(answer: (topic: string) => Error | undefined, answered = 0) {
    this.answer = answer;
    this.answered = answered;
  }
  async send({ topic, messages }: { topic: string; messages: Message[] }): Promise<RecordMetadata[]> {
    await sleep(5);
    const err = this.answer(topic);
    if (err !== undefined) throw err;
    this.sent.push(...messages.map((m) => String(m.value)));
    return [{ topicName: topic, partition: this.answered, errorCode: 0, baseOffset: '0' }];
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
    await Promise.all([producer.send('tasks', 0, [{ value: 'a' }]), producer.send('tasks', 0, [{ value: 'b' }])]);
    assert.equal(connects(), 1, 'one replacement');
    assert.deepEqual(next.sent.sort(), ['a', 'b']);
    assert.ok(broken.disconnected);
    await producer.send('tasks', 0, [{ value: 'c' }]);
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
    const [failed, inFlight] = [producer.send('tasks', 0, [{ value: 'a' }]), producer.send('tasks', 0, [{ value: 'b' }])];
    await assert.rejects(failed, /REQUEST_TIMED_OUT/);
    assert.equal(first.disconnected, false, 'not disconnected under a send in flight');
    await inFlight;
    assert.ok(first.disconnected, 'disconnected once that send ended');
    await producer.send('tasks', 0, [{ value: 'c' }]);
    assert.equal(connects(), 1);
    assert.deepEqual([first.sent, next.sent], [['b'], ['c']], 'nothing after the failure went through the old producer');
  });

  it('tries again to connect a new producer at the next send when the last attempt failed', async () => {
    const first = new Scripted(() => refused('NOT_ENOUGH_REPLICAS'));
    const next = new Scripted(() => undefined);
    let connects = 0;
    const producer = renewingProducer(first, () => (++connects === 1 ? Promise.reject(new Error('brokers down')) : Promise.resolve(next)), log);
    await assert.rejects(producer.send('tasks', 0, [{ value: 'a' }]), /NOT_ENOUGH_REPLICAS/);
    await assert.rejects(producer.send('tasks', 0, [{ value: 'a' }]), /brokers down/);
    await producer.send('tasks', 0, [{ value: 'a' }]);
    assert.deepEqual([connects, next.sent, first.sent], [2, ['a'], []]);
    await producer.close();
    assert.ok(next.disconnected);
  });

  it('takes an answer that leaves the partition out for a failed send', async () => {
    const first = new Scripted(() => undefined, 1);
    const next = new Scripted(() => undefined);
    const producer = renewingProducer(first, () => Promise.resolve(next), log);
    await assert.rejects(producer.send('tasks', 0, [{ value: 'a' }]), /without partition 0/);
    assert.equal(await producer.send('tasks', 0, [{ value: 'a' }]), '0');
    assert.deepEqual([first.disconnected, next.sent], [true, ['a']]);
  });

  it('once closed, sends nothing and connects no new producer; a send under way ends before the disconnect', async () => {
    let fail = false;
    const first = new Scripted(() => (fail ? refused('REQUEST_TIMED_OUT') : undefined));
    const { producer, connects } = renewing(first, new Scripted(() => undefined));
    const inFlight = assert.rejects(producer.send('tasks', 0, [{ value: 'a' }]), /REQUEST_TIMED_OUT/);
    fail = true;
    const closing = producer.close();
    assert.equal(first.disconnected, false, 'not under a send in flight');
    await closing;
    await inFlight;
    await assert.rejects(producer.send('tasks', 0, [{ value: 'b' }]), /closed/);
    assert.deepEqual([connects(), first.disconnected], [0, true]);
  });

  it('runs one send per partition at a time, in the order asked, while other partitions go on', async () => {
    const inTurn = partitionTurns();
    const events: string[] = [];
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const a = inTurn('t/0', async () => {
      events.push('a+');
      await held;
      events.push('a-');
      throw new Error('a');
    });
    const b = inTurn('t/0', () => Promise.resolve(void events.push('b')));
    await inTurn('t/1', () => Promise.resolve(void events.push('c')));
    assert.deepEqual(events, ['a+', 'c'], 'another partition goes on while a holds t/0');
    release();
    await assert.rejects(a, /a/);
    await b;
    assert.deepEqual(events, ['a+', 'c', 'a-', 'b'], 'b waits for a, even though a failed');
  });
});
