import assert from 'node:assert/strict';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat } from './backbeat.ts';
import { body, startLocalOn, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';


/** The value of one sample in a Prometheus exposition, e.g. sample(text, 'x_total{a="b"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('operations: metrics, health and backfill on demand', function () {
  this.timeout(180_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client;

  before(async () => {
    sites = await startSites('ops');
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'docs');
    await versionedBucket(b, 'docs-b');
    // A bucket whose objects predate the rule: no journal ever saw them.
    await versionedBucket(a, 'legacy');
    await versionedBucket(b, 'legacy-b');
    for (let i = 0; i < 4; i++) await a.send(new PutObjectCommand({ Bucket: 'legacy', Key: `old-${i}`, Body: `legacy ${i}` }));
    writeRule(sites, 'docs', {
      source: { location: 'site-a', bucket: 'docs' },
      destinations: [
        { location: 'site-b', bucket: 'docs-b' },
        { location: 'site-c', bucket: 'missing' },
      ],
    });
    writeRule(sites, 'legacy', { source: { location: 'site-a', bucket: 'legacy' }, destinations: [{ location: 'site-b', bucket: 'legacy-b' }] });
    local = await startLocalOn(sites, 'ops');
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  it('serves /healthz, /readyz and /metrics whose figures match what happened', async () => {
    assert.equal((await httpGet(`${local.url}/healthz`)).status, 200);
    assert.equal((await httpGet(`${local.url}/readyz`)).status, 200);
    // A malformed request is refused; the process (every role, in local mode) goes on.
    assert.equal((await httpGet(`${local.url}/v1/objects/a/b/%E0%A4`)).status, 400);
    assert.equal((await httpGet(`${local.url}/healthz`)).status, 200);
    let bytes = 0;
    for (let i = 0; i < 5; i++) {
      const content = `document number ${i}`.repeat(i + 1);
      bytes += Buffer.byteLength(content);
      await a.send(new PutObjectCommand({ Bucket: 'docs', Key: `doc-${i}`, Body: content }));
    }
    await eventually(() => {
      for (let i = 0; i < 5; i++) assert.equal(local.status.lookup('site-a', 'docs', `doc-${i}`)[0]?.state, 'FAILED');
    }, 60_000, 250);
    const text = (await httpGet(`${local.url}/metrics`)).body;
    assert.equal(sample(text, 'backbeat_replicated_objects_total{destination="site-b/docs-b"}'), 5);
    assert.equal(sample(text, 'backbeat_replicated_bytes_total{destination="site-b/docs-b"}'), bytes);
    assert.equal(sample(text, 'backbeat_replication_failures_total{destination="site-c/missing",reason="NoSuchBucket"}'), 5);
    assert.equal(sample(text, 'backbeat_replication_latency_seconds_count{destination="site-b/docs-b"}'), 5);
    assert.equal(sample(text, 'backbeat_journal_changes_total{location="site-a"}'), 5);
    assert.equal(sample(text, 'backbeat_copies_in_flight{destination="site-b"}'), 0);
    // Work done is committed within a commit interval (a second), then the lag reads it.
    await eventually(async () => assert.equal(sample((await httpGet(`${local.url}/metrics`)).body, 'backbeat_queue_lag_messages{group="ops-processor-site-b"}'), 0), 30_000, 250);
    assert.equal(sample(text, 'backbeat_pending_objects{destination="site-b/docs-b"}'), undefined, 'nothing pending');
    // No per-object labels: no key appears anywhere in the exposition.
    assert.ok(!text.includes('doc-0'));
  });

  it('replicates the existing objects of a rule on demand, and refuses an unknown rule', async () => {
    assert.deepEqual(local.status.lookup('site-a', 'legacy', 'old-0'), [], 'not replicated before the backfill');
    // --wait returns once the rule has nothing pending: every version is COMPLETED by then.
    assert.equal(await backbeat('backfill', 'legacy', '--wait', '--server', local.url), 'rule legacy: replicated 4, pending 0, failed 0\n');
    for (let i = 0; i < 4; i++) {
      assert.equal(local.status.lookup('site-a', 'legacy', `old-${i}`)[0]?.state, 'COMPLETED');
      assert.equal((await body(b, 'legacy-b', `old-${i}`)).toString(), `legacy ${i}`);
    }
    // Again, for scripts: the versions are queued again, and found replicated.
    assert.deepEqual(JSON.parse(await backbeat('backfill', 'legacy', '-o', 'json', '--server', local.url)), { rule: 'legacy', queued: 4 });
    assert.deepEqual(((await (await fetch(`${local.url}/v1/rules/legacy`)).json()) as { destinations: unknown }).destinations, [{ destination: 'site-b/legacy-b', replicated: 4, pending: 0, failed: 0 }]);
    await assert.rejects(backbeat('backfill', 'nope', '--server', local.url), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 3);
      assert.equal(err.stderr, 'backbeat: unknown rule "nope" (known: docs, legacy)\n');
      return true;
    });
    const text = (await httpGet(`${local.url}/metrics`)).body;
    assert.equal(sample(text, 'backbeat_replicated_objects_total{destination="site-b/legacy-b"}'), 4);
  });
});
