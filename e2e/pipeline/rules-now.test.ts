import assert from 'node:assert/strict';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { RULE_START_GRACE_MS } from '../../lib/config/bucket-config.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { encode, objectKey, type ReplicationTask } from '../../lib/queue/messages.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { body, locationManifest, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

async function keys(s3: S3Client, bucket: string): Promise<string[]> {
  const page = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket }));
  return (page.Versions ?? []).map((v) => v.Key ?? '').sort();
}

// AWS semantics: a rule replicates what is written after it takes effect; what was there before only
// with replicateExistingObjects (or a backfill on demand). Two rules read one bucket, whose journal
// holds the old writes too and which is listed every 10 s: neither path may hand the old objects to
// the rule that did not ask for them.
describe('the rules as they are now: each from its own start, deletes only while asked (real Kafka, real MinIO)', function () {
  this.timeout(180_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    sites = await startSites('rule-start');
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    writeFileSync(join(sites.dir, 'site-a.yaml'), locationManifest('site-a', sites.a.endpoint, sites.a.credentials, { journal: { kafka: { topic: sites.journalTopic }, scan: { intervalSeconds: 10 } } }));
    await sourceBucket(sites, 'shared');
    await versionedBucket(b, 'shared');
    await versionedBucket(c, 'shared');
    for (const n of [1, 2]) await a.send(new PutObjectCommand({ Bucket: 'shared', Key: `old-${String(n)}`, Body: `old ${String(n)}` }));
    writeRule(sites, 'with-existing', { source: { location: 'site-a', bucket: 'shared' }, destinations: [{ location: 'site-b', bucket: 'shared' }], replicateExistingObjects: true });
    writeRule(sites, 'new-only', { source: { location: 'site-a', bucket: 'shared' }, destinations: [{ location: 'site-c', bucket: 'shared' }] });
    // The rules take effect at the first start: the old objects must be older than the grace before it.
    await sleep(RULE_START_GRACE_MS + 1_000);
    local = await startLocalOn(sites, 'rule-start');
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  it('sends the old objects to the rule asking for them only, and new ones to both', async () => {
    const put = await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'new-1', Body: 'new' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'shared', 'new-1', put.VersionId)[0]?.state, 'COMPLETED'), 60_000);
    assert.deepEqual(Object.keys(local.status.lookup('site-a', 'shared', 'new-1')[0]?.destinations ?? {}).sort(), ['site-b/shared', 'site-c/shared']);
    for (const n of [1, 2]) {
      await eventually(() => assert.equal(local.status.lookup('site-a', 'shared', `old-${String(n)}`)[0]?.state, 'COMPLETED'), 60_000);
      assert.equal((await body(b, 'shared', `old-${String(n)}`)).toString(), `old ${String(n)}`);
    }
    // Two more periodic scans (every 10 s) and the journal read from its beginning: still nothing old on C.
    const scans = (): number => readFileSync(join(runDir(), 'rule-start.log'), 'utf8').split('\n').filter((l) => l.includes('"message":"scan queued changes"') && l.includes('"why":"periodic scan"')).length;
    const before = scans();
    await eventually(() => assert.ok(scans() >= before + 2, 'two more periodic scans'), 45_000, 500);
    for (const n of [1, 2]) assert.deepEqual(Object.keys(local.status.lookup('site-a', 'shared', `old-${String(n)}`)[0]?.destinations ?? {}), ['site-b/shared']);
    assert.deepEqual((await keys(c, 'shared')).filter((k) => k.startsWith('old-')), []);
    assert.deepEqual((await keys(b, 'shared')).filter((k) => k.startsWith('old-')), ['old-1', 'old-2']);
  });

  it('deletes nothing for a version-delete task its rule does not (or no longer) ask for', async () => {
    const put = await a.send(new PutObjectCommand({ Bucket: 'shared', Key: 'kept', Body: 'stays' }));
    const versionId = put.VersionId ?? '';
    await eventually(() => assert.equal(local.status.lookup('site-a', 'shared', 'kept', versionId)[0]?.state, 'COMPLETED'), 60_000);
    const processor = local.processors.get('site-c');
    assert.ok(processor !== undefined);
    const skipped = processor.counters.skipped;
    // A task as an earlier form of rule new-only (with replicateVersionDeletes) would have queued it, before this run read its rules.
    const source = { location: 'site-a', bucket: 'shared', key: 'kept', versionId };
    const earlier = new Date(Date.now() - 3600_000).toISOString();
    const task: ReplicationTask = { source, kind: 'versionDelete', eventTime: earlier, queuedAt: earlier, destinations: [{ id: 'site-c/shared', location: 'site-c', bucket: 'shared', rule: 'new-only' }], origin: 'notification' };
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    const producer = await queue.producer();
    await producer.send('rule-start-replication', [{ key: objectKey(source), value: encode(task) }]);
    await producer.close();
    await eventually(() => assert.equal(processor.counters.skipped, skipped + 1), 30_000);
    assert.equal((await body(c, 'shared', 'kept')).toString(), 'stays');
    assert.equal((await keys(c, 'shared')).filter((k) => k === 'kept').length, 1);
  });
});
