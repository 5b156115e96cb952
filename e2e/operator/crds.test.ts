import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dump, load } from 'js-yaml';
import { ConfigError } from '../../lib/config/validate.ts';
import { parseManifests } from '../../lib/config/manifests.ts';
import { ENDPOINT_PLAIN } from '../../lib/config/schema.ts';
import { requireBinary } from '../harness/binaries.ts';
import { sharedKube } from '../harness/env.ts';
import { runDir } from '../harness/run-dir.ts';
import { eventually } from '../harness/wait.ts';

const execute = promisify(execFile);
const ROOT = new URL('../../', import.meta.url).pathname;

const rule = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name },
  spec: { source: { location: 'site-a', bucket: 'photos' }, destinations: [{ location: 'site-b', bucket: 'photos-replica' }], ...spec },
});
const location = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'Location',
  metadata: { name },
  spec: { type: 's3', endpoint: 'http://127.0.0.1:9000', insecure: true, credentialsSecretRef: { name: 'creds' }, ...spec },
});

describe('CRDs on a real API server (kubectl apply)', function () {
  this.timeout(180_000);
  let kubectl: (...args: string[]) => Promise<string>;

  before(async () => {
    const { kubeconfig } = await sharedKube();
    kubectl = async (...args) => (await execute(requireBinary('kubectl'), ['--kubeconfig', kubeconfig, ...args])).stdout;
    await kubectl('apply', '-f', join(ROOT, 'crds'));
    await kubectl('wait', '--for=condition=Established', '--timeout=60s', 'crd/locations.backbeat.io', 'crd/replicationrules.backbeat.io');
    await kubectl('create', 'namespace', 'crd-test');
  });

  it('accepts the example manifests, fills defaults, and shows printer columns', async () => {
    await eventually(() => kubectl('apply', '-n', 'crd-test', '-f', join(ROOT, 'examples')), 30_000, 500);
    const stored = JSON.parse(await kubectl('get', '-n', 'crd-test', 'location', 'site-b', '-o', 'json')) as { spec: Record<string, unknown> };
    assert.equal(stored.spec['checksumMode'], 'whenRequired');
    assert.equal(stored.spec['transient'], false);
    // The columns come from the status the operator writes (none runs here): their names.
    const table = await kubectl('get', '-n', 'crd-test', 'replicationrules');
    assert.match(table, /NAME\s+READY\s+REASON\s+SOURCE\s+DESTINATIONS\s+PENDING\s+FAILED\s+LAG\s+AGE\n/);
    assert.match(await kubectl('get', '-n', 'crd-test', 'replicationrules', '-o', 'wide'), /NAME\s+READY\s+REASON\s+SOURCE\s+DESTINATIONS\s+PENDING\s+FAILED\s+LAG\s+AGE\s+REPLICATED\s+MESSAGE\n/);
    assert.match(await kubectl('get', '-n', 'crd-test', 'locations'), /NAME\s+READY\s+REASON\s+TYPE\s+ENDPOINT\s+TRANSIENT\s+AGE\n/);
    // The status is typed: kubectl explain describes it.
    assert.match(await kubectl('explain', 'replicationrule.status.conditions.reason'), /Why, in one CamelCase word/);
    assert.match(await kubectl('explain', 'location.status.capabilities.deleteMarkersOnHead'), /x-amz-delete-marker/);
  });

  it('accepts the examples for a transient source, a scan-only source, an AWS and an Azure destination', async () => {
    for (const dir of ['transient', 'scan-only', 'aws', 'azure']) await kubectl('apply', '-n', 'crd-test', '-f', join(ROOT, 'examples', dir));
    const rules = await kubectl('get', '-n', 'crd-test', 'replicationrules', '-o', 'name');
    for (const name of ['ingest-to-archive', 'legacy-reports', 'photos-to-aws', 'photos-to-blob']) assert.match(rules, new RegExp(`replicationrule\\.backbeat\\.io/${name}\\n`));
  });

  it('describes every field of both kinds, spec and status, in what kubectl explain reads', async () => {
    // kubectl explain reads the API server's OpenAPI v3 document: every property of ours must carry a description there.
    type Schema = { description?: string; properties?: Record<string, Schema>; items?: Schema; $ref?: string; allOf?: Schema[] };
    const doc = JSON.parse(await eventually(() => kubectl('get', '--raw', '/openapi/v3/apis/backbeat.io/v1alpha1'), 30_000, 500)) as { components: { schemas: Record<string, Schema> } };
    const undescribed: string[] = [];
    let fields = 0;
    const walk = (s: Schema | undefined, path: string): void => {
      for (const [name, p] of Object.entries(s?.properties ?? {})) {
        fields++;
        if ((p.description ?? '').trim() === '') undescribed.push(`${path}.${name}`);
        walk(p, `${path}.${name}`);
        walk(p.items, `${path}.${name}[]`);
      }
    };
    for (const kind of ['Location', 'ReplicationRule']) {
      const schema = doc.components.schemas[`io.backbeat.v1alpha1.${kind}`];
      assert.ok(schema !== undefined, kind);
      for (const part of ['spec', 'status']) walk(schema.properties?.[part], `${kind}.${part}`);
    }
    assert.ok(fields > 80, `${String(fields)} fields read`);
    assert.deepEqual(undescribed, [], 'fields without a description');
    assert.match(await kubectl('explain', 'replicationrule.spec.destinations.location'), /Name of the Location of the destination bucket/);
  });

  const refused: [string, Record<string, unknown>, RegExp][] = [
    ['no destination', rule('none', { destinations: [] }), /spec\.destinations: Invalid value: .*should have at least 1 items/],
    ['duplicate destinations', rule('dup', { destinations: [{ location: 'b', bucket: 'xyz' }, { location: 'b', bucket: 'xyz' }] }), /destinations must be unique \(location and bucket\)/],
    ['destination equal to source', rule('self', { destinations: [{ location: 'site-a', bucket: 'photos' }] }), /a destination cannot be the source bucket itself/],
    ['bad bucket name', rule('badbucket', { destinations: [{ location: 'b', bucket: 'Bad_Bucket' }] }), /spec\.destinations\[0\]\.bucket: Invalid value: "Bad_Bucket": spec\.destinations\[0\]\.bucket in body should match/],
    ['priority out of bounds', rule('prio', { priority: 5000 }), /spec\.priority: Invalid value: 5000: spec\.priority in body should be less than or equal to 1000/],
    ['missing source', { ...rule('nosource', {}), spec: { destinations: [{ location: 'b', bucket: 'xyz' }] } }, /spec\.source: Required value/],
    ['unknown field', rule('extra', { colour: 'red' }), /unknown field "spec\.colour"/],
    ['wrong type', rule('wrongtype', { replicateDeleteMarkers: 'yes' }), /spec\.replicateDeleteMarkers: Invalid value: "string": spec\.replicateDeleteMarkers in body must be of type boolean/],
    ['bad endpoint URL', location('badurl', { endpoint: 'ftp://x y' }), /spec\.endpoint: Invalid value: "ftp:\/\/x y": spec\.endpoint in body should match/],
    ['credentials in the endpoint', location('userinfo', { endpoint: 'http://key:secret@127.0.0.1:9000' }), /spec\.endpoint: Invalid value: "http:\/\/key:secret@127\.0\.0\.1:9000": must not carry credentials \(user:password@host\): give them in credentialsSecretRef/],
    ['an http endpoint not marked insecure', location('plain', { insecure: false }), /spec\.endpoint is http:\/\/, so the access key id, request signatures and object data would travel in clear: use https:\/\/, or set insecure: true to accept that/],
    ['unknown checksum mode', location('badmode', { checksumMode: 'always' }), /spec\.checksumMode: Unsupported value: "always": supported values: "whenRequired", "whenSupported"/],
    ['journal without a source of changes', location('nojournal', { journal: {} }), /journal needs kafka, scan, or both/],
    ['a webhook journal without its topic', location('hooknotopic', { journal: { scan: {}, webhook: { tokenSecretRef: { name: 'hook' } } } }), /journal\.webhook writes the events it receives to journal\.kafka\.topic: give journal\.kafka too/],
    ['a KMS key without SSE-KMS', rule('kmskey', { destinations: [{ location: 'b', bucket: 'xyz', serverSideEncryption: 'AES256', kmsKeyId: 'k1' }] }), /kmsKeyId is for SSE-KMS: set serverSideEncryption: aws:kms/],
    ['a name with an empty label', location('my..loc', {}), /metadata\.name: Invalid value: "my\.\.loc": a lowercase RFC 1123 subdomain/],
    ['a paused rule (not a field: destinations are paused)', rule('paused', { paused: true }), /unknown field "spec\.paused"/],
    ['a bucket name with two periods together', rule('dots', { destinations: [{ location: 'b', bucket: 'my..bucket' }] }), /spec\.destinations\[0\]\.bucket: Invalid value: "my\.\.bucket": a bucket name must not hold two adjacent periods/],
    ['a bucket name S3 reserves', rule('reserved', { destinations: [{ location: 'b', bucket: 'xn--photos' }] }), /spec\.destinations\[0\]\.bucket: Invalid value: "xn--photos": a bucket name must not start with xn-- or sthree-/],
    ['a bucket name formatted as an IP address', rule('ipname', { source: { location: 'a', bucket: '192.168.10.1' } }), /spec\.source\.bucket: Invalid value: "192\.168\.10\.1": a bucket name must not be formatted as an IP address/],
    ['a tag filter naming one key twice', rule('tagtwice', { filter: { tags: [{ key: 'env', value: 'a' }, { key: 'env', value: 'b' }] } }), /a tag key is named twice: an object has one value per key, so the filter could never match/],
    ['an azure Location without its account', location('noaccount', { type: 'azure', insecure: true }), /spec\.azure \(the account name\) is given with type: azure, and only then/],
    ['an azure Location as a source', location('azsource', { type: 'azure', azure: { accountName: 'acct1' }, journal: { scan: {} } }), /a type: azure Location is a replication destination only: it has no journal and is not transient/],
    ['missing credentials reference', { ...location('nocreds', {}), spec: { type: 's3' } }, /spec\.credentialsSecretRef: Required value/],
  ];
  /** What the API server said of each case of `refused`. */
  const said = new Map<string, string>();
  for (const [what, doc, message] of refused) {
    it(`refuses ${what} with a message a person understands`, async () => {
      const file = join(runDir(), `bad-${(doc['metadata'] as { name: string }).name}.yaml`);
      writeFileSync(file, dump(doc));
      await assert.rejects(kubectl('apply', '-n', 'crd-test', '-f', file), (err: Error & { stderr?: string }) => {
        assert.match(err.stderr ?? '', message);
        said.set(what, err.stderr ?? '');
        return true;
      });
    });
  }

  // Local mode checks each CEL rule in lib/config/semantics.ts. Each rule, by its message: the case of
  // `refused` that breaks it, and the text the API server's refusal and local validation's both hold
  // (the rule's message, but where local validation names the field itself).
  const TWINS: Record<string, { breaks: string; both?: string } | { noTwin: string }> = {
    'a bucket name must not hold two adjacent periods': { breaks: 'a bucket name with two periods together' },
    'a bucket name must not be formatted as an IP address': { breaks: 'a bucket name formatted as an IP address' },
    'a bucket name must not start with xn-- or sthree-, nor end with -s3alias or --ol-s3 (reserved by S3)': { breaks: 'a bucket name S3 reserves' },
    'must not carry credentials (user:password@host): give them in credentialsSecretRef': { breaks: 'credentials in the endpoint' },
    [`spec.endpoint ${ENDPOINT_PLAIN}`]: { breaks: 'an http endpoint not marked insecure', both: ENDPOINT_PLAIN },
    'journal needs kafka, scan, or both': { breaks: 'journal without a source of changes' },
    'journal.webhook writes the events it receives to journal.kafka.topic: give journal.kafka too': { breaks: 'a webhook journal without its topic' },
    'spec.azure (the account name) is given with type: azure, and only then': { breaks: 'an azure Location without its account' },
    'a type: azure Location is a replication destination only: it has no journal and is not transient': { breaks: 'an azure Location as a source' },
    'kmsKeyId is for SSE-KMS: set serverSideEncryption: aws:kms': { breaks: 'a KMS key without SSE-KMS' },
    'a tag key is named twice: an object has one value per key, so the filter could never match': { breaks: 'a tag filter naming one key twice' },
    'destinations must be unique (location and bucket)': { breaks: 'duplicate destinations' },
    'a destination cannot be the source bucket itself': { breaks: 'destination equal to source' },
    'source is immutable; create a new rule instead': { noTwin: 'a change of an existing rule: local mode reads each run\'s manifests afresh, with no earlier version to compare' },
  };

  it('pairs every CEL rule of the CRDs with its local twin: one manifest, refused by both with the same words', () => {
    const messages: string[] = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (typeof node === 'object' && node !== null) {
        for (const [k, v] of Object.entries(node)) {
          if (k === 'x-kubernetes-validations') messages.push(...(v as { message: string }[]).map((r) => r.message));
          walk(v);
        }
      }
    };
    for (const f of readdirSync(join(ROOT, 'crds'))) walk(load(readFileSync(join(ROOT, 'crds', f), 'utf8')));
    assert.deepEqual([...new Set(messages)].sort(), Object.keys(TWINS).sort(), 'every CEL rule, and only those, in TWINS');
    for (const [message, twin] of Object.entries(TWINS)) {
      if ('noTwin' in twin) continue;
      const found = refused.find(([what]) => what === twin.breaks);
      assert.ok(found !== undefined, twin.breaks);
      const both = twin.both ?? message;
      assert.ok(said.get(twin.breaks)?.includes(both), `the API server: ${both}\n${said.get(twin.breaks) ?? '(not run)'}`);
      let local = '';
      try {
        parseManifests([{ file: 'case.yaml', doc: found[1] }]);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        local = err.problems.map((p) => `${p.path}: ${p.message}`).join('\n');
      }
      assert.ok(local.includes(both), `local validation of "${twin.breaks}": ${both}\n${local}`);
    }
  });

  it('refuses a change of a rule\'s source (immutable)', async () => {
    const file = join(runDir(), 'immutable.yaml');
    writeFileSync(file, dump(rule('immutable', {})));
    await kubectl('apply', '-n', 'crd-test', '-f', file);
    writeFileSync(file, dump(rule('immutable', { source: { location: 'site-a', bucket: 'other' } })));
    await assert.rejects(kubectl('apply', '-n', 'crd-test', '-f', file), (err: Error & { stderr?: string }) => {
      assert.match(err.stderr ?? '', /source is immutable; create a new rule instead/);
      return true;
    });
  });
});
