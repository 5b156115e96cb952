import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadKubeConfig } from '../../lib/kube/client.ts';
import { kubeRest, type KubeRest } from '../../lib/kube/rest.ts';
import { createLogger } from '../../lib/log/logger.ts';
import { LeaderLease } from '../../operator/lease.ts';
import { watchCollection } from '../../operator/watch.ts';
import { sharedKube } from '../harness/env.ts';
import { eventually } from '../harness/wait.ts';

// The operator's two control mechanisms on a real API server: the Lease that keeps one operator active,
// and the watch that relists and restarts when it goes quiet.

const logger = createLogger({ component: 'control-test', level: 'error' });

describe('Lease and watch on a real API server', function () {
  this.timeout(60_000);
  let rest: KubeRest;
  let namespace: string;

  before(async () => {
    const kube = await sharedKube();
    rest = kubeRest(loadKubeConfig(kube.kubeconfig));
    namespace = `control-${randomBytes(3).toString('hex')}`;
    await rest.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
  });

  it('lets one candidate lead; the other takes over only once the leader gives up or stops renewing', async () => {
    const candidate = (identity: string): LeaderLease => new LeaderLease({ rest, namespace, name: 'op', identity, durationSeconds: 3, logger });
    const [one, two] = [candidate('one'), candidate('two')];
    const stopper = new AbortController();
    const lost: string[] = [];
    await one.acquire(stopper.signal, () => lost.push('one'));
    let twoLeads = false;
    const waiting = two.acquire(stopper.signal, () => lost.push('two')).then(() => (twoLeads = !stopper.signal.aborted));
    // Several lease periods pass: the leader renews, so the other keeps waiting.
    await sleep(4_500);
    assert.equal(twoLeads, false);
    const held = await rest.get<{ spec: { holderIdentity: string; leaseTransitions: number } }>(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/op`);
    assert.equal(held.spec.holderIdentity, 'one');
    await one.release();
    await waiting;
    assert.equal(twoLeads, true);
    const taken = await rest.get<{ spec: { holderIdentity: string; leaseTransitions: number } }>(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/op`);
    assert.equal(taken.spec.holderIdentity, 'two');
    assert.equal(taken.spec.leaseTransitions, 1);
    // A leader that cannot renew (its lease taken by force) notices and stops leading.
    await rest.replace(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/op`, { ...taken, spec: { ...taken.spec, holderIdentity: 'intruder', renewTime: new Date(Date.now() + 60_000).toISOString().replace('Z', '000Z'), leaseDurationSeconds: 60 } });
    await eventually(() => {
      assert.deepEqual(lost, ['two']);
    }, 10_000);
    stopper.abort();
    await one.release();
    await two.release();
  });

  it("keeps the lease through its own event loop's stall shorter than the lease, and loses it past that", async () => {
    const lease = new LeaderLease({ rest, namespace, name: 'stalls', identity: 'one', durationSeconds: 6, logger });
    const lost: string[] = [];
    const renewTime = async (): Promise<number> => Date.parse((await rest.get<{ spec: { renewTime: string } }>(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases/stalls`)).spec.renewTime);
    /** Blocks the event loop, as a long pass on a starved CPU does. */
    const stall = (ms: number): void => {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    };
    await lease.acquire(new AbortController().signal, () => lost.push('one'));
    await sleep(1_000);
    // Past the renewal deadline (4 s of a 6 s lease), short of the lease's expiry: nobody else could
    // take the lease meanwhile, and the renewal after the stall keeps it. (Before, it was given up.)
    stall(4_300);
    const resumed = Date.now();
    await eventually(async () => {
      assert.ok((await renewTime()) >= resumed - 50, 'renewed after the stall');
    }, 5_000);
    assert.deepEqual(lost, []);
    // Past the lease's expiry another may hold it: lost at once, without a renewal tried.
    stall(6_500);
    await eventually(() => {
      assert.deepEqual(lost, ['one']);
    }, 2_000);
    await lease.release();
  });

  it('sees changes, relists periodically, and restarts a watch that went quiet', async () => {
    const path = `/api/v1/namespaces/${namespace}/configmaps`;
    let changes = 0;
    const watch = watchCollection({ rest, path, logger, onChange: () => changes++, relistMs: 60_000, quietMs: 1_500 });
    await eventually(() => {
      assert.ok(changes >= 1, 'the first list');
    });
    const before = changes;
    await rest.create(path, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'nudge' }, data: { a: '1' } });
    await eventually(() => {
      assert.ok(changes > before, 'an event');
    }, 5_000);
    // Nothing happens in this namespace now: every 1.5 s the watch is taken for stalled and relisted.
    const quiet = changes;
    await sleep(5_000);
    assert.ok(changes >= quiet + 2, `relisted after going quiet (${String(changes - quiet)} times)`);
    watch.stop();
    const stopped = changes;
    await sleep(2_000);
    assert.equal(changes, stopped, 'nothing after stop');
  });
});
