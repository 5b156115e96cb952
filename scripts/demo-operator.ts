// `make demo-operator`: the operator on a real kube-apiserver (no kubelet: the test harness runs each
// Deployment's pod template as local processes), with Kafka and two MinIO sites. helm install, kubectl
// apply of examples/, objects written to site A, and what kubectl shows.
import { CreateBucketCommand, ListObjectsV2Command, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { exampleManifests, installChart, startCluster, type Cluster } from '../e2e/operator/cluster.ts';
import { stopAll } from '../e2e/harness/env.ts';
import { eventually } from '../e2e/harness/wait.ts';

const say = (line = ''): boolean => process.stdout.write(`${line}\n`);

/** The demo, on a cluster started here and stopped before it returns: the keys site B holds at the end. */
export async function demoOperator(say: (line?: string) => unknown): Promise<string[]> {
  say('Starting etcd + kube-apiserver, Kafka and two MinIO sites on free loopback ports...');
  const c: Cluster = await startCluster();
  try {
    const [a, b] = [c.siteA.client(), c.siteB.client()];
    for (const [s3, bucket] of [[a, 'photos'], [b, 'photos-replica']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    say('$ helm install backbeat charts/backbeat');
    await installChart(c, ['--set', 'operator.resyncSeconds=3']);
    say('$ kubectl apply -f examples/   (endpoints and credentials of the sites started here)');
    say((await c.kubectl(['apply', '-f', exampleManifests(c)])).trimEnd());
    // Read by field, not by printer column: the columns may change.
    await eventually(async () => {
      const ready = await c.kubectl(['get', 'replicationrule', 'photos', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
      if (ready.trim() !== 'True') throw new Error('rule not ready');
    }, 120_000, 500);
    say('\n$ kubectl get locations,deployments');
    say((await c.kubectl(['get', 'locations,deployments'])).trimEnd());

    say('\nWriting 3 objects to site-a/photos...');
    for (const [key, body] of [['cats/1.jpg', 'meow'], ['dogs/2.jpg', 'woof'], ['notes.txt', 'hello']] as const) await a.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: body }));
    await eventually(async () => {
      const replicated = await c.kubectl(['get', 'replicationrule', 'photos', '-o', 'jsonpath={.status.replicated}']);
      if (replicated.trim() !== '3') throw new Error(`not replicated yet (${replicated.trim() || 'none'} of 3)`);
    }, 120_000, 500);
    say('\n$ kubectl get replicationrules -o wide');
    say((await c.kubectl(['get', 'replicationrules', '-o', 'wide'])).trimEnd());
    const keys = ((await b.send(new ListObjectsV2Command({ Bucket: 'photos-replica' }))).Contents ?? []).map((o) => o.Key ?? '');
    say(`\nsite-b/photos-replica holds: ${keys.join(', ')}`);
    say('\n$ kubectl describe replicationrule photos   (status and events)');
    say((await c.kubectl(['describe', 'replicationrule', 'photos'])).split('\n').filter((l) => /Ready|Reason|Message|Replicated|Pending|Failed|Lag|Normal|Warning/.test(l)).join('\n'));
    say('\nDone: stopping everything.');
    return keys;
  } finally {
    await c.stop();
  }
}

if (import.meta.main) {
  // The pod processes are unref'd: a timer keeps this process alive until they have exited.
  const alive = setInterval(() => undefined, 1_000);
  try {
    await demoOperator(say);
  } finally {
    await stopAll();
    clearInterval(alive);
  }
}
