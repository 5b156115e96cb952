import { strict as assert } from 'node:assert';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Secret } from '../lib/config/schema.ts';
import type { KubeObject } from '../lib/kube/rest.ts';
import { notReady, ready } from './conditions.ts';
import { LocationProbes } from './location-probes.ts';
import type { LocationCheck } from './locations.ts';
import type { LocationObject } from './rule-checks.ts';

// What decides whether a pass probes a Location again. The probe itself (a listing of a real server)
// is what e2e/operator/operator.test.ts runs; here it is a counter, so that each reason can be seen alone.

const location = (generation = 1, uid = 'u1'): LocationObject => ({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name: 'site-b', uid, generation }, spec: { type: 's3', endpoint: 'http://127.0.0.1:1', region: 'us-east-1', credentialsSecretRef: { name: 'creds' }, checksumMode: 'whenRequired', maxConnections: 64, listPageSize: 1000, transient: false } });
const secret = (resourceVersion = '7'): Secret & KubeObject => ({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'creds', uid: 's1', resourceVersion }, data: {} });

describe('LocationProbes: which passes probe a Location again', () => {
  let now = 0;
  let made = 0;
  const destroyed: number[] = [];
  const probes = new LocationProbes(10_000, () => now);
  const probe = (up = true) => (): Promise<LocationCheck> => {
    const n = ++made;
    const client = { destroy: () => destroyed.push(n) } as unknown as S3Client;
    return Promise.resolve(up ? { condition: ready('Reachable', 'answers'), client, buckets: new Set(['photos']) } : { condition: notReady('EndpointUnreachable', 'down') });
  };
  const check = async (l = location(), s = secret(), named: string[] = ['photos'], up = true): Promise<number> => {
    await probes.check(l, s, named, probe(up));
    return made;
  };

  it('keeps a Ready probe for the passes that follow it, its spec, Secret and buckets unchanged', async () => {
    assert.equal(await check(), 1);
    now += 9_000;
    assert.equal(await check(), 1);
    assert.deepEqual(destroyed, []);
  });

  it('probes again when the probe is old, and lets the old client go', async () => {
    now += 1_000;
    assert.equal(await check(), 2);
    assert.deepEqual(destroyed, [1]);
  });

  it('probes again when the spec, the Secret or the Location itself changed', async () => {
    assert.equal(await check(location(2)), 3);
    assert.equal(await check(location(2), secret('8')), 4);
    // Deleted and created again under its name: generation 2 once more, another uid.
    assert.equal(await check(location(2, 'u2'), secret('8')), 5);
    assert.equal(await check(location(2, 'u2'), secret('8')), 5);
  });

  it('probes again for a bucket a rule names that the listing lacked', async () => {
    assert.equal(await check(location(2, 'u2'), secret('8'), ['photos', 'new-bucket']), 6);
  });

  it('probes a Location that is not Ready at every pass', async () => {
    now += 10_000;
    assert.equal(await check(location(2, 'u2'), secret('8'), [], false), 7);
    assert.equal(await check(location(2, 'u2'), secret('8'), [], false), 8);
  });

  it('lets go of the clients of Locations deleted', async () => {
    assert.equal(await check(), 9);
    const before = destroyed.length;
    probes.keep(new Set());
    assert.deepEqual(destroyed.slice(before), [9]);
    assert.equal(await check(), 10);
  });
});
