import assert from 'node:assert/strict';
import {
  CreateBucketCommand,
  GetBucketNotificationConfigurationCommand,
  GetObjectCommand,
  GetObjectTaggingCommand,
  PutBucketNotificationConfigurationCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { dump } from 'js-yaml';
import { CREDENTIALS_LABEL } from '../../operator/locations.ts';
import type { CompiledRule } from '../../lib/config/bucket-config.ts';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { backbeat } from '../pipeline/backbeat.ts';
import { httpGet, serviceHost } from '../harness/net.ts';
import { eventually } from '../harness/wait.ts';
import { exampleManifests, installChart, RELEASE, serviceAccountToken, startCluster, statusApiCredentials, type Cluster } from './cluster.ts';
import { published, watchPublished, type Published } from './published.ts';

// The operator on a real API server: helm install, kubectl apply of examples/, worker Deployments run,
// objects replicated, figures in `kubectl get replicationrules`, scaling from lag, operator-only bad input,
// and a rule's deletion undoing what it added.

const PARTITIONS = 3;
const LAG_THRESHOLD = 2;
const USER_ARN = 'arn:minio:sqs::USER:kafka';

type Condition = { type: string; status: string; reason: string; message: string; observedGeneration: number };
type Resource = KubeObject & { status?: { conditions?: Condition[]; observedGeneration?: number; replicated?: number; destinations?: { location: string; replicated: number; lag: number }[] } };

const text = async (s3: S3Client, bucket: string, key: string): Promise<string> => (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body?.transformToString() ?? Promise.resolve('');

describe('Operator on a real API server', function () {
  this.timeout(180_000);
  let c: Cluster;
  let a: S3Client;
  let b: S3Client;
  const deployment = (suffix: string): string => `${RELEASE}-${suffix}`;
  const readyPods = async (suffix: string): Promise<number> => (await c.pods(deployment(suffix))).filter((p) => p.ready).length;

  /** The worker PodDisruptionBudgets: name and maxUnavailable, sorted. */
  const disruptionBudgets = async (): Promise<string[]> =>
    (await c.rest.list(`/apis/policy/v1/namespaces/${c.namespace}/poddisruptionbudgets?labelSelector=${encodeURIComponent('app.kubernetes.io/managed-by=backbeat-operator')}`)).items.map((b) => `${b.metadata.name} ${String((b as { spec?: { maxUnavailable?: number } }).spec?.maxUnavailable)}`).sort();
  const get = async (plural: string, name: string): Promise<Resource> => c.rest.get<Resource>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/${plural}/${name}`);
  const condition = (r: Resource, type: string): Condition | undefined => r.status?.conditions?.find((x) => x.type === type);
  const ready = (r: Resource): Condition | undefined => condition(r, 'Ready');
  const replicas = async (name: string): Promise<number | undefined> => (await c.rest.find<KubeObject & { spec: { replicas: number } }>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${name}`))?.spec.replicas;
  // Every published file (locations.json and the bucket files of every shard), as one folder.
  const configMap = async (): Promise<Record<string, string>> => (await published(c.rest, c.namespace)).files;
  const queues = async (): Promise<{ Id?: string | undefined }[]> => (await a.send(new GetBucketNotificationConfigurationCommand({ Bucket: 'photos' }))).QueueConfigurations ?? [];
  const waitReady = (plural: string, name: string, status: string, reason?: string): Promise<Condition> =>
    eventually(async () => {
      const r = await get(plural, name);
      const cond = ready(r);
      assert.ok(cond, `${plural}/${name} has no Ready condition yet`);
      assert.equal(cond.status, status, `${plural}/${name}: ${cond.reason}: ${cond.message}`);
      if (reason !== undefined) assert.equal(cond.reason, reason);
      assert.equal(cond.observedGeneration, r.metadata.generation);
      return cond;
    }, 90_000, 500);

  // The status API takes the token of a caller RBAC allows: the on-call account of examples/access/.
  let oncall: Record<string, string> = {};
  let oncallTokenFile = '';

  before(async function () {
    this.timeout(300_000);
    c = await startCluster();
    ({ headers: oncall, tokenFile: oncallTokenFile } = await statusApiCredentials(c));
    a = c.siteA.client();
    b = c.siteB.client();
    for (const [s3, bucket] of [[a, 'photos'], [b, 'photos-replica'], [b, 'unversioned']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket })).catch(() => undefined);
      if (bucket !== 'unversioned') await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    if (!c.external) {
      // The user's own notification settings on the source bucket: the operator must merge with them.
      await a.send(new PutBucketNotificationConfigurationCommand({ Bucket: 'photos', NotificationConfiguration: { QueueConfigurations: [{ Id: 'users-own', QueueArn: USER_ARN, Events: ['s3:ObjectCreated:Put'] }] } }));
    }
  });

  after(async () => {
    await c.stop();
  });

  it('installs with helm; the operator takes the Lease and creates the status and GC workers', async () => {
    await installChart(c, ['--set', 'operator.replicas=2', '--set', `kafka.partitions=${String(PARTITIONS)}`, '--set', 'operator.resyncSeconds=2', '--set', `workers.scaling.lagThreshold=${String(LAG_THRESHOLD)}`, '--set', 'workers.scaling.scaleDownDelaySeconds=0']);
    const lease = await eventually(() => c.rest.get<KubeObject & { spec: { holderIdentity?: string } }>(`/apis/coordination.k8s.io/v1/namespaces/${c.namespace}/leases/${RELEASE}-operator`), 90_000, 500);
    assert.ok(lease.spec.holderIdentity !== undefined && lease.spec.holderIdentity !== '');
    // Nothing to replicate yet: one status processor, the GC at zero.
    await eventually(async () => {
      assert.equal(await replicas(deployment('status')), 1);
      assert.equal(await replicas(deployment('gc')), 0);
    }, 60_000, 500);
  });

  it('kubectl apply of examples/: Locations and the rule Ready, workers deployed, journal wired beside the user\'s', async () => {
    await c.kubectl(['apply', '-f', exampleManifests(c)]);
    const [siteA, siteB] = [await waitReady('locations', 'site-a', 'True', 'Reachable'), await waitReady('locations', 'site-b', 'True', 'Reachable')];
    assert.match(siteA.message, /answers with the credentials/);
    assert.match(siteB.message, /answers/);
    const rule = await waitReady('replicationrules', 'photos', 'True', 'Replicating');
    assert.match(rule.message, /event notifications/);
    await eventually(async () => {
      assert.equal(await replicas(deployment('populator-site-a')), 1);
      assert.equal(await replicas(deployment('scanner-site-a')), 1);
      assert.equal(await replicas(deployment('processor-site-b')), 1);
      assert.equal(await replicas(deployment('status')), 1);
      assert.equal(await replicas(deployment('gc')), 0);
    }, 60_000, 500);
    // A node drain takes one pod of each worker Deployment at a time.
    await eventually(async () => assert.deepEqual(await disruptionBudgets(), ['gc', 'populator-site-a', 'processor-site-b', 'scanner-site-a', 'status'].map((d) => `${deployment(d)} 1`)), 60_000, 500);
    const data = await configMap();
    const compiled = JSON.parse(data['bucket_site-a_photos.json'] ?? '{}') as { Rules: { ID: string; Destinations: { Id: string }[] }[] };
    assert.deepEqual(compiled.Rules.map((r) => [r.ID, r.Destinations.map((d) => d.Id)]), [['photos', ['site-b/photos-replica']]]);
    assert.doesNotMatch(JSON.stringify(data), new RegExp(c.siteA.credentials.secretAccessKey), 'no secret in the published config');
    if (!c.external) {
      const ids = (await queues()).map((q) => q.Id);
      assert.ok(ids.includes('backbeat-journal'), `ours is there: ${ids.join(', ')}`);
      assert.ok(ids.includes('users-own'), `the user's is kept: ${ids.join(', ')}`);
      // The node runs the worker pods the operator declared.
      await eventually(async () => {
        for (const d of ['populator-site-a', 'scanner-site-a', 'processor-site-b', 'status']) assert.equal(await readyPods(d), 1, d);
        assert.equal(await readyPods('operator'), 2, 'a leader and a standby');
      }, 90_000, 500);
    }
  });

  it('replicates what is PUT on the source, and kubectl get replicationrules shows it', async () => {
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'cats/1.jpg', Body: 'meow', Metadata: { camera: 'x100' }, Tagging: 'album=cats' }));
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'dogs/2.jpg', Body: 'woof' }));
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'empty', Body: '' }));
    await eventually(async () => {
      assert.equal(await text(b, 'photos-replica', 'cats/1.jpg'), 'meow');
      assert.equal(await text(b, 'photos-replica', 'dogs/2.jpg'), 'woof');
      assert.equal(await text(b, 'photos-replica', 'empty'), '');
    }, 90_000, 500);
    const tags = await b.send(new GetObjectTaggingCommand({ Bucket: 'photos-replica', Key: 'cats/1.jpg' }));
    assert.deepEqual(tags.TagSet, [{ Key: 'album', Value: 'cats' }]);
    const row = await eventually(async () => {
      const out = await c.kubectl(['get', 'replicationrules', 'photos', '--no-headers', '-o', 'wide']);
      const cols = out.trim().split(/\s+/);
      // NAME READY REASON SOURCE DESTINATIONS PENDING FAILED LAG AGE REPLICATED MESSAGE
      assert.deepEqual([...cols.slice(0, 8), cols[9]], ['photos', 'True', 'Replicating', 'site-a/photos', 'site-b/photos-replica', '0', '0', '0', '3'], out);
      assert.match(out, /replicating site-a\/photos to 1 destination\(s\)/, 'the Ready message, in the wide view');
      return out;
    }, 60_000, 500);
    assert.match(row, /^photos\s+True/);
    const photos = await get('replicationrules', 'photos');
    assert.deepEqual(photos.status?.destinations?.map((d) => [d.location, d.replicated, d.lag]), [['site-b', 3, 0]]);
    // Nothing changes now: passes run every 2 s, and none of them writes a status.
    const site = await get('locations', 'site-b');
    await sleep(5_000);
    assert.equal((await get('replicationrules', 'photos')).metadata.resourceVersion, photos.metadata.resourceVersion);
    assert.equal((await get('locations', 'site-b')).metadata.resourceVersion, site.metadata.resourceVersion);
    const events = await c.kubectl(['get', 'events', '--field-selector', 'involvedObject.name=photos', '-o', 'jsonpath={.items[*].reason}']);
    assert.match(events, /Replicating/);
    if (!c.external) {
      // Each role serves its own /metrics: the processor counts what it copied, the populator what it read.
      const metrics = async (d: string, index = 0): Promise<string> => (await httpGet(`${String((await c.pods(deployment(d)))[index]?.url)}/metrics`)).body;
      assert.match(await metrics('processor-site-b'), /backbeat_replicated_objects_total\{destination="site-b\/photos-replica"\} 3\n/);
      assert.match(await metrics('populator-site-a'), /backbeat_journal_changes_total\{location="site-a"\} [1-9]/);
      // The leader has reconciled; the standby only waits.
      const operators = [await metrics('operator', 0), await metrics('operator', 1)];
      assert.equal(operators.filter((m) => /backbeat_operator_reconciles_total\{result="ok"\} [1-9]/.test(m)).length, 1, 'exactly one operator reconciles');
      // What the chart's alerts read: one leader, and every resource Ready.
      assert.deepEqual(operators.map((m) => /^backbeat_operator_leader (\d)$/m.exec(m)?.[1]).sort(), ['0', '1']);
      const leader = operators.find((m) => m.includes('backbeat_operator_leader 1')) ?? '';
      for (const r of ['kind="Location",name="site-a"', 'kind="Location",name="site-b"', 'kind="ReplicationRule",name="photos"']) {
        assert.match(leader, new RegExp(`^backbeat_resource_ready\\{${r}\\} 1$`, 'm'));
      }
    }
  });

  it('lets only the callers RBAC allows use the status API: 401 without a valid token, 403 without the permission', async () => {
    await c.kubectl(['create', 'serviceaccount', 'stranger']);
    await c.kubectl(['create', 'rolebinding', 'viewer', '--role=backbeat-view', `--serviceaccount=${c.namespace}:viewer`]);
    await c.kubectl(['create', 'serviceaccount', 'viewer']);
    const [stranger, viewer] = [{ authorization: `Bearer ${await serviceAccountToken(c, 'stranger')}` }, { authorization: `Bearer ${await serviceAccountToken(c, 'viewer')}` }];
    const status = await c.statusUrl();
    const states = async (): Promise<unknown> => JSON.parse((await httpGet(`${status}/v1/destinations`, oncall)).body);
    const before = await states();
    const post = async (path: string, headers: Record<string, string>): Promise<{ status: number; error: string }> => {
      const res = await fetch(`${status}${path}`, { method: 'POST', headers, body: '{}' });
      return { status: res.status, error: ((await res.json()) as { error: string }).error };
    };
    for (const headers of [{}, { authorization: 'Bearer not-a-token' }]) {
      assert.equal((await httpGet(`${status}/v1/destinations`, headers)).status, 401);
      assert.equal((await post('/v1/destinations/site-b/pause', headers)).status, 401);
    }
    const refused = await post('/v1/destinations/site-b/pause', stranger);
    assert.deepEqual(refused, { status: 403, error: `system:serviceaccount:${c.namespace}:stranger may not create locations/pause "site-b" in namespace ${c.namespace}` });
    assert.equal((await httpGet(`${status}/v1/destinations`, stranger)).status, 403);
    // Viewing is granted apart from operating.
    assert.equal((await httpGet(`${status}/v1/destinations`, viewer)).status, 200);
    for (const path of ['/v1/destinations/site-b/pause', '/v1/failed/retry', '/v1/rules/photos/backfill']) assert.equal((await post(path, viewer)).status, 403, path);
    assert.deepEqual(await states(), before, 'nothing refused changed anything');
    // The CLI with the on-call token (a file, as `kubectl create token` makes one): allowed.
    assert.equal(await backbeat('pause', 'site-b', '--server', status, '--token-file', oncallTokenFile), 'site-b: paused\n');
    assert.equal(await backbeat('resume', 'site-b', '--server', status, '--token-file', oncallTokenFile), 'site-b: resumed\n');
    // Or the token of a kubeconfig's user.
    const kubeconfig = join(dirname(oncallTokenFile), 'oncall.kubeconfig');
    writeFileSync(kubeconfig, dump({ apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:6443' } }], users: [{ name: 'oncall', user: { token: readFileSync(oncallTokenFile, 'utf8').trim() } }], contexts: [{ name: 'c', context: { cluster: 'c', user: 'oncall' } }], 'current-context': 'c' }));
    assert.equal(await backbeat('pause', 'site-b', '--server', status, '--kubeconfig', kubeconfig), 'site-b: paused\n');
    assert.equal(await backbeat('resume', 'site-b', '--server', status, '--kubeconfig', kubeconfig), 'site-b: resumed\n');
    const denied = await backbeat('pause', 'site-b', '--server', status).catch((err: unknown) => (err as { stderr: string }).stderr);
    assert.match(denied, /needs a Kubernetes bearer token/);
    // Probes and metrics stay open.
    assert.equal((await httpGet(`${status}/metrics`)).status, 200);
  });

  it('scales a processor from consumer lag, capped at the partition count, and back down', async () => {
    const pause = await fetch(`${await c.statusUrl()}/v1/destinations/site-b/pause`, { method: 'POST', headers: oncall, body: '{}' });
    assert.equal(pause.status, 200);
    await eventually(async () => {
      const states = JSON.parse((await httpGet(`${await c.statusUrl()}/v1/destinations`, oncall)).body) as { destinations: { location: string; paused: boolean }[] };
      assert.deepEqual(states.destinations, [{ location: 'site-b', paused: true }]);
    });
    if (!c.external) {
      // The processor says it is paused (the stalled-replication alert leaves paused destinations alone).
      await eventually(async () => {
        const url = (await c.pods(deployment('processor-site-b')))[0]?.url;
        assert.match((await httpGet(`${String(url)}/metrics`)).body, /^backbeat_destination_paused\{location="site-b"\} 1$/m);
      });
    }
    for (let i = 0; i < 12; i++) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: `burst/${String(i)}`, Body: `b${String(i)}` }));
    // 12 queued for a paused site-b: ceil(12 / 2) = 6 wanted, capped at the 3 partitions.
    await eventually(async () => {
      assert.equal(await replicas(deployment('processor-site-b')), PARTITIONS);
    }, 90_000, 500);
    if (!c.external) {
      await eventually(async () => {
        assert.equal(await readyPods('processor-site-b'), PARTITIONS);
      }, 90_000, 500);
    }
    const resume = await fetch(`${await c.statusUrl()}/v1/destinations/site-b/resume`, { method: 'POST', headers: oncall, body: '{}' });
    assert.equal(resume.status, 200);
    await eventually(async () => {
      for (let i = 0; i < 12; i++) assert.equal(await text(b, 'photos-replica', `burst/${String(i)}`), `b${String(i)}`);
    }, 120_000, 1_000);
    await eventually(async () => {
      assert.equal(await replicas(deployment('processor-site-b')), 1);
    }, 90_000, 500);
    const metrics = await httpGet(`${await c.statusUrl()}/metrics`);
    assert.match(metrics.body, /backbeat_/);
  });

  it('rolls the workers that read a Secret when it changes, and they go on replicating', async () => {
    const hash = async (): Promise<string | undefined> =>
      (await c.rest.get<KubeObject & { spec: { template: { metadata: { annotations?: Record<string, string> } } } }>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${deployment('processor-site-b')}`)).spec.template.metadata.annotations?.['backbeat.io/config-hash'];
    const [before, instance] = [await hash(), (await c.pods(deployment('processor-site-b')))[0]?.instance];
    await c.kubectl(['annotate', 'secret', 'site-b-creds', `example.com/rotated=${String(Date.now())}`]);
    await eventually(async () => {
      assert.notEqual(await hash(), before);
    }, 60_000, 500);
    if (!c.external) {
      await eventually(async () => {
        const now = await c.pods(deployment('processor-site-b'));
        assert.equal(now.length, 1);
        assert.ok(now[0]?.ready === true && now[0].instance !== instance, 'a new processor process');
      }, 60_000, 500);
    }
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'after-rotation', Body: 'still here' }));
    await eventually(async () => {
      assert.equal(await text(b, 'photos-replica', 'after-rotation'), 'still here');
    }, 90_000, 500);
  });

  // A listener counting connections: the endpoint of a Location whose Secret must not be used.
  let connections = 0;
  const listener = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  let listenerPort = 0;
  before(async () => {
    listener.listen(0, serviceHost);
    await once(listener, 'listening');
    listenerPort = (listener.address() as AddressInfo).port;
  });
  after(() => listener.close());

  it('reports what only the operator can tell as Ready=False with a reason, and publishes none of it', async () => {
    const bad = [
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'spare-creds', labels: { [CREDENTIALS_LABEL]: 'true' } }, stringData: { accessKeyId: 'x', secretAccessKey: 'never-shown-3f9a' } },
      // Site B's real keys, in a Secret nobody gave to Backbeat, named by a Location pointing at a listener.
      { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'not-given' }, stringData: { accessKeyId: c.siteB.credentials.accessKeyId, secretAccessKey: 'not-given-7c1e' } },
      { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'listener' }, spec: { type: 's3', endpoint: `http://${serviceHost}:${String(listenerPort)}`, insecure: true, credentialsSecretRef: { name: 'not-given' } } },
      { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'no-secret' }, spec: { type: 's3', endpoint: c.siteB.endpoint, insecure: true, credentialsSecretRef: { name: 'missing-creds' } } },
      { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'nowhere' }, spec: { type: 's3', endpoint: 'http://127.0.0.1:9', insecure: true, credentialsSecretRef: { name: 'spare-creds' } } },
      { apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'wrong-keys' }, spec: { type: 's3', endpoint: c.siteB.endpoint, insecure: true, credentialsSecretRef: { name: 'spare-creds' } } },
      ...[
        ['to-missing-bucket', 'site-b', 'no-such-bucket'],
        ['to-unversioned', 'site-b', 'unversioned'],
        ['to-nowhere', 'nowhere', 'x-bucket'],
        ['to-unknown', 'no-such-location', 'x-bucket'],
      ].map(([name, location, bucket]) => ({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name }, spec: { source: { location: 'site-a', bucket: 'photos' }, destinations: [{ location, bucket }] } })),
    ];
    await c.kubectl(['apply', '-f', '-'], bad.map((d) => dump(d)).join('---\n'));
    await waitReady('locations', 'no-secret', 'False', 'SecretNotFound');
    const notGiven = await waitReady('locations', 'listener', 'False', 'SecretNotLabelled');
    assert.match(notGiven.message, /kubectl label secret not-given backbeat\.io\/credentials=true/);
    await waitReady('locations', 'nowhere', 'False', 'EndpointUnreachable');
    const rejected = await waitReady('locations', 'wrong-keys', 'False', 'CredentialsRejected');
    assert.match(rejected.message, /InvalidAccessKeyId/);
    await waitReady('replicationrules', 'to-missing-bucket', 'False', 'BucketNotFound');
    const unversioned = await waitReady('replicationrules', 'to-unversioned', 'False', 'VersioningDisabled');
    assert.match(unversioned.message, /site-b\/unversioned must have versioning enabled/);
    await waitReady('replicationrules', 'to-nowhere', 'False', 'LocationNotReady');
    await waitReady('replicationrules', 'to-unknown', 'False', 'LocationNotFound');
    // The good rule goes on; none of the bad ones reached the workers' config.
    await waitReady('replicationrules', 'photos', 'True');
    const compiled = JSON.parse((await configMap())['bucket_site-a_photos.json'] ?? '{}') as { Rules: { ID: string }[] };
    assert.deepEqual(compiled.Rules.map((r) => r.ID), ['photos']);
    assert.equal(await replicas(deployment('processor-nowhere')), undefined);
    const everything = (await c.kubectl(['get', 'locations,replicationrules,events', '-o', 'yaml'])) + (await c.kubectl(['get', 'configmaps', '-o', 'yaml']));
    assert.doesNotMatch(everything, /never-shown-3f9a/);
    assert.equal(connections, 0, 'no request reached the endpoint of the Location whose Secret was not given');
    const deployments = await c.kubectl(['get', 'deployments', '-o', 'yaml']);
    assert.doesNotMatch(deployments, /not-given/, 'no worker mounts the Secret that was not given');
    assert.doesNotMatch(everything, new RegExp(c.siteA.credentials.secretAccessKey));
    if (!c.external) assert.deepEqual((await c.pods(deployment('operator'))).map((p) => p.restarts), [0, 0], 'no operator ever crashed');
  });

  const leasePath = (): string => `/apis/coordination.k8s.io/v1/namespaces/${c.namespace}/leases/${RELEASE}-operator`;
  const holder = async (): Promise<string> => (await c.rest.get<KubeObject & { spec: { holderIdentity?: string } }>(leasePath())).spec.holderIdentity ?? '';
  /** Kills the leading operator's process (its pod, on a real cluster); returns the identity it held the Lease with. */
  const killLeader = async (): Promise<string> => {
    const leader = await holder();
    const pod = /^(.*)-[0-9a-f]{8}$/.exec(leader)?.[1];
    assert.ok(pod !== undefined, `holder ${leader} names its pod`);
    await c.crash(pod);
    return leader;
  };
  /** The lease expires (15 s) and another candidate takes it. */
  const newLeader = (leader: string): Promise<void> =>
    eventually(async () => {
      const now = await holder();
      assert.ok(now !== '' && now !== leader, `still held by ${now}`);
    }, 60_000, 500);

  it('hands over to the standby operator when the leader dies', async () => {
    await newLeader(await killLeader());
    await c.kubectl(['patch', 'replicationrule', 'photos', '--type=merge', '-p', '{"spec":{"priority":5}}']);
    await eventually(async () => {
      const r = await get('replicationrules', 'photos');
      assert.equal(r.status?.observedGeneration, r.metadata.generation, 'the new leader reconciled the change');
      assert.equal(ready(r)?.status, 'True');
    }, 60_000, 500);
  });

  it('keeps a rule published through a destination outage, an operator restart and a spec change; what is written meanwhile replicates', async function () {
    const outage = c.siteB.outage;
    // Stopping a site needs the local harness.
    if (outage === undefined) this.skip();
    this.timeout(300_000);
    const photos = (p: Published): CompiledRule | undefined => p.buckets.get('site-a/photos')?.Rules.find((r) => r.ID === 'photos');
    const publishedAt = async (when: string, priority: number): Promise<void> => {
      assert.equal(photos(await published(c.rest, c.namespace))?.Priority, priority, `${when}: published, at priority ${String(priority)}`);
    };
    const [k1, k2, k3] = ['outage/1', 'outage/2', 'outage/3'] as const;
    const keys = [k1, k2, k3];
    // Every version of the published config the API server stores from now on.
    const watch = await watchPublished(c.rest, c.namespace);
    try {
      await publishedAt('before the outage', 5);
      await outage.stop();
      await waitReady('locations', 'site-b', 'False', 'EndpointUnreachable');
      const degraded = await waitReady('replicationrules', 'photos', 'False', 'LocationNotReady');
      assert.match(degraded.message, /^Location "site-b" is not ready: .*\(still published: replication resumes once this is fixed\)$/);
      assert.equal(condition(await get('replicationrules', 'photos'), 'Published')?.reason, 'Current');
      await publishedAt('destination down', 5);
      for (const key of [k1, k2]) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: key }));

      // The leader dies: its successor knows what is published from the API server, not from memory.
      const leader = await killLeader();
      await publishedAt('leader killed', 5);
      await newLeader(leader);
      // A new generation while the destination is down: the previous form stays until it can be checked.
      await c.kubectl(['patch', 'replicationrule', 'photos', '--type=merge', '-p', '{"spec":{"priority":7}}']);
      await eventually(async () => {
        const r = await get('replicationrules', 'photos');
        assert.equal(r.status?.observedGeneration, r.metadata.generation, 'the new leader reconciled the change');
        assert.equal(ready(r)?.reason, 'LocationNotReady');
        assert.match(ready(r)?.message ?? '', /the config published before stays in effect until this is fixed/);
        assert.deepEqual([condition(r, 'Published')?.reason, condition(r, 'Published')?.observedGeneration], ['PreviousConfig', r.metadata.generation]);
      }, 90_000, 500);
      await publishedAt('new generation, destination down', 5);
      await a.send(new PutObjectCommand({ Bucket: 'photos', Key: k3, Body: k3 }));

      // Every change was queued for site-b, none dropped: the status processor holds them as pending.
      await eventually(async () => {
        const status = await c.statusUrl();
        for (const key of keys) {
          const answer = await httpGet(`${status}/v1/objects/site-a/photos/${key}`, oncall);
          assert.equal(answer.status, 200, `${key}: ${answer.body}`);
          const { versions } = JSON.parse(answer.body) as { versions: { destinations: Record<string, { state: string }> }[] };
          assert.deepEqual(Object.entries(versions[0]?.destinations ?? {}).map(([d, x]) => [d, x.state]), [['site-b/photos-replica', 'PENDING']], key);
        }
      }, 60_000, 500);
      await publishedAt('changes queued', 5);
    } finally {
      await outage.start();
    }
    await waitReady('locations', 'site-b', 'True', 'Reachable');
    await waitReady('replicationrules', 'photos', 'True', 'Replicating');
    await eventually(async () => {
      await publishedAt('destination back', 7);
      assert.equal(condition(await get('replicationrules', 'photos'), 'Published')?.reason, 'Current');
    }, 60_000, 500);
    await eventually(async () => {
      for (const key of keys) assert.equal(await text(b, 'photos-replica', key), key);
    }, 120_000, 1_000);
    watch.stop();
    assert.equal(watch.ended(), false, 'the watch followed the whole test');
    const without = watch.states.filter((st) => photos(st.published) === undefined).map((st) => st.resourceVersion);
    assert.deepEqual(without, [], 'no stored version of the published config lacked the rule');
    assert.ok(watch.states.some((st) => photos(st.published)?.Priority === 7), `the watch saw the rule republished (${String(watch.states.length)} versions)`);
  });

  it('deleting the rules removes what they added and scales their workers down', async () => {
    await c.kubectl(['delete', 'replicationrules', '--all', '--wait=false']);
    await eventually(async () => {
      const left = await c.kubectl(['get', 'replicationrules', '-o', 'name']);
      assert.equal(left.trim(), '');
    }, 90_000, 500);
    await eventually(async () => {
      for (const d of ['populator-site-a', 'scanner-site-a', 'processor-site-b']) assert.equal(await replicas(deployment(d)), undefined, d);
      assert.deepEqual(Object.keys(await configMap()).filter((k) => k.startsWith('bucket_')), []);
      assert.deepEqual(await disruptionBudgets(), ['gc', 'status'].map((d) => `${deployment(d)} 1`), 'the budgets of the workers gone are gone');
    }, 60_000, 500);
    assert.equal(await replicas(deployment('gc')), 0);
    if (!c.external) {
      const ids = (await queues()).map((q) => q.Id);
      assert.deepEqual(ids, ['users-own'], 'only what the operator added is gone');
      await eventually(async () => {
        for (const d of ['processor-site-b', 'populator-site-a', 'scanner-site-a']) assert.equal((await c.pods(deployment(d))).length, 0, d);
      }, 60_000, 500);
    }
    // The replicas stay: deleting a rule stops replication, it never deletes data.
    assert.equal(await text(b, 'photos-replica', 'cats/1.jpg'), 'meow');
  });
});
