import assert from 'node:assert/strict';
import { createLogger } from '../lib/log/logger.ts';
import { locationClient } from '../lib/config/credentials.ts';
import { notReady, ready } from './conditions.ts';
import { RuleChecks, type LocationObject, type RuleObject } from './rule-checks.ts';

// The pass budget of rule checks. The Locations' endpoint is a closed port on this machine: every bucket
// check is a real call, refused at once (BucketUnavailable), which is all a budget needs.

const location = (name: string): LocationObject => ({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name, generation: 1 }, spec: { type: 's3', endpoint: 'http://127.0.0.1:9', region: 'us-east-1', credentialsSecretRef: { name: 'creds' }, checksumMode: 'whenRequired', maxConnections: 64, listPageSize: 1000, transient: false, journal: { scan: { intervalSeconds: 60, fullIntervalSeconds: 86_400 } } } });
const refused = (name: string): ReturnType<typeof locationClient> => locationClient(location(name), { accessKeyId: 'x', secretAccessKey: 'y' }, { maxAttempts: 1, connectionTimeoutMs: 2_000, requestTimeoutMs: 2_000 });
const rule = (name: string, bucket = name): RuleObject => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name, generation: 1 },
  spec: { source: { location: 'a', bucket }, priority: 0, destinations: [{ location: 'b', bucket: 'replicas' }], replicateDeleteMarkers: false, replicateVersionDeletes: false, replicateExistingObjects: false },
});

describe('Rule checks', () => {
  const facts = {
    locations: new Map([['a', location('a')], ['b', location('b')]]),
    locationReady: new Map([['a', ready('Reachable', 'up')], ['b', ready('Reachable', 'up')]]),
    clients: new Map([['a', refused('a')], ['b', refused('b')]]),
    listings: new Map(),
  };
  after(() => {
    for (const c of facts.clients.values()) c.destroy();
  });
  const logger = createLogger({ component: 'rule-checks-test', level: 'error' });

  it('check at most perPass rules a pass, those waiting longest first, so every rule gets its turn', async () => {
    const checks = new RuleChecks({ recheckMs: 60_000, perPass: 2, concurrency: 4, logger });
    const rules = ['r1', 'r2', 'r3', 'r4', 'r5'].map((n) => rule(n));
    const finalized: string[] = [];
    const pass = async (): Promise<string[]> => {
      const { decisions, deferred } = await checks.decide(rules, facts, (r) => {
        finalized.push(r.metadata.name);
        return Promise.resolve();
      }, (r, err) => {
        assert.fail(`${r.metadata.name}: ${String(err)}`);
      });
      assert.equal(deferred, 3);
      for (const d of decisions.values()) assert.equal(d.reason, 'BucketUnavailable');
      return [...decisions.keys()].sort();
    };
    assert.deepEqual(await pass(), ['r1', 'r2']);
    await new Promise((resolve) => setTimeout(resolve, 2));
    assert.deepEqual(await pass(), ['r3', 'r4']);
    await new Promise((resolve) => setTimeout(resolve, 2));
    assert.deepEqual(await pass(), ['r1', 'r5']);
    assert.deepEqual(finalized, ['r1', 'r2', 'r3', 'r4', 'r1', 'r5'], 'the finalizer goes on with the check, not before');
  });

  it('decide at once, outside the budget, what needs no call', async () => {
    const checks = new RuleChecks({ recheckMs: 60_000, perPass: 1, concurrency: 4, logger });
    const down = { ...facts, locationReady: new Map([['a', notReady('EndpointUnreachable', 'down')], ['b', ready('Reachable', 'up')]]) };
    const { decisions, deferred } = await checks.decide(['r1', 'r2', 'r3'].map((n) => rule(n)), down, () => Promise.resolve(), assert.ifError);
    assert.equal(deferred, 0);
    assert.deepEqual([...decisions.values()].map((d) => d.reason), ['LocationNotReady', 'LocationNotReady', 'LocationNotReady']);
  });

  it('leave out a rule whose check threw, and tell why', async () => {
    const checks = new RuleChecks({ recheckMs: 60_000, perPass: 10, concurrency: 4, logger });
    const failed: string[] = [];
    const { decisions } = await checks.decide(
      [rule('ok'), rule('conflict')],
      facts,
      (r) => (r.metadata.name === 'conflict' ? Promise.reject(new Error('409 the object has been modified')) : Promise.resolve()),
      (r, err) => failed.push(`${r.metadata.name}: ${(err as Error).message}`),
    );
    assert.deepEqual([...decisions.keys()], ['ok']);
    assert.deepEqual(failed, ['conflict: 409 the object has been modified']);
  });
});
