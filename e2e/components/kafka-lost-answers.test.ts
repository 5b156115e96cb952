import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { startKafkaCluster, type KafkaCluster } from '../harness/kafka.ts';
import { freePort } from '../harness/net.ts';
import { tcpProxy, type TcpProxy } from '../harness/tcp-proxy.ts';

// A produce request the broker writes but whose answer never reaches the client: what a broker lost
// mid-send, a network cut or a request timeout does. kafkajs then gives its record numbers back, and a
// later batch sent with the same numbers is taken by the broker for that one's duplicate: acknowledged,
// and never written (CI's broker-loss failure on ea1bc58). Here a proxy loses the answers on demand.
describe('Kafka sends whose answers are lost (one broker behind a proxy)', function () {
  this.timeout(180_000);
  let proxy: TcpProxy | undefined;
  let cluster: KafkaCluster | undefined;

  before(async () => {
    cluster = await startKafkaCluster('kafka-lost', 1, undefined, async (brokerPort) => {
      proxy = await tcpProxy(await freePort(), brokerPort);
      return proxy.port;
    });
  });

  after(async () => {
    await cluster?.stop();
    await proxy?.close();
  });

  it('writes every record it acknowledges after a send whose answer was lost', async () => {
    assert.ok(cluster !== undefined && proxy !== undefined);
    const queue = kafkaQueue({ brokers: cluster.brokers, clientId: 'test-lost', requestTimeoutMs: 2_000, logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic: 'lost', partitions: 1 }]).finally(() => admin.close());
    const producer = await queue.producer();
    try {
      await producer.send('lost', [{ key: 'k', value: 'before' }]);
      proxy.loseAnswers(true);
      await assert.rejects(producer.send('lost', [{ key: 'k', value: 'unanswered' }]));
      proxy.loseAnswers(false);
      // As many records as the unanswered send: the same numbers would make the same batch for the broker.
      await producer.send('lost', [{ key: 'k', value: 'after' }]);
    } finally {
      await producer.close();
    }
    const logged: string[] = [];
    await queue.replay('lost', new Map([[0, '0']]), (m) => logged.push(m.value?.toString('utf8') ?? ''));
    assert.ok(logged.includes('unanswered'), `the broker wrote the unanswered record (the condition attacked): ${JSON.stringify(logged)}`);
    assert.deepEqual(
      logged.filter((v) => v !== 'unanswered'),
      ['before', 'after'],
      'every acknowledged record, in order',
    );
  });
});
