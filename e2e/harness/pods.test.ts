import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { requireBinary } from './binaries.ts';
import { sharedKube } from './env.ts';
import { httpGet } from './net.ts';
import { rollingLimits, runPods, type PodRunner, type RunningPod } from './pods.ts';
import { runDir } from './run-dir.ts';
import { eventually } from './wait.ts';

// The pod runner against the real API server: a Deployment whose container is an inline node script
// serving, as JSON, what it finds in its mounted ConfigMap and Secret, its env and its args; then
// rollouts of Deployments whose pods log when they start, get ready, get SIGTERM and exit, driven by
// kubectl as a person would (set env, rollout restart, rollout status).

const execute = promisify(execFile);

/** kubectl from the component cache; rejects with its stderr when it fails. */
async function kubectl(kubeconfig: string, ...args: string[]): Promise<string> {
  try {
    return (await execute(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, ...args], { timeout: 90_000 })).stdout;
  } catch (err) {
    const { stderr = '', stdout = '' } = err as { stderr?: string; stdout?: string };
    throw new Error(`kubectl ${args.join(' ')} failed: ${stderr.trim()} ${stdout.trim()}`, { cause: err });
  }
}

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
  let kubeconfig = '';
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
    kubeconfig = kube.kubeconfig;
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
    runner = await runPods({ kubeconfig: kube.kubeconfig, namespace, cwd: process.cwd(), accountEnv: (account) => Promise.resolve({ EXTRA: `token of ${account}` }), pollMs: 200 });
  });

  after(async function () {
    this.timeout(60_000);
    await runner?.stop();
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  it('runs the pod template with its ConfigMap, Secret, env and args', async () => {
    const [first] = await readyPods(1);
    assert.ok(first);
    assert.equal(first.pod.name, `demo-${first.pod.templateHash}-0`);
    assert.match(first.pod.templateHash, /^[a-z0-9]{10}$/);
    assert.deepEqual({ ...first.seen, pid: 0 }, {
      config: 'version=1',
      secret: 't0ken',
      greeting: `hello from ${first.pod.name}`,
      namespace,
      pod: first.pod.name,
      password: 'pa55',
      extra: 'token of default',
      escaped: '$(BACKBEAT_PORT)',
      unknown: '$(NO_SUCH_VAR)',
      pid: 0,
    });
    assert.equal(first.seen.pid, first.pod.process.pid);
    assert.notEqual(first.pod.ports['BACKBEAT_PORT'], 8080);
  });

  it('reports the Deployment status, which kubectl rollout status reads', async () => {
    await eventually(async () => {
      const d = await apps.readNamespacedDeploymentStatus({ name: 'demo', namespace });
      assert.ok(d.status);
      assert.equal(d.status.observedGeneration, d.metadata?.generation);
      assert.deepEqual([d.status.replicas, d.status.updatedReplicas, d.status.readyReplicas, d.status.availableReplicas, d.status.unavailableReplicas ?? 0], [1, 1, 1, 1, 0]);
      assert.deepEqual(d.status.conditions?.map((c) => `${c.type}=${c.status} ${c.reason ?? ''}`).sort(), ['Available=True MinimumReplicasAvailable', 'Progressing=True NewReplicaSetAvailable']);
    });
    const out = await kubectl(kubeconfig, '-n', namespace, 'rollout', 'status', 'deployment/demo', '--timeout=10s');
    assert.match(out, /deployment "demo" successfully rolled out/);
  });

  it('scales up and down', async () => {
    await apps.patchNamespacedDeployment({ name: 'demo', namespace, body: { spec: { replicas: 3 } } }, mergePatch);
    const three = await readyPods(3);
    const hash = three[0]?.pod.templateHash ?? '';
    assert.deepEqual(three.map((a) => a.seen.pod), [0, 1, 2].map((n) => `demo-${hash}-${n}`));
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
    assert.notEqual(after.pod.templateHash, before.pod.templateHash);
    // The old pod was terminated once the new one was ready (RollingUpdate, the API's default 25%/25%).
    await eventually(() => assert.ok(!alive(before.seen.pid)));
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

// Each pod of the rollout Deployments appends to its Deployment's file, as JSON lines, when it starts,
// first answers its readiness probe (the runner counts it ready just after), gets SIGTERM, and exits:
// DRAIN_MS after SIGTERM, as a worker that drains its work first.
const LIFE_SCRIPT = `
const fs = require('node:fs');
const http = require('node:http');
const { EVENTS, POD_NAME, BACKBEAT_PORT, DRAIN_MS, NEVER_READY } = process.env;
const log = (what) => fs.appendFileSync(EVENTS, JSON.stringify({ pod: POD_NAME, pid: process.pid, what, at: Date.now() }) + '\\n');
log('start');
let ready = false;
http.createServer((req, res) => {
  if (NEVER_READY === '1') return res.writeHead(503).end();
  if (!ready) log('ready');
  ready = true;
  res.end('ok');
}).listen(Number(BACKBEAT_PORT), '127.0.0.1');
process.on('SIGTERM', () => {
  log('term');
  setTimeout(() => { log('stop'); process.exit(0); }, Number(DRAIN_MS));
});
`;

/** One pod's process, from its own log: ms timestamps. */
interface Life {
  pod: string;
  start: number;
  ready?: number;
  term?: number;
  stop?: number;
}

function readLives(file: string): Life[] {
  const lives = new Map<string, Life>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line === '') continue;
    const e = JSON.parse(line) as { pod: string; pid: number; what: 'start' | 'ready' | 'term' | 'stop'; at: number };
    const key = `${e.pod}/${String(e.pid)}`;
    if (e.what === 'start') lives.set(key, { pod: e.pod, start: e.at });
    else {
      const life = lives.get(key);
      assert.ok(life, `${e.what} before start: ${line}`);
      life[e.what] = e.at;
    }
  }
  return [...lives.values()];
}

type Interval = [number, number];
/** Alive: from start to exit. */
const running = (l: Life): Interval => [l.start, l.stop ?? Infinity];
/** Counted by the Deployment: from start until it is terminating. */
const counted = (l: Life): Interval => [l.start, l.term ?? Infinity];
/** Ready: from its first probe answer until it is terminating. */
const readyIntervals = (lives: Life[]): Interval[] => lives.flatMap((l): Interval[] => (l.ready === undefined ? [] : [[l.ready, l.term ?? Infinity]]));

/** The most intervals [from, to) that hold at one moment. */
function most(intervals: Interval[]): number {
  const edges = intervals.flatMap(([from, to]): Interval[] => [[from, 1], [to, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let max = 0;
  for (const [, step] of edges) max = Math.max(max, (now += step));
  return max;
}

/** The fewest intervals [from, to) that hold at one moment of [start, end]: the count only changes at their edges. */
function fewest(intervals: Interval[], start: number, end: number): number {
  const moments = [start, end, ...intervals.flat().filter((t) => t > start && t < end)];
  return Math.min(...moments.map((t) => intervals.filter(([from, to]) => from <= t && t < to).length));
}

function lifeDeployment(name: string, events: string, spec: { replicas: number; strategy: k8s.V1DeploymentStrategy; drainMs: number; progressDeadlineSeconds?: number }): k8s.V1Deployment {
  const labels = { app: name };
  return {
    metadata: { name },
    spec: {
      replicas: spec.replicas,
      strategy: spec.strategy,
      ...(spec.progressDeadlineSeconds !== undefined ? { progressDeadlineSeconds: spec.progressDeadlineSeconds } : {}),
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          terminationGracePeriodSeconds: 10,
          containers: [
            {
              name: 'main',
              image: 'backbeat:test',
              command: ['node'],
              args: ['-e', LIFE_SCRIPT],
              ports: [{ name: 'http', containerPort: 8080 }],
              readinessProbe: { httpGet: { path: '/', port: 'http' } },
              env: [
                { name: 'BACKBEAT_PORT', value: '8080' },
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'EVENTS', value: events },
                { name: 'DRAIN_MS', value: String(spec.drainMs) },
                { name: 'VERSION', value: '1' },
              ],
            },
          ],
        },
      },
    },
  };
}

describe('pod runner: rollouts', function () {
  this.timeout(60_000);
  const namespace = `rollouts-${randomBytes(4).toString('hex')}`;
  let kubeconfig = '';
  let apps: k8s.AppsV1Api;
  let core: k8s.CoreV1Api;
  let runner: PodRunner | undefined;
  let dir = '';
  const k = (...args: string[]): Promise<string> => kubectl(kubeconfig, '-n', namespace, ...args);
  const events = (name: string): string => join(dir, `${name}.events`);
  const current = (name: string): RunningPod[] => runner?.pods(name) ?? [];
  const rollingUpdate = (maxSurge: number, maxUnavailable: number): k8s.V1DeploymentStrategy => ({ type: 'RollingUpdate', rollingUpdate: { maxSurge, maxUnavailable } });

  before(async function () {
    this.timeout(180_000);
    const kube = await sharedKube();
    kubeconfig = kube.kubeconfig;
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    apps = kc.makeApiClient(k8s.AppsV1Api);
    core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    dir = mkdtempSync(join(runDir(), 'rollouts-'));
    runner = await runPods({ kubeconfig, namespace, cwd: process.cwd(), pollMs: 200 });
  });

  after(async function () {
    this.timeout(60_000);
    await runner?.stop();
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
  });

  /** Creates the Deployment and waits until `kubectl rollout status` says it has rolled out. */
  async function deploy(name: string, spec: Parameters<typeof lifeDeployment>[2]): Promise<void> {
    await apps.createNamespacedDeployment({ namespace, body: lifeDeployment(name, events(name), spec) });
    assert.match(await k('rollout', 'status', `deployment/${name}`, '--timeout=60s'), /successfully rolled out/);
  }

  /**
   * Makes `change`, waits until `kubectl rollout status` succeeds and every pod that ran before has
   * exited, prints the pods' timeline, and returns the lives of the pods from before and of the new ones.
   */
  async function roll(name: string, change: () => Promise<unknown>): Promise<{ old: Life[]; fresh: Life[]; since: number }> {
    const before = new Set(current(name).map((p) => p.name));
    const since = Date.now();
    await change();
    assert.match(await k('rollout', 'status', `deployment/${name}`, '--timeout=60s'), new RegExp(`deployment "${name}" successfully rolled out`));
    const lives = await eventually(() => {
      const all = readLives(events(name));
      assert.ok(all.filter((l) => before.has(l.pod)).every((l) => l.stop !== undefined), 'old pods still running');
      return all;
    });
    const old = lives.filter((l) => before.has(l.pod));
    const fresh = lives.filter((l) => l.start >= since);
    assert.equal(old.length, before.size);
    const now = current(name);
    assert.deepEqual(fresh.map((l) => l.pod).sort(), now.map((p) => p.name).sort(), 'the current pods are those started since the change');
    assert.ok(now.every((p) => p.ready && !before.has(p.name)));
    const at = (t: number | undefined): string => (t === undefined ? '-' : String(t - since)).padStart(6);
    console.log(`      ${name}, ms from the change:  start  ready   term   stop`);
    for (const l of [...old, ...fresh]) console.log(`      ${l.pod.padEnd(28)}${at(l.start)} ${at(l.ready)} ${at(l.term)} ${at(l.stop)}`);
    return { old, fresh, since };
  }

  it('resolves maxSurge and maxUnavailable as the Deployment controller does', () => {
    assert.deepEqual(rollingLimits(undefined, 4), { maxSurge: 1, maxUnavailable: 1 }, 'the defaults, 25% and 25%');
    assert.deepEqual(rollingLimits(undefined, 2), { maxSurge: 1, maxUnavailable: 0 }, 'surge rounds up, unavailable down');
    assert.deepEqual(rollingLimits({ maxSurge: '50%', maxUnavailable: '50%' }, 3), { maxSurge: 2, maxUnavailable: 1 });
    assert.deepEqual(rollingLimits({ maxSurge: 0, maxUnavailable: '10%' }, 2), { maxSurge: 0, maxUnavailable: 1 }, 'both 0 after rounding: 1 unavailable');
    assert.deepEqual(rollingLimits({ maxSurge: 3, maxUnavailable: 5 }, 2), { maxSurge: 3, maxUnavailable: 2 }, 'never more unavailable than replicas');
    assert.deepEqual(rollingLimits(undefined, 0), { maxSurge: 0, maxUnavailable: 0 });
    assert.throws(() => rollingLimits({ maxSurge: '1' }, 2), /maxSurge "1" is neither an integer nor a percentage/);
  });

  it('RollingUpdate, maxSurge 1 / maxUnavailable 0: a new pod is ready before an old one gets SIGTERM (set env, rollout restart)', async () => {
    await deploy('surge', { replicas: 2, strategy: rollingUpdate(1, 0), drainMs: 300 });
    for (const change of [() => k('set', 'env', 'deployment/surge', 'VERSION=2'), () => k('rollout', 'restart', 'deployment/surge')]) {
      const { old, fresh, since } = await roll('surge', change);
      const all = [...old, ...fresh];
      assert.equal(fresh.length, 2);
      const firstTerm = Math.min(...old.map((l) => l.term ?? Infinity));
      assert.ok(fresh.some((l) => l.ready !== undefined && l.ready < firstTerm), 'old and new pods overlap: a new one was ready while both old ones ran');
      assert.equal(fewest(readyIntervals(all), since, Date.now()), 2, 'never fewer than 2 ready pods');
      assert.equal(most(all.map(counted)), 3, 'never more than replicas + maxSurge pods');
    }
    const d = await apps.readNamespacedDeployment({ name: 'surge', namespace });
    assert.ok(d.spec?.template.metadata?.annotations?.['kubectl.kubernetes.io/restartedAt'] !== undefined);
  });

  it('RollingUpdate, maxSurge 0 / maxUnavailable 1: at most 2 pods counted and 1 ready; a terminating pod still runs beside its replacement', async () => {
    await deploy('nosurge', { replicas: 2, strategy: rollingUpdate(0, 1), drainMs: 1500 });
    const { old, fresh, since } = await roll('nosurge', () => k('set', 'env', 'deployment/nosurge', 'VERSION=2'));
    const all = [...old, ...fresh];
    assert.equal(fresh.length, 2);
    assert.equal(most(all.map(counted)), 2, 'never more than 2 pods that are not terminating');
    assert.ok(fewest(readyIntervals(all), since, Date.now()) >= 1, 'never fewer than 1 ready pod');
    const firstTerm = Math.min(...old.map((l) => l.term ?? Infinity));
    assert.ok(fresh.every((l) => l.start > firstTerm), 'no new pod before an old one was terminating');
    // As in a cluster, a terminating pod is not counted: the replacement starts while it drains.
    assert.ok(most(all.map(running)) > 2, 'a terminating pod ran beside the new ones');
  });

  it('Recreate: every old pod has exited before a new one starts', async () => {
    await deploy('recreate', { replicas: 2, strategy: { type: 'Recreate' }, drainMs: 500 });
    const { old, fresh } = await roll('recreate', () => k('rollout', 'restart', 'deployment/recreate'));
    assert.equal(fresh.length, 2);
    const lastStop = Math.max(...old.map((l) => l.stop ?? Infinity));
    assert.ok(fresh.every((l) => l.start > lastStop), 'a new pod started before the old ones had exited');
    assert.equal(most([...old, ...fresh].map(running)), 2);
  });

  it('a new pod that never gets ready holds the rollout until its progress deadline; a newer template rolls past it', async () => {
    await deploy('stuck', { replicas: 2, strategy: rollingUpdate(1, 0), drainMs: 0, progressDeadlineSeconds: 3 });
    const old = current('stuck').map((p) => p.name);
    await k('set', 'env', 'deployment/stuck', 'NEVER_READY=1');
    await assert.rejects(k('rollout', 'status', 'deployment/stuck', '--timeout=30s'), /deployment "stuck" exceeded its progress deadline/);
    // Past the deadline: the old pods still run, ready, and never got SIGTERM; the new one is not ready.
    const pods = current('stuck');
    assert.deepEqual(pods.filter((p) => p.ready).map((p) => p.name), old);
    assert.deepEqual(pods.filter((p) => !old.includes(p.name)).map((p) => [p.ready, p.terminating]), [[false, false]]);
    assert.ok(readLives(events('stuck')).every((l) => l.term === undefined));
    const { status } = await apps.readNamespacedDeployment({ name: 'stuck', namespace });
    assert.deepEqual([status?.replicas, status?.updatedReplicas, status?.availableReplicas, status?.unavailableReplicas], [3, 1, 2, 1]);
    const progressing = status?.conditions?.find((c) => c.type === 'Progressing');
    assert.equal(`${progressing?.status ?? ''} ${progressing?.reason ?? ''}`, 'False ProgressDeadlineExceeded');

    // A newer template: the pod of the intermediate one is old too, and goes first as it is unavailable.
    const { old: replaced, fresh, since } = await roll('stuck', () => k('set', 'env', 'deployment/stuck', 'NEVER_READY-', 'VERSION=3'));
    assert.equal(replaced.length, 3);
    assert.equal(fresh.length, 2);
    assert.equal(fewest(readyIntervals([...replaced, ...fresh]), since, Date.now()), 2, 'never fewer than 2 ready pods');
    await eventually(async () => {
      const { status: after } = await apps.readNamespacedDeployment({ name: 'stuck', namespace });
      assert.deepEqual([after?.replicas, after?.updatedReplicas, after?.availableReplicas, after?.unavailableReplicas ?? 0, after?.terminatingReplicas ?? 0], [2, 2, 2, 0, 0]);
    });
  });
});
