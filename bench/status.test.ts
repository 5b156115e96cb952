import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { sharedKafka } from '../e2e/harness/env.ts';
import { runDir } from '../e2e/harness/run-dir.ts';
import { createLogger } from '../lib/log/logger.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import { queueNames } from '../lib/queue/messages.ts';
import { createTopics, formatStatusReport, measureFold, runStatusBench, type Setting, type StatusBenchOptions, type StatusBenchResult } from './status.ts';
import { eventRecords, produce } from './status-workload.ts';

// `make bench-status` on a tiny workload, so that it cannot rot: both contenders really fold every event
// on Kafka in processes of their own, their memory and restart times are measured, and a contender that
// folds less is refused. No figure is compared to a threshold (timed tests are noise on these machines).

const quiet = createLogger({ component: 'test', stream: new PassThrough() });
const number = String.raw`\d[\d,]*`;

describe('make bench-status: the status store against the in-memory one (real Kafka, real processes)', function () {
  this.timeout(120_000);
  let options: StatusBenchOptions;

  before(async () => {
    const dir = join(runDir(), 'bench-status');
    mkdirSync(dir, { recursive: true });
    options = { brokers: (await sharedKafka()).brokers, logger: quiet, versions: 300, foldVersions: 300, partitions: 4, dir, produce: { batchVersions: 100, inFlight: 2 }, stallMs: 5_000, childTimeoutMs: 90_000 };
  });

  it('runs each contender in its own process, checks every run, and reports every figure and ratio', async () => {
    const lines: string[] = [];
    const r = await runStatusBench({ ...options, onPhase: (l) => lines.push(l) });
    const { fresh: n, baseline: o } = r;
    for (const [what, f] of Object.entries({ newFold: n.fold, oldFold: o.foldSmall })) {
      assert.equal(f.events, 900, what);
      assert.ok(f.seconds > 0, what);
    }
    for (const [what, x] of Object.entries({ newFold: n.fold, oldFold: o.foldSmall, intact: n.restartIntact, restore: n.restartRestore, old: o.restart })) {
      // Any live Node process holds tens of megabytes: less would mean the memory was never read.
      assert.ok(x.peakRssBytes > 32 * 2 ** 20, `${what} peak RSS ${String(x.peakRssBytes)}`);
    }
    for (const x of [n.restartIntact, n.restartRestore, o.restart]) assert.ok(!('failed' in x) && x.seconds > 0, JSON.stringify(x));
    assert.ok(!('failed' in n.restartIntact) && n.restartIntact.restoredRecords === 0, 'the intact copy is current: nothing read');
    assert.ok(!('failed' in n.restartRestore) && (n.restartRestore.restoredRecords ?? 0) >= 300, 'the deleted copy is restored from the changelog');
    assert.deepEqual(r.produced.map((p) => p.records), [900, 900, 300]);

    const report = formatStatusReport(r, 2);
    assert.match(report, /^make bench-status: 300 object versions, 4 partitions/m);
    assert.match(report, new RegExp(String.raw`^  fold throughput, 300 versions \(events/s\) +${number} +${number} +×\d+\.\d\d$`, 'm'));
    assert.match(report, /^ {2}peak RSS folding 300 versions +\d+ MiB +\d+ MiB +×\d+\.\d\d$/m);
    assert.match(report, /^ {2}peak RSS holding 300 versions +\d+ MiB +\d+ MiB +×\d+\.\d\d$/m);
    assert.match(report, /^ {2}restart to ready, 300 versions, local copy intact +\d+\.\d\d s +\d+\.\d\d s +×\d+\.\d\d$/m);
    assert.match(report, /^ {2}restart to ready, 300 versions, local copy deleted +\d+\.\d\d s +\d+\.\d\d s +×\d+\.\d\d$/m);
    assert.match(report, /Changelog records the new store read: 0 with its local copy intact, 3\d\d with it deleted\./);
    assert.match(report, /^ {2}the old store's <prefix>-object-status \(300 final records\): 300 records in /m);
    assert.ok(!/NaN|undefined|Infinity/.test(report), report);
    assert.equal(lines.filter((l) => /peak RSS \d+ MiB/.test(l)).length, 5, lines.join('\n'));
  });

  it('refuses the figures of a contender that did not fold everything', async () => {
    // 20 versions, of which the last 5 never get their second result: they stay PENDING.
    const queue = kafkaQueue({ brokers: options.brokers, clientId: 'bench-status-test', logger: quiet });
    const s: Setting = { options: { ...options, stallMs: 2_000 }, store: 'new', prefix: `bs-refused-${Date.now().toString(36)}`, versions: 20 };
    await createTopics(queue, s.store, s.prefix, options.partitions);
    await produce(queue, queueNames(s.prefix).status, 20, (i) => eventRecords(i).slice(0, i < 15 ? 3 : 2), options.produce);
    await assert.rejects(measureFold(s, false), /^Error: new store folding 20 versions: 15 of 20 versions COMPLETED \(5 PENDING, 0 FAILED; 15 of 20 sampled lookups COMPLETED\); its figures are not reported/);
  });

  it('reports both sizes, and the baseline that did not start as its result, with bounds for the ratios', () => {
    const fold = (versions: number, seconds: number, mibs: number): StatusBenchResult['fresh']['fold'] => ({ versions, events: versions * 3, seconds, peakRssBytes: mibs * 2 ** 20 });
    const report = formatStatusReport(
      {
        versions: 1_000_000,
        foldVersions: 20_000,
        partitions: 8,
        produce: { batchVersions: 1000, inFlight: 4 },
        produced: [{ what: 'x', records: 3_000_000, seconds: 60 }],
        fresh: { foldSmall: fold(20_000, 2, 150), fold: fold(1_000_000, 100, 300), restartSmall: { versions: 20_000, seconds: 1.5, peakRssBytes: 100 * 2 ** 20, restoredRecords: 0 }, restartIntact: { versions: 1_000_000, seconds: 1.5, peakRssBytes: 110 * 2 ** 20, restoredRecords: 0 }, restartRestore: { versions: 1_000_000, seconds: 60, peakRssBytes: 200 * 2 ** 20, restoredRecords: 1_000_008 } },
        baseline: { foldSmall: fold(20_000, 60, 160), restart: { versions: 1_000_000, failed: 'reading x did not reach its end within 120000 ms', seconds: 121.5, peakRssBytes: 1500 * 2 ** 20, versionsRead: 812_345 } },
      },
      2,
    );
    assert.match(report, /^ {2}fold throughput, 20,000 versions \(events\/s\) +30,000 +1,000 +×30\.00$/m);
    assert.match(report, /^ {2}fold throughput, 1,000,000 versions \(events\/s\) +30,000$/m);
    assert.match(report, /^ {2}peak RSS holding 1,000,000 versions +300 MiB +≥ 1500 MiB +≤ ×0\.20$/m);
    assert.match(report, /^ {2}restart to ready, 1,000,000 versions, local copy intact +1\.50 s +did not start \(see below\) +< ×0\.01$/m);
    assert.match(report, /^ {2}restart to ready, 20,000 versions, local copy intact +1\.50 s$/m);
    assert.match(report, /The old store did not start at 1,000,000 versions after 121\.5 s, 812,345 of 1,000,000 versions read: reading x did not reach its end within 120000 ms/);
  });
});
