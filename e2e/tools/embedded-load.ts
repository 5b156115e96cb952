import { embeddedQueue } from '../../lib/queue/embedded.ts';
import { commitBatch } from '../../lib/queue/ordered.ts';

// A load on the embedded queue in a process of its own, so that its peak memory is its own: N small
// records through one partition, then read back from the beginning by a group. Prints one JSON line.

const [dir, count] = process.argv.slice(2);
if (dir === undefined) throw new Error('usage: embedded-load.ts DIR [COUNT]');
const total = Number(count ?? 2_000_000);
const queue = embeddedQueue({ dir });
await (await queue.admin()).ensureTopics([{ topic: 'load', partitions: 1 }]);
const producer = await queue.producer();
const started = Date.now();
for (let i = 0; i < total; i += 1000) {
  await producer.send('load', Array.from({ length: Math.min(1000, total - i) }, (_, j) => ({ key: `key-${String((i + j) % 1000)}`, value: `record ${String(i + j)}` })));
}
const written = Date.now();
let seen = 0;
let inOrder = true;
const consumer = await queue.consumer({ groupId: 'reader', topics: ['load'], fromBeginning: true });
await new Promise<void>((resolve) => {
  void consumer.run({
    async onBatch(batch) {
      for (const m of batch.messages) {
        if (Number(m.offset) !== seen || m.value?.toString() !== `record ${String(seen)}`) inOrder = false;
        seen++;
      }
      await commitBatch(consumer, batch);
      if (seen >= total) resolve();
    },
  });
});
await consumer.close();
const dropped = queue.retain();
process.stdout.write(`${JSON.stringify({ seen, inOrder, dropped, writeMs: written - started, readMs: Date.now() - written, maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`);
process.exit(0);
