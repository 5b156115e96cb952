import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { requireBinary } from '../harness/binaries.ts';

const run = promisify(execFile);
const CHART = new URL('../../charts/backbeat', import.meta.url).pathname;

describe('Helm chart', function () {
  this.timeout(60_000);

  it('passes helm lint --strict', async () => {
    const { stdout } = await run(requireBinary('helm'), ['lint', '--strict', CHART, '--set', 'kafka.brokers={kafka:9092}']);
    assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  it('refuses an install without Kafka brokers, saying which value to set', async () => {
    await assert.rejects(run(requireBinary('helm'), ['template', 'bb', CHART]), (err: Error & { stderr?: string }) => {
      assert.match(err.stderr ?? '', /kafka\.brokers is required/);
      return true;
    });
  });

  it('grants the operator only namespaced rights, the status pods token reviews alone, and monitoring resources on request', async () => {
    const plain = (await run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}'])).stdout;
    assert.match(plain, /kind: Role\n/);
    assert.doesNotMatch(plain, /^kind: ClusterRole$|ServiceMonitor/m);
    // The one cluster-wide grant: TokenReview and SubjectAccessReview, to the status pods' own account.
    assert.deepEqual([...plain.matchAll(/kind: ClusterRoleBinding\n/g)].length, 1);
    assert.match(plain, /kind: ClusterRoleBinding[\s\S]*?name: system:auth-delegator\nsubjects:\n\s+- kind: ServiceAccount\n\s+name: bb-backbeat-status\n/);
    assert.match(plain, /kind: NetworkPolicy[\s\S]*?ports:\n\s+- \{ protocol: TCP, port: 8900 \}/);
    // Secrets: read one by name, never listed; created only for the status replicas' peer key.
    assert.match(plain, /resources: \["secrets"\]\n\s+verbs: \["get", "create"\]/);
    const monitored = (await run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}', '--set', 'metrics.serviceMonitor.enabled=true'])).stdout;
    assert.match(monitored, /kind: ServiceMonitor/);
    assert.match(monitored, /kind: PodMonitor/);
  });

  it('renders a non-root operator with a read-only root filesystem', async () => {
    const { stdout } = await run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}']);
    assert.match(stdout, /runAsNonRoot: true/);
    assert.match(stdout, /readOnlyRootFilesystem: true/);
    assert.match(stdout, /value: "kafka:9092"/);
  });

  it('refuses values that break values.schema.json, naming the field', async () => {
    await assert.rejects(
      run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}', '--set', 'operator.replicas=-1']),
      (err: Error & { stderr?: string }) => {
        assert.match(err.stderr ?? '', /operator\.replicas|\/operator\/replicas/);
        return true;
      },
    );
  });
});
