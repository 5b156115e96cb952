import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { createLogger } from '../log/logger.ts';
import { sendAcknowledged, type PartitionAck } from './kafka-acked.ts';

// kafkajs' dropped partitions need a leader to move between two attempts of one send, which no broker
// does on demand (broker-loss.test.ts meets it by chance): a scripted send answers as kafkajs then does.

const log = createLogger({ component: 'test', stream: createWriteStream('/dev/null') });
const messages = [0, 1, 0, 2, 0].map((partition, i) => ({ partition, value: `r${String(i)}` }));

describe('sends acknowledged partition by partition (kafka-acked)', () => {
  it('sends again, in their order, the records of a partition that a send came back without', async () => {
    const sent: string[][] = [];
    const acks = await sendAcknowledged(
      (pending) => {
        sent.push(pending.map((m) => m.value));
        // The first send answers for partitions 1 and 2 only, as kafkajs does once partition 0's leader moved.
        const answered = [...new Set(pending.map((m) => m.partition))].filter((p) => sent.length > 1 || p !== 0);
        return Promise.resolve(answered.map((partition): PartitionAck => ({ partition, baseOffset: String(sent.length * 10) })));
      },
      messages,
      log,
      'tasks',
    );
    assert.deepEqual(sent, [['r0', 'r1', 'r2', 'r3', 'r4'], ['r0', 'r2', 'r4']]);
    assert.deepEqual(acks.map((a) => a.partition).sort(), [0, 1, 2]);
    assert.equal(acks.find((a) => a.partition === 0)?.baseOffset, '20');
  });

  it('gives up with an error naming the partitions when a partition is never written', async () => {
    let sends = 0;
    await assert.rejects(
      sendAcknowledged(
        (pending) => {
          sends++;
          return Promise.resolve([...new Set(pending.map((m) => m.partition))].filter((p) => p !== 2).map((partition) => ({ partition })));
        },
        messages,
        log,
        'tasks',
      ),
      /no write to tasks partitions 2 in 5 sends/,
    );
    assert.equal(sends, 5);
  });

  it('sends once when every partition is acknowledged', async () => {
    let sends = 0;
    await sendAcknowledged(
      (pending) => {
        sends++;
        return Promise.resolve([...new Set(pending.map((m) => m.partition))].map((partition) => ({ partition })));
      },
      messages,
      log,
      'tasks',
    );
    assert.equal(sends, 1);
  });
});
