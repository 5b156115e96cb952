import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { FailedEntry } from '../../workers/status/status.ts';
import { sharedKafka } from '../harness/env.ts';
import { freePort, httpGet } from '../harness/net.ts';
import { ManagedProcess } from '../harness/process.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { body, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

const execute = promisify(execFile);
const CLI = [
  '--disable-warning=TimeoutNegativeWarning',
  new URL('../../cli/main.ts', import.meta.url).pathname,
];

describe('failed set: durable, listable, retryable (real `backbeat run` process and CLI)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let a: S3Client, b: S3Client;
  let server: string;
  let proc: ManagedProcess;
  let ready: { probe(): Promise<boolean>; timeoutMs: number };

  const cli = async (...args: string[]): Promise<string> => (await execute(process.execPath, [...CLI, ...args, '--server', server])).stdout;
  const failedList = async (): Promise<FailedEntry[]> => JSON.parse(await cli('failed', 'list', '--json')) as FailedEntry[];

  before(async () => {
    sites = await startSites('failed');
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'docs');
    // The destination bucket is missing on purpose.
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }] });
    const port = await freePort();
    server = `http://127.0.0.1:${port}`;
    ready = { probe: async () => (await httpGet(`${server}/healthz`)).status === 200, timeoutMs: 60_000 };
    proc = new ManagedProcess({
      name: 'backbeat-failed',
      command: process.execPath,
      args: [...CLI, 'run', '-f', sites.dir, '--brokers', sites.brokers.join(','), '--prefix', 'failed', '--listen', `127.0.0.1:${port}`, '--state-dir', join(runDir(), 'state-failed')],
      logFile: join(runDir(), 'backbeat-failed.log'),
    });
    await proc.start(ready);
  });

  after(async () => {
    await proc.stop();
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
    assert.match(table, /site-a\/docs\/a\.txt\s+\S+\s+site-b\/docs-b\s+1\s+/);
    assert.match(table, /2 failed/);
  });

  it('refuses an unknown destination or object with a clear error and changes nothing', async () => {
    await assert.rejects(cli('failed', 'retry', '--destination', 'nowhere'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr ?? '', /unknown destination "nowhere" \(known: site-b\/docs-b\)/);
      return true;
    });
    await assert.rejects(cli('failed', 'retry', 'site-a/docs/never-written'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 2);
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
    await proc.kill();
    await (await sharedKafka()).crash();
    await proc.start(ready);
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
