import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { loadAll } from 'js-yaml';
import type { LocalRun } from '../../workers/local/local.ts';
import { requireBinary } from '../harness/binaries.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';
import { sourceBucket, startLocalOn, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// The chart's alerts, evaluated as a Prometheus server would: the rules the chart renders, Prometheus'
// own PromQL engine and TSDB (promcheck watch, built by make deps), scraping the /metrics of a real run.
// Its clock runs 60 times faster than the wall clock, so that the rules' 15-minute windows pass in 15 s:
// the samples are the run's real counters and gauges, only their timestamps are spread out.

const run = promisify(execFile);
const CHART = new URL('../../charts/backbeat', import.meta.url).pathname;
const NAMESPACE = 'replication';

interface Alert {
  alert: string;
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}

describe('the chart\'s alerts firing and resolving, in Prometheus\' engine, on a real run\'s metrics (real Kafka, MinIO)', function () {
  this.timeout(300_000);
  let sites: Sites;
  let local: LocalRun | undefined;
  let watcher: ChildProcess | undefined;
  /** The alerts of the latest evaluation. */
  let latest: Alert[] = [];
  const evaluations: Alert[][] = [];

  before(async () => {
    // The rules as the chart renders them, a stalled destination alerting after 1 minute (1 s here).
    const { stdout } = await run(requireBinary('helm'), [
      'template', 'bb', CHART, '-n', NAMESPACE, '--set', 'kafka.brokers={kafka:9092}',
      '--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.prometheusRule.enabled=true', '--set', 'metrics.prometheusRule.stalledFor=1m',
    ]);
    const rule = (loadAll(stdout) as { kind: string; spec?: unknown }[]).find((d) => d.kind === 'PrometheusRule');
    assert.ok(rule?.spec !== undefined);
    const rules = join(runDir(), 'alert-rules.json');
    writeFileSync(rules, JSON.stringify(rule.spec));

    sites = await startSites('alerts');
    await sourceBucket(sites, 'docs');
    await versionedBucket(sites.b.client(), 'docs-b');
    // site-c has no bucket "missing": every copy there fails.
    writeRule(sites, 'docs', { source: { location: 'site-a', bucket: 'docs' }, destinations: [{ location: 'site-b', bucket: 'docs-b' }, { location: 'site-c', bucket: 'missing' }] });
    local = await startLocalOn(sites, 'alerts', { retry: { maxAttempts: 2, baseDelayMs: 50, maxDelayMs: 100 } });

    watcher = spawn(requireBinary('promcheck'), ['watch', '--rules', rules, '--target', `${local.url}/metrics`, '--label', `namespace=${NAMESPACE}`, '--interval', '250ms', '--speed', '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
    createInterface({ input: watcher.stdout ?? assert.fail() }).on('line', (line) => {
      latest = (JSON.parse(line) as { alerts: Alert[] }).alerts;
      evaluations.push(latest);
    });
  });
  after(async () => {
    watcher?.kill('SIGTERM');
    await local?.stop();
    await sites.stop();
  });

  const firing = (alert: string, labels: Record<string, string>): boolean => latest.some((a) => a.alert === alert && a.state === 'firing' && Object.entries(labels).every(([k, v]) => a.labels[k] === v));

  it('fires BackbeatReplicationStalled while a destination is down, and resolves once it is back and caught up', async () => {
    await eventually(() => assert.ok(evaluations.length > 2, 'promcheck watch evaluates'), 30_000, 100);
    assert.ok(!latest.some((a) => a.alert === 'BackbeatReplicationStalled'), 'nothing stalled before anything is written');
    await sites.b.stop();
    const a = sites.a.client();
    for (const n of [1, 2, 3]) await a.send(new PutObjectCommand({ Bucket: 'docs', Key: `doc-${String(n)}`, Body: `doc ${String(n)}` }));
    await eventually(() => assert.ok(firing('BackbeatReplicationStalled', { destination: 'site-b/docs-b', location: 'site-b', severity: 'warning' }), JSON.stringify(latest)), 90_000, 100);

    await sites.b.start();
    await eventually(() => {
      for (const n of [1, 2, 3]) assert.equal(local?.status.lookup('site-a', 'docs', `doc-${String(n)}`)[0]?.destinations['site-b/docs-b']?.state, 'COMPLETED');
    }, 90_000, 200);
    await eventually(() => assert.ok(!latest.some((x) => x.alert === 'BackbeatReplicationStalled'), JSON.stringify(latest)), 60_000, 100);
  });

  it('fires BackbeatReplicationFailures on a failed copy, and resolves once 15 minutes pass without one', async () => {
    // The three versions failed at site-c (no such bucket) as soon as they were queued.
    await eventually(() => assert.ok(firing('BackbeatReplicationFailures', { destination: 'site-c/missing', reason: 'NoSuchBucket' }), JSON.stringify(latest)), 60_000, 100);
    assert.equal(local?.status.lookup('site-a', 'docs', 'doc-1')[0]?.destinations['site-c/missing']?.state, 'FAILED');
    // 15 minutes of the watcher's clock without a new failure: 15 s here.
    await eventually(() => assert.ok(!latest.some((x) => x.alert === 'BackbeatReplicationFailures'), JSON.stringify(latest)), 90_000, 250);
  });
});
