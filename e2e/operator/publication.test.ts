import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { compileBucketConfigs, type BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import { locationsText } from '../../lib/config/published.ts';
import type { ReplicationRule } from '../../lib/config/schema.ts';
import { loadKubeConfig } from '../../lib/kube/client.ts';
import { kubeRest, type KubeObject, type KubeRest } from '../../lib/kube/rest.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { PublishedConfigMaps, publishedBuckets } from '../../operator/published-state.ts';
import { MAX_BYTES, SPLIT_BYTES } from '../../operator/shards.ts';
import { sharedKube } from '../harness/env.ts';

// The published config's ConfigMaps on a real API server: each shard written on its own, read back by
// whoever leads next, and resized without a moment where the workers' layout is incomplete. The REST
// client they are written with keeps its connections.

const logger = createLogger({ component: 'publication-test', level: 'error' });

const configs = (location: string, n: number, priority = 0): BucketReplicationConfig[] => {
  const rules = Array.from({ length: n }, (_, i): [string, ReplicationRule] => {
    const name = `${location}-${String(i).padStart(5, '0')}`;
    return [name, { apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name }, spec: { source: { location, bucket: `bucket-${String(i).padStart(5, '0')}` }, priority, destinations: [{ location: 'dest', bucket: 'replicas' }], replicateDeleteMarkers: false, replicateVersionDeletes: false, replicateExistingObjects: false } }];
  });
  return [...compileBucketConfigs({ rules: new Map(rules) }).values()];
};

describe('Published config on a real API server', function () {
  this.timeout(120_000);
  let rest: KubeRest;
  let namespace: string;
  const store = (release = 'bb'): PublishedConfigMaps => new PublishedConfigMaps({ rest, namespace, release, labels: { 'app.kubernetes.io/managed-by': 'backbeat-operator', 'app.kubernetes.io/instance': release }, concurrency: 8, logger });
  const locations = locationsText([]);

  before(async () => {
    const kube = await sharedKube();
    rest = kubeRest(loadKubeConfig(kube.kubeconfig));
    namespace = `publish-${randomBytes(3).toString('hex')}`;
    await rest.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  });

  it('keeps its connections to the API server: 48 calls, 16 at a time, over at most 16 connections', async () => {
    let opened = 0;
    const count = (): void => {
      opened += 1;
    };
    // Node publishes every client socket it creates here (a TLS connection starts as one).
    subscribe('net.client.socket', count);
    try {
      for (let round = 0; round < 3; round += 1) await Promise.all(Array.from({ length: 16 }, () => rest.get(`/api/v1/namespaces/${namespace}`)));
    } finally {
      unsubscribe('net.client.socket', count);
    }
    // Before the fix, client-node's agent without keep-alive made a TLS handshake per call: 48.
    assert.ok(opened <= 16, `${String(opened)} connections opened for 48 calls`);
  });

  it('writes each shard on its own: one that cannot be written holds up no other, and is written once it can', async () => {
    const path = `/api/v1/namespaces/${namespace}/configmaps`;
    // Someone else's ConfigMap has the name of one shard: its creation fails, as any write may.
    await rest.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bb-buckets-b-0-of-1' }, data: { theirs: 'x' } });
    const wanted = [...configs('a', 3), ...configs('b', 2)];
    const first = await store().publish(locations, wanted, await store().read());
    assert.equal(first.failures.length, 1, first.failures.join('; '));
    assert.match(first.failures[0] ?? '', /bb-buckets-b-0-of-1: .*409/);
    assert.deepEqual([...first.mounted], [['a', ['bb-buckets-a-0-of-1']], ['b', []]]);
    assert.deepEqual([...first.buckets.keys()], ['a/bucket-00000', 'a/bucket-00001', 'a/bucket-00002']);
    assert.equal((await rest.get<KubeObject & { data: Record<string, string> }>(`${path}/bb-buckets-b-0-of-1`)).data['theirs'], 'x', 'theirs is left alone');
    // Whoever publishes next reads the same from the API server.
    const state = await store().read();
    assert.deepEqual([...publishedBuckets(state).keys()], [...first.buckets.keys()]);
    await rest.delete(`${path}/bb-buckets-b-0-of-1`);
    const second = await store().publish(locations, wanted, state);
    assert.deepEqual(second.failures, []);
    assert.equal(second.buckets.size, 5);
    // Nothing changed: nothing is written.
    const versions = (await store().read()).shards.map((s) => s.resourceVersion);
    const third = await store().publish(locations, wanted, await store().read());
    assert.equal(third.buckets.size, 5);
    assert.deepEqual((await store().read()).shards.map((s) => s.resourceVersion), versions);
  });

  it('takes over bucket files from before shards: kept in the base ConfigMap until every shard is written', async () => {
    const path = `/api/v1/namespaces/${namespace}/configmaps`;
    const [legacy] = configs('old', 1);
    assert.ok(legacy);
    const file = `bucket_old_${legacy.SourceBucket}.json`;
    // What an operator without shards left: one ConfigMap with locations.json and every bucket file.
    await rest.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bd-config', labels: { 'app.kubernetes.io/managed-by': 'backbeat-operator', 'app.kubernetes.io/instance': 'bd' } }, data: { 'locations.json': locations, [file]: JSON.stringify(legacy) } });
    const before = await store('bd').read();
    assert.deepEqual([...publishedBuckets(before).keys()], ['old/bucket-00000'], 'published before shards: still published');
    await rest.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bd-buckets-old-0-of-1' }, data: { theirs: 'x' } });
    const blocked = await store('bd').publish(locations, [legacy], before);
    assert.equal(blocked.failures.length, 1);
    assert.deepEqual([...blocked.buckets.keys()], ['old/bucket-00000'], 'its shard could not be written: the base keeps it');
    assert.ok(file in (await rest.get<KubeObject & { data: Record<string, string> }>(`${path}/bd-config`)).data);
    await rest.delete(`${path}/bd-buckets-old-0-of-1`);
    const done = await store('bd').publish(locations, [legacy], await store('bd').read());
    assert.deepEqual(done.failures, []);
    assert.deepEqual([...done.buckets.keys()], ['old/bucket-00000']);
    assert.deepEqual(Object.keys((await rest.get<KubeObject & { data: Record<string, string> }>(`${path}/bd-config`)).data), ['locations.json'], 'the base holds locations.json alone');
  });

  it('grows a location into a new layout beside the old one, switches to it whole, then lets the old go', async () => {
    const small = await store('bc').publish(locations, configs('big', 100), await store('bc').read());
    assert.deepEqual(small.mounted.get('big'), ['bc-buckets-big-0-of-1']);
    const grown = configs('big', 5_000, 3);
    const before = await store('bc').read();
    const result = await store('bc').publish(locations, grown, before);
    assert.deepEqual(result.failures, []);
    const names = result.mounted.get('big') ?? [];
    assert.ok(names.length >= 8 && names.every((n) => /^bc-buckets-big-\d+-of-(8|16)$/.test(n)), names.join(', '));
    assert.deepEqual(result.stale, ['bc-buckets-big-0-of-1'], 'the old layout, until no worker mounts it');
    assert.equal(result.buckets.size, 5_000);
    assert.ok([...result.buckets.values()].every((c) => c.Rules[0]?.Priority === 3));
    await store('bc').remove(result.stale);
    const after = await store('bc').read();
    const big = after.shards.filter((s) => s.location === 'big');
    assert.equal(big.length, names.length);
    for (const s of big) {
      const bytes = Object.entries(s.data).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
      assert.ok(bytes <= SPLIT_BYTES && bytes < MAX_BYTES, `${s.name}: ${String(bytes)} bytes`);
    }
    assert.equal([...publishedBuckets(after).keys()].filter((k) => k.startsWith('big/')).length, 5_000);
  });
});
