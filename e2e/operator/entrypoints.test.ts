import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backbeatWithEnv } from '../pipeline/backbeat.ts';

// The image's entry points refuse bad settings with one clear line and exit code 2, before touching
// Kafka or the API server.

type Failure = Error & { code?: number; stderr?: string };

async function refused(env: Record<string, string>, args: string[], message: RegExp): Promise<void> {
  // Only what the test gives: no BACKBEAT_* or KUBECONFIG of the runner's own.
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BACKBEAT_') && k !== 'KUBECONFIG'));
  await assert.rejects(backbeatWithEnv({ ...clean, ...env }, ...args), (err: Failure) => {
    assert.equal(err.code, 2, err.stderr);
    assert.match(err.stderr ?? '', message);
    assert.doesNotMatch(err.stderr ?? '', /\n\s+at /, 'no stack trace');
    return true;
  });
}

describe('worker and operator entry points', function () {
  this.timeout(30_000);
  const empty = mkdtempSync(join(tmpdir(), 'no-config-'));
  after(() => rmSync(empty, { recursive: true, force: true }));

  it('refuse an unknown role, a missing location, missing brokers and an unmounted config', async () => {
    await refused({}, ['worker', '--role', 'copier'], /--role must be one of populator, scanner, processor, status, gc, webhook, got "copier"/);
    await refused({}, ['worker', '--role', 'processor'], /the processor role needs --location \(its destination location\)/);
    await refused({}, ['worker', '--role', 'status', '--config', empty], /give the Kafka brokers: --brokers/);
    await refused({ BACKBEAT_KAFKA_BROKERS: '127.0.0.1:1' }, ['worker', '--role', 'status', '--config', empty], /no locations.json: is the operator's ConfigMap mounted here\?/);
    await refused({}, ['worker', '--role', 'gc', '--listen', 'nowhere'], /--listen must be HOST:PORT, got "nowhere"/);
  });

  it('refuse a status API open to the network without authentication, and a weak or unreadable token', async () => {
    const brokers = { BACKBEAT_KAFKA_BROKERS: '127.0.0.1:1' };
    const open = /the status API would listen on 0\.0\.0\.0 with no authentication, so anyone reaching it could pause or retry: give --api-token-file FILE \(or --api-auth kubernetes\)/;
    await refused(brokers, ['worker', '--role', 'status', '--config', empty, '--listen', '0.0.0.0:8900'], open);
    await refused({}, ['run', '-f', empty, '--listen', '0.0.0.0:8900'], open);
    await refused(brokers, ['worker', '--role', 'status', '--api-auth', 'basic'], /option '--api-auth <mode>' argument 'basic' is invalid\. Allowed choices are kubernetes\./);
    const weak = join(empty, 'weak-token');
    writeFileSync(weak, 'secret\n');
    await refused(brokers, ['worker', '--role', 'status', '--api-token-file', weak], /is under 16 characters/);
    await refused(brokers, ['worker', '--role', 'status', '--api-token-file', join(empty, 'none')], /cannot read --api-token-file .*: ENOENT/);
  });

  it('refuse Kafka security settings that make no sense, naming the one to fix', async () => {
    const brokers = { BACKBEAT_KAFKA_BROKERS: '127.0.0.1:1' };
    const notPem = join(empty, 'not-a-ca');
    writeFileSync(notPem, 'hello\n');
    const password = join(empty, 'kafka-password');
    writeFileSync(password, 'pw\n');
    const gc = ['worker', '--role', 'gc', '--config', empty];
    await refused(brokers, [...gc, '--kafka-tls', 'yes'], /option '--kafka-tls <bool>' argument 'yes' is invalid\. Allowed choices are true, false\./);
    await refused(brokers, [...gc, '--kafka-ca-file', notPem], /--kafka-ca-file is for TLS: give --kafka-tls too/);
    await refused(brokers, [...gc, '--kafka-tls', 'true', '--kafka-ca-file', notPem], /the Kafka CA file .* holds no PEM certificate/);
    await refused(brokers, [...gc, '--kafka-sasl-mechanism', 'gssapi', '--kafka-sasl-username', 'u', '--kafka-sasl-password-file', password], /option '--kafka-sasl-mechanism <name>' argument 'gssapi' is invalid\. Allowed choices are plain, scram-sha-256, scram-sha-512\./);
    await refused(brokers, [...gc, '--kafka-sasl-mechanism', 'plain', '--kafka-sasl-username', 'u', '--kafka-sasl-password-file', password], /SASL PLAIN sends the password in clear: give --kafka-tls too/);
    await refused(brokers, [...gc, '--kafka-sasl-mechanism', 'scram-sha-512', '--kafka-sasl-password-file', password], /SASL needs --kafka-sasl-username/);
    await refused(brokers, [...gc, '--kafka-sasl-mechanism', 'scram-sha-512', '--kafka-sasl-username', 'u', '--kafka-sasl-password-file', join(empty, 'none')], /cannot read the Kafka password file .*: ENOENT/);
    await refused({}, ['run', '-f', empty, '--kafka-tls', 'true'], /--kafka-\* settings are for Kafka: give --brokers too/);
    const operator = { BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns' };
    await refused(operator, ['operator', '--kafka-sasl-mechanism', 'scram-sha-512', '--kafka-sasl-username', 'u', '--kafka-sasl-password-file', password], /the workers need the Kafka password too: give --kafka-sasl-password-secret/);
  });

  it('refuse an operator without an image or namespace, and inconsistent scaling bounds', async () => {
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', POD_NAMESPACE: 'ns' }, ['operator'], /required option '--image <image>' not specified/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1' }, ['operator'], /give --namespace/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns' }, ['operator', '--min-replicas', '5', '--max-replicas', '2'], /--min-replicas \(5\) exceeds --max-replicas \(2\)/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns', BACKBEAT_LAG_THRESHOLD: 'many' }, ['operator'], /--lag-threshold must be an integer ≥ 1, got "many"/);
  });
});
