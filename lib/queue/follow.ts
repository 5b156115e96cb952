import { randomUUID } from 'node:crypto';
import { commitBatch } from './ordered.ts';
import type { Queue, QueueConsumer, QueueMessage } from './queue.ts';

/**
 * Reads a topic from the beginning with a fresh group, committing each batch once `onMessage` has seen it.
 * Close the returned consumer when done.
 */
export async function follow(queue: Queue, topic: string, onMessage: (m: QueueMessage) => void, group = `follow-${randomUUID()}`): Promise<QueueConsumer> {
  const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
  await consumer.run({
    onBatch: async (batch) => {
      batch.messages.forEach(onMessage);
      await commitBatch(consumer, batch);
    },
  });
  return consumer;
}
