import assert from 'node:assert/strict';
import { createWriteStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createLogger } from '../../lib/log/logger.ts';
import { follow } from '../../lib/queue/follow.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { QueueConsumer } from '../../lib/queue/queue.ts';
import type { LocalRun } from '../../workers/local/local.ts';
import { PROBE_PREFIX } from '../../lib/s3/capabilities.ts';
import { faultProxy, type FaultProxy } from '../harness/fault-proxy.ts';
import { eventually } from '../harness/wait.ts';
import { body, locationManifest, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

interface SetAside {
  offset: string;
  reason: string;
  change?: { key: string; versionId: string };
}

// A source whose S3 requests pass through a proxy that denies some of them (403 AccessDenied), as a
// bucket policy would: the populator and the scans must go on with everything else. The destination's
// proxy holds the processors' probes of its buckets for the whole run: no copy may wait for them.
describe('failures that stay local: a denied tag lookup, a denied bucket listing, a destination probe that never answers (real Kafka, real MinIO)', function () {
  this.timeout(180_000);
  let sites: Sites;
  let proxy: FaultProxy;
  let held: FaultProxy;
  let probesHeld = 0;
  let local: LocalRun;
  let a: S3Client, b: S3Client;
  let setAside: QueueConsumer;
  // By journal offset: a reader may see a record twice (at least once).
  const failed = new Map<string, SetAside>();

  before(async () => {
    sites = await startSites('local-failures');
    [a, b] = [sites.a.client(), sites.b.client()];
    proxy = await faultProxy(
      sites.a.endpoint,
      (req) => {
        const url = req.url ?? '';
        if (req.method !== 'GET') return false;
        if (url.startsWith('/tagged/denied/') && /[?&]tagging/.test(url)) return true;
        // A bucket's listing, with or without a '/' after the bucket (the SDK's path, and the direct path's).
        return /^\/listing-denied\/?\?/.test(url) && /[?&]versions/.test(url);
      },
      403,
      'AccessDenied',
    );
    // Site A is reached through the proxy; its journal stays the real MinIO notifications.
    writeFileSync(join(sites.dir, 'site-a.yaml'), locationManifest('site-a', proxy.endpoint, sites.a.credentials, { journal: { kafka: { topic: sites.journalTopic } } }));
    // Site B answers everything but the probes, which it holds for ten minutes (past the end of the run).
    held = await faultProxy(sites.b.endpoint, () => false, 503, 'ServiceUnavailable', {
      delayMs: (req) => {
        if (!(req.url ?? '').includes(`/${PROBE_PREFIX}`)) return 0;
        probesHeld++;
        return 600_000;
      },
    });
    writeFileSync(join(sites.dir, 'site-b.yaml'), locationManifest('site-b', held.endpoint, sites.b.credentials));
    await sourceBucket(sites, 'tagged');
    await versionedBucket(b, 'tagged');
    writeRule(sites, 'tagged', { source: { location: 'site-a', bucket: 'tagged' }, filter: { tags: [{ key: 'team', value: 'blue' }] }, destinations: [{ location: 'site-b', bucket: 'tagged' }] });
    // Three buckets with objects from before their rules, which ask for them: the middle one cannot be listed.
    for (const bucket of ['listing-a', 'listing-denied', 'listing-z']) {
      await versionedBucket(a, bucket);
      await versionedBucket(b, bucket);
      for (const n of [1, 2]) await a.send(new PutObjectCommand({ Bucket: bucket, Key: `old-${String(n)}`, Body: `${bucket} ${String(n)}` }));
      writeRule(sites, bucket, { source: { location: 'site-a', bucket }, destinations: [{ location: 'site-b', bucket }], replicateExistingObjects: true });
    }
    const queue = kafkaQueue({ brokers: sites.brokers, clientId: 'test', logger: createLogger({ component: 'test', stream: createWriteStream('/dev/null') }) });
    local = await startLocalOn(sites, 'lf', { retry: { baseDelayMs: 100, maxDelayMs: 1_000 } });
    setAside = await follow(queue, 'lf-journal-failed', (m) => {
      const entry = JSON.parse(m.value?.toString() ?? '{}') as SetAside;
      failed.set(entry.offset, entry);
    });
  });

  after(async () => {
    await local.stop();
    await setAside.close();
    await proxy.close();
    await held.close();
    await sites.stop();
  });

  it('sets aside a change whose tags it may not read, with the reason, and goes on with the next', async () => {
    const denied = await a.send(new PutObjectCommand({ Bucket: 'tagged', Key: 'denied/1', Body: 'no', Tagging: 'team=blue' }));
    const after = await a.send(new PutObjectCommand({ Bucket: 'tagged', Key: 'allowed/1', Body: 'yes', Tagging: 'team=blue' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'tagged', 'allowed/1', after.VersionId)[0]?.state, 'COMPLETED'), 60_000);
    assert.equal((await body(b, 'tagged', 'allowed/1')).toString(), 'yes');
    await eventually(() => assert.equal(failed.size, 1), 30_000);
    const [entry] = failed.values();
    assert.deepEqual(entry?.change && { key: entry.change.key, versionId: entry.change.versionId }, { key: 'denied/1', versionId: denied.VersionId });
    assert.match(entry?.reason ?? '', /^tags of the source version could not be read: AccessDenied \(HTTP 403\)/);
    assert.equal(local.status.lookup('site-a', 'tagged', 'denied/1').length, 0, 'never queued');
    assert.equal(local.populator.counters.failed, 1);
    const metrics = await (await fetch(`${local.url}/metrics`)).text();
    assert.match(metrics, /backbeat_populator_failures_total\{location="site-a",reason="AccessDenied"\} 1/);
    // Copied from the journal (a HEAD answered 404 there) while the destination's probe was held: the
    // 404 was confirmed by a listing, as where a probe failed.
    assert.ok(probesHeld >= 1, 'the probe of the destination bucket is held');
  });

  it('scans the buckets it may list when another one refuses, and records the failing one', async () => {
    for (const bucket of ['listing-a', 'listing-z']) {
      for (const n of [1, 2]) {
        await eventually(() => assert.equal(local.status.lookup('site-a', bucket, `old-${String(n)}`)[0]?.state, 'COMPLETED'), 60_000);
        assert.equal((await body(b, bucket, `old-${String(n)}`)).toString(), `${bucket} ${String(n)}`);
      }
    }
    assert.ok(proxy.injected >= 2, 'the listing was denied');
    assert.equal(probesHeld, 4, "each destination bucket's probe is held, once");
    assert.equal(local.status.lookup('site-a', 'listing-denied', 'old-1').length, 0);
    const metrics = await (await fetch(`${local.url}/metrics`)).text();
    assert.match(metrics, /backbeat_scan_failures_total\{location="site-a",bucket="listing-denied"\} 1/);
    assert.match(metrics, /backbeat_scan_last_success_timestamp_seconds\{location="site-a",bucket="listing-z"\} \d/);
    assert.doesNotMatch(metrics, /backbeat_scan_last_success_timestamp_seconds\{location="site-a",bucket="listing-denied"\}/);
  });
});
