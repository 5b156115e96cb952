import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListPartsCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { body, head, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

describe('crash safety of `backbeat run` (real process, Kafka, MinIO)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let a: S3Client, b: S3Client;
  let run: RunningBackbeat;

  before(async () => {
    sites = await startSites('crash');
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'media');
    await versionedBucket(b, 'media-b');
    writeRule(sites, 'media', { source: { location: 'site-a', bucket: 'media' }, destinations: [{ location: 'site-b', bucket: 'media-b' }] });
    run = await startBackbeat(sites, 'crash', ['--concurrency', '4']);
  });

  after(async () => {
    await run.process.stop();
    await sites.stop();
  });

  it('loses nothing and leaves no corrupt replica when SIGKILLed mid-copy', async () => {
    // 16 parts of 5 MiB: long enough a copy to be caught in the middle.
    const parts = Array.from({ length: 16 }, () => randomBytes(5 * 1024 * 1024));
    const { UploadId } = await a.send(new CreateMultipartUploadCommand({ Bucket: 'media', Key: 'big.bin' }));
    const etags = [];
    for (const [i, p] of parts.entries()) {
      etags.push({ PartNumber: i + 1, ETag: (await a.send(new UploadPartCommand({ Bucket: 'media', Key: 'big.bin', UploadId, PartNumber: i + 1, Body: p }))).ETag ?? '' });
    }
    const done = await a.send(new CompleteMultipartUploadCommand({ Bucket: 'media', Key: 'big.bin', UploadId, MultipartUpload: { Parts: etags } }));

    // Wait for the copy to be under way on the destination (two parts there), then kill the process outright.
    await eventually(
      async () => {
        const upload = ((await b.send(new ListMultipartUploadsCommand({ Bucket: 'media-b' }))).Uploads ?? []).find((u) => u.Key === 'big.bin');
        assert.ok(upload !== undefined, 'copy not started yet');
        const uploaded = await b.send(new ListPartsCommand({ Bucket: 'media-b', Key: 'big.bin', UploadId: upload.UploadId }));
        assert.ok((uploaded.Parts ?? []).length >= 2, 'fewer than two parts there yet');
      },
      60_000,
      20,
    );
    await run.process.kill();
    await assert.rejects(head(b, 'media-b', 'big.bin'), /NotFound/, 'a half-copied object must not be visible');

    await run.process.start(run.ready);
    const restarted = Date.now();
    await eventually(
      async () => {
        assert.match(await run.cli('status', 'site-a/media/big.bin'), /site-b\/media-b\s+COMPLETED/);
      },
      120_000,
      500,
    );
    const h = await head(b, 'media-b', 'big.bin');
    assert.equal(h.ETag, done.ETag);
    // Resumed from the parts the killed process had uploaded, and no upload of it left behind.
    const resumed = readFileSync(join(runDir(), 'backbeat-crash.log'), 'utf8').split('\n').filter((l) => l.includes('"multipart copy resumed"'));
    assert.equal(resumed.length, 1, 'one resumed copy');
    const resumedAt = JSON.parse(resumed[0] ?? '{}') as { partsAlreadyThere: number; timestamp: string };
    assert.ok(resumedAt.partsAlreadyThere >= 2);
    // Consuming again soon after the restart: the killed member's session (10 s) does not hold it up long.
    const resumedAfter = Date.parse(resumedAt.timestamp) - restarted;
    console.log(`      copy resumed ${String(resumedAfter)} ms after the restart answered`);
    assert.ok(resumedAfter < 10_000, `resumed ${String(resumedAfter)} ms after the restart`);
    assert.deepEqual((await b.send(new ListMultipartUploadsCommand({ Bucket: 'media-b' }))).Uploads ?? [], []);
    assert.equal(md5(await body(b, 'media-b', 'big.bin')), md5(Buffer.concat(parts)));

    // The CLI's view of one object, per destination, with source and replica ETags.
    const stdout = await run.cli('status', 'site-a/media/big.bin');
    assert.match(stdout, new RegExp(`site-a/media/big.bin\\s+version \\S+\\s+object\\s+COMPLETED`));
    assert.ok(stdout.includes((done.ETag ?? '').replace(/"/g, '')), stdout);
  });

  it('answers a status query for an unknown object with a clear error and exit code 3', async () => {
    await assert.rejects(run.cli('status', 'site-a/media/never-written'), (err: Error & { code?: number; stderr?: string }) => {
      assert.equal(err.code, 3);
      assert.match(err.stderr ?? '', /no replication status for site-a\/media\/never-written/);
      return true;
    });
  });

  it('drains and exits cleanly on SIGTERM', async () => {
    const proc = run.process;
    const pid = proc.pid;
    assert.ok(pid !== undefined);
    const started = Date.now();
    process.kill(pid, 'SIGTERM');
    await eventually(() => assert.equal(proc.running, false), 30_000, 100);
    assert.equal(proc.exitStatus, 0);
    assert.ok(Date.now() - started < 10_000, `stopped in ${String(Date.now() - started)} ms`);
  });
});
