import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { HeadObjectCommand, ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import type { Queue } from '../../lib/queue/queue.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { encode, pauseKey, queueNames, type ObjectRef, type QueueNames, type ReplicationTask, type TaskDestination } from '../../lib/queue/messages.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// Whoever can write to the engine's Kafka topics writes forged or broken records there. Each is checked
// before it is acted on: a record that does not fit its schema is set aside on the rejected topic with
// the reason, and a well-formed task is carried out only as far as a current rule asks for it.

describe('forged and malformed queue messages (real Kafka, MinIO, local mode)', function () {
  this.timeout(180_000);
  let sites: Sites;
  let a: S3Client, b: S3Client;
  let local: LocalRun;
  let queue: Queue;
  let names: QueueNames;
  const prefix = `hostile-${randomUUID().slice(0, 6)}`;

  before(async () => {
    // Site A is a transient source, so that the GC runs and is fed forged tasks too; its delay keeps the
    // versions of this test on the source.
    sites = await startSites('hostile', { a: { transient: true } });
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'vault');
    await versionedBucket(b, 'vault-b');
    await versionedBucket(b, 'loot');
    writeRule(sites, 'shared', { source: { location: 'site-a', bucket: 'vault' }, filter: { prefix: 'shared/' }, destinations: [{ location: 'site-b', bucket: 'vault-b' }] });
    local = await startLocalOn(sites, prefix, { listenPort: 0, gcDelayMs: 600_000 });
    names = queueNames(prefix);
    queue = kafkaQueue({ brokers: sites.brokers, clientId: 'forger', logger: createLogger({ component: 'forger', level: 'error' }) });
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  const forge = async (topic: string, records: { key: string; value: string | Buffer }[]): Promise<void> => {
    const producer = await queue.producer();
    try {
      await producer.send(topic, records);
    } finally {
      await producer.close();
    }
  };
  const listed = async (bucket: string): Promise<string[]> => {
    const page = await b.send(new ListObjectVersionsCommand({ Bucket: bucket }));
    return [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].map((v) => v.Key ?? '').sort();
  };

  it('copies, deletes and collects nothing a rule does not ask for, sets malformed records aside with the reason, and goes on', async () => {
    const doc = await a.send(new PutObjectCommand({ Bucket: 'vault', Key: 'shared/doc.txt', Body: 'shared doc' }));
    const secret = await a.send(new PutObjectCommand({ Bucket: 'vault', Key: 'private/secret.txt', Body: 'not for site b' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'vault', 'shared/doc.txt')[0]?.state, 'COMPLETED'), 60_000, 250);
    const docRef: ObjectRef = { location: 'site-a', bucket: 'vault', key: 'shared/doc.txt', versionId: doc.VersionId ?? '' };
    const secretRef: ObjectRef = { location: 'site-a', bucket: 'vault', key: 'private/secret.txt', versionId: secret.VersionId ?? '' };
    const toB: TaskDestination = { id: 'site-b/vault-b', location: 'site-b', bucket: 'vault-b', rule: 'shared' };
    const task = (source: ObjectRef, d: TaskDestination, kind: ReplicationTask['kind'] = 'object', queuedAt = new Date()): { key: string; value: string } => ({
      key: `${source.location}/${source.bucket}/${source.key}`,
      value: encode({ source, kind, eventTime: new Date().toISOString(), destinations: [d], origin: 'notification', queuedAt: queuedAt.toISOString() } satisfies ReplicationTask),
    });
    const failedBefore = local.processors.get('site-b')?.counters.failed ?? 0;
    const skippedBefore = local.processors.get('site-b')?.counters.skipped ?? 0;

    await forge(names.replication, [
      // Well-formed, each asking for what no rule asks for:
      task(secretRef, toB), // a key outside the rule's prefix
      task(docRef, { id: 'site-b/loot', location: 'site-b', bucket: 'loot', rule: 'shared' }), // a bucket the rule does not name
      task(docRef, { ...toB, rule: 'invented' }), // a rule that does not exist
      task(docRef, toB, 'versionDelete'), // a version delete the rule does not replicate
      task(secretRef, { ...toB, rule: 'gone' }, 'object', new Date(Date.now() - 3600_000)), // queued before the rules were read: a rule removed since
      { key: 'site-a/vault/shared/x', value: task(docRef, { ...toB, keyPrefix: 'elsewhere/' }).value }, // the rule's own key prefix wins
      // Malformed:
      { key: 'garbage', value: Buffer.from([0, 0xff, 0x7b, 0x22]) },
      { key: 'site-a/vault/shared/doc.txt', value: encode({ source: docRef, kind: 'explode', destinations: [toB] }) },
      { key: 'deep', value: `${'['.repeat(100_000)}${']'.repeat(100_000)}` },
    ]);
    await forge(names.status, [
      { key: 'status', value: 'not json at all' },
      { key: 'status', value: encode({ type: 'result', object: docRef, destination: 'site-b/vault-b', state: 'WHATEVER', attempts: -1, bytes: 0, at: 'yesterday' }) },
    ]);
    await forge(names.gc, [
      { key: 'gc', value: encode({ object: secretRef, targets: 'all of them', completedAt: new Date().toISOString() }) },
      // Well-formed: verified against today's rules, which send this version nowhere.
      { key: 'gc', value: encode({ object: secretRef, targets: [], completedAt: new Date(Date.now() - 3600_000).toISOString() }) },
    ]);
    await forge(names.control, [{ key: pauseKey('site-b'), value: encode({ location: 'site-b', paused: 'yes please', at: new Date().toISOString() }) }]);

    const rejected: { topic: string; reason: string; bytes: number }[] = [];
    await eventually(async () => {
      rejected.length = 0;
      await readToEnd(queue, names.rejected, (m) => rejected.push(JSON.parse(m.value?.toString() ?? '{}') as (typeof rejected)[number]));
      assert.equal(rejected.length, 6, JSON.stringify(rejected));
    }, 60_000, 1_000);
    const reasons = (topic: string): string[] => rejected.filter((r) => r.topic === topic).map((r) => r.reason);
    assert.equal(reasons(names.replication).length, 3);
    assert.match(reasons(names.replication).join('\n'), /not JSON/);
    assert.match(reasons(names.replication).join('\n'), /\/kind/);
    assert.equal(reasons(names.status).length, 2);
    assert.match(reasons(names.status).join('\n'), /\/state|\/attempts|\/at/);
    assert.deepEqual(reasons(names.gc).map((r) => /\/targets/.test(r)), [true]);
    const metrics = (await httpGet(`${local.url}/metrics`)).body;
    for (const [topic, n] of [[names.replication, 3], [names.status, 2], [names.gc, 1]] as const) {
      assert.match(metrics, new RegExp(`backbeat_queue_rejected_messages_total\\{topic="${topic}"\\} ${String(n)}\\n`));
    }

    // The five refusals and the one copy done under the rule's own prefix are counted by the processor.
    await eventually(() => {
      const c = local.processors.get('site-b')?.counters;
      assert.equal((c?.failed ?? 0) - failedBefore, 4 + 1, 'four refused, one malformed task reported against its version');
      assert.equal((c?.skipped ?? 0) - skippedBefore, 1, 'the task of a rule removed since is skipped');
    }, 30_000, 250);
    // Nothing a rule does not name was written, and nothing deleted.
    assert.deepEqual(await listed('loot'), []);
    assert.deepEqual(await listed('vault-b'), ['shared/doc.txt']);
    await b.send(new HeadObjectCommand({ Bucket: 'vault-b', Key: 'shared/doc.txt' }));
    // The refused version delete is in the failed set with its reason; the version itself stays COMPLETED.
    await eventually(() => {
      const refused = [...local.status.allFailed()].filter((f) => f.kind === 'versionDelete');
      assert.equal(refused.length, 1);
      assert.match(refused[0]?.reason ?? '', /refused: rule "shared" does not replicate version deletes.*nothing deleted/);
    }, 30_000, 250);
    // The GC deleted nothing it was told to: the version is on the source still.
    await a.send(new HeadObjectCommand({ Bucket: 'vault', Key: 'private/secret.txt', VersionId: secretRef.versionId }));

    // Every partition goes on: a new version replicates, and the malformed pause state paused nothing.
    assert.equal(local.processors.get('site-b')?.paused, false);
    await a.send(new PutObjectCommand({ Bucket: 'vault', Key: 'shared/after.txt', Body: 'after' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'vault', 'shared/after.txt')[0]?.state, 'COMPLETED'), 60_000, 250);
  });
});
