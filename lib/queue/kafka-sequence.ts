import { setTimeout as sleep } from 'node:timers/promises';
import type { Message, RecordMetadata } from 'kafkajs';
import type { Logger } from '../log/logger.ts';

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
// So: one partition per kafkajs send, one send per partition at a time, and a producer is never used
// again once a send of it failed.

/** How long a close waits for the sends under way. */
const CLOSE_WAIT_MS = 10_000;

/** Produce errors that mean the brokers no longer accept this producer id's numbers. */
const SEQUENCE_LOST = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

/** The protocol error's type, also under the wrapper kafkajs puts around it once it stops retrying. */
export const protocolType = (err: unknown): string => (err as { type?: string }).type ?? (err as { cause?: { type?: string } }).cause?.type ?? '';

/** What is used here of a connected kafkajs producer. */
export interface ProducerClient {
  send(record: { topic: string; acks: number; messages: Message[] }): Promise<RecordMetadata[]>;
  disconnect(): Promise<void>;
}

/** Runs `fn` once the sends under way to `partition` have ended: one at a time, in the order asked. */
export function partitionTurns(): <T>(partition: string, fn: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<void>>();
  return (partition, fn) => {
    const turn = (tails.get(partition) ?? Promise.resolve()).then(fn);
    const ended = turn.then(
      () => undefined,
      () => undefined,
    );
    tails.set(partition, ended);
    void ended.then(() => {
      if (tails.get(partition) === ended) tails.delete(partition);
    });
    return turn;
  };
}

/**
 * Sends one partition's records with acks=all, and never through a producer after one of its sends
 * failed: a new producer (a new id, numbers afresh) sends what follows, and the failed one is
 * disconnected once its other sends have ended. The caller sends the failed records again; those the
 * broker had written are then written twice, which at-least-once delivery allows. Records the brokers
 * refused for their numbers are sent again at once through the new producer. Sends that fail together
 * share one new producer. Resolves with the base offset the records were written from.
 */
export function renewingProducer<P extends ProducerClient>(first: P, connect: () => Promise<P>, log: Logger): { send(topic: string, partition: number, messages: Message[]): Promise<string>; close(): Promise<void> } {
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
  const attempt = async (asked: Promise<P>, topic: string, partition: number, messages: Message[]): Promise<string> => {
    if (closed) throw new Error(`Kafka producer closed: nothing sent to ${topic}`);
    let using: P;
    try {
      using = await asked;
    } catch (err) {
      after(asked);
      throw err;
    }
    inFlight.set(using, (inFlight.get(using) ?? 0) + 1);
    try {
      const answer = await using.send({ topic, acks: -1, messages: messages.map((m) => ({ ...m, partition })) });
      const offset = answer.find((a) => a.partition === partition)?.baseOffset;
      if (offset === undefined) throw new Error(`Kafka answered a send to ${topic} without partition ${String(partition)}`);
      return offset;
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
    async send(topic, partition, messages) {
      try {
        return await attempt(current, topic, partition, messages);
      } catch (err) {
        const type = protocolType(err);
        if (closed) throw err;
        if (!SEQUENCE_LOST.has(type)) {
          log.info('a Kafka send failed: what follows goes through a new producer', { topic, partition, error: type || (err as Error).message });
          throw err;
        }
        log.warn('Kafka refuses the producer\'s record numbers (kafkajs lost count after a broker failure): a new producer sends them again', { topic, partition, error: type });
        return attempt(current, topic, partition, messages);
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
