import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import { ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { unquote } from '../../lib/s3/etag.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { startKafkaCluster, type KafkaCluster } from '../harness/kafka.ts';
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
    const queue = kafkaQueue({ brokers: cluster.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const admin = await queue.admin();
    try {
      // No drift to report: what it created matches what it expects.
      await admin.ensureTopics([{ topic: 'bl-replication', partitions: 8 }]);
    } finally {
      await admin.close();
    }
    const { Kafka, logLevel } = await import('kafkajs');
    const raw = new Kafka({ clientId: 'test-raw', brokers: cluster.brokers, logLevel: logLevel.NOTHING }).admin();
    await raw.connect();
    try {
      const meta = await raw.fetchTopicMetadata({ topics: ['bl-replication', 'bl-replication-status', sites.journalTopic] });
      for (const t of meta.topics) assert.deepEqual([...new Set(t.partitions.map((p) => p.replicas.length))], [3], t.name);
    } finally {
      await raw.disconnect();
    }
  });

  it('loses nothing when a broker is SIGKILLed during a stream of 1 000 objects and comes back', async () => {
    const victim = cluster.nodes[1];
    assert.ok(victim !== undefined);
    const keys = Array.from({ length: OBJECTS }, (_, i) => `obj/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 25) {
      if (i === 250) await victim.kill();
      if (i === 750) await victim.start();
      await Promise.all(keys.slice(i, i + 25).map((key) => a.send(new PutObjectCommand({ Bucket: 'stream', Key: key, Body: `${key} ${'x'.repeat(i % 977)}` }))));
    }
    await eventually(
      () => {
        const left = keys.filter((key) => local.status.lookup('site-a', 'stream', key)[0]?.state !== 'COMPLETED');
        // What the status holds of the first one, to tell a lost event from a copy not done (seen once, not reproduced).
        const first = left[0] === undefined ? undefined : local.status.lookup('site-a', 'stream', left[0]);
        assert.equal(left.length, 0, `not COMPLETED yet: ${String(left.length)}, e.g. ${left.slice(0, 3).join(', ')}; status of the first: ${JSON.stringify(first)}`);
      },
      300_000,
      2_000,
    );
    const source = await etags(a, 'stream');
    assert.equal(source.size, OBJECTS);
    for (const s3 of [b, c]) assert.deepEqual(await etags(s3, 'stream'), source, 'one replica per version, byte for byte');
    assert.equal((await body(c, 'stream', 'obj/0999')).toString(), `obj/0999 ${'x'.repeat(975 % 977)}`);
  });
});
