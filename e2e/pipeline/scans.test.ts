import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import { compileBucketConfigs } from '../../lib/config/bucket-config.ts';
import { locationClient, resolveCredentials } from '../../lib/config/credentials.ts';
import { loadManifests } from '../../lib/config/manifests.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { embeddedQueue } from '../../lib/queue/embedded.ts';
import { installationTopics, queueNames } from '../../lib/queue/messages.ts';
import { Populator } from '../../workers/populator/populator.ts';
import { scheduleScans } from '../../workers/populator/scans.ts';
import { minio } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { locationManifest, versionedBucket } from './sites.ts';

interface ScanLine {
  message: string;
  full: boolean;
  versions: number;
}

/** A populator on an embedded queue, scanning `src` every 10 s, with the scan log lines it writes. */
async function scanner(src: MinioServer, fullIntervalSeconds: number, overlapMs = 0): Promise<{ populator: Populator; scans: ScanLine[]; stop(): Promise<void> }> {
  const name = `${String(fullIntervalSeconds)}-${String(overlapMs)}`;
  const dir = join(runDir(), `manifests-scans-${name}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'all.yaml'),
    [
      locationManifest('src', src.endpoint, src.credentials, { journal: { scan: { intervalSeconds: 10, fullIntervalSeconds } } }),
      locationManifest('dst', src.endpoint, src.credentials),
      dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'r' }, spec: { source: { location: 'src', bucket: 'scanned' }, destinations: [{ location: 'dst', bucket: 'elsewhere' }] } }),
    ].join('---\n'),
  );
  const manifests = loadManifests([dir]);
  const location = manifests.locations.get('src');
  assert.ok(location !== undefined);
  const queue = embeddedQueue();
  const names = queueNames(`scans-${name}`);
  await (await queue.admin()).ensureTopics(installationTopics(names, 1, []));
  const scans: ScanLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      const line = JSON.parse(chunk.toString()) as ScanLine;
      if (line.message === 'scan queued changes') scans.push(line);
      done();
    },
  });
  const logger = createLogger({ component: 'scans-test', stream });
  const configs = compileBucketConfigs(manifests);
  const populator = new Populator({ queue, names, logger, configs, sources: new Map([['src', locationClient(location, resolveCredentials(location, manifests))]]) });
  const schedule = scheduleScans(populator, configs, manifests.locations, new Set(['src']), logger, { overlapMs });
  return {
    populator,
    scans,
    async stop() {
      await schedule.stop();
      await populator.close();
    },
  };
}

describe('periodic listing scans (real MinIO)', function () {
  this.timeout(60_000);
  let src: MinioServer;

  before(async () => {
    src = await minio({ name: 'scans' });
    await versionedBucket(src.client(), 'scanned');
    for (const key of ['old/1', 'old/2', 'old/3']) await src.client().send(new PutObjectCommand({ Bucket: 'scanned', Key: key, Body: key }));
  });

  it('queues only what changed since the previous scan between full scans, and everything at a full scan', async () => {
    // No overlap: objects written seconds apart in a test tell an incremental scan from a full one.
    const incremental = await scanner(src, 86400);
    const alwaysFull = await scanner(src, 10);
    // An hour of overlap: the incremental scan lists every version again, and passes over those queued.
    const overlapping = await scanner(src, 86400, 3600_000);
    try {
      await eventually(() => assert.equal(incremental.scans.length + alwaysFull.scans.length + overlapping.scans.length, 3));
      assert.deepEqual([incremental.scans[0]?.full, incremental.scans[0]?.versions], [true, 3]);
      assert.deepEqual([alwaysFull.scans[0]?.full, alwaysFull.scans[0]?.versions], [true, 3]);

      await src.client().send(new PutObjectCommand({ Bucket: 'scanned', Key: 'new/1', Body: 'new' }));
      await eventually(() => assert.equal(incremental.scans.length + alwaysFull.scans.length + overlapping.scans.length, 6), 20_000, 250);
      // Between full scans only the new version is queued; the old ones were queued by the first scan.
      assert.deepEqual([incremental.scans[1]?.full, incremental.scans[1]?.versions], [false, 1]);
      assert.equal(incremental.populator.counters.queued, 4);
      // With fullIntervalSeconds not above intervalSeconds, every scan queues every version, as before.
      assert.deepEqual([alwaysFull.scans[1]?.full, alwaysFull.scans[1]?.versions], [true, 4]);
      assert.equal(alwaysFull.populator.counters.queued, 7);
      assert.deepEqual([overlapping.scans[1]?.full, overlapping.scans[1]?.versions], [false, 1]);
      assert.equal(overlapping.populator.counters.queued, 4);
    } finally {
      await incremental.stop();
      await alwaysFull.stop();
      await overlapping.stop();
    }
  });

  after(async () => {
    await src.stop();
  });
});
