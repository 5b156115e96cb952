import { batched } from './batched.ts';
import type { OutgoingRecord, QueueProducer } from './queue.ts';

/**
 * Group commit for small records (results, verdicts): a send while none is in flight goes out at once;
 * those made while one is in flight wait for it and then go out together, in one produce call for all topics.
 * So an idle worker adds no latency, and a busy one makes one round trip for many results instead of one
 * each. Each promise resolves once its records are acknowledged; records keep the order of the calls.
 */
export class GroupedSender {
  private readonly grouped: (item: { topic: string; records: OutgoingRecord[] }) => Promise<void>;

  constructor(producer: () => QueueProducer | undefined) {
    this.grouped = batched(async (items) => {
      const out = producer();
      if (out === undefined) throw new Error('the producer is closed');
      const byTopic = new Map<string, OutgoingRecord[]>();
      for (const { topic, records } of items) byTopic.set(topic, [...(byTopic.get(topic) ?? []), ...records]);
      await out.sendAll([...byTopic].map(([topic, records]) => ({ topic, records })));
      return items.map(() => undefined);
    });
  }

  send(topic: string, records: OutgoingRecord[]): Promise<void> {
    return this.grouped({ topic, records });
  }
}
