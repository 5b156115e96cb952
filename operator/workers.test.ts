import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileBucketConfigs } from '../lib/config/bucket-config.ts';
import { publishConfig, readPublishedConfig, secretsFromDir } from '../lib/config/published.ts';
import type { Location, ReplicationRule } from '../lib/config/schema.ts';
import { queueNames } from '../lib/queue/messages.ts';
import { setCondition } from './conditions.ts';
import { configHash, deploymentFor, desiredWorkers, readsRule, replicasFor, roleInputs, secretKeys, type WorkerSettings } from './workers.ts';

const location = (name: string, spec: Partial<Location['spec']> = {}): Location => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'Location',
  metadata: { name },
  spec: { type: 's3', region: 'us-east-1', credentialsSecretRef: { name: `${name}-creds` }, checksumMode: 'whenRequired', maxConnections: 64, listPageSize: 1000, transient: false, journal: { kafka: { topic: `${name}-events` } }, ...spec },
});
const rule = (name: string, destinations: string[]): ReplicationRule => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name },
  spec: { source: { location: 'a', bucket: 'photos' }, priority: 0, destinations: destinations.map((l) => ({ location: l, bucket: 'photos' })), replicateDeleteMarkers: false, replicateVersionDeletes: false, replicateExistingObjects: false },
});
const settings: WorkerSettings = { name: 'bb', image: 'backbeat:1', imagePullPolicy: 'IfNotPresent', brokers: ['k:9092'], prefix: 'bb', partitions: 4, logLevel: 'info', scaling: { lagThreshold: 100, minReplicas: 1, maxReplicas: 10 }, statusServiceAccount: 'bb-status', listenAddress: '0.0.0.0' };

describe('Worker Deployments', () => {
  const names = queueNames('bb');
  const configs = (locations: Location[], ...rules: ReplicationRule[]): ReturnType<typeof desiredWorkers> =>
    desiredWorkers(settings, names, [...compileBucketConfigs({ rules: new Map(rules.map((r) => [r.metadata.name, r])) }).values()], new Map(locations.map((l) => [l.metadata.name, l])));

  it('are a populator and a scanner per source, a processor per destination location, the status processor and the GC', () => {
    const scanned = location('a', { journal: { kafka: { topic: 'a-events' }, scan: { intervalSeconds: 300, fullIntervalSeconds: 86400 } } });
    const specs = configs([scanned, location('b'), location('c')], rule('r1', ['b']), rule('r2', ['c', 'b']));
    assert.deepEqual(specs.map((s) => [s.deployment, s.lag?.group, s.active]), [
      ['bb-populator-a', 'bb-populator-a', true],
      ['bb-scanner-a', undefined, true],
      ['bb-processor-b', 'bb-processor-b', true],
      ['bb-processor-c', 'bb-processor-c', true],
      ['bb-status', 'bb-status', true],
      ['bb-gc', 'bb-gc', false],
    ]);
    const scanOnly = configs([location('a', { journal: { scan: { intervalSeconds: 60, fullIntervalSeconds: 86400 } } }), location('b')], rule('r1', ['b']));
    assert.deepEqual(scanOnly.filter((s) => s.location === 'a').map((s) => s.role), ['scanner'], 'no journal topic: no populator');
    const transient = configs([location('a', { transient: true }), location('b')], rule('r1', ['b']));
    assert.equal(transient.find((s) => s.role === 'gc')?.active, true);
  });

  it('take the workers\' resources, or a role\'s own where one is given', () => {
    const [populator, processor] = configs([location('a'), location('b')], rule('r1', ['b']));
    assert.equal(processor?.role, 'processor');
    assert.ok(populator && processor);
    const given = { ...settings, resources: { limits: { memory: '1Gi' } }, roleResources: { processor: { limits: { memory: '64Mi' } } } };
    const resources = (spec: typeof processor): unknown => (deploymentFor(given, spec, 1, ['bb-config'], [], 'h').spec as { template: { spec: { containers: { resources?: unknown }[] } } }).template.spec.containers[0]?.resources;
    assert.deepEqual(resources(processor), { limits: { memory: '64Mi' } });
    assert.deepEqual(resources(populator), { limits: { memory: '1Gi' } });
  });

  it('take the chart\'s scheduling, pull secrets, annotations and env, a role\'s own fields replacing them; empty ones change nothing', () => {
    const [populator, processor] = configs([location('a'), location('b')], rule('r1', ['b']));
    assert.ok(populator && processor);
    type Pod = { metadata: { annotations: Record<string, string> }; spec: Record<string, unknown> & { containers: { env: { name: string; value?: string }[] }[] } };
    const pod = (s: WorkerSettings, spec: typeof processor): Pod => (deploymentFor(s, spec, 1, ['bb-config'], [], 'h').spec as { template: Pod }).template;
    const given: WorkerSettings = {
      ...settings,
      pod: { nodeSelector: { zone: 'a' }, tolerations: [{ key: 'dedicated', operator: 'Exists' }], podAnnotations: { team: 'storage', 'backbeat.io/config-hash': 'forged' }, imagePullSecrets: [{ name: 'reg' }], env: [{ name: 'HTTPS_PROXY', value: 'http://proxy:3128' }, { name: 'BACKBEAT_PREFIX', value: 'forged' }] },
      rolePod: { processor: { nodeSelector: { storage: 'near' }, priorityClassName: 'fast' } },
    };
    const p = pod(given, processor);
    const q = pod(given, populator);
    assert.deepEqual([p.spec['nodeSelector'], p.spec['priorityClassName'], p.spec['tolerations'], p.spec['imagePullSecrets']], [{ storage: 'near' }, 'fast', [{ key: 'dedicated', operator: 'Exists' }], [{ name: 'reg' }]]);
    assert.deepEqual([q.spec['nodeSelector'], q.spec['priorityClassName']], [{ zone: 'a' }, undefined]);
    assert.equal(q.metadata.annotations['team'], 'storage');
    assert.equal(q.metadata.annotations['backbeat.io/config-hash'], 'h', 'the operator\'s annotations win');
    const env = q.spec.containers[0]?.env ?? [];
    assert.equal(env.find((e) => e.name === 'HTTPS_PROXY')?.value, 'http://proxy:3128');
    assert.equal(env.filter((e) => e.name === 'BACKBEAT_PREFIX').at(-1)?.value, 'bb', 'the operator\'s variable is the last of its name');
    // The chart's defaults (all empty) leave the pods as they were: an upgrade rolls nothing.
    const empty: WorkerSettings = { ...settings, pod: { nodeSelector: {}, tolerations: [], affinity: {}, podAnnotations: {}, priorityClassName: '', imagePullSecrets: [], env: [] } };
    assert.deepEqual(deploymentFor(empty, processor, 1, ['bb-config'], [], 'h'), deploymentFor(settings, processor, 1, ['bb-config'], [], 'h'));
  });

  it('take replicas from lag: ceil(lag / threshold), within min and max, never above the partitions', () => {
    const [populator, , , status, gc] = configs([location('a'), location('b'), location('c')], rule('r1', ['b', 'c']));
    assert.ok(populator && status && gc);
    assert.equal(replicasFor(populator, 0, 4, settings.scaling), 1, 'min');
    assert.equal(replicasFor(populator, 101, 4, settings.scaling), 2);
    assert.equal(replicasFor(populator, 350, 4, settings.scaling), 4);
    assert.equal(replicasFor(populator, 5000, 4, settings.scaling), 4, 'capped at the partitions');
    assert.equal(replicasFor(populator, 5000, 64, settings.scaling), 10, 'capped at max');
    assert.equal(replicasFor(status, 5000, 4, settings.scaling), 4, 'status scales with its lag, up to the partitions');
    assert.equal(replicasFor(status, 0, 4, settings.scaling), 1);
    const statusPods = deploymentFor(settings, status, 2, ['bb-config'], [], 'h').spec as { strategy?: unknown; template: { spec: { volumes: { name: string; emptyDir?: unknown }[] } } };
    assert.deepEqual(statusPods.strategy, { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, 'a new status pod joins before an old one leaves');
    assert.ok(statusPods.template.spec.volumes.some((v) => v.name === 'state' && v.emptyDir !== undefined), 'the local store has a volume of its own');
    assert.equal(replicasFor(gc, 5000, 64, settings.scaling), 0, 'no transient source: no GC');
  });

  it('have long names cut with a hash, credentials projected per Secret, and a config hash on the pods', () => {
    const long = 'a-location-with-a-rather-long-name-that-goes-on.example';
    const [spec] = configs([location('a'), location(long)], { ...rule('r', []), spec: { ...rule('r', [long]).spec } }).filter((s) => s.role === 'processor');
    assert.ok(spec);
    assert.ok(spec.deployment.length <= 52, spec.deployment);
    assert.match(spec.deployment, /^bb-processor-a-location-.*-[0-9a-f]{8}$/);
    const d = deploymentFor(settings, spec, 2, ['bb-config'], [{ name: 's1', keys: ['accessKeyId', 'secretAccessKey', 'accessKeyId'] }], 'h1');
    const text = JSON.stringify(d);
    assert.match(text, /"path":"s1\/accessKeyId"/);
    assert.equal([...text.matchAll(/s1\/accessKeyId/g)].length, 1, 'keys once each');
    assert.match(text, /"backbeat.io\/config-hash":"h1"/);
    assert.match(text, /"readOnlyRootFilesystem":true/);
    const other = deploymentFor(settings, spec, 2, ['bb-config'], [{ name: 's1', keys: ['accessKeyId', 'secretAccessKey'] }], 'h2');
    assert.notEqual(d.metadata.annotations['backbeat.io/spec-hash'], other.metadata.annotations['backbeat.io/spec-hash'], 'a new config rolls the pods');
  });

  it('give the status pods alone a ServiceAccount token, and every pod the operator\'s way to Kafka', () => {
    type Pod = { serviceAccountName?: string; automountServiceAccountToken: boolean; containers: { env: { name: string; value?: string }[]; volumeMounts: { name: string; mountPath: string }[] }[]; volumes: { name: string; projected?: { sources: unknown[] } }[] };
    const pod = (s: WorkerSettings, role: string): Pod => {
      const spec = configs([location('a'), location('b')], rule('r', ['b'])).find((w) => w.role === role);
      assert.ok(spec);
      return (deploymentFor(s, spec, 1, ['bb-config'], [], 'h').spec as { template: { spec: Pod } }).template.spec;
    };
    assert.deepEqual([pod(settings, 'status').serviceAccountName, pod(settings, 'status').automountServiceAccountToken], ['bb-status', true]);
    assert.deepEqual([pod(settings, 'processor').serviceAccountName, pod(settings, 'processor').automountServiceAccountToken], [undefined, false]);
    assert.ok(pod(settings, 'status').containers[0]?.env.some((e) => e.name === 'BACKBEAT_API_AUTH' && e.value === 'kubernetes'));
    // The status replicas' peer key: in their pods, in no other.
    assert.deepEqual(pod(settings, 'status').volumes.find((v) => v.name === 'peer'), { name: 'peer', secret: { secretName: 'bb-status-peer-key', defaultMode: 0o440 } });
    assert.ok(pod(settings, 'status').containers[0]?.env.some((e) => e.name === 'BACKBEAT_PEER_KEY_FILE' && e.value === '/etc/backbeat/peer/key'));
    assert.equal(pod(settings, 'processor').volumes.find((v) => v.name === 'peer'), undefined);
    const plain = pod(settings, 'processor');
    assert.equal(plain.volumes.find((v) => v.name === 'kafka'), undefined);
    assert.equal(plain.containers[0]?.env.some((e) => e.name.startsWith('BACKBEAT_KAFKA_') && e.name !== 'BACKBEAT_KAFKA_BROKERS'), false);
    const secure = pod({ ...settings, kafkaMounts: { tls: true, caSecret: 'kafka-ca', sasl: { mechanism: 'scram-sha-512', username: 'bb', passwordSecret: 'kafka-user' } } }, 'processor');
    const env = Object.fromEntries((secure.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    assert.deepEqual([env['BACKBEAT_KAFKA_TLS'], env['BACKBEAT_KAFKA_CA_FILE'], env['BACKBEAT_KAFKA_SASL_MECHANISM'], env['BACKBEAT_KAFKA_SASL_USERNAME'], env['BACKBEAT_KAFKA_SASL_PASSWORD_FILE']], ['true', '/etc/backbeat/kafka/ca.crt', 'scram-sha-512', 'bb', '/etc/backbeat/kafka/sasl-password']);
    assert.deepEqual(secure.volumes.find((v) => v.name === 'kafka')?.projected?.sources, [
      { secret: { name: 'kafka-ca', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
      { secret: { name: 'kafka-user', items: [{ key: 'password', path: 'sasl-password' }] } },
    ]);
    assert.ok(secure.containers[0]?.volumeMounts.some((m) => m.name === 'kafka' && m.mountPath === '/etc/backbeat/kafka'));
  });
});

describe('What each role reads', () => {
  const names = queueNames('bb');
  const from = (source: string, bucket: string, name: string, destinations: string[]): ReplicationRule => {
    const r = rule(name, destinations);
    return { ...r, spec: { ...r.spec, source: { location: source, bucket } } };
  };
  const inputsAfter = (...rules: ReplicationRule[]): Map<string, string> => {
    const configs = [...compileBucketConfigs({ rules: new Map(rules.map((r) => [r.metadata.name, r])) }).values()];
    const specs = desiredWorkers(settings, names, configs, new Map(['a', 'b', 'c', 'd'].map((l) => [l, location(l)])));
    return new Map(specs.map((s) => {
      const i = roleInputs(s, configs);
      return [s.deployment, `${configHash(JSON.stringify(i.reads), i.locations)} mounts ${i.mounts.join(',')}`];
    }));
  };
  const changed = (x: Map<string, string>, y: Map<string, string>): string[] => [...new Set([...x.keys(), ...y.keys()])].filter((k) => x.get(k) !== y.get(k)).sort();

  it('one rule\'s change touches only the roles that read it', () => {
    const base = [from('a', 'p1', 'r1', ['b']), from('a', 'p2', 'r2', ['c']), from('d', 'q1', 'r3', ['c'])];
    const before = inputsAfter(...base);
    assert.match(before.get('bb-processor-c') ?? '', /mounts a,d$/);
    assert.match(before.get('bb-populator-a') ?? '', /mounts a$/);
    // A filter: the populator of its source, the processor of its destination (it checks tasks against
    // the rule) and the status processor; not processor c, which reads no rule of a's bucket p1.
    const filtered = { ...base[0], spec: { ...base[0]?.spec, filter: { prefix: 'x/' } } } as ReplicationRule;
    assert.deepEqual(changed(before, inputsAfter(filtered, base[1] as ReplicationRule, base[2] as ReplicationRule)), ['bb-populator-a', 'bb-processor-b', 'bb-status']);
    // Another destination location for a rule of a: its processors, the old and the new one.
    const toC = from('a', 'p1', 'r1', ['b', 'c']);
    assert.deepEqual(changed(before, inputsAfter(toC, base[1] as ReplicationRule, base[2] as ReplicationRule)), ['bb-populator-a', 'bb-processor-b', 'bb-processor-c', 'bb-status']);
    // Processor b gains source d when a rule of d sends to it.
    const dToB = from('d', 'q1', 'r3', ['c', 'b']);
    const rolled = changed(before, inputsAfter(base[0] as ReplicationRule, base[1] as ReplicationRule, dToB));
    assert.deepEqual(rolled, ['bb-populator-d', 'bb-processor-b', 'bb-processor-c', 'bb-status']);
    assert.match(inputsAfter(base[0] as ReplicationRule, base[1] as ReplicationRule, dToB).get('bb-processor-b') ?? '', /mounts a,d$/);
    // Which Deployments a rule's Published condition waits for: at least those its change rolls.
    const readers = (r: ReplicationRule): string[] => desiredWorkers(settings, names, [...compileBucketConfigs({ rules: new Map([[r.metadata.name, r]]) }).values()], new Map(['a', 'b', 'c', 'd'].map((l) => [l, location(l)]))).filter((w) => readsRule(w, r)).map((w) => w.deployment).sort();
    assert.deepEqual(readers(dToB), ['bb-populator-d', 'bb-processor-b', 'bb-processor-c', 'bb-status']);
    assert.deepEqual(readers(filtered), ['bb-populator-a', 'bb-processor-b', 'bb-status']);
    // The GC reads which Locations are used: it changes when one is no longer.
    assert.deepEqual(changed(before, inputsAfter(base[0] as ReplicationRule, base[1] as ReplicationRule)), ['bb-gc', 'bb-populator-d', 'bb-processor-c', 'bb-status']);
  });

  it('each role mounts the credentials of the Locations it reads, no others; the webhook receiver its token alone', () => {
    const rules = [from('a', 'p1', 'r1', ['b']), from('d', 'q1', 'r3', ['c'])];
    const configs = [...compileBucketConfigs({ rules: new Map(rules.map((r) => [r.metadata.name, r])) }).values()];
    const hooked = location('d', { journal: { kafka: { topic: 'd-events' }, webhook: { tokenSecretRef: { name: 'd-hook', key: 'secret' } } } });
    const locations = new Map([...['a', 'b', 'c', 'unused'].map((l) => [l, location(l)] as const), ['d', hooked] as const]);
    const mounted = new Map(desiredWorkers(settings, names, configs, locations).map((s) => [s.deployment, secretKeys(s.role, roleInputs(s, configs).locations.flatMap((l) => locations.get(l) ?? [])).map((k) => `${k.name}${k.name === 'd-hook' ? `:${k.keys.join('+')}` : ''}`).join(',')]));
    assert.deepEqual(Object.fromEntries(mounted), {
      'bb-populator-a': 'a-creds',
      'bb-populator-d': 'd-creds',
      'bb-webhook-d': 'd-hook:secret',
      'bb-processor-b': 'a-creds,b-creds',
      'bb-processor-c': 'c-creds,d-creds',
      'bb-status': 'a-creds,d-creds',
      'bb-gc': 'a-creds,b-creds,c-creds,d-creds',
    });
  });
});

describe('Published config', () => {
  it('reads back what the operator publishes, and credentials from mounted Secrets', () => {
    const rules = new Map([['r1', rule('r1', ['b'])]]);
    const data = publishConfig([location('b'), location('a')], compileBucketConfigs({ rules }).values());
    assert.deepEqual(Object.keys(data).sort(), ['bucket_a_photos.json', 'locations.json']);
    const dir = mkdtempSync(join(tmpdir(), 'published-'));
    for (const [k, v] of Object.entries(data)) writeFileSync(join(dir, k), v);
    const read = readPublishedConfig(dir);
    assert.deepEqual([...read.locations.keys()], ['a', 'b']);
    assert.deepEqual(read.buckets.get('a/photos')?.Rules.map((r) => r.ID), ['r1']);
    const creds = mkdtempSync(join(tmpdir(), 'creds-'));
    mkdirSync(join(creds, 'a-creds'));
    mkdirSync(join(creds, '..data'));
    writeFileSync(join(creds, 'a-creds', 'accessKeyId'), 'AK');
    assert.deepEqual(secretsFromDir(creds).get('a-creds')?.stringData, { accessKeyId: 'AK' });
    assert.deepEqual([...secretsFromDir(creds).keys()], ['a-creds']);
    assert.throws(() => readPublishedConfig(creds), /is the operator's ConfigMap mounted here/);
    for (const d of [dir, creds]) rmSync(d, { recursive: true, force: true });
  });
});

describe('Conditions', () => {
  it('move lastTransitionTime only when the status flips', () => {
    const t0 = new Date('2026-01-01T00:00:00Z');
    const t1 = new Date('2026-01-01T00:01:00Z');
    const first = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'A', message: 'm' }, 1, t0);
    const same = setCondition(first, { type: 'Ready', status: 'False', reason: 'B', message: 'm2' }, 2, t1);
    const [kept] = same;
    assert.ok(kept);
    assert.equal(kept.lastTransitionTime, t0.toISOString());
    assert.equal(kept.observedGeneration, 2);
    const flipped = setCondition(same, { type: 'Ready', status: 'True', reason: 'C', message: 'ok' }, 2, t1);
    assert.equal(flipped[0]?.lastTransitionTime, t1.toISOString());
    assert.equal(flipped.length, 1);
  });
});
