import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, GetObjectCommand, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { httpGet } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { exampleManifests, installChart, RELEASE, startCluster, statusApiCredentials, type Cluster } from './cluster.ts';

// What production does to the pods, on the test node (real kubelet, containerd, the image make images
// built), while objects stream into the source: a pod of each role deleted, each Deployment rolled, a
// processor OOM-killed by a tight memory limit, the kubelet restarted, then the rules deleted and the
// release uninstalled. Every object written meanwhile must reach the destination intact and be
// COMPLETED, and uninstalling must leave no worker behind (owner references).

const CHART = new URL('../../charts/backbeat', import.meta.url).pathname;
const ROLES = ['operator', 'populator-site-a', 'scanner-site-a', 'processor-site-b', 'status'];

interface ApiPod {
  metadata: { name: string };
  status: { containerStatuses?: { restartCount: number; lastState?: { terminated?: { reason?: string; exitCode?: number } } }[] };
}

describe('Real pods under chaos during a stream of objects (test node)', function () {
  this.timeout(600_000);
  let c: Cluster;
  let a: S3Client;
  let b: S3Client;
  const written = new Map<string, string>();
  let writing: Promise<void> | undefined;
  let stop = false;
  const deployment = (role: string): string => `${RELEASE}-${role}`;
  const say = (line: string): void => {
    console.log(`      ${line}`);
  };

  /** PUTs objects of a few sizes, two at a time, until told to stop; remembers what was acknowledged. */
  async function stream(): Promise<void> {
    let n = 0;
    await Promise.all(
      [0, 1].map(async () => {
        while (!stop) {
          const key = `chaos/${String(n++).padStart(5, '0')}`;
          const body = `${key} ${randomBytes(16 + (n % 7) * 1500).toString('hex')}`;
          await a.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: body }));
          written.set(key, body);
          await sleep(100);
        }
      }),
    );
  }

  const readyPods = async (role: string): Promise<string[]> => (await c.pods(deployment(role))).filter((p) => p.ready).map((p) => p.name);
  const kubectl = async (...args: string[]): Promise<string> => (await c.kubectl(args)).trim();
  const progress = async (label: string): Promise<void> => {
    // The stream goes on through every step: what was written so far keeps reaching site-b.
    const before = written.size;
    await eventually(() => assert.ok(written.size > before + 5, `the stream is stuck at ${String(written.size)} objects`), 60_000, 500);
    say(`${label}: ${String(written.size)} objects written so far`);
  };

  before(async function () {
    this.timeout(300_000);
    c = await startCluster();
    if (c.runtime !== 'node') {
      say(`no test node here (${c.runtime}): the chaos steps need a kubelet`);
      this.skip();
    }
    a = c.siteA.client();
    b = c.siteB.client();
    for (const [s3, bucket] of [[a, 'photos'], [b, 'photos-replica']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    await installChart(c, ['--set', 'kafka.partitions=2', '--set', 'operator.resyncSeconds=2', '--set', 'workers.scaling.lagThreshold=10000000']);
    await c.kubectl(['apply', '-f', exampleManifests(c)]);
    await eventually(async () => {
      const r = await c.rest.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/photos`);
      assert.equal(r.status?.conditions?.find((x) => x.type === 'Ready')?.status, 'True');
      for (const role of ROLES) assert.equal((await readyPods(role)).length, 1, role);
    }, 180_000, 1_000);
    writing = stream();
  });

  after(async () => {
    stop = true;
    await writing?.catch(() => undefined);
    await c.stop();
  });

  it('kubectl delete pod: each role gets a new pod and goes on', async () => {
    for (const role of ROLES) {
      const [old] = await readyPods(role);
      assert.ok(old !== undefined, role);
      say(await kubectl('delete', 'pod', old, '--wait=false'));
      const now = await eventually(async () => {
        const ready = await readyPods(role);
        assert.ok(ready.length >= 1 && !ready.includes(old), `${role}: ${ready.join(', ')}`);
        return ready;
      }, 120_000, 500);
      say(`${role}: ${old} replaced by ${now.join(', ')}`);
    }
    await progress('after the deletions');
  });

  it('kubectl rollout restart: each Deployment rolls to completion', async () => {
    for (const role of ROLES) {
      say(await kubectl('rollout', 'restart', `deployment/${deployment(role)}`));
      say((await kubectl('rollout', 'status', `deployment/${deployment(role)}`, '--timeout=180s')).split('\n').at(-1) ?? '');
    }
    await progress('after the rollouts');
  });

  it('a processor OOM-killed by a tight memory limit recovers once the limit is raised', async () => {
    await c.helm(['upgrade', RELEASE, CHART, '--reuse-values', '--set', 'workers.roleResources.processor.limits.memory=40Mi', '--set', 'workers.roleResources.processor.requests.memory=40Mi']);
    const killed = await eventually(async () => {
      const { items } = await c.rest.list<ApiPod>(`/api/v1/namespaces/${c.namespace}/pods`);
      const p = items.find((x) => x.metadata.name.startsWith(`${deployment('processor-site-b')}-`) && x.status.containerStatuses?.[0]?.lastState?.terminated?.reason === 'OOMKilled');
      assert.ok(p, 'no processor pod OOM-killed yet');
      return p;
    }, 180_000, 1_000);
    const last = killed.status.containerStatuses?.[0];
    say(`${killed.metadata.name}: lastState.terminated ${JSON.stringify(last?.lastState?.terminated)}, restarts ${String(last?.restartCount)}`);
    await c.helm(['upgrade', RELEASE, CHART, '--reuse-values', '--set', 'workers.roleResources.processor.limits.memory=1Gi', '--set', 'workers.roleResources.processor.requests.memory=256Mi']);
    say((await kubectl('rollout', 'status', `deployment/${deployment('processor-site-b')}`, '--timeout=180s')).split('\n').at(-1) ?? '');
    await eventually(async () => {
      assert.equal((await readyPods('processor-site-b')).length, 1);
    }, 180_000, 1_000);
    await progress('after the OOM kill');
  });

  it('a kubelet restart leaves the pods running', async () => {
    const before = new Map<string, string>();
    for (const role of ROLES) for (const p of await c.pods(deployment(role))) before.set(p.name, p.instance);
    await c.node?.restartKubelet();
    await eventually(async () => {
      assert.match(await kubectl('get', 'node', '-o', 'jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status}'), /^True$/);
      for (const role of ROLES) assert.equal((await readyPods(role)).length, 1, role);
    }, 120_000, 1_000);
    const after = new Map<string, string>();
    for (const role of ROLES) for (const p of await c.pods(deployment(role))) after.set(p.name, p.instance);
    assert.deepEqual(after, before, 'the same pods and containers, none restarted');
    say(`kubelet restarted; ${String(after.size)} pods kept running`);
    await progress('after the kubelet restart');
  });

  it('every object written meanwhile reached site-b intact, and is COMPLETED', async () => {
    stop = true;
    await writing;
    say(`${String(written.size)} objects written during the chaos`);
    const pending = new Map(written);
    const check = async (status: string, [key, body]: [string, string]): Promise<void> => {
      const copy = await b.send(new GetObjectCommand({ Bucket: 'photos-replica', Key: key })).then((o) => o.Body?.transformToString(), () => undefined);
      if (copy === undefined) throw new Error(`${key} not on site-b yet (${String(pending.size)} left)`);
      assert.equal(copy, body, `${key} is intact`);
      const answer = await httpGet(`${status}/v1/objects/site-a/photos/${key}`, (await statusApiCredentials(c)).headers);
      const versions = (JSON.parse(answer.body) as { versions?: { destinations: Record<string, { state: string }> }[] }).versions ?? [];
      const state = versions[0]?.destinations['site-b/photos-replica']?.state;
      if (state !== 'COMPLETED') throw new Error(`${key}: ${String(state)} (${String(pending.size)} left)`);
      pending.delete(key);
    };
    // Sixteen at a time, in order: an attempt ends at the first group with one not there yet.
    await eventually(
      async () => {
        const [left, status] = [[...pending], await c.statusUrl()];
        for (let i = 0; i < left.length; i += 16) await Promise.all(left.slice(i, i + 16).map((entry) => check(status, entry)));
      },
      240_000,
      2_000,
    );
    say(`all ${String(written.size)} on site-b, byte for byte, and COMPLETED`);
  });

  it('deleting the rules, then helm uninstall, leaves no Deployment and no pod', async () => {
    await kubectl('delete', 'replicationrules', '--all');
    say(await c.helm(['uninstall', RELEASE, '--wait', '--timeout', '180s']));
    await eventually(async () => {
      assert.equal(await kubectl('get', 'deployments,replicasets,pods', '-o', 'name'), '');
    }, 180_000, 1_000);
    say('no Deployment, ReplicaSet or pod left in the namespace');
  });
});
