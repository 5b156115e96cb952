import type { Message, RecordMetadata } from 'kafkajs';
import type { Logger } from '../log/logger.ts';

// kafkajs 2.2.4's idempotent producer numbers each partition's records per producer id, and winds a
// partition's count back when a request fails. That is sound only with one send to a partition at a
// time: two in flight to its old and its new leader (a broker lost mid-send) leave the numbers out of
// step. Seen in broker-loss.test.ts: the brokers refusing every later send (OUT_OF_ORDER_SEQUENCE_NUMBER,
// for good), and acknowledged records missing from the log (a batch numbered like an earlier one is
// taken for its duplicate).

/** Produce errors that mean the brokers no longer accept this producer id's numbers. */
const SEQUENCE_LOST = new Set(['OUT_OF_ORDER_SEQUENCE_NUMBER', 'UNKNOWN_PRODUCER_ID', 'INVALID_PRODUCER_EPOCH', 'INVALID_PRODUCER_ID_MAPPING']);

/** The protocol error's type, also under the wrapper kafkajs puts around it once it stops retrying. */
export const protocolType = (err: unknown): string => (err as { type?: string }).type ?? (err as { cause?: { type?: string } }).cause?.type ?? '';

/** What is used here of a connected kafkajs producer. */
export interface ProducerClient {
  send(record: { topic: string; acks: number; messages: Message[] }): Promise<RecordMetadata[]>;
  disconnect(): Promise<void>;
}

/**
 * Runs `fn` once the sends under way to any of `partitions` have ended: one send per partition at a
 * time, in the order they were asked for. Sends to other partitions go on meanwhile.
 */
export function partitionTurns(): <T>(partitions: string[], fn: () => Promise<T>) => Promise<T> {
  const tails = new Map<string, Promise<void>>();
  return (partitions, fn) => {
    const turn = Promise.all(partitions.flatMap((p) => tails.get(p) ?? [])).then(fn);
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
 * Sends with acks=all through `first`, and through a new producer (a new id, numbers afresh) once the
 * brokers refuse one's numbers anyway; sends failing together share the replacement. The records the
 * broker had written are written again, which at-least-once delivery allows.
 */
export function renewingProducer<P extends ProducerClient>(first: P, connect: () => Promise<P>, log: Logger): { send(topic: string, messages: Message[]): Promise<RecordMetadata[]>; close(): Promise<void> } {
  let producer = first;
  let replacing: { of: P; by: Promise<P> } | undefined;
  const replace = (broken: P): Promise<P> => {
    if (replacing?.of !== broken) {
      const by = connect().then((made) => {
        producer = made;
        broken.disconnect().catch(() => undefined);
        return made;
      });
      replacing = { of: broken, by };
    }
    return replacing.by;
  };
  return {
    async send(topic, messages) {
      const using = producer;
      try {
        return await using.send({ topic, acks: -1, messages });
      } catch (err) {
        if (!SEQUENCE_LOST.has(protocolType(err))) throw err;
        log.warn('Kafka refuses the producer\'s record numbers (kafkajs lost count after a broker failure): a new producer sends them again', { topic, error: protocolType(err) });
        return (await replace(using)).send({ topic, acks: -1, messages });
      }
    },
    async close() {
      await replacing?.by.catch(() => undefined);
      await producer.disconnect();
    },
  };
}
