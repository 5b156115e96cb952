import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
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
    await refused({}, ['worker', '--role', 'copier'], /--role must be one of populator, scanner, processor, status, gc, got "copier"/);
    await refused({}, ['worker', '--role', 'processor'], /the processor role needs --location \(its destination location\)/);
    await refused({}, ['worker', '--role', 'status', '--config', empty], /give the Kafka brokers: --brokers/);
    await refused({ BACKBEAT_KAFKA_BROKERS: '127.0.0.1:1' }, ['worker', '--role', 'status', '--config', empty], /no locations.json: is the operator's ConfigMap mounted here\?/);
    await refused({}, ['worker', '--role', 'gc', '--listen', 'nowhere'], /--listen must be HOST:PORT, got "nowhere"/);
  });

  it('refuse an operator without an image or namespace, and inconsistent scaling bounds', async () => {
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', POD_NAMESPACE: 'ns' }, ['operator'], /give --image \(or \$BACKBEAT_IMAGE\)/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1' }, ['operator'], /give --namespace \(or \$BACKBEAT_NAMESPACE\)/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns' }, ['operator', '--min-replicas', '5', '--max-replicas', '2'], /--min-replicas \(5\) exceeds --max-replicas \(2\)/);
    await refused({ BACKBEAT_KAFKA_BROKERS: 'k:9092', BACKBEAT_IMAGE: 'i:1', POD_NAMESPACE: 'ns', BACKBEAT_LAG_THRESHOLD: 'many' }, ['operator'], /--lag-threshold must be an integer ≥ 1, got "many"/);
  });
});
