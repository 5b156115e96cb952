import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteObjectCommand, GetBucketNotificationConfigurationCommand, ListObjectVersionsCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { CREDENTIALS_LABEL } from '../../operator/locations.ts';
import { rgw } from '../harness/env.ts';
import { httpGet, serviceHost } from '../harness/net.ts';
import type { TestS3Server } from '../harness/seaweed.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';
import { versionedBucket } from '../pipeline/sites.ts';
import { installChart, RELEASE, startCluster, type Cluster } from './cluster.ts';

// The webhook journal on Kubernetes: the operator runs a receiver (a Deployment and a Service) for a
// source Location with journal.webhook, and with createTopic wires Ceph RGW's persistent topic to it. The
// Location is scanned too, as docs/limits.md advises: RGW may drop a delivery cut by the pod's crash.

type Condition = { type: string; status: string; reason: string; message: string };
type Resource = KubeObject & { status?: { conditions?: Condition[] } };
type Deployment = KubeObject & { spec: { template: { spec: { volumes: { name: string; projected?: { sources: { secret?: { name: string; items: { key: string }[] } }[] } }[] } } } };
type Service = KubeObject & { spec: { selector: Record<string, string>; ports: { port: number; targetPort: string }[] } };

describe('the webhook journal on Kubernetes: a receiver per Location, RGW wired through a topic (real Ceph RGW, API server, pods)', function () {
  this.timeout(300_000);
  let c: Cluster;
  let r: TestS3Server;
  let src: S3Client, dst: S3Client;
  const receiver = `${RELEASE}-webhook-rgw`;
  // RGW writes the topic's push endpoint, the token in its query, to its own log when a delivery fails.
  const token = testSecret(randomBytes(24).toString('base64url'), /^rgw-[^/]+\/log\/client\.rgw\.log$/);
  const rule = async (): Promise<Condition | undefined> => (await c.rest.get<Resource>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/inbox`)).status?.conditions?.find((x) => x.type === 'Ready');
  const location = (hook: Record<string, unknown>): string =>
    dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'rgw' }, spec: { type: 's3', endpoint: r.endpoint, insecure: true, region: 'us-east-1', credentialsSecretRef: { name: 'rgw-creds' }, journal: { kafka: { topic: `${c.prefix}-rgw-events` }, webhook: { tokenSecretRef: { name: 'hook-token' }, ...hook }, scan: { intervalSeconds: 10 } } } });

  before(async function () {
    this.timeout(300_000);
    c = await startCluster();
    if (c.external) this.skip();
    r = await rgw({ name: `op-hook-${c.prefix}` });
    [src, dst] = [r.client(), c.siteB.client()];
    await versionedBucket(src, 'inbox');
    await versionedBucket(src, 'mirror');
    await versionedBucket(dst, 'inbox-copy');
    await installChart(c, ['--set', 'kafka.partitions=2', '--set', 'operator.resyncSeconds=2']);
    const labelled = { [CREDENTIALS_LABEL]: 'true' };
    await c.kubectl(
      ['apply', '-f', '-'],
      [
        dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'rgw-creds', labels: labelled }, stringData: { accessKeyId: r.credentials.accessKeyId, secretAccessKey: r.credentials.secretAccessKey } }),
        dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'hook-token', labels: labelled }, stringData: { token } }),
        dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'site-b-creds', labels: labelled }, stringData: { accessKeyId: c.siteB.credentials.accessKeyId, secretAccessKey: c.siteB.credentials.secretAccessKey } }),
        location({}),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'site-b' }, spec: { type: 's3', endpoint: c.siteB.endpoint, insecure: true, region: 'us-east-1', credentialsSecretRef: { name: 'site-b-creds' } } }),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'inbox' }, spec: { source: { location: 'rgw', bucket: 'inbox' }, destinations: [{ location: 'site-b', bucket: 'inbox-copy' }, { location: 'rgw', bucket: 'mirror' }], replicateDeleteMarkers: true } }),
      ].join('---\n'),
    );
  });

  after(async () => {
    await c.stop();
    await r.stop();
  });

  it('runs the receiver behind a Service, its pods mounting the token alone; the rule says where to send events', async () => {
    const ready = await eventually(async () => {
      const cond = await rule();
      assert.equal(cond?.status, 'True', JSON.stringify(cond));
      assert.equal((await c.pods(receiver)).filter((p) => p.ready).length, 1, 'one receiver pod, ready');
      return cond;
    }, 120_000, 500);
    assert.match(ready.message, new RegExp(`POSTed to the webhook receiver at http://${receiver}\\.${c.namespace}\\.svc:8900/v1/journal/rgw, which the user wires`));
    const svc = await c.rest.get<Service>(`/api/v1/namespaces/${c.namespace}/services/${receiver}`);
    assert.equal(svc.spec.selector['app.kubernetes.io/component'], 'webhook');
    assert.deepEqual(svc.spec.ports.map((p) => [p.port, p.targetPort]), [[8900, 'http']]);
    const deployment = await c.rest.get<Deployment>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${receiver}`);
    const mounted = deployment.spec.template.spec.volumes.find((v) => v.name === 'credentials')?.projected?.sources.map((s) => `${s.secret?.name ?? ''}:${(s.secret?.items ?? []).map((i) => i.key).join(',')}`);
    assert.deepEqual(mounted, ['hook-token:token'], 'no S3 credentials in the receiver');
  });

  it('shows in each destination Location\'s status what its server does: RGW does not tell delete markers on HEAD, MinIO does', async () => {
    type Probed = KubeObject & { status?: { capabilities?: { deleteMarkersOnHead: boolean; probedBucket: string } } };
    await eventually(async () => {
      const [rgwStatus, minioStatus] = await Promise.all(['rgw', 'site-b'].map((l) => c.rest.get<Probed>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/locations/${l}`)));
      assert.deepEqual([rgwStatus?.status?.capabilities?.deleteMarkersOnHead, rgwStatus?.status?.capabilities?.probedBucket], [false, 'mirror']);
      assert.deepEqual([minioStatus?.status?.capabilities?.deleteMarkersOnHead, minioStatus?.status?.capabilities?.probedBucket], [true, 'inbox-copy']);
    }, 60_000, 500);
    // The processors probe the buckets they write to for themselves, when they start: one may be writing
    // its probe right now, so what is asserted is that every probe is gone once it has run.
    await eventually(async () => {
      const left = await src.send(new ListObjectVersionsCommand({ Bucket: 'mirror', Prefix: '.backbeat-probe/' }));
      assert.deepEqual([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])], [], 'the probes left nothing');
    }, 30_000, 500);
  });

  it('with createTopic, RGW pushes to the receiver: what is written there reaches site-b, a receiver pod crashed mid-stream or not', async () => {
    // RGW runs outside the cluster and cannot reach the Service: this front stands for it (an Ingress, a
    // LoadBalancer), sending each request to a ready receiver pod.
    const front = createServer((req, res) => {
      void c.pods(receiver).then((pods) => {
        const pod = pods.find((p) => p.ready);
        if (pod === undefined) return void res.writeHead(503).end();
        const up = request(new URL(req.url ?? '/', pod.url), { method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        });
        up.on('error', () => res.writeHead(502).end());
        req.pipe(up);
      });
    });
    front.listen(0, serviceHost);
    await once(front, 'listening');
    const templateHash = async (): Promise<string | undefined> => (await c.rest.get<Deployment & { spec: { template: { metadata: { annotations: Record<string, string> } } } }>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${receiver}`)).spec.template.metadata.annotations['backbeat.io/config-hash'];
    const before = await templateHash();
    try {
      await c.kubectl(['apply', '-f', '-'], location({ url: `http://${serviceHost}:${String((front.address() as AddressInfo).port)}`, createTopic: true }));
      const wired = await eventually(async () => {
        const cond = await rule();
        assert.match(cond?.message ?? '', /through topic/, JSON.stringify(cond));
        return cond;
      }, 60_000, 500);
      assert.doesNotMatch(JSON.stringify(wired), new RegExp(token), 'the token is in no condition');
      const topics = (await src.send(new GetBucketNotificationConfigurationCommand({ Bucket: 'inbox' }))).TopicConfigurations ?? [];
      assert.deepEqual(topics.map((t) => t.Id), ['backbeat-journal']);
      const put = async (from: number, to: number): Promise<void> => {
        for (let i = from; i < to; i++) await src.send(new PutObjectCommand({ Bucket: 'inbox', Key: `k/${String(i).padStart(2, '0')}`, Body: `object ${String(i)}` }));
      };
      await put(0, 10);
      // RGW's pushes reach a receiver pod (its /metrics counts them): that one crashes. A write per
      // attempt: a pod that replaced another has counted nothing yet.
      let pings = 0;
      const taking = await eventually(async () => {
        await src.send(new PutObjectCommand({ Bucket: 'inbox', Key: `ping/${String(pings++)}`, Body: 'ping' }));
        for (const p of (await c.pods(receiver)).filter((x) => x.ready)) {
          if (/^backbeat_webhook_requests_total\{location="rgw",code="200"\} [1-9]/m.test((await httpGet(`${p.url}/metrics`)).body)) return p;
        }
        throw new Error('no receiver pod has taken an event yet');
      }, 120_000, 2_000);
      await c.crash(taking.name);
      await put(10, 20);
      await src.send(new DeleteObjectCommand({ Bucket: 'inbox', Key: 'k/00' }));
      await eventually(async () => {
        const page = await dst.send(new ListObjectVersionsCommand({ Bucket: 'inbox-copy', Prefix: 'k/' }));
        assert.equal(page.Versions?.length ?? 0, 20, 'every object');
        assert.deepEqual(page.DeleteMarkers?.map((m) => m.Key), ['k/00'], 'and the delete marker');
      }, 180_000, 1_000);
      // The URL and the wiring are the operator's: the receiver's pods do not roll when they change.
      assert.equal(await templateHash(), before);
    } finally {
      front.close();
      front.closeAllConnections();
    }
  });

  it('a deleted rule takes its topic notification off the bucket', async () => {
    await c.kubectl(['delete', 'replicationrule', 'inbox', '--wait=false']);
    await eventually(async () => {
      const topics = (await src.send(new GetBucketNotificationConfigurationCommand({ Bucket: 'inbox' }))).TopicConfigurations ?? [];
      assert.deepEqual(topics.map((t) => t.Id), [], 'no notification of ours is left');
      const gone = await c.rest.find(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/inbox`);
      assert.equal(gone, undefined, 'the finalizer let the rule go');
    }, 60_000, 500);
  });
});
