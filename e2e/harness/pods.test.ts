import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import { sharedKube } from './env.ts';
import { httpGet } from './net.ts';
import { runPods, type PodRunner, type RunningPod } from './pods.ts';
import { eventually } from './wait.ts';

// The pod runner against the real API server: a Deployment whose container is an inline node script
// serving, as JSON, what it finds in its mounted ConfigMap and Secret, its env and its args.

const SCRIPT = `
const fs = require('node:fs');
const http = require('node:http');
const [secretFile, port, escaped, unknown] = process.argv.slice(1);
const seen = {
  config: fs.readFileSync(process.env.CONFIG_FILE, 'utf8'),
  secret: fs.readFileSync(secretFile, 'utf8'),
  greeting: process.env.GREETING,
  namespace: process.env.POD_NAMESPACE,
  pod: process.env.POD_NAME,
  password: process.env.PASSWORD,
  extra: process.env.EXTRA,
  escaped,
  unknown,
  pid: process.pid,
};
const server = http.createServer((req, res) => res.end(JSON.stringify(seen)));
server.listen(Number(port), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

interface Seen {
  config: string;
  secret: string;
  greeting: string;
  namespace: string;
  pod: string;
  password: string;
  extra: string;
  escaped: string;
  unknown: string;
  pid: number;
}

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function ask(pod: RunningPod): Promise<Seen> {
  const port = pod.ports['BACKBEAT_PORT'];
  assert.ok(port !== undefined);
  const answer = await httpGet(`http://127.0.0.1:${port}/`);
  assert.equal(answer.status, 200);
  return JSON.parse(answer.body) as Seen;
}

function deployment(name: string): k8s.V1Deployment {
  const labels = { app: name };
  return {
    metadata: { name },
    spec: {
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          containers: [
            {
              name: 'main',
              image: 'backbeat:test',
              command: ['node'],
              args: ['-e', SCRIPT, '/etc/demo/secret/token', '$(BACKBEAT_PORT)', '$$(BACKBEAT_PORT)', '$(NO_SUCH_VAR)'],
              ports: [{ name: 'http', containerPort: 8080 }],
              readinessProbe: { httpGet: { path: '/', port: 'http' } },
              env: [
                { name: 'BACKBEAT_PORT', value: '8080' },
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'GREETING', value: 'hello from $(POD_NAME)' },
                { name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 'demo-secret', key: 'password' } } },
                { name: 'MISSING', valueFrom: { secretKeyRef: { name: 'no-such-secret', key: 'x', optional: true } } },
                { name: 'CONFIG_FILE', value: '/etc/demo/config/app.conf' },
              ],
              volumeMounts: [
                { name: 'config', mountPath: '/etc/demo/config' },
                { name: 'secret', mountPath: '/etc/demo/secret', readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name: 'demo-config' } },
            { name: 'secret', secret: { secretName: 'demo-secret', items: [{ key: 'api-token', path: 'token' }] } },
          ],
        },
      },
    },
  };
}

describe('pod runner', function () {
  this.timeout(120_000);
  const namespace = `pods-${randomBytes(4).toString('hex')}`;
  let apps: k8s.AppsV1Api;
  let core: k8s.CoreV1Api;
  let runner: PodRunner | undefined;
  const pids = new Set<number>(); // every process seen, for the final check

  const pods = (): RunningPod[] => runner?.pods('demo') ?? [];
  const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

  /** The demo pods once there are `count` of them, all ready and answering. */
  async function readyPods(count: number): Promise<{ pod: RunningPod; seen: Seen }[]> {
    return eventually(async () => {
      const current = pods();
      assert.equal(current.length, count);
      assert.ok(current.every((p) => p.ready));
      const answers = await Promise.all(current.map(async (pod) => ({ pod, seen: await ask(pod) })));
      for (const a of answers) pids.add(a.seen.pid);
      return answers;
    }, 60_000);
  }

  before(async function () {
    this.timeout(180_000);
    const kube = await sharedKube();
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kube.kubeconfig);
    apps = kc.makeApiClient(k8s.AppsV1Api);
    core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'demo-config' }, data: { 'app.conf': 'version=1' } } });
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: 'demo-secret' },
        data: { 'api-token': Buffer.from('t0ken').toString('base64'), password: Buffer.from('pa55').toString('base64') },
      },
    });
    await apps.createNamespacedDeployment({ namespace, body: deployment('demo') });
    runner = await runPods({ kubeconfig: kube.kubeconfig, namespace, cwd: process.cwd(), extraEnv: { EXTRA: 'extra' }, pollMs: 200 });
  });

  after(async function () {
    this.timeout(60_000);
    await runner?.stop();
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  it('runs the pod template with its ConfigMap, Secret, env and args', async () => {
    const [first] = await readyPods(1);
    assert.ok(first);
    assert.equal(first.pod.name, 'demo-0');
    assert.deepEqual({ ...first.seen, pid: 0 }, {
      config: 'version=1',
      secret: 't0ken',
      greeting: 'hello from demo-0',
      namespace,
      pod: 'demo-0',
      password: 'pa55',
      extra: 'extra',
      escaped: '$(BACKBEAT_PORT)',
      unknown: '$(NO_SUCH_VAR)',
      pid: 0,
    });
    assert.equal(first.seen.pid, first.pod.process.pid);
    assert.notEqual(first.pod.ports['BACKBEAT_PORT'], 8080);
  });

  it('reports the Deployment status', async () => {
    await eventually(async () => {
      const d = await apps.readNamespacedDeploymentStatus({ name: 'demo', namespace });
      assert.ok(d.status);
      assert.equal(d.status.observedGeneration, d.metadata?.generation);
      assert.equal(d.status.readyReplicas, 1);
      assert.equal(d.status.updatedReplicas, 1);
    });
  });

  it('scales up and down', async () => {
    await apps.patchNamespacedDeployment({ name: 'demo', namespace, body: { spec: { replicas: 3 } } }, mergePatch);
    const three = await readyPods(3);
    assert.deepEqual(three.map((a) => a.seen.pod), ['demo-0', 'demo-1', 'demo-2']);
    assert.equal(new Set(three.map((a) => a.seen.pid)).size, 3);
    assert.equal(new Set(three.map((a) => a.pod.ports['BACKBEAT_PORT'])).size, 3);
    await eventually(async () => assert.equal((await apps.readNamespacedDeployment({ name: 'demo', namespace })).status?.readyReplicas, 3));

    await apps.patchNamespacedDeployment({ name: 'demo', namespace, body: { spec: { replicas: 1 } } }, mergePatch);
    const [one] = await readyPods(1);
    assert.equal(one?.seen.pid, three[0]?.seen.pid, 'demo-0 stays');
    await eventually(() => assert.ok(three.slice(1).every((a) => !alive(a.seen.pid))));
    await eventually(async () => assert.equal((await apps.readNamespacedDeployment({ name: 'demo', namespace })).status?.readyReplicas, 1));
  });

  it('replaces the pod when its ConfigMap changes', async () => {
    const [before] = await readyPods(1);
    assert.ok(before);
    await core.patchNamespacedConfigMap({ name: 'demo-config', namespace, body: { data: { 'app.conf': 'version=2' } } }, mergePatch);
    const [after] = await eventually(async () => {
      const answers = await readyPods(1);
      assert.equal(answers[0]?.seen.config, 'version=2');
      return answers;
    }, 60_000);
    assert.ok(after);
    assert.notEqual(after.seen.pid, before.seen.pid);
    assert.ok(!alive(before.seen.pid));
  });

  it('restarts a process that dies', async () => {
    const [before] = await readyPods(1);
    assert.ok(before);
    assert.equal(before.pod.restarts, 0);
    process.kill(before.seen.pid, 'SIGKILL');
    const [after] = await eventually(async () => {
      const answers = await readyPods(1);
      assert.equal(answers[0]?.pod.restarts, 1);
      return answers;
    }, 30_000);
    assert.ok(after);
    assert.notEqual(after.seen.pid, before.seen.pid);
    assert.equal(after.pod.ports['BACKBEAT_PORT'], before.pod.ports['BACKBEAT_PORT'], 'a restart keeps the pod');
  });

  it('logs a Deployment it cannot run, and runs the others', async () => {
    const errors: string[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => errors.push(args.map(String).join(' '));
    try {
      const broken = deployment('broken');
      const container = broken.spec?.template.spec?.containers[0];
      assert.ok(container);
      delete container.command; // args only, as with an image's ENTRYPOINT
      await apps.createNamespacedDeployment({ namespace, body: broken });
      await eventually(() => assert.ok(errors.some((e) => /broken.*has no command/.test(e)), errors.join('\n')));
    } finally {
      console.error = consoleError;
    }
    assert.equal(runner?.pods('broken').length, 0);
    await readyPods(1);
    await apps.deleteNamespacedDeployment({ name: 'broken', namespace });
  });

  it('stops every process of a deleted Deployment', async () => {
    await readyPods(1);
    await apps.deleteNamespacedDeployment({ name: 'demo', namespace });
    await eventually(() => assert.equal(pods().length, 0));
    await eventually(() => assert.deepEqual([...pids].filter(alive), []));
    assert.ok(pids.size >= 5, `${pids.size} processes seen`);
  });
});
