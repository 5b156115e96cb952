import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { S3Client } from '@aws-sdk/client-s3';
import { dump, load, loadAll } from 'js-yaml';
import { loadKubeConfig } from '../../lib/kube/client.ts';
import { kubeRest, type KubeRest } from '../../lib/kube/rest.ts';
import { createS3Client, type S3Credentials } from '../../lib/s3/client.ts';
import { requireBinary } from '../harness/binaries.ts';
import { minio, sharedKafka, sharedKube, sharedNode } from '../harness/env.ts';
import type { MinioServer } from '../harness/minio.ts';
import { freePort, httpGet } from '../harness/net.ts';
import { imageApp } from '../harness/image-app.ts';
import { nodeUnavailable, type KubeNode } from '../harness/node.ts';
import { runPods, type PodRunner } from '../harness/pods.ts';
import { runDir } from '../harness/run-dir.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';

// Where the operator e2e runs. Here: Kafka and two MinIO servers as local processes, and either the test
// node (harness/node.ts: a real API server, kubelet and containerd running the image `make images` built,
// when the run is inside scripts/isolated.sh, which needs root) or, without it, a real API server and the
// stand-in kubelet (harness/pods.ts) running each Deployment's pod template as local processes. With
// BACKBEAT_E2E_CLUSTER=external: a cluster of the user's (scripts/e2e-kind.sh), the same tests.

const REPO = new URL('../../', import.meta.url).pathname;
const run = promisify(execFile);

export interface Site {
  /** Reachable from the tests. */
  client(): S3Client;
  /** The endpoint Location manifests name: reachable from the operator and the workers. */
  endpoint: string;
  credentials: S3Credentials;
  /** Stops the server and starts it again on the same port and data; local servers only. */
  outage?: { stop(): Promise<void>; start(): Promise<void> };
}

/** A pod of a Deployment, as the tests see it. */
export interface PodView {
  name: string;
  /** Answers its readiness probe, and is not terminating. */
  ready: boolean;
  restarts: number;
  /** Its HTTP server (BACKBEAT_PORT: status API, /metrics), reachable from the tests (not on an external cluster). */
  url: string;
  /** Changes whenever its process is replaced: a new pod, or a restart. */
  instance: string;
}

export interface Cluster {
  /** Where the pods run: the stand-in kubelet, the test node, or a cluster whose servers are not ours. */
  runtime: 'stand-in' | 'node' | 'external';
  /** The test node, when the pods run on it (its kubelet can be restarted). */
  node?: KubeNode;
  external: boolean;
  kubeconfig: string;
  namespace: string;
  /** Names topics and consumer groups, so that test runs sharing Kafka stay apart. */
  prefix: string;
  journalTopic: string;
  siteA: Site;
  siteB: Site;
  rest: KubeRest;
  helmValues: string[];
  /** The current pods of a Deployment, terminating ones excluded, oldest first. */
  pods(deployment: string): Promise<PodView[]>;
  /** Ends a pod as a crash would: at once, with no grace period. */
  crash(pod: string): Promise<void>;
  kubectl(args: string[], input?: string): Promise<string>;
  helm(args: string[]): Promise<string>;
  /**
   * The status API of a ready status pod, reachable from the tests. Status pods roll when a rule
   * changes, so a test asks again on each attempt rather than keep a URL.
   */
  statusUrl(): Promise<string>;
  /** After `helm install`: starts the stand-in kubelet (nothing to do on a real node or cluster). */
  afterInstall(): Promise<void>;
  stop(): Promise<void>;
}

const site = (endpoint: string, credentials: S3Credentials, reachable = endpoint): Site => ({
  endpoint,
  credentials,
  client: () => createS3Client({ endpoint: reachable, region: 'us-east-1', forcePathStyle: true, credentials }),
});

const localSite = (server: MinioServer): Site => ({
  ...site(server.endpoint, server.credentials),
  outage: {
    stop: () => server.process.stop(),
    start: () => server.process.start({ probe: async () => (await httpGet(`${server.endpoint}/minio/health/ready`)).status === 200, timeoutMs: 60_000 }),
  },
});

export const RELEASE = 'backbeat';

function tools(kubeconfig: string, namespace: string): Pick<Cluster, 'kubectl' | 'helm'> {
  return {
    async kubectl(args, input) {
      if (input === undefined) return (await run(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, '-n', namespace, ...args])).stdout;
      return new Promise((resolve, reject) => {
        const child = spawn(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, '-n', namespace, ...args]);
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code) => {
          if (code === 0) resolve(out);
          else reject(Object.assign(new Error(`kubectl ${args.join(' ')}: ${err}`), { stderr: err }));
        });
        child.stdin.end(input);
      });
    },
    async helm(args) {
      return (await run(requireBinary('helm'), ['--kubeconfig', kubeconfig, '-n', namespace, ...args], { timeout: 120_000 })).stdout;
    },
  };
}

/** A kubeconfig for the chart's ServiceAccount, so that the operator runs with exactly the chart's RBAC. */
async function serviceAccountKubeconfig(rest: KubeRest, adminKubeconfig: string, namespace: string, account: string): Promise<string> {
  const answer = await rest.create<{ status: { token: string } }>(`/api/v1/namespaces/${namespace}/serviceaccounts/${account}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 7200 },
  });
  const admin = load(readFileSync(adminKubeconfig, 'utf8')) as { clusters: unknown[] };
  const file = join(runDir(), `${namespace}-${account}.kubeconfig`);
  writeFileSync(
    file,
    dump({ apiVersion: 'v1', kind: 'Config', clusters: admin.clusters, users: [{ name: account, user: { token: testSecret(answer.status.token) } }], contexts: [{ name: account, context: { cluster: (admin.clusters[0] as { name: string }).name, user: account, namespace } }], 'current-context': account }),
    { mode: 0o600 },
  );
  return file;
}

interface ApiPod {
  metadata: { name: string; uid: string; creationTimestamp: string; deletionTimestamp?: string };
  spec: { containers: { env?: { name: string; value?: string }[] }[] };
  status: { podIP?: string; containerStatuses?: { ready: boolean; restartCount: number }[] };
}

/** The pods of a Deployment as the API server lists them (pod names are <deployment>-<template hash>-<suffix>). */
async function apiPods(rest: KubeRest, namespace: string, deployment: string): Promise<PodView[]> {
  const own = new RegExp(`^${deployment}-[a-z0-9]+-[a-z0-9]{5}$`);
  const { items } = await rest.list<ApiPod>(`/api/v1/namespaces/${namespace}/pods`);
  return items
    .filter((p) => own.test(p.metadata.name) && p.metadata.deletionTimestamp === undefined)
    .sort((x, y) => x.metadata.creationTimestamp.localeCompare(y.metadata.creationTimestamp) || x.metadata.name.localeCompare(y.metadata.name))
    .map((p) => {
      const container = p.status.containerStatuses?.[0];
      const port = p.spec.containers[0]?.env?.find((e) => e.name === 'BACKBEAT_PORT')?.value;
      return {
        name: p.metadata.name,
        ready: container?.ready === true,
        restarts: container?.restartCount ?? 0,
        url: `http://${p.status.podIP ?? 'no-ip-yet'}:${port ?? 'no-port'}`,
        instance: `${p.metadata.uid}/${String(container?.restartCount ?? 0)}`,
      };
    });
}

async function local(own?: ClusterKafka): Promise<Cluster> {
  const why = nodeUnavailable();
  if (why !== undefined) console.log(`      (operator e2e on the stand-in kubelet: ${why})`);
  const [node, shared] = await Promise.all([why === undefined ? sharedNode() : undefined, own === undefined ? sharedKafka() : undefined]);
  const kafka = own ?? { brokers: shared?.brokers ?? [], notifyBrokers: shared?.brokers ?? [], helmValues: [] };
  const kubeconfig = node?.kubeconfig ?? (await sharedKube()).kubeconfig;
  const id = randomBytes(3).toString('hex');
  const namespace = `op-${id}`;
  const journalTopic = `op-${id}-site-a-events`;
  const a = await minio({
    name: `op-a-${id}`,
    notifyKafka: { brokers: kafka.notifyBrokers, topic: journalTopic },
    // A notification target of the user's own, which the operator must leave alone.
    env: { MINIO_NOTIFY_KAFKA_ENABLE_USER: 'on', MINIO_NOTIFY_KAFKA_BROKERS_USER: kafka.notifyBrokers.join(','), MINIO_NOTIFY_KAFKA_TOPIC_USER: `${journalTopic}-user`, MINIO_NOTIFY_KAFKA_QUEUE_DIR_USER: mkdtempSync(join(runDir(), 'user-queue-')) },
  });
  const b = await minio({ name: `op-b-${id}` });
  const rest = kubeRest(loadKubeConfig(kubeconfig));
  await rest.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  const common = {
    external: false,
    kubeconfig,
    namespace,
    prefix: `op${id}`,
    journalTopic,
    siteA: localSite(a),
    siteB: localSite(b),
    rest,
    ...tools(kubeconfig, namespace),
    async statusUrl(this: Cluster) {
      const pod = await eventually(async () => {
        const p = (await this.pods(`${RELEASE}-status`)).find((x) => x.ready);
        if (p === undefined) throw new Error('no ready status pod');
        return p;
      }, 60_000);
      return pod.url;
    },
  };
  const brokers = ['--set', `kafka.brokers={${kafka.brokers.join(',')}}`, ...kafka.helmValues];
  // The suite's S3 servers go with it: idle, each still costs the machine CPU (MinIO's scanner) until the run ends.
  const stopSites = async (): Promise<void> => {
    await Promise.all([a.stop(), b.stop()]);
  };
  return node === undefined ? standIn(common, brokers, stopSites) : onNode(common, brokers, node, stopSites);
}

type Common = Omit<Cluster, 'runtime' | 'helmValues' | 'pods' | 'crash' | 'afterInstall' | 'stop'>;

function onNode(common: Common, brokers: string[], node: KubeNode, stopSites: () => Promise<void>): Cluster {
  return {
    ...common,
    runtime: 'node',
    node,
    helmValues: [...brokers, ...imageValues(node.images.image), '--set', 'image.pullPolicy=Never'],
    pods: (deployment) => apiPods(common.rest, common.namespace, deployment),
    async crash(pod) {
      await common.kubectl(['delete', 'pod', pod, '--grace-period=0', '--force']);
    },
    afterInstall: () => Promise.resolve(),
    async stop() {
      // The node outlives the suite: its pods go, so that they load no later suite. The namespace stays,
      // its custom resources inert: deleted, it would stay Terminating for good (the rules' finalizers
      // wait for the operator, which would go with it), and the namespace controller would retry a
      // delete of every rule, thousands after the scale suite, until the run ends.
      await common.kubectl(['delete', 'deployments,replicasets,jobs,pods', '--all', '--wait=false']);
      await eventually(async () => {
        assert.deepEqual((await common.rest.list(`/api/v1/namespaces/${common.namespace}/pods`)).items.map((p) => p.metadata.name), []);
      }, 120_000, 1_000);
      await stopSites();
    },
  };
}

function standIn(common: Common, brokers: string[], stopSites: () => Promise<void>): Cluster {
  let runner: PodRunner | undefined;
  return {
    ...common,
    runtime: 'stand-in',
    helmValues: brokers,
    pods: (deployment) =>
      Promise.resolve(
        (runner?.pods(deployment) ?? []).map((p) => ({ name: p.name, ready: p.ready, restarts: p.restarts, url: `http://127.0.0.1:${String(p.ports['BACKBEAT_PORT'])}`, instance: String(p.process.pid) })),
      ),
    async crash(pod) {
      const running = runner?.pods().find((p) => p.name === pod);
      if (running === undefined) throw new Error(`pod ${pod} does not run here`);
      await running.process.kill();
    },
    async afterInstall() {
      // Each pod's kubeconfig holds a token of its ServiceAccount (the chart's, which exist from now on), so
      // that the operator and the status API run with exactly the chart's RBAC.
      const accounts = new Map<string, Promise<string>>();
      const accountEnv = async (account: string): Promise<Record<string, string>> => {
        if (!accounts.has(account)) accounts.set(account, eventually(() => serviceAccountKubeconfig(common.rest, common.kubeconfig, common.namespace, account), 30_000));
        return { KUBECONFIG: await (accounts.get(account) ?? '') };
      };
      runner = await runPods({ kubeconfig: common.kubeconfig, namespace: common.namespace, cwd: await imageApp(), accountEnv });
    },
    async stop() {
      await runner?.stop();
      await stopSites();
    },
  };
}

const imageValues = (image: string): string[] => {
  const colon = image.lastIndexOf(':');
  return ['--set', `image.repository=${image.slice(0, colon)}`, '--set', `image.tag=${image.slice(colon + 1)}`];
};

function env(name: string): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new Error(`BACKBEAT_E2E_CLUSTER=external needs $${name} (see scripts/e2e-kind.sh)`);
  return v;
}

function external(): Cluster {
  const kubeconfig = env('KUBECONFIG');
  const namespace = env('BACKBEAT_E2E_NAMESPACE');
  const t = tools(kubeconfig, namespace);
  const rest = kubeRest(loadKubeConfig(kubeconfig));
  const forwards: ReturnType<typeof spawn>[] = [];
  let forwarded: { url: string; child: ReturnType<typeof spawn> } | undefined;
  return {
    runtime: 'external',
    external: true,
    kubeconfig,
    namespace,
    prefix: `op${randomBytes(3).toString('hex')}`,
    journalTopic: 'site-a-events',
    siteA: site(env('BACKBEAT_E2E_SITE_A_ENDPOINT'), { accessKeyId: 'site-a-admin', secretAccessKey: 'change-me-site-a' }, env('BACKBEAT_E2E_SITE_A_URL')),
    siteB: site(env('BACKBEAT_E2E_SITE_B_ENDPOINT'), { accessKeyId: 'site-b-admin', secretAccessKey: 'change-me-site-b' }, env('BACKBEAT_E2E_SITE_B_URL')),
    rest,
    helmValues: ['--set', `kafka.brokers={${env('BACKBEAT_E2E_KAFKA_BROKERS')}}`, ...imageValues(env('BACKBEAT_E2E_IMAGE')), '--set', 'image.pullPolicy=IfNotPresent'],
    pods: (deployment) => apiPods(rest, namespace, deployment),
    async crash(pod) {
      await t.kubectl(['delete', 'pod', pod, '--grace-period=0', '--force']);
    },
    ...t,
    afterInstall: () => Promise.resolve(),
    async statusUrl() {
      const answers = async (url: string): Promise<boolean> => (await httpGet(`${url}/readyz`).catch(() => undefined))?.status === 200;
      // A port-forward follows the pod it started on: kept while it answers, else started again.
      if (forwarded !== undefined && (await answers(forwarded.url))) return forwarded.url;
      forwarded?.child.kill();
      const port = await freePort();
      const child = spawn(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, '-n', namespace, 'port-forward', `deploy/${RELEASE}-status`, `${String(port)}:8900`], { stdio: 'ignore' });
      forwards.push(child);
      const url = `http://127.0.0.1:${String(port)}`;
      await eventually(async () => {
        if (!(await answers(url))) throw new Error('status API not ready');
      }, 60_000);
      forwarded = { url, child };
      return url;
    },
    stop() {
      forwards.forEach((f) => f.kill());
      return Promise.resolve();
    },
  };
}

/** A token of a ServiceAccount of the test namespace, as `kubectl create token` gives it (registered as a secret of the run). */
export async function serviceAccountToken(c: Pick<Cluster, 'kubectl'>, account: string): Promise<string> {
  return testSecret((await c.kubectl(['create', 'token', account, '--duration=2h'])).trim());
}

const oncall = new WeakMap<Cluster, Promise<{ headers: Record<string, string>; tokenFile: string }>>();

/**
 * Credentials for the status API, as an operator of the installation holds them: a token of the on-call
 * ServiceAccount of examples/access/ (applied once per cluster), as a header and as a file for the CLI.
 */
export function statusApiCredentials(c: Cluster): Promise<{ headers: Record<string, string>; tokenFile: string }> {
  let made = oncall.get(c);
  if (made === undefined) {
    made = (async () => {
      await c.kubectl(['apply', '-f', join(REPO, 'examples/access/status-api.yaml')]);
      const token = await serviceAccountToken(c, 'backbeat-oncall');
      const tokenFile = join(runDir(), `${c.namespace}-oncall.token`);
      writeFileSync(tokenFile, token, { mode: 0o600 });
      return { headers: { authorization: `Bearer ${token}` }, tokenFile };
    })();
    oncall.set(c, made);
  }
  return made;
}

/** `helm install` of the chart, with this environment's Kafka and image, then the pods run. */
export async function installChart(c: Cluster, values: string[]): Promise<void> {
  await c.helm(['install', RELEASE, join(REPO, 'charts/backbeat'), '--wait=false', ...c.helmValues, '--set', `kafka.topicPrefix=${c.prefix}`, ...values]);
  await c.afterInstall();
}

type Doc = Record<string, unknown> & { kind: string; metadata: { name: string }; spec?: Record<string, unknown>; stringData?: Record<string, string> };

/** examples/ with this environment's endpoints, credentials and journal topic; returns their folder. */
export function exampleManifests(c: Cluster): string {
  const dir = mkdtempSync(join(runDir(), 'examples-'));
  for (const file of ['site-a.yaml', 'site-b.yaml', 'rule.yaml']) {
    const docs = loadAll(readFileSync(join(REPO, 'examples', file), 'utf8')) as Doc[];
    for (const d of docs) {
      const site = d.metadata.name.startsWith('site-a') ? c.siteA : c.siteB;
      if (d.kind === 'Secret') d.stringData = { accessKeyId: site.credentials.accessKeyId, secretAccessKey: site.credentials.secretAccessKey };
      if (d.kind === 'Location' && d.spec !== undefined) {
        d.spec['endpoint'] = site.endpoint;
        const journal = d.spec['journal'] as { kafka?: { topic: string } } | undefined;
        if (journal?.kafka !== undefined) journal.kafka.topic = c.journalTopic;
      }
    }
    writeFileSync(join(dir, file), docs.map((d) => dump(d)).join('---\n'));
  }
  return dir;
}

/**
 * Another Kafka than the shared one (a secure one): the brokers the operator and the workers reach, with
 * the chart values that reach them, and the brokers MinIO publishes its notifications to.
 */
export interface ClusterKafka {
  brokers: string[];
  notifyBrokers: string[];
  helmValues: string[];
}

export function startCluster(kafka?: ClusterKafka): Promise<Cluster> {
  if (process.env['BACKBEAT_E2E_CLUSTER'] !== 'external') return local(kafka);
  if (kafka !== undefined) throw new Error('a Kafka of the test run cannot serve an external cluster');
  return Promise.resolve(external());
}
