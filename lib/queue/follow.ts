import { randomUUID } from 'node:crypto';
import { commitBatch } from './ordered.ts';
import { deleteGroup } from './read-all.ts';
import type { Queue, QueueConsumer, QueueMessage } from './queue.ts';

/**
 * Reads a topic from the beginning with a fresh group, committing each batch once `onMessage` has seen it.
 * Close the returned consumer when done: that deletes the group too.
 */
export async function follow(queue: Queue, topic: string, onMessage: (m: QueueMessage) => void, group = `follow-${randomUUID()}`): Promise<QueueConsumer> {
  const consumer = await queue.consumer({ groupId: group, topics: [topic], fromBeginning: true });
  await consumer.run({
    onBatch: async (batch) => {
      batch.messages.forEach(onMessage);
      await commitBatch(consumer, batch);
    },
  });
  return {
    ...consumer,
    async close() {
      await consumer.close();
      await deleteGroup(queue, group);
    },
  };
}
