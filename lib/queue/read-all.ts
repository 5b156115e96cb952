import { randomUUID } from 'node:crypto';
import { retryKafka } from './kafka-retry.ts';
import { commitBatch } from './ordered.ts';
import type { Queue, QueueMessage } from './queue.ts';

/** Removes a group used once (a reader, a follower), so that restarts do not leave groups behind. */
export async function deleteGroup(queue: Queue, group: string): Promise<void> {
  const admin = await queue.admin().catch(() => undefined);
  await admin?.deleteGroups([group]);
  await admin?.close().catch(() => undefined);
}

/**
 * Reads a topic from its beginning up to the end it had when called (e.g. to rebuild state from a
 * compacted topic), with a group of its own, deleted afterwards.
 */
export async function readToEnd(queue: Queue, topic: string, onMessage: (m: QueueMessage) => void, timeoutMs = 120_000): Promise<number> {
  const group = `backbeat-reader-${randomUUID()}`;
  const admin = await queue.admin();
  // Read at a start, when the topic may have been created a moment before by another member: until its
  // partitions' leaders are settled, Kafka answers "not the leader".
  const lag = await retryKafka(`the end of ${topic}`, () => admin.groupLag(group, topic), undefined).finally(() => admin.close());
  const ends = new Map(lag.filter((p) => p.lag > 0).map((p) => [p.partition, BigInt(p.highWatermark) - 1n]));
  if (ends.size === 0) return 0;
  let count = 0;
  const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`reading ${topic} did not reach its end within ${timeoutMs} ms`));
      }, timeoutMs);
      consumer
        .run({
          onBatch: async (batch) => {
            const last = ends.get(batch.partition);
            for (const m of batch.messages) {
              if (last !== undefined && BigInt(m.offset) > last) break;
              onMessage(m);
              count++;
            }
            const seen = batch.messages.at(-1);
            if (seen === undefined) return;
            // The reader's group commits like any other, so that the queue moves on to the next batch.
            await commitBatch(consumer, batch);
            if (last !== undefined && BigInt(seen.offset) >= last) ends.delete(batch.partition);
            if (ends.size === 0) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch((err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        });
    });
  } finally {
    await consumer.close();
    await deleteGroup(queue, group);
  }
  return count;
}
