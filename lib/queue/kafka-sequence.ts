import { setTimeout as sleep } from 'node:timers/promises';
import type { Message, RecordMetadata } from 'kafkajs';
import type { Logger } from '../log/logger.ts';
import { batched } from './batched.ts';

// kafkajs 2.2.4's idempotent producer numbers each partition's records per producer id, and gives a
// request's numbers back when it fails. That is sound only if the same records are sent again next with
// those numbers, and no other request of the same records is still under way:
// - two sends in flight to one partition (its old and its new leader, a broker lost mid-send) left the
//   numbers out of step: the brokers refused every later send (OUT_OF_ORDER_SEQUENCE_NUMBER, for good);
// - a request the broker wrote but whose answer was lost (a broker lost, a timeout) gives its numbers to
//   whatever is sent next: the broker takes that batch for the lost one's duplicate and acknowledges it
//   without writing it (kafka-lost-answers.test.ts);
// - a send to several brokers is retried as soon as one request fails, while another may still be under
//   way (its numbers given back later would be used again by the next send), and a retry skips every
//   broker that answered, so a partition whose leader moved to one of them is left out (tulios/kafkajs#1798).
// So: one broker's partitions per kafkajs send (one request: by the leaders last known, and a send kafkajs
// split between brokers all the same is checked for a partition left out), one send per partition at a
// time, and a producer is never used again once a send of it failed.

/** How long a close waits for the sends under way. */
const CLOSE_WAIT_MS = 10_000;

/** Produce errors that mean the brokers no longer accept this producer id's numbers. */
const SEQUENCE_LOST = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

/** The protocol error's type, also under the wrapper kafkajs puts around it once it stops retrying. */
export const protocolType = (err: unknown): string => (err as { type?: string }).type ?? (err as { cause?: { type?: string } }).cause?.type ?? '';

/** What is used here of a connected kafkajs producer. */
export interface ProducerClient {
  sendBatch(batch: { acks: number; topicMessages: { topic: string; messages: Message[] }[] }): Promise<RecordMetadata[]>;
  disconnect(): Promise<void>;
}

/** Records for one partition of a topic. */
export interface PartitionBatch {
  topic: string;
  partition: number;
  messages: Message[];
}

/** A topic partition as turns and answers name it: `topic/partition`. */
export const partitionName = (topic: string, partition: number): string => `${topic}/${String(partition)}`;

/**
 * Runs `fn` once the sends under way to any of `partitions` have ended: one at a time per partition, in
 * the order asked. A turn is taken on all its partitions at once, so turns never wait on each other in a cycle.
 */
export function partitionTurns(): <T>(partitions: string[], fn: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<void>>();
  return (partitions, fn) => {
    const turn = Promise.all(partitions.map((p) => tails.get(p) ?? Promise.resolve())).then(fn);
    const ended = turn.then(
      () => undefined,
      () => undefined,
    );
    for (const p of partitions) tails.set(p, ended);
    void ended.then(() => {
      for (const p of partitions) if (tails.get(p) === ended) tails.delete(p);
    });
    return turn;
  };
}

/**
 * Sends partitions' records (led by one broker) with acks=all in one kafkajs send, and never through a
 * producer after one of its sends failed: a new producer (a new id, numbers afresh) sends what follows, and the failed one is
 * disconnected once its other sends have ended. The caller sends the failed records again; those the
 * broker had written are then written twice, which at-least-once delivery allows. Records the brokers
 * refused for their numbers are sent again at once through the new producer. Sends that fail together
 * share one new producer. Resolves with the base offset each partition's records were written from, by
partitionName (each partition at most once in `batches`).
 */
export function renewingProducer<P extends ProducerClient>(first: P, connect: () => Promise<P>, log: Logger): { send(batches: PartitionBatch[]): Promise<Map<string, string>>; close(): Promise<void> } {
  let current: Promise<P> = Promise.resolve(first);
  let closed = false;
  const inFlight = new Map<P, number>();
  const retired = new Set<P>();
  const disconnectIfIdle = (p: P): void => {
    if (!retired.has(p) || inFlight.has(p)) return;
    retired.delete(p);
    p.disconnect().catch(() => undefined);
  };
  /** The producer for sends after one through `failed` failed (or failed to connect): a new one, made once. */
  const after = (failed: Promise<P>): void => {
    if (current !== failed || closed) return;
    current = connect();
    current.catch(() => undefined);
  };
  /** One send through the producer `asked` gives. */
  const attempt = async (asked: Promise<P>, batches: PartitionBatch[]): Promise<Map<string, string>> => {
    if (closed) throw new Error(`Kafka producer closed: nothing sent to ${[...new Set(batches.map((b) => b.topic))].join(', ')}`);
    let using: P;
    try {
      using = await asked;
    } catch (err) {
      after(asked);
      throw err;
    }
    inFlight.set(using, (inFlight.get(using) ?? 0) + 1);
    try {
      const byTopic = new Map<string, Message[]>();
      for (const b of batches) {
        const messages = byTopic.get(b.topic) ?? [];
        for (const m of b.messages) messages.push({ ...m, partition: b.partition });
        byTopic.set(b.topic, messages);
      }
      const answer = await using.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
      const offsets = new Map<string, string>();
      for (const { topic, partition } of batches) {
        const offset = answer.find((a) => a.topicName === topic && a.partition === partition)?.baseOffset;
        if (offset === undefined) throw new Error(`Kafka answered a send to ${topic} without partition ${String(partition)}`);
        offsets.set(partitionName(topic, partition), offset);
      }
      return offsets;
    } catch (err) {
      retired.add(using);
      after(asked);
      throw err;
    } finally {
      const left = (inFlight.get(using) ?? 1) - 1;
      if (left > 0) inFlight.set(using, left);
      else inFlight.delete(using);
      disconnectIfIdle(using);
    }
  };
  return {
    async send(batches) {
      const partitions = batches.map((b) => partitionName(b.topic, b.partition));
      try {
        return await attempt(current, batches);
      } catch (err) {
        const type = protocolType(err);
        if (closed) throw err;
        if (!SEQUENCE_LOST.has(type)) {
          log.info('a Kafka send failed: what follows goes through a new producer', { partitions, error: type || (err as Error).message });
          throw err;
        }
        log.warn('Kafka refuses the producer\'s record numbers (kafkajs lost count after a broker failure): a new producer sends them again', { partitions, error: type });
        return attempt(current, batches);
      }
    },
    async close() {
      closed = true;
      const last = await current.catch(() => undefined);
      if (last !== undefined) retired.add(last);
      // Sends under way end first (kafkajs would reconnect a producer disconnected under them), for a while.
      for (const deadline = Date.now() + CLOSE_WAIT_MS; inFlight.size > 0 && Date.now() < deadline; ) await sleep(20);
      await Promise.all([...retired].map((p) => p.disconnect().catch(() => undefined)));
    },
  };
}

/** A partition's next offset after the records of a send. */
export interface PartitionNext {
  topic: string;
  partition: number;
  next: string;
}

/**
 * Group commit for a producer: a send to a broker while none to it is under way goes out at once; sends
 * made meanwhile wait for it, then go out together, as one request naming every topic and partition they
 * hold (the idempotent producer has one request in flight per broker anyway). A partition's records keep
 * the order of the calls, and its sends never overlap, even after its leader moved (partitionTurns). Each
 * call resolves once its records are acknowledged; a failed request fails every call it carried.
 */
export function groupedSends(send: (batches: PartitionBatch[]) => Promise<Map<string, string>>): (leader: number, batches: PartitionBatch[]) => Promise<PartitionNext[]> {
  const inTurn = partitionTurns();
  const request = async (calls: PartitionBatch[][]): Promise<PartitionNext[][]> => {
    // The calls' records merged by partition; where each call's records end in its partition's.
    const merged = new Map<string, PartitionBatch>();
    const ends = calls.map((batches) =>
      batches.map((b) => {
        const name = partitionName(b.topic, b.partition);
        const batch = merged.get(name) ?? { topic: b.topic, partition: b.partition, messages: [] };
        batch.messages.push(...b.messages);
        merged.set(name, batch);
        return { topic: b.topic, partition: b.partition, name, end: batch.messages.length };
      }),
    );
    const bases = await inTurn([...merged.keys()], () => send([...merged.values()]));
    return ends.map((call) => call.map((e) => ({ topic: e.topic, partition: e.partition, next: (BigInt(bases.get(e.name) ?? '0') + BigInt(e.end)).toString() })));
  };
  const byLeader = new Map<number, (batches: PartitionBatch[]) => Promise<PartitionNext[]>>();
  return (leader, batches) => {
    let grouped = byLeader.get(leader);
    if (grouped === undefined) byLeader.set(leader, (grouped = batched(request)));
    return grouped(batches);
  };
}
