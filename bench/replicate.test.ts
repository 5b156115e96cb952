import assert from 'node:assert/strict';
import { minio, sharedKafka } from '../e2e/harness/env.ts';
import type { MinioServer } from '../e2e/harness/minio.ts';
import { backbeatContender, minioReplicationContender, plainCopierContender, rcloneContender, type Contender } from './contenders.ts';
import { formatReport, PUBLIC_METRICS, runBench, type Workload } from './replicate.ts';
import { workersContender } from './workers.ts';

// The benchmark's machinery on a tiny workload, so that `make bench` cannot rot: every contender really
// copies every object, its memory is measured, and a contender that copies less is refused. No figure
// is compared to a threshold here (timed tests are noise on these machines).

describe('make bench: backbeat against rclone (real MinIO, real processes)', function () {
  this.timeout(180_000);
  let source: MinioServer, destination: MinioServer;
  const workloads: Workload[] = [
    { name: 'tiny', objects: 25, size: 4096 },
    { name: 'parts', objects: 2, size: 11 * 2 ** 20, partSize: 5 * 2 ** 20 },
  ];

  before(async () => {
    [source, destination] = [await minio({ name: 'bench-src', env: PUBLIC_METRICS }), await minio({ name: 'bench-dst', env: PUBLIC_METRICS })];
  });

  it('runs each contender on every workload, checks the copies, and reports medians and ratios', async () => {
    const lines: string[] = [];
    const results = await runBench({ source, destination, workloads, contenders: [rcloneContender({ tuned: true }), rcloneContender(), plainCopierContender(), plainCopierContender({ parts: true }), minioReplicationContender(), backbeatContender('backbeat')], rounds: 1, concurrency: 4, onRun: (l) => lines.push(l) });
    assert.deepEqual(
      results.map((r) => [r.workload.name, r.contender, r.runs.length]),
      // The part-by-part copier runs only where the objects have parts.
      ['tiny', 'parts'].flatMap((w) => ['rclone copy (tuned)', 'rclone copy', 'plain GET→PUT copier', ...(w === 'parts' ? ['part-by-part copier'] : []), 'MinIO bucket replication', 'backbeat'].map((c) => [w, c, 1])),
    );
    for (const r of results) {
      assert.ok(r.median.seconds > 0, `${r.contender} time`);
      assert.ok(r.serverCpuSeconds > 0, `servers' CPU during ${r.contender} ${String(r.serverCpuSeconds)}`);
      // MinIO's replication runs in the servers: no process of its own to measure.
      if (r.contender === 'MinIO bucket replication') continue;
      // Any live Node or Go process holds megabytes: a zero would mean the memory was never read.
      assert.ok(r.median.peakRssBytes > 4 * 2 ** 20, `${r.contender} peak RSS ${String(r.median.peakRssBytes)}`);
      // Starting a process and copying costs CPU time, as does serving the copies: zero means unread.
      assert.ok(r.median.cpuSeconds > 0, `${r.contender} CPU ${String(r.median.cpuSeconds)}`);
    }
    assert.equal(lines.length, 11);
    const report = formatReport(results, 1);
    assert.match(report, /^tiny: 25 objects × 4 KiB \(0\.1 MiB\), median of 1 rounds$/m);
    assert.match(report, /^parts: 2 objects × 11 MiB in 5\.0 MiB parts/m);
    assert.match(report, /ratio backbeat \/ rclone copy \(tuned\): time ×\d+\.\d\d, throughput ×\d+\.\d\d, peak RSS ×\d+\.\d\d/);
    // The servers' own counts: the ceiling makes a GET and a PUT per object, and one listing.
    assert.match(report, /S3 requests per object, plain GET→PUT copier: 2\.04 \(GetObject 1\.00, PutObject 1\.00, ListObjectsV2 0\.04\)/);
    assert.match(report, /S3 requests per object, backbeat: \d+\.\d\d \(/);
    // Part by part: per object a GET and an UploadPart of each of its 3 parts, an upload made and completed.
    assert.match(report, /S3 requests per object, part-by-part copier: 8\.50 \((?=.*GetObject 3\.00)(?=.*PutObjectPart 3\.00)(?=.*NewMultipartUpload 1\.00)(?=.*CompleteMultipartUpload 1\.00)/);
    assert.match(report, /^ {2}backbeat, time against each: ×\d+\.\d\d rclone copy \(tuned\), ×\d+\.\d\d rclone copy, ×\d+\.\d\d plain GET→PUT copier, ×\d+\.\d\d part-by-part copier, ×\d+\.\d\d MinIO bucket replication$/m);
    // MinIO's replication: the writes to the source, and its own PUTs to the target.
    assert.match(report, /S3 requests per object, MinIO bucket replication: \d+\.\d\d \(.*PutObject/);
    assert.match(report, /^ {2}MinIO bucket replication +\d+\.\d\d s .* servers +— /m);
    assert.match(report, /rclone copy: rclone copy --transfers 4 --checkers 4 --s3-chunk-size 5242880B --s3-upload-cutoff 5242880B/);
    assert.match(report, /rclone copy \(tuned\): rclone copy --transfers 4 --checkers 4 --s3-no-check-bucket --no-check-dest --s3-no-head --s3-no-head-object --use-server-modtime --fast-list --s3-chunk-size/);
  });

  it('runs backbeat as the operator does, a process per worker role on Kafka, with two processor replicas', async () => {
    const { brokers } = await sharedKafka();
    const results = await runBench({ source, destination, workloads: [{ name: 'roles', objects: 40, size: 4096 }], contenders: [workersContender(brokers, 2)], rounds: 1, concurrency: 4 });
    assert.deepEqual(
      results.map((r) => r.contender),
      ['backbeat workers, 2 processors'],
    );
    // Four processes (scanner, status, two processors), each more than a few megabytes.
    assert.ok(results.every((r) => r.median.peakRssBytes > 4 * 16 * 2 ** 20), 'peak RSS of every process');
    // One GET and one PUT per object, and a zero-byte probe PUT per processor that took a task (capabilities.ts).
    assert.match(formatReport(results, 1), /S3 requests per object, backbeat workers, 2 processors: \d+\.\d\d \((?=.*GetObject 1\.00)(?=.*PutObject 1\.0[0-5])/);
  });

  it('refuses the figures of a contender that did not copy everything', async () => {
    const lazy: Contender = { name: 'lazy', describe: () => 'copies nothing', run: () => Promise.resolve({ seconds: 0.1, peakRssBytes: 1, cpuSeconds: 0.1 }) };
    await assert.rejects(runBench({ source, destination, workloads: [{ name: 'tiny2', objects: 3, size: 10 }], contenders: [lazy], rounds: 1, concurrency: 1 }), /lazy left 0 objects \(0 bytes\) in bench-tiny2-r0-0, expected 3 \(30 bytes\)/);
  });
});
