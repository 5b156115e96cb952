import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { Kafka, logLevel, type KafkaConfig } from 'kafkajs';
import { startKafkaCluster, type KafkaCluster } from '../harness/kafka.ts';
import { serviceHost } from '../harness/net.ts';
import { makePki, type TestPki } from '../harness/pki.ts';
import { runDir } from '../harness/run-dir.ts';
import { testSecret } from '../harness/secrets.ts';
import { eventually } from '../harness/wait.ts';
import { startBackbeat, type RunningBackbeat } from './backbeat.ts';
import { body, startSites, versionedBucket, writeRule, type Sites } from './sites.ts';

// The whole pipeline on a Kafka that takes clients only over TLS (a CA made for the run) and with SCRAM:
// every role of `backbeat run` (scanner, processor, status) reaches it with --kafka-* settings alone.
// Site A's journal is a listing scan: its MinIO would need the same settings to publish to this broker.

describe('Kafka with TLS and SCRAM required (real broker, real `backbeat run`)', function () {
  this.timeout(240_000);
  let pki: TestPki;
  let kafka: KafkaCluster;
  let sites: Sites;
  let run: RunningBackbeat | undefined;
  const password = testSecret(randomBytes(18).toString('base64url'));
  const passwordFile = (): string => join(runDir(), 'kafka-password');

  /** Whether a client with these settings gets the cluster's metadata (one attempt, short timeouts). */
  const answers = async (settings: Pick<KafkaConfig, 'ssl' | 'sasl'>): Promise<string> => {
    const admin = new Kafka({ brokers: kafka.brokers, clientId: 'security-probe', logLevel: logLevel.NOTHING, connectionTimeout: 3_000, requestTimeout: 5_000, retry: { retries: 0 }, ...settings }).admin();
    try {
      await admin.connect();
      await admin.describeCluster();
      return 'answered';
    } catch (err) {
      return (err as Error).name;
    } finally {
      await admin.disconnect();
    }
  };

  before(async function () {
    this.timeout(180_000);
    pki = await makePki('kafka', [...new Set([serviceHost, '127.0.0.1'])]);
    kafka = await startKafkaCluster('kafka-secure', 1, { pki, users: [{ mechanism: 'SCRAM-SHA-512', username: 'backbeat', password }] });
    writeFileSync(passwordFile(), `${password}\n`, { mode: 0o600 });
    sites = await startSites('kafka-sec', { a: { journal: { scan: { intervalSeconds: 10 } } } });
    await versionedBucket(sites.a.client(), 'photos');
    await versionedBucket(sites.b.client(), 'photos-b');
    writeRule(sites, 'photos', { source: { location: 'site-a', bucket: 'photos' }, destinations: [{ location: 'site-b', bucket: 'photos-b' }] });
  });

  after(async () => {
    await run?.process.stop();
    await sites.stop();
    await kafka.stop();
  });

  it('refuses clients without TLS, without SCRAM, or with another password', async () => {
    const ssl = { ca: [pki.ca] };
    const sasl = { mechanism: 'scram-sha-512' as const, username: 'backbeat', password };
    assert.notEqual(await answers({}), 'answered', 'plaintext');
    assert.notEqual(await answers({ ssl }), 'answered', 'TLS without SASL');
    assert.notEqual(await answers({ ssl: true, sasl }), 'answered', 'a certificate of an unknown CA');
    assert.equal(await answers({ ssl, sasl: { ...sasl, password: 'not-it' } }), 'KafkaJSSASLAuthenticationError');
    assert.equal(await answers({ ssl, sasl }), 'answered', 'the right CA and password');
  });

  it('replicates through it, objects there before the start and written after, and logs no password', async () => {
    const a = sites.a.client();
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'before', Body: 'there first' }));
    run = await startBackbeat(sites, 'kafkasec', [
      '--brokers',
      kafka.brokers.join(','),
      '--kafka-tls',
      'true',
      '--kafka-ca-file',
      pki.caFile,
      '--kafka-sasl-mechanism',
      'scram-sha-512',
      '--kafka-sasl-username',
      'backbeat',
      '--kafka-sasl-password-file',
      passwordFile(),
    ]);
    const b = sites.b.client();
    await eventually(async () => assert.equal((await body(b, 'photos-b', 'before')).toString(), 'there first'), 60_000, 500);
    await a.send(new PutObjectCommand({ Bucket: 'photos', Key: 'after', Body: 'written later' }));
    await eventually(async () => assert.equal((await body(b, 'photos-b', 'after')).toString(), 'written later'), 60_000, 500);
    await eventually(async () => assert.match(await run?.cli('status', 'site-a/photos/after') ?? '', /COMPLETED/), 30_000, 500);
    assert.ok(!readFileSync(run.process.spec.logFile, 'utf8').includes(password), 'the password is in no log line');
  });
});
