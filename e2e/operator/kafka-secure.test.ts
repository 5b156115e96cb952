import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutBucketVersioningCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { KubeObject } from '../../lib/kube/rest.ts';
import { startKafkaCluster, type KafkaCluster } from '../harness/kafka.ts';
import { httpGet, serviceHost } from '../harness/net.ts';
import { makePki } from '../harness/pki.ts';
import { runDir } from '../harness/run-dir.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';
import { exampleManifests, installChart, startCluster, statusApiCredentials, type Cluster } from './cluster.ts';

// The chart on a Kafka that takes clients only over TLS (a CA made for the run) and with SCRAM-SHA-512:
// the operator and every worker pod reach it with the chart's kafka.tls and kafka.sasl values alone (the
// CA and the password from Secrets). MinIO publishes its notifications on the brokers' own listener.

type Rule = KubeObject & { status?: { conditions?: { type: string; status: string; reason: string; message: string }[]; replicated?: number } };

describe('the chart on a Kafka requiring TLS and SCRAM (operator and workers as pods)', function () {
  this.timeout(600_000);
  let kafka: KafkaCluster;
  let c: Cluster;
  const password = testSecret(randomBytes(18).toString('base64url'));

  before(async function () {
    this.timeout(300_000);
    const pki = await makePki('op-kafka', [...new Set([serviceHost, '127.0.0.1'])]);
    kafka = await startKafkaCluster('op-kafka-secure', 1, { pki, users: [{ mechanism: 'SCRAM-SHA-512', username: 'backbeat', password }] });
    c = await startCluster({
      brokers: kafka.brokers,
      notifyBrokers: kafka.internalBrokers ?? [],
      helmValues: ['--set', 'kafka.tls.enabled=true', '--set', 'kafka.tls.caSecret=kafka-ca', '--set', 'kafka.sasl.mechanism=scram-sha-512', '--set', 'kafka.sasl.username=backbeat', '--set', 'kafka.sasl.passwordSecret=kafka-user'],
    });
    const passwordFile = join(runDir(), 'op-kafka-password');
    writeFileSync(passwordFile, password, { mode: 0o600 });
    await c.kubectl(['create', 'secret', 'generic', 'kafka-ca', `--from-file=ca.crt=${pki.caFile}`]);
    await c.kubectl(['create', 'secret', 'generic', 'kafka-user', `--from-file=password=${passwordFile}`]);
    for (const [s3, bucket] of [[c.siteA.client(), 'photos'], [c.siteB.client(), 'photos-replica']] as const) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      await s3.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    }
    await installChart(c, ['--set', 'operator.resyncSeconds=2', '--set', 'kafka.partitions=2']);
  });

  after(async () => {
    await c.stop();
    await kafka.stop();
  });

  it('publishes the rule, replicates through the journal and reports it, every component on TLS + SCRAM', async () => {
    await c.kubectl(['apply', '-f', exampleManifests(c)]);
    const rulePath = `/apis/backbeat.io/v1alpha1/namespaces/${c.namespace}/replicationrules/photos`;
    await eventually(async () => {
      const ready = (await c.rest.get<Rule>(rulePath)).status?.conditions?.find((x) => x.type === 'Ready');
      assert.equal(ready?.status, 'True', `${ready?.reason ?? ''}: ${ready?.message ?? 'no Ready condition yet'}`);
    }, 180_000, 1_000);

    // Written to site A: its notification goes through this Kafka to the populator, the processor copies it.
    await c.siteA.client().send(new PutObjectCommand({ Bucket: 'photos', Key: 'secure/one.txt', Body: 'over TLS and SCRAM' }));
    await eventually(async () => {
      const got = await c.siteB.client().send(new GetObjectCommand({ Bucket: 'photos-replica', Key: 'secure/one.txt' }));
      assert.equal(await got.Body?.transformToString(), 'over TLS and SCRAM');
    }, 180_000, 1_000);

    // The status pods folded the result, and the operator read their figures back from the same Kafka.
    const { headers } = await statusApiCredentials(c);
    await eventually(async () => {
      const answer = await httpGet(`${await c.statusUrl()}/v1/objects/site-a/photos/secure/one.txt`, headers);
      assert.equal(answer.status, 200, answer.body);
      assert.equal((JSON.parse(answer.body) as { versions: { state: string }[] }).versions[0]?.state, 'COMPLETED');
    }, 120_000, 1_000);
    await eventually(async () => assert.ok(((await c.rest.get<Rule>(rulePath)).status?.replicated ?? 0) >= 1), 120_000, 1_000);
  });
});
