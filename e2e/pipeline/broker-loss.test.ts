import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Admin } from 'kafkajs';
import { unquote } from '../../lib/s3/etag.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { TASK_RETENTION_MS } from '../../lib/queue/messages.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { startKafkaCluster, type KafkaCluster, type KafkaNode } from '../harness/kafka.ts';
import { eventually } from '../harness/wait.ts';
import { body, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

const OBJECTS = 1_000;

/** Every version of a bucket: key → ETag (the MD5 of its bytes for these single-part objects). */
async function etags(s3: S3Client, bucket: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  do {
    const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, ...(keyMarker !== undefined ? { KeyMarker: keyMarker, VersionIdMarker: versionIdMarker } : {}) }));
    for (const v of page.Versions ?? []) out.set(`${v.Key ?? ''}#${out.has(v.Key ?? '') ? 'again' : ''}`, unquote(v.ETag));
    keyMarker = page.IsTruncated === true ? page.NextKeyMarker : undefined;
    versionIdMarker = page.NextVersionIdMarker;
  } while (keyMarker !== undefined);
  return out;
}

/** The engine's Kafka client on the cluster, its log discarded. */
const queueOn = (brokers: string[], clientId: string): ReturnType<typeof kafkaQueue> => kafkaQueue({ brokers, clientId, logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });

/** A kafkajs admin of its own, connected: what the engine's queue does not expose (metadata, replica assignment). */
async function rawAdmin(brokers: string[]): Promise<Admin> {
  const { Kafka, logLevel } = await import('kafkajs');
  const admin = new Kafka({ clientId: 'test-raw', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  return admin;
}

/** The object keys of every S3 event on a journal topic. */
async function journalKeys(brokers: string[], topic: string): Promise<Set<string>> {
  const queue = queueOn(brokers, 'test-journal');
  const admin = await queue.admin();
  const partitions = await admin.partitionCount(topic).finally(() => admin.close());
  const keys = new Set<string>();
  await queue.replay(topic, new Map(Array.from({ length: partitions }, (_, p) => [p, '0'] as const)), (m) => {
    const event = JSON.parse(m.value?.toString('utf8') ?? '{}') as { Records?: { s3?: { object?: { key?: string } } }[] };
    for (const r of event.Records ?? []) keys.add(decodeURIComponent(r.s3?.object?.key ?? ''));
  });
  return keys;
}

const victimOf = (cluster: KafkaCluster): KafkaNode => {
  const victim = cluster.nodes[1];
  assert.ok(victim !== undefined);
  return victim;
};

/**
 * The journal topic made before backbeat would make it, with its partitions led by the brokers that
 * live. MinIO's Kafka target writes with acks=1 (hard-coded in MinIO): a leader SIGKILLed takes with it
 * the events it acknowledged but had not replicated yet, which no consumer can then read. What this suite
 * attacks is backbeat's own topics, whose partitions the victim leads its share of.
 */
async function journalLedAwayFrom(cluster: KafkaCluster, topic: string, victim: KafkaNode): Promise<void> {
  const admin = await rawAdmin(cluster.brokers);
  try {
    const leaders = cluster.nodes.filter((n) => n !== victim).map((n) => n.id);
    // As many partitions as local mode gives the topics it makes (its --partitions default).
    const replicaAssignment = Array.from({ length: 4 }, (_, partition) => {
      const leader = leaders[partition % leaders.length] ?? victim.id;
      return { partition, replicas: [leader, ...cluster.nodes.map((n) => n.id).filter((id) => id !== leader)] };
    });
    await admin.createTopics({ waitForLeaders: false, topics: [{ topic, replicaAssignment, configEntries: [{ name: 'min.insync.replicas', value: '2' }, { name: 'retention.ms', value: String(TASK_RETENTION_MS) }] }] });
    // Asked until every partition has its leader (kafkajs' own wait gives up on a topic not known yet).
    await eventually(async () => {
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      assert.deepEqual(meta.topics[0]?.partitions.map((p) => p.leader).sort(), replicaAssignment.map((r) => r.replicas[0]).sort());
    });
  } finally {
    await admin.disconnect();
  }
}

// A production-shaped Kafka: three KRaft nodes, topics with three replicas and min.insync.replicas 2.
// One node is SIGKILLed while 1 000 objects stream to two destinations, and comes back later.
describe('a Kafka broker lost mid-stream (3-node KRaft cluster, real MinIO)', function () {
  this.timeout(600_000);
  let cluster: KafkaCluster;
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    cluster = await startKafkaCluster('kafka3', 3);
    sites = await startSites('brokerloss', {}, cluster.brokers);
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    await journalLedAwayFrom(cluster, sites.journalTopic, victimOf(cluster));
    await sourceBucket(sites, 'stream');
    await versionedBucket(b, 'stream');
    await versionedBucket(c, 'stream');
    writeRule(sites, 'stream', { source: { location: 'site-a', bucket: 'stream' }, destinations: [{ location: 'site-b', bucket: 'stream' }, { location: 'site-c', bucket: 'stream' }] });
    local = await startLocalOn(sites, 'bl');
  });

  after(async () => {
    await local.stop();
    await cluster.stop();
    await sites.stop();
  });

  it('creates its topics with three replicas, writes acknowledged by two', async () => {
    const queue = queueOn(cluster.brokers, 'test');
    const admin = await queue.admin();
    try {
      // No drift to report: what it created matches what it expects.
      await admin.ensureTopics([{ topic: 'bl-replication', partitions: 8 }]);
    } finally {
      await admin.close();
    }
    const raw = await rawAdmin(cluster.brokers);
    try {
      const meta = await raw.fetchTopicMetadata({ topics: ['bl-replication', 'bl-replication-status', sites.journalTopic] });
      for (const t of meta.topics) assert.deepEqual([...new Set(t.partitions.map((p) => p.replicas.length))], [3], t.name);
    } finally {
      await raw.disconnect();
    }
  });

  it('loses nothing when a broker is SIGKILLed during a stream of 1 000 objects and comes back', async () => {
    const victim = victimOf(cluster);
    const keys = Array.from({ length: OBJECTS }, (_, i) => `obj/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 25) {
      if (i === 250) await victim.kill();
      if (i === 750) await victim.start();
      await Promise.all(keys.slice(i, i + 25).map((key) => a.send(new PutObjectCommand({ Bucket: 'stream', Key: key, Body: `${key} ${'x'.repeat(i % 977)}` }))));
    }
    const left = (): string[] => keys.filter((key) => local.status.lookup('site-a', 'stream', key)[0]?.state !== 'COMPLETED');
    await eventually(() => assert.equal(left().length, 0), 300_000, 2_000).catch(async () => {
      // What the status and the journal hold of the versions left, to tell an event MinIO never
      // published (its Kafka target writes with acks=1) from one backbeat lost or a copy not done.
      const missing = left();
      const journal = await journalKeys(cluster.brokers, sites.journalTopic);
      const unpublished = missing.filter((key) => !journal.has(key));
      assert.fail(
        `not COMPLETED: ${String(missing.length)}, e.g. ${missing.slice(0, 3).join(', ')}; of those, ${String(unpublished.length)} never reached the journal topic (${unpublished.slice(0, 3).join(', ')}); status of the first: ${JSON.stringify(local.status.lookup('site-a', 'stream', missing[0] ?? ''))}`,
      );
    });
    const source = await etags(a, 'stream');
    assert.equal(source.size, OBJECTS);
    for (const s3 of [b, c]) assert.deepEqual(await etags(s3, 'stream'), source, 'one replica per version, byte for byte');
    assert.equal((await body(c, 'stream', 'obj/0999')).toString(), `obj/0999 ${'x'.repeat(975 % 977)}`);
  });

  // kafkajs numbers an idempotent producer's records per partition; with sends to one partition in flight
  // to its old and its new leader, the count went out of step and every later send was refused (seen
  // here: the populator stuck on OUT_OF_ORDER_SEQUENCE_NUMBER for good after a broker loss).
  it('keeps every acknowledged record, in order, when concurrent sends meet the loss of their partitions\' leader', async () => {
    const topic = 'bl-sends';
    const queue = queueOn(cluster.brokers, 'test-sends');
    const admin = await queue.admin();
    await admin.ensureTopics([{ topic, partitions: 2 }]).finally(() => admin.close());
    const raw = await rawAdmin(cluster.brokers);
    // Asked until every broker knows the new topic.
    const node = await eventually(async () => {
      const leader = (await raw.fetchTopicMetadata({ topics: [topic] })).topics[0]?.partitions.find((p) => p.partitionId === 0)?.leader;
      const found = cluster.nodes.find((n) => n.id === leader);
      assert.ok(found !== undefined, `partition 0's leader ${String(leader)}`);
      return found;
    }).finally(() => raw.disconnect());
    const producer = await queue.producer();
    let stop = false;
    const acked: string[][] = [];
    // The last refusal per sender: kafkajs may refuse a send while a leader is gone, and the caller sends
    // again (a worker's batch is fetched again), but once the broker is back every send must go through.
    const refused = new Map<number, string>();
    // 24 senders, each sending three records at a time (both partitions), one send after the other.
    const senders = Array.from({ length: 24 }, async (_, s) => {
      const mine: string[] = [];
      acked.push(mine);
      for (let n = 0; !stop; n++) {
        const ids = [0, 1, 2].map((i) => `${String(s)}-${String(n)}-${String(i)}`);
        for (;;) {
          try {
            await producer.send(topic, ids.map((id) => ({ key: id, value: Buffer.from(id) })));
            refused.delete(s);
            break;
          } catch (err) {
            refused.set(s, `${ids.join(',')}: ${(err as Error).message}`);
            await sleep(500);
          }
        }
        mine.push(...ids);
      }
    });
    await sleep(2_000);
    await node.kill();
    await sleep(5_000);
    await node.start();
    await sleep(3_000);
    stop = true;
    const ended = await Promise.race([Promise.all(senders).then(() => 'ended'), sleep(120_000, 'pending', { ref: false })]);
    assert.equal(ended, 'ended', `every send acknowledged within 2 minutes of the broker coming back; still refused: ${JSON.stringify([...refused.values()])}`);
    await producer.close();
    // What the topic holds, per partition in log order.
    const logged: string[] = [];
    await queue.replay(topic, new Map([[0, '0'], [1, '0']]), (m) => logged.push(`${String(m.partition)}:${m.value?.toString('utf8') ?? ''}`));
    const at = new Map<string, number>();
    for (const [i, entry] of logged.entries()) {
      const id = entry.slice(entry.indexOf(':') + 1);
      if (!at.has(id)) at.set(id, i);
    }
    const sent = acked.flat();
    assert.ok(sent.length > 100, `records acknowledged: ${String(sent.length)}`);
    assert.deepEqual(sent.filter((id) => !at.has(id)), [], 'every acknowledged record is in the topic');
    // One sender's records of a partition are in the order it sent them.
    for (const mine of acked) {
      for (const p of ['0', '1']) {
        const positions = mine.filter((id) => logged[at.get(id) ?? -1]?.startsWith(`${p}:`) === true).map((id) => at.get(id) ?? -1);
        assert.deepEqual(positions, [...positions].sort((x, y) => x - y), `order of ${mine[0] ?? ''}… on partition ${p}`);
      }
    }
  });
});
