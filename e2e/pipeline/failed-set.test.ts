import assert from 'node:assert/strict';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FailedEntry } from '../../workers/status/status.ts';
import { sharedKafka } from '../harness/env.ts';
import { eventually } from '../harness/wait.ts';
import { startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { body, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';


describe('failed set: durable, listable, retryable (real `backbeat run` process and CLI)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let a: S3Client, b: S3Client;
  let run: RunningBackbeat;

  const cli = (...args: string[]): Promise<string> => run.cli(...args);
  const failedList = async (): Promise<FailedEntry[]> => JSON.parse(await cli('failed', 'list', '-o', 'json')) as FailedEntry[];

  before(async () => {
    sites = await startSites('failed');
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'docs');
    // The destination bucket is missing on purpose.
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }] });
    run = await startBackbeat(sites, 'failed');
  });

  after(async () => {
    await run.process.stop();
    await sites.stop();
  });

  it('records a missing destination bucket as FAILED with the reason, per destination', async () => {
    for (const key of ['a.txt', 'b.txt']) await a.send(new PutObjectCommand({ Bucket: 'docs', Key: key, Body: `content ${key}` }));
    const failed = await eventually(async () => {
      const list = await failedList();
      assert.equal(list.length, 2);
      return list;
    }, 60_000, 500);
    for (const e of failed) {
      assert.equal(e.destination, 'site-b/docs-b');
      assert.equal(e.attempts, 1);
      assert.match(e.reason ?? '', /^NoSuchBucket \(HTTP 404\)/);
      assert.ok(e.firstFailureAt !== undefined && e.lastFailureAt !== undefined);
    }
    const table = await cli('failed', 'list', '--destination', 'site-b');
    assert.match(table, /site-a\/docs\/a\.txt\s+\S+\s+site-b\/docs-b\s+object\s+1\s+/);
    assert.match(table, /2 failed/);
  });

  it('refuses an unknown destination or object with a clear error and changes nothing', async () => {
    await assert.rejects(cli('failed', 'retry', '--destination', 'nowhere'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 3);
      assert.match(err.stderr ?? '', /unknown destination "nowhere" \(known: site-b\/docs-b\)/);
      return true;
    });
    await assert.rejects(cli('failed', 'retry', 'site-a/docs/never-written'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 3);
      assert.match(err.stderr ?? '', /no failed replication for site-a\/docs\/never-written/);
      return true;
    });
    await assert.rejects(cli('failed', 'retry'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? '', /failed retry takes one of/);
      return true;
    });
    assert.equal((await failedList()).length, 2);
  });

  it('keeps the failed set across a SIGKILL of every process, and retries to COMPLETED once the cause is fixed', async () => {
    await run.process.kill();
    await (await sharedKafka()).crash();
    await run.process.start(run.ready);
    assert.deepEqual((await failedList()).map((e) => e.object.key).sort(), ['a.txt', 'b.txt']);

    await versionedBucket(b, 'docs-b');
    assert.match(await cli('failed', 'retry', 'site-a/docs/a.txt'), /re-queued 1 failed destination\n/);
    await eventually(async () => assert.match(await cli('status', 'site-a/docs/a.txt'), /site-b\/docs-b\s+COMPLETED\s+2\s/), 60_000, 500);
    assert.deepEqual((await failedList()).map((e) => e.object.key), ['b.txt']);

    assert.match(await cli('failed', 'retry', '--all'), /re-queued 1 failed destination\n/);
    await eventually(async () => assert.deepEqual(await failedList(), []), 60_000, 500);
    assert.equal((await body(b, 'docs-b', 'a.txt')).toString(), 'content a.txt');
    assert.equal((await body(b, 'docs-b', 'b.txt')).toString(), 'content b.txt');
  });
});
