import assert from 'node:assert/strict';
import { CreateBucketCommand, ListObjectVersionsCommand, PutBucketVersioningCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { httpGet } from '../harness/net.ts';
import { CREDENTIALS_LABEL } from '../../operator/locations.ts';
import { eventually } from '../harness/wait.ts';
import { installChart, RELEASE, startCluster, statusApiCredentials, type Cluster } from './cluster.ts';

// The status role through what production does to it, on the test node (or the stand-in kubelet)
// rolling Deployments as Kubernetes does (RollingUpdate, maxSurge 1 / maxUnavailable 0: old and new
// status pods overlap in one consumer group): `kubectl rollout restart` three times, and a scale from
// one replica to three and back, each during a stream of objects to two destinations of a transient
// source. Nothing may be left PENDING, every version is collected exactly once, the figures add up.

type Rule = KubeObject & { status?: { replicated?: number; pending?: number; failed?: number; destinations?: { bucket: string; replicated: number; pending: number }[] } };

describe('Status through rollouts and scale steps (operator, RollingUpdate overlap, transient source)', function () {
  this.timeout(900_000);
  let c: Cluster;
  let a: S3Client;
  let b: S3Client;
  const status = `${RELEASE}-status`;

  before(async function () {
    this.timeout(300_000);
    c = await startCluster();
    if (c.external) this.skip();
    a = c.siteA.client();
    b = c.siteB.client();
    for (const [s3, bucket] of [[a, 'inbox'], [b, 'inbox-1'], [b, 'inbox-2']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    // Lag never scales the workers here: the steps under test are the ones the test takes.
    await installChart(c, ['--set', 'kafka.partitions=4', '--set', 'operator.resyncSeconds=2', '--set', 'workers.scaling.lagThreshold=10000000', '--set', 'workers.scaling.scaleDownDelaySeconds=0', '--set', 'workers.scaling.maxReplicas=3']);
    const location = (name: string, site: Cluster['siteA'], spec: Record<string, unknown>): string =>
      [
        { apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-creds`, labels: { [CREDENTIALS_LABEL]: 'true' } }, stringData: { accessKeyId: site.credentials.accessKeyId, secretAccessKey: site.credentials.secretAccessKey } },
        { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name }, spec: { type: 's3', endpoint: site.endpoint, insecure: true, region: 'us-east-1', credentialsSecretRef: { name: `${name}-creds` }, ...spec } },
      ]
        .map((d) => dump(d))
        .join('---\n');
    const rule = { apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'inbox' }, spec: { source: { location: 'site-a', bucket: 'inbox' }, destinations: [{ location: 'site-b', bucket: 'inbox-1' }, { location: 'site-b', bucket: 'inbox-2' }] } };
    await c.kubectl(['apply', '-f', '-'], [location('site-a', c.siteA, { transient: true, journal: { kafka: { topic: c.journalTopic, targetId: 'BACKBEAT' } } }), location('site-b', c.siteB, {}), dump(rule)].join('---\n'));
    await eventually(async () => {
      const r = await c.rest.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/inbox`);
      assert.equal(r.status?.conditions?.find((x) => x.type === 'Ready')?.status, 'True');
      for (const d of ['populator-site-a', 'processor-site-b', 'status', 'gc']) assert.equal((await c.pods(`${RELEASE}-${d}`)).filter((p) => p.ready).length, 1, d);
    }, 120_000, 500);
  });

  after(async () => {
    await c.stop();
  });

  /** PUTs `count` objects, `inFlight` at a time; resolves when every PUT was acknowledged. */
  async function stream(prefix: string, count: number, inFlight = 4): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < count) {
          const i = next++;
          await a.send(new PutObjectCommand({ Bucket: 'inbox', Key: `${prefix}/${String(i).padStart(5, '0')}`, Body: `object ${String(i)}` }));
        }
      }),
    );
  }
  const statusPods = async (): Promise<string[]> => (await c.pods(status)).filter((p) => p.ready).map((p) => p.url);
  const metric = async (deployment: string, name: RegExp): Promise<number> => {
    let sum = 0;
    for (const p of await c.pods(deployment)) {
      const m = name.exec((await httpGet(`${p.url}/metrics`)).body);
      sum += Number(m?.[1] ?? 0);
    }
    return sum;
  };
  async function replicas(prefix: string, bucket: string): Promise<number> {
    let n = 0;
    let marker: { KeyMarker?: string; VersionIdMarker?: string } = {};
    for (;;) {
      const page = await b.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: `${prefix}/`, ...marker }));
      n += (page.Versions ?? []).length;
      if (page.IsTruncated !== true) return n;
      marker = { ...(page.NextKeyMarker !== undefined ? { KeyMarker: page.NextKeyMarker } : {}), ...(page.NextVersionIdMarker !== undefined ? { VersionIdMarker: page.NextVersionIdMarker } : {}) };
    }
  }

  const api = async (): Promise<Record<string, string>> => (await statusApiCredentials(c)).headers;

  /** Every version of the stream COMPLETED and collected once, none PENDING, and the figures equal to the counts. */
  async function settled(prefix: string, count: number, total: number, deletions: 'count' | 'pods changed'): Promise<void> {
    await eventually(async () => {
      const left = (await a.send(new ListObjectVersionsCommand({ Bucket: 'inbox', Prefix: `${prefix}/` }))).Versions ?? [];
      if (left.length === 0) return;
      // What the status role says of the versions left (a failure names the stage that lost them).
      const [url] = await statusPods();
      const said = await Promise.all(left.slice(0, 5).map(async (v) => (url === undefined ? 'no status pod' : (await fetch(`${url}/v1/objects/site-a/inbox/${v.Key ?? ''}?versionId=${v.VersionId ?? ''}`, { headers: await api() })).text())));
      assert.fail(`${String(left.length)} source copies not collected; status of the first: ${said.join('\n')}`);
    }, 600_000, 2_000);
    for (const bucket of ['inbox-1', 'inbox-2']) assert.equal(await replicas(prefix, bucket), count, `${bucket} holds each object once`);
    const [url] = await statusPods();
    assert.ok(url !== undefined);
    await eventually(async () => {
      const summary = (await (await fetch(`${url}/v1/summary`, { headers: await api() })).json()) as Record<string, number>;
      assert.deepEqual(summary, { PENDING: 0, COMPLETED: total, FAILED: 0, SKIPPED: 0 });
    }, 120_000, 1_000);
    // GC pods count what they deleted since they started: comparable only while the GC pod stayed.
    if (deletions === 'count') assert.equal(await metric(`${RELEASE}-gc`, /^backbeat_gc_deletions_total\{location="site-a"\} (\d+)$/m), total, 'one GC deletion per version, no more');
    assert.equal(await metric(`${RELEASE}-gc`, /^backbeat_gc_refusals_total\{location="site-a"\} (\d+)$/m), 0);
    await eventually(async () => {
      const rule = await c.rest.get<Rule>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/inbox`);
      assert.deepEqual(rule.status?.destinations?.map((d) => [d.bucket, d.replicated, d.pending]).sort(), [['inbox-1', total, 0], ['inbox-2', total, 0]]);
    }, 120_000, 1_000);
  }

  it('kubectl rollout restart of the status Deployment, three times during a stream of 2 000 objects: nothing lost', async () => {
    const writing = stream('rollout', 2_000);
    for (let round = 1; round <= 3; round++) {
      await c.kubectl(['rollout', 'restart', `deployment/${status}`]);
      const out = await c.kubectl(['rollout', 'status', `deployment/${status}`, '--timeout=240s']);
      assert.match(out, /successfully rolled out/, `round ${String(round)}`);
    }
    await writing;
    await settled('rollout', 2_000, 2_000, 'count');
  });

  it('status scaled 1 → 3 → 1 during a stream: each replica answers for the keys it owns, any replica answers for all', async () => {
    const writing = stream('scale', 1_000, 2);
    await c.helm(['upgrade', RELEASE, new URL('../../charts/backbeat', import.meta.url).pathname, '--reuse-values', '--set', 'workers.scaling.minReplicas=3']);
    await eventually(async () => { assert.equal((await statusPods()).length, 3); }, 180_000, 500);
    // Asked of one replica, each key is answered by its owner: all three take part. (Counted per pass:
    // the operator may roll the status pods meanwhile, and a pod gone has no say.)
    await eventually(async () => {
      const answeredBy = new Set<string>();
      const [first] = await statusPods();
      assert.ok(first !== undefined);
      for (let i = 0; i < 40; i++) {
        const res = await fetch(`${first}/v1/objects/site-a/inbox/scale/${String(i).padStart(5, '0')}`, { headers: await api() });
        if (res.status !== 200) continue; // not written yet, or its partition between owners
        answeredBy.add(res.headers.get('x-backbeat-answered-by') ?? '');
      }
      assert.equal(answeredBy.size, 3, `answered by ${[...answeredBy].join(', ')}`);
    }, 120_000, 1_000);
    await c.helm(['upgrade', RELEASE, new URL('../../charts/backbeat', import.meta.url).pathname, '--reuse-values', '--set', 'workers.scaling.minReplicas=1']);
    await eventually(async () => {
      // Which step lags, should it fail: the operator's scaling (the Deployment's replicas) or the rollout.
      const { spec } = await c.rest.get<KubeObject & { spec: { replicas?: number } }>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${status}`);
      assert.equal((await statusPods()).length, 1, `ready status pods, of ${String(spec.replicas)} the Deployment wants`);
    }, 180_000, 500);
    await writing;
    await settled('scale', 1_000, 3_000, 'pods changed');
  });
});
