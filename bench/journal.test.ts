import assert from 'node:assert/strict';
import { minio, sharedKafka } from '../e2e/harness/env.ts';
import { formatJournal, journalRun, nativeRun } from './journal.ts';

// The journal mode of `make bench` on a short, slow run, so that it cannot rot: both replicators really
// replicate every object written, each latency is measured, and the report says whether they kept up.
// No figure is compared to a threshold (timed tests are noise on these machines).

describe('make bench --journal: backbeat on Kafka notifications beside MinIO replication (real Kafka, MinIO, process)', function () {
  this.timeout(240_000);

  it('writes at a steady rate, waits for every replica, and reports latencies', async () => {
    const { brokers } = await sharedKafka();
    const journalTopic = `bench-journal-${String(Date.now())}`;
    const source = await minio({ name: 'bench-journal-src', notifyKafka: { brokers, topic: journalTopic, queue: false } });
    const destination = await minio({ name: 'bench-journal-dst' });
    const run = { source, destination, rate: 10, seconds: 3, warmSeconds: 1, size: 1024 };
    const runs = [await nativeRun(run), await journalRun({ ...run, brokers, journalTopic, concurrency: 4 })];
    for (const r of runs) {
      assert.equal(r.objects, 30);
      assert.equal(r.replicated, 30, `${r.name} replicated ${String(r.replicated)} of 30`);
      assert.ok(r.latencies.every((l) => Number.isFinite(l) && l > -1 && l < 60), `${r.name}: ${r.latencies.join(' ')}`);
      // The warm-up's objects are replicated and measured too, apart from the run's.
      assert.equal(r.warmup?.objects, 10);
      assert.equal(r.warmup.latencies.length, 10, `${r.name}'s warm-up replicated ${String(r.warmup.latencies.length)} of 10`);
    }
    assert.ok((runs[1]?.cpuSeconds ?? 0) > 0, 'backbeat CPU read');
    // backbeat's latency is split at its notification's Kafka record, for every object; MinIO's has no such point.
    const split = runs[1]?.split;
    assert.equal(runs[0]?.split, undefined);
    assert.equal(split?.before.length, 30, 'a notification record found for each object');
    assert.equal(split.after.length, 30);
    assert.ok([...split.before, ...split.after].every((l) => Number.isFinite(l) && l > -1 && l < 60), `${split.before.join(' ')} | ${split.after.join(' ')}`);
    // The two parts of each object add up to its latency (on one clock), so their sums do too.
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum(split.before) + sum(split.after) - sum(runs[1]?.latencies ?? [])) < 1e-6, 'the parts add up to the latencies');
    const report = formatJournal(runs, 1024);
    assert.match(report, /^ {2}MinIO replication +10\/s for 3 s: written at \d+\/s, replicated 30\/30, latency p50 -?\d+\.\d\d s, p99 .*CPU in the servers; (kept up|FELL BEHIND)$/m);
    assert.match(report, /^ {2}backbeat +10\/s for 3 s: .*replicated 30\/30, .*CPU \d+\.\d\d ms\/object; (kept up|FELL BEHIND)$/m);
    assert.match(report, /^ {4}warm-up before it, 1 s at the same rate \(not counted above\): replicated 10\/10, latency p50 -?\d+\.\d\d s, p99 .* s$/m);
    assert.match(report, /^ {4}split at the notification's Kafka record: MinIO's notification \(PUT done → record\) p50 -?\d+\.\d\d s, p99 -?\d+\.\d\d s, max -?\d+\.\d\d s; backbeat \(record → replica\) p50 -?\d+\.\d\d s, p99 .* s$/m);
  });
});
