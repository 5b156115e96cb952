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

  it('takes scheduling, pull secrets, annotations, env and a PodDisruptionBudget for the operator and, through it, every worker pod; global is allowed (a subchart)', async () => {
    const knobs = [
      'global.registry=example', 'imagePullSecrets[0].name=reg',
      'operator.nodeSelector.disk=ssd', 'operator.tolerations[0].key=dedicated', 'operator.tolerations[0].operator=Exists',
      'operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=zone',
      'operator.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists',
      'operator.podAnnotations.team=storage', 'operator.priorityClassName=critical', 'operator.env[0].name=HTTPS_PROXY', 'operator.env[0].value=http://proxy:3128',
      'workers.pod.nodeSelector.zone=a', 'workers.pod.podAnnotations.team=storage', 'workers.rolePod.processor.priorityClassName=fast',
    ];
    const { stdout } = await run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}', ...knobs.flatMap((k) => ['--set', k])]);
    const operator = stdout.slice(stdout.indexOf('name: bb-backbeat-operator\n  namespace: default\n  labels:\n'));
    for (const pattern of [/imagePullSecrets:\n\s+- name: reg/, /nodeSelector:\n\s+disk: ssd/, /tolerations:\n\s+- key: dedicated/, /affinity:\n\s+nodeAffinity:/, /annotations:\n\s+team: storage/, /priorityClassName: "critical"/, /- name: HTTPS_PROXY\n\s+value: http:\/\/proxy:3128/]) {
      assert.match(operator, pattern);
    }
    assert.match(stdout, /kind: PodDisruptionBudget[\s\S]*?maxUnavailable: 1/);
    // The workers' pods get theirs through the operator, which reads them from its environment.
    const workerPod = JSON.parse(JSON.parse(/name: BACKBEAT_WORKER_POD\n\s+value: (".*")\n/.exec(stdout)?.[1] ?? '""') as string) as Record<string, unknown>;
    assert.deepEqual([workerPod['nodeSelector'], workerPod['imagePullSecrets'], workerPod['podAnnotations']], [{ zone: 'a' }, [{ name: 'reg' }], { team: 'storage' }]);
    assert.match(stdout, /name: BACKBEAT_WORKER_ROLE_POD\n\s+value: "\{\\"processor\\":\{\\"priorityClassName\\":\\"fast\\"\}\}"/);
    await assert.rejects(run(requireBinary('helm'), ['template', 'bb', CHART, '--set', 'kafka.brokers={kafka:9092}', '--set', 'workers.rolePod.processor.colour=red']), /colour/);
  });
});
