import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { loadAll } from 'js-yaml';
import { createMetrics } from '../../lib/metrics.ts';
import { operatorMetrics } from '../../operator/metrics.ts';
import { requireBinary } from '../harness/binaries.ts';

// The chart's alerts and dashboard, checked with Prometheus' own parser (promcheck, built by make deps)
// and against the metrics the code really exports. Their firing on a real run: e2e/pipeline/alerts.test.ts.

const run = promisify(execFile);
const CHART = new URL('../../charts/backbeat', import.meta.url).pathname;

interface Doc {
  kind: string;
  spec?: { groups: { rules: { alert: string; expr: string }[] }[] };
  data?: Record<string, string>;
}

/** Every metric name the workers and the operator export, with a histogram's series names. */
async function exported(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const registry of [createMetrics().registry, operatorMetrics({ leading: () => true, readiness: () => [] }).registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(`${m.name}${s}`);
    }
  }
  return names;
}

function promcheck(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(requireBinary('promcheck'), args, (err, stdout) => {
      if (err !== null) reject(new Error(`promcheck ${args.join(' ')} failed:\n${stdout}`));
      else resolve(stdout);
    });
    child.stdin?.end(input ?? '');
  });
}

describe('alerts and dashboard of the chart', function () {
  this.timeout(60_000);
  let docs: Doc[];

  before(async () => {
    const { stdout } = await run(requireBinary('helm'), [
      'template', 'bb', CHART, '-n', 'replication', '--set', 'kafka.brokers={kafka:9092}',
      '--set', 'metrics.serviceMonitor.enabled=true', '--set', 'metrics.prometheusRule.enabled=true', '--set', 'metrics.grafanaDashboard.enabled=true',
    ]);
    docs = loadAll(stdout) as Doc[];
  });

  it('ships alert rules that Prometheus accepts, on metrics the code exports, scoped to the namespace', async () => {
    const rule = docs.find((d) => d.kind === 'PrometheusRule');
    assert.ok(rule?.spec !== undefined);
    const rules = rule.spec.groups.flatMap((g) => g.rules);
    assert.match(await promcheck(['rules'], JSON.stringify(rule.spec)), new RegExp(`^${String(rules.length)} rules OK`));
    assert.deepEqual(rules.map((r) => r.alert), [
      'BackbeatReplicationStalled', 'BackbeatReplicationFailures', 'BackbeatReplicationSlow', 'BackbeatTransientSourceGCRefused',
      'BackbeatJournalMalformed', 'BackbeatMessagesRejected', 'BackbeatJournalChangesSetAside', 'BackbeatPopulatorStalled', 'BackbeatScanFailing', 'BackbeatTasksExpiring',
      'BackbeatResourceNotReady', 'BackbeatOperatorNoLeader',
    ]);
    const names = await exported();
    for (const r of rules) {
      const used = r.expr.match(/backbeat_[a-z_]+/g) ?? [];
      assert.ok(used.length > 0, r.alert);
      for (const n of used) assert.ok(names.has(n), `${r.alert} uses ${n}, which nothing exports`);
      // Every selector of this release's series carries its namespace.
      assert.equal((r.expr.match(/backbeat_[a-z_]+\{/g) ?? []).length, (r.expr.match(/\{namespace="replication"[,}]/g) ?? []).length, r.alert);
    }
  });

  it('refuses alerts without the monitors that feed them', async () => {
    await assert.rejects(
      run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}', '--set', 'metrics.prometheusRule.enabled=true']),
      (err: Error & { stderr?: string }) => {
        assert.match(err.stderr ?? '', /metrics\.prometheusRule\.enabled needs metrics\.serviceMonitor\.enabled/);
        return true;
      },
    );
  });

  it('ships a dashboard whose every query Prometheus parses, on metrics the code exports', async () => {
    const map = docs.find((d) => d.kind === 'ConfigMap' && d.data?.['backbeat.json'] !== undefined);
    const dashboard = JSON.parse(map?.data?.['backbeat.json'] ?? '{}') as { panels: { type: string; title: string; targets?: { expr: string }[] }[] };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    assert.ok(exprs.length >= 15, `${String(exprs.length)} queries`);
    // Grafana's variables, as Grafana would substitute them.
    const concrete = exprs.map((e) => e.replaceAll('$__rate_interval', '2m').replaceAll('$namespace', 'replication'));
    assert.match(await promcheck(['exprs'], JSON.stringify(concrete)), new RegExp(`^${String(exprs.length)} expressions OK`));
    // The checker itself refuses what Prometheus would.
    await assert.rejects(promcheck(['exprs'], '["sum(rate(x[5m])"]'), /unclosed left parenthesis/);
    const names = await exported();
    for (const e of exprs) for (const n of e.match(/backbeat_[a-z_]+/g) ?? []) assert.ok(names.has(n), `the dashboard queries ${n}, which nothing exports`);
  });
});
