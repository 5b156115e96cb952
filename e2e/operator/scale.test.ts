import assert from 'node:assert/strict';
import { CreateBucketCommand, PutBucketVersioningCommand, type S3Client } from '@aws-sdk/client-s3';
import { dump } from 'js-yaml';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { forEachLimit } from '../../operator/pool.ts';
import { MAX_BYTES, SPLIT_BYTES } from '../../operator/shards.ts';
import { CREDENTIALS_LABEL } from '../../operator/locations.ts';
import { eventually } from '../harness/wait.ts';
import { installChart, RELEASE, startCluster, type Cluster } from './cluster.ts';
import { published } from './published.ts';

// Thousands of rules, one source bucket each, on a real API server and a real MinIO: every rule
// published, in shards each well under the ConfigMap limit; a rule's change rolls only the workers that
// read it; a shard that cannot be written holds up no other. 5 000 rules by default, as many as the
// published config must hold (about four minutes on two shared cores); BACKBEAT_E2E_SCALE_RULES sets
// another count.

const COUNT = Number(process.env['BACKBEAT_E2E_SCALE_RULES'] ?? '5000');
const pad = (i: number): string => String(i).padStart(5, '0');
const half = Math.floor(COUNT / 2);
/** Rules 0..half-1 read Location src-1, the others src-2 (the same server); every tenth of src-2's sends to dst-2, all others to dst-1. */
const ruleOf = (i: number): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name: `rule-${pad(i)}` },
  spec: { source: { location: i < half ? 'src-1' : 'src-2', bucket: `src-${pad(i)}` }, destinations: [i >= half && i % 10 === 0 ? { location: 'dst-2', bucket: 'replicas-2' } : { location: 'dst-1', bucket: 'replicas-1' }] },
});

type Condition = { type: string; status: string; reason: string; observedGeneration: number };
type Rule = KubeObject & { status?: { conditions?: Condition[] } };
type Deployment = KubeObject & { spec: { template: { metadata: { annotations?: Record<string, string> } } } };

const seconds = (since: number): string => ((Date.now() - since) / 1000).toFixed(1);

describe(`The operator with ${String(COUNT)} rules on as many source buckets`, function () {
  this.timeout(900_000);
  let c: Cluster;
  let a: S3Client;
  const figures: string[] = [];
  const rules = (): string => `/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules`;
  const condition = (r: Rule, type: string): Condition | undefined => r.status?.conditions?.find((x) => x.type === type);
  /** The pod template hash of every worker Deployment. */
  const templates = async (): Promise<Map<string, string>> => {
    const { items } = await c.rest.list<Deployment>(`/apis/apps/v1/namespaces/${c.namespace}/deployments?labelSelector=${encodeURIComponent('app.kubernetes.io/managed-by=backbeat-operator')}`);
    return new Map(items.map((d) => [d.metadata.name.replace(`${RELEASE}-`, ''), d.metadata.annotations?.['backbeat.io/spec-hash'] ?? '']));
  };
  const changed = (x: Map<string, string>, y: Map<string, string>): string[] => [...new Set([...x.keys(), ...y.keys()])].filter((k) => x.get(k) !== y.get(k)).sort();
  /** Patches a rule and waits until the operator has published its new generation. */
  const change = async (name: string, patch: unknown): Promise<void> => {
    const updated = await c.rest.patch<Rule>(`${rules()}/${name}`, patch);
    await eventually(async () => {
      const r = await c.rest.get<Rule>(`${rules()}/${name}`);
      const p = condition(r, 'Published');
      assert.deepEqual([p?.reason, p?.observedGeneration], ['Current', updated.metadata.generation]);
    }, 180_000, 500);
  };

  before(async function () {
    this.timeout(600_000);
    c = await startCluster();
    a = c.siteA.client();
    const b = c.siteB.client();
    const started = Date.now();
    const names = [...Array.from({ length: COUNT }, (_, i) => `src-${pad(i)}`), 'blocked'];
    await forEachLimit(names, 32, async (bucket) => {
      await a.send(new CreateBucketCommand({ Bucket: bucket }));
      await a.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    });
    for (const bucket of ['replicas-1', 'replicas-2']) {
      await b.send(new CreateBucketCommand({ Bucket: bucket }));
      await b.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    figures.push(`${String(names.length)} versioned buckets created in ${seconds(started)} s`);
  });

  after(async () => {
    if (figures.length > 0) console.log(`      figures: ${figures.join('; ')}`);
    await c.stop();
  });

  it('publishes every rule, spread over shards each well under 1 MiB; a shard that cannot be written holds up no other', async () => {
    // No operator yet: the rules are all there when it starts, as after a restart (the costliest pass).
    await installChart(c, ['--set', 'operator.replicas=0', '--set', 'operator.resyncSeconds=30', '--set', 'operator.logLevel=debug']);
    const secret = (name: string, site: Cluster['siteA']): Record<string, unknown> => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name, labels: { [CREDENTIALS_LABEL]: 'true' } }, stringData: { accessKeyId: site.credentials.accessKeyId, secretAccessKey: site.credentials.secretAccessKey } });
    const location = (name: string, site: Cluster['siteA'], source: boolean): Record<string, unknown> => ({
      apiVersion: 'backbeat.io/v1alpha1',
      kind: 'Location',
      metadata: { name },
      spec: { type: 's3', endpoint: site.endpoint, insecure: true, credentialsSecretRef: { name: source ? 'a-creds' : 'b-creds' }, ...(source ? { journal: { kafka: { topic: c.journalTopic, targetId: 'BACKBEAT' } } } : {}) },
    });
    const docs = [secret('a-creds', c.siteA), secret('b-creds', c.siteB), location('src-1', c.siteA, true), location('src-2', c.siteA, true), location('blocked', c.siteA, true), location('dst-1', c.siteB, false), location('dst-2', c.siteB, false)];
    await c.kubectl(['apply', '-f', '-'], docs.map((d) => dump(d)).join('---\n'));
    // Someone else's ConfigMap already has the name of the one shard of Location "blocked".
    await c.rest.create(`/api/v1/namespaces/${c.namespace}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: `${RELEASE}-buckets-blocked-0-of-1` }, data: { theirs: 'x' } });

    const manifests = [...Array.from({ length: COUNT }, (_, i) => ruleOf(i)), { ...ruleOf(0), metadata: { name: 'blocked-rule' }, spec: { source: { location: 'blocked', bucket: 'blocked' }, destinations: [{ location: 'dst-1', bucket: 'replicas-1' }] } }];
    const started = Date.now();
    await forEachLimit(manifests, 16, async (m) => {
      await c.rest.create(rules(), m);
    });
    figures.push(`${String(manifests.length)} rules created on the API server in ${seconds(started)} s`);
    const operatorStarted = Date.now();
    await c.kubectl(['scale', 'deployment', `${RELEASE}-operator`, '--replicas=1']);

    // A look every 10 s: each reads every shard and lists every rule, API server time the operator needs.
    const view = await eventually(async () => {
      const p = await published(c.rest, c.namespace);
      assert.equal(p.buckets.size, COUNT, `${String(p.buckets.size)} of ${String(COUNT)} bucket configs published`);
      const { items } = await c.rest.list<Rule>(rules());
      const ready = items.filter((r) => condition(r, 'Ready')?.status === 'True' && condition(r, 'Ready')?.observedGeneration === r.metadata.generation);
      assert.equal(ready.length, COUNT + 1, `${String(ready.length)} rules Ready`);
      return p;
    }, 600_000, 10_000);
    figures.push(`all published and Ready ${seconds(operatorStarted)} s after the operator was started`);
    assert.equal(view.shards.reduce((n, s) => n + s.files, 0), COUNT, 'each bucket config in one shard');
    for (const s of view.shards) assert.ok(s.bytes <= SPLIT_BYTES && s.bytes < MAX_BYTES, `${s.name}: ${String(s.bytes)} bytes`);
    figures.push(`${String(view.shards.length)} shards: ${view.shards.map((s) => `${s.name.replace(`${RELEASE}-buckets-`, '')} ${(s.bytes / 1024).toFixed(0)} KiB`).join(', ')}`);
    // The rule whose shard cannot be written: Ready, and told it is not published yet.
    const blocked = await c.rest.get<Rule>(`${rules()}/blocked-rule`);
    assert.deepEqual([condition(blocked, 'Ready')?.status, condition(blocked, 'Published')?.status, condition(blocked, 'Published')?.reason], ['True', 'False', 'PublishFailed']);
    assert.deepEqual([...(await templates()).keys()].sort(), ['gc', 'populator-src-1', 'populator-src-2', 'processor-dst-1', 'processor-dst-2', 'status']);
  });

  it('rolls only the workers that read a changed rule', async () => {
    const configMaps = async (): Promise<Map<string, string>> => new Map((await c.rest.list(`/api/v1/namespaces/${c.namespace}/configmaps`)).items.map((cm) => [cm.metadata.name, cm.metadata.resourceVersion ?? '']));
    const instance = async (deployment: string): Promise<string | undefined> => (await c.pods(`${RELEASE}-${deployment}`))[0]?.instance;
    // (The stand-in kubelet restarts a pod whose ConfigMaps changed, and an earlier step may still be
    // rolling it: wait for its rollout to finish, then for the last restart to settle.)
    await c.kubectl(['rollout', 'status', `deployment/${RELEASE}-populator-src-2`, '--timeout=180s']);
    const untouched = await eventually(async () => {
      const p = (await c.pods(`${RELEASE}-populator-src-2`))[0];
      assert.ok(p?.ready === true, 'the populator of src-2 runs');
      return p.instance;
    }, 60_000, 500);
    // A filter on a rule of src-1: its populator reads it, the processor it sends to (which checks tasks
    // against it), and the status processor; no other worker.
    let before = await templates();
    const maps = await configMaps();
    const started = Date.now();
    await change('rule-00001', { spec: { filter: { prefix: 'logs/' } } });
    figures.push(`one rule's change published in ${seconds(started)} s`);
    let after = await templates();
    assert.deepEqual(changed(before, after), ['populator-src-1', 'processor-dst-1', 'status']);
    const rewritten = changed(maps, await configMaps()).filter((n) => n.startsWith(`${RELEASE}-buckets-`));
    assert.equal(rewritten.length, 1, `one shard rewritten: ${rewritten.join(', ')}`);
    // A second destination location for a rule of src-1: processor dst-2 now reads it too.
    before = after;
    await change('rule-00003', { spec: { destinations: [{ location: 'dst-1', bucket: 'replicas-1' }, { location: 'dst-2', bucket: 'replicas-2' }] } });
    after = await templates();
    assert.deepEqual(changed(before, after), ['populator-src-1', 'processor-dst-1', 'processor-dst-2', 'status']);
    assert.equal(await instance('populator-src-2'), untouched, 'the populator of src-2 mounts no shard of src-1, and kept running');
  });

  it('publishes the rule whose shard could not be written once it can be', async () => {
    await c.rest.delete(`/api/v1/namespaces/${c.namespace}/configmaps/${RELEASE}-buckets-blocked-0-of-1`);
    await eventually(async () => {
      const r = await c.rest.get<Rule>(`${rules()}/blocked-rule`);
      assert.equal(condition(r, 'Published')?.reason, 'Current');
      assert.ok((await published(c.rest, c.namespace)).buckets.has('blocked/blocked'));
    }, 120_000, 1_000);
  });
});
