import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { ContainerClient } from '@azure/storage-blob';
import { dump } from 'js-yaml';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { CREDENTIALS_LABEL } from '../../operator/locations.ts';
import { azurite } from '../harness/env.ts';
import type { TestBlobServer } from '../harness/azurite.ts';
import { eventually } from '../harness/wait.ts';
import { installChart, RELEASE, startCluster, type Cluster } from './cluster.ts';

// An Azure Blob Storage account as a destination on Kubernetes: the operator probes the account with
// the Secret's key, checks the rule's container, and runs a processor that mounts that Secret alone.

type Condition = { type: string; status: string; reason: string; message: string; observedGeneration?: number };
type Resource = KubeObject & { status?: { conditions?: Condition[] } };
type Deployment = KubeObject & { spec: { template: { spec: { volumes: { name: string; projected?: { sources: { secret?: { name: string; optional?: boolean; items: { key: string }[] } }[] } }[] } } } };

describe('Azure Blob Storage as a destination on Kubernetes (real Azurite, MinIO, API server, pods)', function () {
  this.timeout(300_000);
  let c: Cluster;
  let az: TestBlobServer;
  let container: ContainerClient;
  const processor = `${RELEASE}-processor-azure`;
  /** The Ready condition, once it is about the resource's current generation. */
  const ready = async (plural: string, name: string): Promise<Condition | undefined> => {
    const r = await c.rest.get<Resource>(`/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/${plural}/${name}`);
    const cond = r.status?.conditions?.find((x) => x.type === 'Ready');
    return cond?.observedGeneration === r.metadata.generation ? cond : undefined;
  };
  const secret = (data: Record<string, string>): string => dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'azure-creds', labels: { [CREDENTIALS_LABEL]: 'true' } }, stringData: data });
  const rule = (bucket: string): string =>
    dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'to-blob' }, spec: { source: { location: 'site-a', bucket: 'outbox' }, destinations: [{ location: 'azure', bucket }], replicateDeleteMarkers: true } });

  before(async function () {
    this.timeout(300_000);
    c = await startCluster();
    if (c.external) this.skip();
    az = await azurite({ name: `op${c.prefix.replace(/[^a-z0-9]/g, '').slice(-12)}` });
    container = az.account().service.getContainerClient('late-copy');
    const a = c.siteA.client();
    await a.send(new CreateBucketCommand({ Bucket: 'outbox' }));
    await a.send(new PutBucketVersioningCommand({ Bucket: 'outbox', VersioningConfiguration: { Status: 'Enabled' } }));
    // A resync far away: what changes here is seen by the watches and by the operator reading again the Secrets that Locations wait for.
    await installChart(c, ['--set', 'kafka.partitions=2', '--set', 'operator.resyncSeconds=600']);
    await c.kubectl(
      ['apply', '-f', '-'],
      [
        dump({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'site-a-creds', labels: { [CREDENTIALS_LABEL]: 'true' } }, stringData: { accessKeyId: c.siteA.credentials.accessKeyId, secretAccessKey: c.siteA.credentials.secretAccessKey } }),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'site-a' }, spec: { type: 's3', endpoint: c.siteA.endpoint, insecure: true, credentialsSecretRef: { name: 'site-a-creds' }, journal: { kafka: { topic: c.journalTopic, targetId: 'BACKBEAT' } } } }),
        // No key yet: the Location says what is missing.
        secret({ unrelated: 'value' }),
        dump({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'azure' }, spec: { type: 'azure', azure: { accountName: az.accountName }, endpoint: az.endpoint, insecure: true, credentialsSecretRef: { name: 'azure-creds' } } }),
        rule('late-copy'),
      ].join('---\n'),
    );
  });

  after(async () => {
    await c.stop();
  });

  it('says what is wrong: a Secret without the key, then a container that does not exist; Ready within seconds of each fix', async () => {
    await eventually(async () => {
      const cond = await ready('locations', 'azure');
      assert.deepEqual([cond?.status, cond?.reason], ['False', 'SecretKeyMissing'], JSON.stringify(cond));
      assert.match(cond?.message ?? '', /provides neither "accountKey" nor "sasToken"/);
    }, 90_000, 500);
    // Once the passes that the install started are over, the Secret is fixed: seen within seconds, not
    // at the next resync (10 minutes away).
    await sleep(5_000);
    await c.kubectl(['apply', '-f', '-'], secret({ accountKey: az.accountKey }));
    await eventually(async () => {
      const cond = await ready('locations', 'azure');
      assert.deepEqual([cond?.status, cond?.reason], ['True', 'Reachable'], JSON.stringify(cond));
    }, 10_000, 250);
    await eventually(async () => {
      const r = await ready('replicationrules', 'to-blob');
      assert.deepEqual([r?.status, r?.reason], ['False', 'BucketNotFound'], JSON.stringify(r));
      assert.match(r?.message ?? '', /container azure\/late-copy does not exist/);
    }, 90_000, 500);
    // Created on the account (nothing Kubernetes sees): checked again within seconds, not at the resync.
    await container.create();
    await eventually(async () => assert.equal((await ready('replicationrules', 'to-blob'))?.status, 'True'), 30_000, 250);
  });

  it('a processor mounting only the account\'s Secret, objects written as blobs', async () => {
    await eventually(async () => {
      const r = await ready('replicationrules', 'to-blob');
      assert.equal(r?.status, 'True', JSON.stringify(r));
      assert.equal((await c.pods(processor)).filter((p) => p.ready).length, 1, 'one processor pod, ready');
    }, 120_000, 500);
    const deployment = await c.rest.get<Deployment>(`/apis/apps/v1/namespaces/${c.namespace}/deployments/${processor}`);
    const mounted = deployment.spec.template.spec.volumes.find((v) => v.name === 'credentials')?.projected?.sources.map((s) => `${s.secret?.name ?? ''}:${(s.secret?.items ?? []).map((i) => i.key).join(',')}:${String(s.secret?.optional)}`);
    assert.ok(mounted?.includes('azure-creds:accountKey,sasToken:true'), `the account key or SAS token, whichever the Secret has: ${JSON.stringify(mounted)}`);
    await c.siteA.client().send(new PutObjectCommand({ Bucket: 'outbox', Key: 'note.txt', Body: 'to the cloud', ContentType: 'text/plain', Metadata: { sender: 'ops' } }));
    await eventually(async () => {
      const blob = container.getBlockBlobClient('note.txt');
      assert.equal((await blob.downloadToBuffer()).toString(), 'to the cloud');
      const p = await blob.getProperties();
      assert.deepEqual([p.contentType, p.metadata?.['sender']], ['text/plain', 'ops']);
    }, 90_000, 500);
  });
});
