import type { OutgoingRecord, QueueProducer } from './queue.ts';

interface Waiting {
  records: OutgoingRecord[];
  done: { resolve(): void; reject(err: unknown): void }[];
}

/**
 * Group commit for small records (results, verdicts): a send while none is in flight goes out at once;
 * those made while one is in flight wait for it and then go out together, one produce call per topic.
 * So an idle worker adds no latency, and a busy one makes one round trip for many results instead of one
 * each (the idempotent producer allows a single request in flight). Each promise resolves once its
 * records are acknowledged; records keep the order of the calls.
 */
export class GroupedSender {
  private waiting = new Map<string, Waiting>();
  private flushing: Promise<void> | undefined;
  private readonly producer: () => QueueProducer | undefined;

  constructor(producer: () => QueueProducer | undefined) {
    this.producer = producer;
  }

  send(topic: string, records: OutgoingRecord[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const w = this.waiting.get(topic) ?? { records: [], done: [] };
      w.records.push(...records);
      w.done.push({ resolve, reject });
      this.waiting.set(topic, w);
      this.flushing ??= this.flush();
    });
  }

  private async flush(): Promise<void> {
    while (this.waiting.size > 0) {
      const now = this.waiting;
      this.waiting = new Map();
      await Promise.all(
        [...now].map(async ([topic, w]) => {
          try {
            const producer = this.producer();
            if (producer === undefined) throw new Error('the producer is closed');
            await producer.send(topic, w.records);
            for (const d of w.done) d.resolve();
          } catch (err) {
            for (const d of w.done) d.reject(err);
          }
        }),
      );
    }
    this.flushing = undefined;
  }
}
