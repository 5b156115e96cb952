import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GetObjectTaggingCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { imageApp } from '../harness/image-app.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { head, sourceBucket, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// The CLI as the image runs it: bundled by scripts/bundle.ts, then `backbeat run` from the bundle on
// Kafka with its processors on two worker threads (their entry is a file of the bundle of its own), from
// the journal to replicas with their metadata and tags, and the status API counting them.
describe('the bundled CLI (scripts/bundle.ts) replicating on real Kafka and MinIO', function () {
  this.timeout(300_000);
  let sites: Sites;
  let run: RunningBackbeat;
  let a: S3Client, b: S3Client;
  let dist: string;

  before(async () => {
    dist = join(await imageApp(), 'dist');
    sites = await startSites('bundle');
    [a, b] = [sites.a.client(), sites.b.client()];
    await sourceBucket(sites, 'docs');
    await versionedBucket(b, 'docs-b');
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }] });
    run = await startBackbeat(sites, 'bundle', ['--processor-threads', '2'], undefined, join(dist, 'main.mjs'));
  });

  after(async () => {
    await run.process.stop();
    await sites.stop();
  });

  it('answers its version from package.json', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [join(dist, 'main.mjs'), '--version']);
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(stdout.trim(), pkg.version);
  });

  it('replicates objects with their metadata and tags on both processor threads', async () => {
    const puts = await Promise.all(
      Array.from({ length: 60 }, (_, i) => a.send(new PutObjectCommand({ Bucket: 'docs', Key: `k/${String(i)}`, Body: `body ${String(i)}`, Metadata: { n: String(i) }, Tagging: `n=${String(i)}` }))),
    );
    await eventually(async () => {
      const summary = JSON.parse((await httpGet(`${run.server}/v1/summary`)).body) as Record<string, number>;
      assert.equal(summary['COMPLETED'], 60, JSON.stringify(summary));
    }, 120_000, 500);
    for (const [i, put] of puts.entries()) {
      if (i % 10 !== 0) continue;
      const replica = await head(b, 'docs-b', `k/${String(i)}`);
      assert.equal(replica.Metadata?.['backbeat-source-version-id'], put.VersionId);
      assert.equal(replica.Metadata?.['n'], String(i));
      const tags = await b.send(new GetObjectTaggingCommand({ Bucket: 'docs-b', Key: `k/${String(i)}` }));
      assert.deepEqual(tags.TagSet, [{ Key: 'n', Value: String(i) }]);
    }
    // Both threads copied: their lines reach the process's log.
    const log = readFileSync(run.process.spec.logFile, 'utf8');
    for (const thread of [0, 1]) assert.match(log, new RegExp(`"role":"processor".*"thread":${String(thread)}`));
  });
});
