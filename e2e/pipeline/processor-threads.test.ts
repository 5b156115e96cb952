import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { LocalRun } from '../../workers/local/local.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { backbeat } from './backbeat.ts';
import { head, sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// Local mode with its processors on two worker threads (Kafka): each destination's partitions are shared
// by the threads, every object arrives once, the status API and /metrics see the threads' processors,
// a pause reaches them, and a thread that dies is replaced without losing a copy.
describe('local mode with processors on worker threads (real Kafka, real MinIO)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let local: LocalRun;
  let a: S3Client, b: S3Client, c: S3Client;

  before(async () => {
    sites = await startSites('threads');
    [a, b, c] = [sites.a.client(), sites.b.client(), sites.c.client()];
    await sourceBucket(sites, 'docs');
    await versionedBucket(b, 'docs-b');
    await versionedBucket(c, 'docs-c');
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }, { location: 'site-c', bucket: 'docs-c' }] });
    local = await startLocalOn(sites, 'threads', { processorThreads: 2, retry: { baseDelayMs: 100, maxDelayMs: 1_000 } });
  });

  after(async () => {
    await local.stop();
    await sites.stop();
  });

  const completed = (key: string): boolean => local.status.lookup('site-a', 'docs', key)[0]?.state === 'COMPLETED';
  const replicaOf = async (s3: S3Client, bucket: string, key: string): Promise<string | undefined> => (await head(s3, bucket, key)).Metadata?.['backbeat-source-version-id'];

  it('shares each destination between the threads and copies every object once', async () => {
    assert.equal(local.processors.size, 0, 'no processor in the main thread');
    const puts = await Promise.all(Array.from({ length: 200 }, (_, i) => a.send(new PutObjectCommand({ Bucket: 'docs', Key: `k/${String(i)}`, Body: `body ${String(i)}` }))));
    await eventually(() => assert.ok(puts.every((_, i) => completed(`k/${String(i)}`))), 120_000, 500);
    for (const [i, put] of puts.entries()) {
      if (i % 20 !== 0) continue;
      assert.equal(await replicaOf(b, 'docs-b', `k/${String(i)}`), put.VersionId);
      assert.equal(await replicaOf(c, 'docs-c', `k/${String(i)}`), put.VersionId);
    }
    const perThread = (await local.threads?.counters()) ?? [];
    assert.equal(perThread.length, 2);
    for (const location of ['site-b', 'site-c']) {
      const done = perThread.map((t) => t.get(location)?.completed ?? 0);
      assert.ok(done.every((n) => n > 0), `${location}: ${done.join(' + ')} (each thread takes part)`);
      assert.equal(done.reduce((x, y) => x + y, 0), 200, `${location}: ${done.join(' + ')}`);
    }
    // The metrics of both threads, added up, on the one /metrics.
    const metrics = await (await fetch(`${local.url}/metrics`)).text();
    assert.match(metrics, /^backbeat_replicated_objects_total\{destination="site-b\/docs-b"\} 200$/m);
    assert.match(metrics, /^backbeat_replicated_objects_total\{destination="site-c\/docs-c"\} 200$/m);
    assert.equal((await fetch(`${local.url}/readyz`)).status, 200);
  });

  it('pauses and resumes a destination on every thread', async () => {
    await backbeat('pause', 'site-b', '--server', local.url);
    await eventually(() => assert.deepEqual(local.threads?.states().find((s) => s.location === 'site-b')?.paused, true), 30_000, 250);
    const put = await a.send(new PutObjectCommand({ Bucket: 'docs', Key: 'while-paused', Body: 'wait' }));
    await eventually(() => assert.equal(local.status.lookup('site-a', 'docs', 'while-paused')[0]?.destinations['site-c/docs-c']?.state, 'COMPLETED'), 60_000, 250);
    await new Promise((r) => setTimeout(r, 2_000));
    assert.equal(local.status.lookup('site-a', 'docs', 'while-paused')[0]?.destinations['site-b/docs-b']?.state, 'PENDING');
    await backbeat('resume', 'site-b', '--server', local.url);
    await eventually(() => assert.ok(completed('while-paused')), 60_000, 250);
    assert.equal(await replicaOf(b, 'docs-b', 'while-paused'), put.VersionId);
  });

  it('replaces a thread that dies during a stream of objects, and loses no copy', async () => {
    const writes: Promise<{ VersionId?: string | undefined }>[] = [];
    for (let i = 0; i < 100; i++) {
      writes.push(a.send(new PutObjectCommand({ Bucket: 'docs', Key: `crash/${String(i)}`, Body: `crash ${String(i)}` })));
      if (i === 30) await local.threads?.terminate(0);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 50));
    }
    const puts = await Promise.all(writes);
    await eventually(() => assert.ok(puts.every((_, i) => completed(`crash/${String(i)}`))), 180_000, 500);
    for (const [i, put] of puts.entries()) assert.equal(await replicaOf(b, 'docs-b', `crash/${String(i)}`), put.VersionId, `crash/${String(i)}`);
    await eventually(() => assert.equal(local.threads?.settled, true), 30_000, 250);
    // The threads' own lines reach the main thread's log, as does the replacement.
    const log = readFileSync(join(runDir(), 'threads.log'), 'utf8');
    assert.match(log, /"message":"processor thread ended: starting it again".*"thread":0/);
    assert.match(log, /"role":"processor".*"thread":1/);
  });
});
