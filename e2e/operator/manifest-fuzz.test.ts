import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { dump } from 'js-yaml';
import { loadManifests, parseManifests } from '../../lib/config/manifests.ts';
import { ConfigError } from '../../lib/config/validate.ts';
import { backbeat } from '../pipeline/backbeat.ts';
import { requireBinary } from '../harness/binaries.ts';
import { sharedKube } from '../harness/env.ts';
import { runDir } from '../harness/run-dir.ts';

// Fuzzing the manifests: random YAML and mutated resources against `backbeat validate` (local mode's
// checks) and a real API server (the CRDs' schema and CEL rules, through `kubectl create
// --dry-run=server`, so that nothing is stored). Each input gets a clear answer, never a crash; and both
// agree on every resource, except for what only a whole set of manifests can tell (references between
// resources), which only local mode checks.

const execute = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;
const SEED = Number(process.env['BACKBEAT_FUZZ_SEED'] ?? 20261204);
const RUNS = Number(process.env['BACKBEAT_FUZZ_RUNS'] ?? 3000);
/** Problems about other resources (a Location a rule names, its journal): not the single resource's to have. */
const CROSS_RESOURCE = /unknown Location|has no spec\.journal|is a transient source, whose versions/;

const location = (): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'Location',
  metadata: { name: 'fuzz-location' },
  spec: { type: 's3', endpoint: 'https://s3.example.com', region: 'us-east-1', credentialsSecretRef: { name: 'creds' }, journal: { kafka: { topic: 'events' } } },
});
const rule = (): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name: 'fuzz-rule' },
  spec: { source: { location: 'site-a', bucket: 'photos' }, destinations: [{ location: 'site-b', bucket: 'photos-replica' }], filter: { prefix: 'img/' } },
});

const FIELDS: Record<'Location' | 'ReplicationRule', string[][]> = {
  Location: [
    ['metadata', 'name'], ['spec'], ['spec', 'type'], ['spec', 'endpoint'], ['spec', 'region'], ['spec', 'forcePathStyle'], ['spec', 'tls'], ['spec', 'tls', 'insecureSkipVerify'],
    ['spec', 'tls', 'caBundle'], ['spec', 'credentialsSecretRef'], ['spec', 'credentialsSecretRef', 'name'], ['spec', 'credentialsSecretRef', 'accessKeyIdKey'],
    ['spec', 'checksumMode'], ['spec', 'maxConnections'], ['spec', 'listPageSize'], ['spec', 'transient'], ['spec', 'journal'], ['spec', 'journal', 'kafka'],
    ['spec', 'journal', 'kafka', 'topic'], ['spec', 'journal', 'kafka', 'targetId'], ['spec', 'journal', 'scan'], ['spec', 'journal', 'scan', 'intervalSeconds'], ['spec', 'insecure'], ['spec', 'colour'],
  ],
  ReplicationRule: [
    ['metadata', 'name'], ['spec'], ['spec', 'source'], ['spec', 'source', 'location'], ['spec', 'source', 'bucket'], ['spec', 'filter'], ['spec', 'filter', 'prefix'], ['spec', 'filter', 'tags'],
    ['spec', 'priority'], ['spec', 'destinations'], ['spec', 'destinations', '0'], ['spec', 'destinations', '0', 'location'], ['spec', 'destinations', '0', 'bucket'],
    ['spec', 'destinations', '0', 'storageClass'], ['spec', 'destinations', '0', 'keyPrefix'], ['spec', 'destinations', '1'], ['spec', 'replicateDeleteMarkers'],
    ['spec', 'replicateVersionDeletes'], ['spec', 'replicateExistingObjects'], ['spec', 'paused'], ['spec', 'colour'],
  ],
};

/** Values that sit on the edges of what the schemas take. */
const value: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    '', 'a', 'site-a', 'site-b', 'photos', 'Photos', 'my..bucket', 'my-bucket-', '192.168.10.1', 'x'.repeat(63), 'x'.repeat(64), 'a'.repeat(254), 'STANDARD', 'standard_ia',
    'http://127.0.0.1:9000', 'https://s3.example.com/base', 'http://key:secret@h:9000', 'ftp://x', 'https://h w', 'whenRequired', 'whenSupported', 'always', 's3', 'azure',
    '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n', 'events', 'bad topic', 'ID_1', 'é', '☃'.repeat(10), '\u0000',
  ),
  fc.constantFrom(-1, 0, 1, 9, 10, 64, 1000, 1001, 1024, 1025, 1.5, 2 ** 53, true, false, null),
  fc.constantFrom([], [{}], [{ location: 'site-b', bucket: 'photos-replica' }], [{ key: 'env', value: 'prod' }, { key: 'env', value: 'dev' }], [{ key: '', value: 'x' }], {}, { kafka: {} }, { scan: {} }, { name: 'creds' }, { location: 'site-a', bucket: 'photos' }),
  fc.string({ maxLength: 20 }),
  fc.integer({ min: -5, max: 2000 }),
);

type Mutation = { path: string[]; to: unknown } | { path: string[]; remove: true };

function mutate(doc: Record<string, unknown>, m: Mutation): void {
  let at: Record<string, unknown> = doc;
  for (const p of m.path.slice(0, -1)) {
    const next = at[p];
    if (next === null || typeof next !== 'object') return;
    at = next as Record<string, unknown>;
  }
  const last = m.path.at(-1) ?? '';
  if ('remove' in m) Reflect.deleteProperty(at, last);
  else at[last] = structuredClone(m.to);
}

const resource = fc.constantFrom<'Location' | 'ReplicationRule'>('Location', 'ReplicationRule').chain((kind) =>
  fc
    .array(
      fc.oneof(
        { weight: 4, arbitrary: fc.record({ path: fc.constantFrom(...FIELDS[kind]), to: value }) },
        { weight: 1, arbitrary: fc.record({ path: fc.constantFrom(...FIELDS[kind]), remove: fc.constant(true as const) }) },
      ),
      { minLength: 1, maxLength: 3 },
    )
    .map((mutations) => {
      const doc = kind === 'Location' ? location() : rule();
      for (const m of mutations) mutate(doc, m);
      return doc;
    }),
);

/** The local verdict on one resource: the problems local mode reports about it alone. */
function localProblems(doc: Record<string, unknown>): string[] {
  try {
    parseManifests([{ file: 'fuzz.yaml', doc }]);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`not a ConfigError: ${String(err)}`, { cause: err });
    return err.problems.map((p) => p.message).filter((m) => !CROSS_RESOURCE.test(m));
  }
}

describe('manifests, fuzzed: `backbeat validate` and a real API server (BACKBEAT_FUZZ_SEED and BACKBEAT_FUZZ_RUNS change it)', function () {
  this.timeout(900_000);
  let kubectl: (...args: string[]) => Promise<{ stdout: string; stderr: string; code: number }>;
  const dir = join(runDir(), 'manifest-fuzz');

  before(async () => {
    mkdirSync(dir, { recursive: true });
    const { kubeconfig } = await sharedKube();
    kubectl = async (...args) => {
      try {
        const { stdout, stderr } = await execute(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, ...args]);
        return { stdout, stderr, code: 0 };
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string; code?: number };
        return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code ?? 1 };
      }
    };
    await kubectl('apply', '-f', join(ROOT, 'crds'));
    await kubectl('wait', '--for=condition=Established', '--timeout=60s', 'crd/locations.backbeat.io', 'crd/replicationrules.backbeat.io');
    await kubectl('create', 'namespace', 'manifest-fuzz');
  });

  it('answers random YAML with problems located in the file, never a crash', () => {
    let cases = 0;
    let n = 0;
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a).toString('latin1')), fc.jsonValue({ maxDepth: 4 }).map((v) => dump(v, { skipInvalid: true }))), (text) => {
        cases++;
        const file = join(dir, `random-${String(n++ % 50)}.yaml`);
        writeFileSync(file, text);
        try {
          loadManifests([file]);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw new Error(`not a ConfigError: ${String(err)}`, { cause: err });
          for (const p of err.problems) assert.ok(p.file === file && p.message.length > 0 && !p.message.includes('\n    at '), JSON.stringify(p));
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`      random YAML: ${String(cases)} files read by local mode's loader`);
  });

  it('`backbeat validate` exits 2 with the problems, one per line, for broken files', async () => {
    const samples = fc.sample(fc.tuple(resource, fc.string({ maxLength: 40 })), { seed: SEED, numRuns: 12 });
    let refused = 0;
    for (const [i, [doc, junk]] of samples.entries()) {
      const file = join(dir, `cli-${String(i)}.yaml`);
      writeFileSync(file, i % 3 === 0 ? `${junk}\n: : [\n` : dump(doc));
      try {
        await backbeat('validate', '-f', file);
      } catch (err) {
        const e = err as { code?: number; stderr?: string };
        assert.equal(e.code, 2, e.stderr);
        assert.ok((e.stderr ?? '').length > 0 && !(e.stderr ?? '').includes('    at '), e.stderr);
        refused++;
      }
    }
    assert.ok(refused > 0);
    console.log(`      backbeat validate: ${String(samples.length)} files, ${String(refused)} refused with exit code 2`);
  });

  it('agrees with the API server on every mutated Location and ReplicationRule', async () => {
    let cases = 0;
    const verdicts = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(resource, async (doc) => {
        const file = join(dir, `resource-${String(cases++ % 8)}.yaml`);
        writeFileSync(file, dump(doc, { skipInvalid: true }));
        const local = localProblems(doc);
        const server = await kubectl('create', '--dry-run=server', '-n', 'manifest-fuzz', '-o', 'name', '-f', file);
        const text = dump(doc, { skipInvalid: true });
        assert.equal(server.code === 0, local.length === 0, `local: ${local.join('; ') || 'accepted'}\nserver: ${server.code === 0 ? 'accepted' : server.stderr}\n${text}`);
        if (server.code !== 0) assert.match(server.stderr, /^(The|Error from server|error)/m);
        verdicts[local.length === 0 ? 'accepted' : 'refused']++;
      }),
      { seed: SEED, numRuns: Math.ceil(RUNS / 5) },
    );
    console.log(`      manifests: ${String(cases)} resources, both accepted ${String(verdicts.accepted)}, both refused ${String(verdicts.refused)}`);
    // Dry runs only: nothing was stored.
    assert.equal((await kubectl('get', 'locations,replicationrules', '-n', 'manifest-fuzz', '-o', 'name')).stdout, '');
  });
});
