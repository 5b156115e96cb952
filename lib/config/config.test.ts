import assert from 'node:assert/strict';
import { dump } from 'js-yaml';
import { compileBucketConfigs, matchDestinations, needsTags } from './bucket-config.ts';
import { loadManifests, parseManifests, type Document } from './manifests.ts';
import { ConfigError, formatProblem } from './validate.ts';

const location = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'Location',
  metadata: { name },
  spec: { type: 's3', endpoint: 'http://127.0.0.1:9000', insecure: true, credentialsSecretRef: { name: `${name}-creds` }, journal: { scan: {} }, ...extra },
});

const rule = (name: string, spec: Record<string, unknown>): Record<string, unknown> => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name },
  spec: { source: { location: 'a', bucket: 'photos' }, destinations: [{ location: 'b', bucket: 'photos' }], ...spec },
});

const docs = (...items: Record<string, unknown>[]): Document[] => items.map((doc) => ({ file: 'm.yaml', doc }));

function problems(items: Document[]): string[] {
  try {
    parseManifests(items);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems.map(formatProblem);
  }
  assert.fail('expected the manifests to be refused');
}

describe('configuration model', () => {
  it('accepts valid manifests and fills the documented defaults', () => {
    const m = parseManifests(docs(location('a'), location('b'), rule('r1', {})));
    const a = m.locations.get('a');
    assert.ok(a);
    assert.equal(a.spec.region, 'us-east-1');
    assert.equal(a.spec.checksumMode, 'whenRequired');
    assert.equal(a.spec.transient, false);
    assert.equal(a.spec.journal?.scan?.intervalSeconds, 300);
    const r = m.rules.get('r1');
    assert.deepEqual(
      [r?.spec.priority, r?.spec.replicateDeleteMarkers, r?.spec.replicateVersionDeletes, r?.spec.replicateExistingObjects],
      [0, false, false, false],
    );
  });

  it('refuses bad fields with one line per problem naming the field path', () => {
    const got = problems(
      docs(
        location('a', { checksumMode: 'sometimes', endpoint: 'ftp://x' }),
        location('b', { maxConnections: 0, colour: 'red' }),
        rule('r1', { destinations: [{ location: 'b', bucket: 'No_Such' }], priority: 'high' }),
      ),
    );
    assert.deepEqual(got, [
      'm.yaml: Location/a: spec.endpoint: "ftp://x" does not match ^https?://[^\\s/?#]+(/[^\\s?#]*)?$',
      'm.yaml: Location/a: spec.checksumMode: must be one of "whenRequired", "whenSupported"',
      'm.yaml: Location/b: spec.colour: is not a known field',
      'm.yaml: Location/b: spec.maxConnections: must be at least 1',
      'm.yaml: ReplicationRule/r1: spec.priority: must be an integer',
      'm.yaml: ReplicationRule/r1: spec.destinations[0].bucket: "No_Such" does not match ^[a-z0-9][a-z0-9.-]*[a-z0-9]$',
    ]);
  });

  it('names missing required fields and unknown kinds', () => {
    const got = problems(
      docs(
        { apiVersion: 'backbeat.io/v1alpha1', kind: 'ReplicationRule', metadata: { name: 'r' }, spec: { source: { location: 'a' } } },
        { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } },
      ),
    );
    assert.deepEqual(got, [
      'm.yaml: ReplicationRule/r: spec.destinations: is required',
      'm.yaml: ReplicationRule/r: spec.source.bucket: is required',
      'm.yaml: ConfigMap/x: kind: must be one of Location, ReplicationRule, Secret (got "ConfigMap")',
    ]);
  });

  it('refuses unknown locations, duplicate destinations, a destination equal to its source, a source without journal, duplicate names', () => {
    const got = problems(
      docs(
        location('a', { journal: undefined }),
        location('b'),
        rule('r1', {
          destinations: [
            { location: 'b', bucket: 'photos' },
            { location: 'c', bucket: 'photos' },
            { location: 'b', bucket: 'photos' },
            { location: 'a', bucket: 'photos' },
          ],
        }),
        location('b'),
      ),
    );
    assert.deepEqual(got, [
      'm.yaml: Location/b: metadata.name: defined twice (also in m.yaml)',
      'm.yaml: ReplicationRule/r1: spec.source.location: Location "a" has no spec.journal, so its changes cannot be observed',
      'm.yaml: ReplicationRule/r1: spec.destinations[1].location: unknown Location "c"',
      'm.yaml: ReplicationRule/r1: spec.destinations[2]: destinations must be unique (location and bucket): duplicate of spec.destinations[0] (b/photos)',
      'm.yaml: ReplicationRule/r1: spec.destinations[3]: a destination cannot be the source bucket itself',
    ]);
  });

  it('refuses version-delete replication from a transient source, and a rule with paused (not a field: destinations are paused)', () => {
    const got = problems(docs(location('a', { transient: true }), location('b'), rule('r1', { replicateVersionDeletes: true }), rule('r2', { paused: true })));
    assert.deepEqual(got, [
      'm.yaml: ReplicationRule/r2: spec.paused: is not a known field',
      'm.yaml: ReplicationRule/r1: spec.replicateVersionDeletes: cannot be true: Location "a" is a transient source, whose versions the GC deletes once replicated',
    ]);
  });

  it('refuses credentials in an endpoint, whatever the scheme', () => {
    const got = problems(docs(location('a', { endpoint: 'https://key:secret@s3.example.com' }), location('b', { endpoint: 'http://key@127.0.0.1:9000/path' }), location('c', { endpoint: 'http://127.0.0.1:9000/a@b' })));
    assert.deepEqual(got, [
      'm.yaml: Location/a: spec.endpoint: must not carry credentials (user:password@host): give them in credentialsSecretRef',
      'm.yaml: Location/b: spec.endpoint: must not carry credentials (user:password@host): give them in credentialsSecretRef',
    ]);
  });

  it('refuses a webhook journal without its Kafka topic, and a KMS key without SSE-KMS, as the API server does', () => {
    const got = problems(docs(location('a', { journal: { scan: {}, webhook: { tokenSecretRef: { name: 'hook' } } } }), location('b'), rule('r1', { destinations: [{ location: 'b', bucket: 'photos', serverSideEncryption: 'AES256', kmsKeyId: 'k1' }] })));
    assert.deepEqual(got, [
      'm.yaml: Location/a: spec.journal.webhook: journal.webhook writes the events it receives to journal.kafka.topic: give journal.kafka too',
      'm.yaml: ReplicationRule/r1: spec.destinations[0].kmsKeyId: kmsKeyId is for SSE-KMS: set serverSideEncryption: aws:kms',
    ]);
  });

  it('refuses bucket names S3 refuses, a tag filter naming one key twice, and tags written as a map', () => {
    const got = problems(
      docs(
        location('a'),
        location('b'),
        rule('r1', { source: { location: 'a', bucket: '192.168.10.1' }, destinations: [{ location: 'b', bucket: 'my..bucket' }, { location: 'b', bucket: 'xn--abc' }] }),
        rule('r2', { filter: { tags: [{ key: 'env', value: 'a' }, { key: 'env', value: 'b' }] } }),
        rule('r3', { filter: { tags: { env: 'prod' } } }),
      ),
    );
    assert.deepEqual(got, [
      'm.yaml: ReplicationRule/r3: spec.filter.tags: must be a list, not a map: each item is {key, value}',
      'm.yaml: ReplicationRule/r1: spec.source.bucket: a bucket name must not be formatted as an IP address',
      'm.yaml: ReplicationRule/r1: spec.destinations[0].bucket: a bucket name must not hold two adjacent periods',
      'm.yaml: ReplicationRule/r1: spec.destinations[1].bucket: a bucket name must not start with xn-- or sthree-, nor end with -s3alias or --ol-s3 (reserved by S3)',
      'm.yaml: ReplicationRule/r2: spec.filter.tags: a tag key is named twice: an object has one value per key, so the filter could never match',
    ]);
  });

  it('takes an Azure Blob Storage account as a destination only, with container names Azure accepts', () => {
    const blob = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => {
      const l = location(name, { type: 'azure', azure: { accountName: 'acct1' } });
      delete (l['spec'] as Record<string, unknown>)['journal'];
      return { ...l, spec: { ...(l['spec'] as Record<string, unknown>), ...extra } };
    };
    const ok = parseManifests(docs(location('a'), blob('b'), rule('r1', {})));
    assert.equal(ok.locations.get('b')?.spec.type, 'azure');
    const got = problems(
      docs(
        location('a'),
        blob('b'),
        blob('c', { journal: { scan: {} } }),
        blob('d', { azure: null }),
        rule('r1', { destinations: [{ location: 'b', bucket: 'my.photos' }, { location: 'b', bucket: 'photos', storageClass: 'GLACIER' }] }),
        rule('r2', { source: { location: 'b', bucket: 'photos' }, destinations: [{ location: 'a', bucket: 'other' }] }),
      ),
    );
    assert.deepEqual(got, [
      'm.yaml: Location/c: spec: a type: azure Location is a replication destination only: it has no journal and is not transient',
      'm.yaml: Location/d: spec.azure: spec.azure (the account name) is given with type: azure, and only then',
      'm.yaml: ReplicationRule/r1: spec.destinations[0].bucket: "my.photos" is not an Azure container name (3–63 lowercase letters, digits and single hyphens; no dots)',
      'm.yaml: ReplicationRule/r1: spec.destinations[1].storageClass: a type: azure destination has no S3 storage classes: blobs take the account\'s default access tier',
      'm.yaml: ReplicationRule/r2: spec.source.location: Location "b" is type: azure, a destination only',
    ]);
  });

  it('refuses an http endpoint unless the Location accepts it in clear with insecure: true', () => {
    const got = problems(docs(location('a', { insecure: false }), location('b', { insecure: true }), location('c', { endpoint: 'https://s3.example.com', insecure: false })));
    assert.deepEqual(got, [
      'm.yaml: Location/a: spec.endpoint: is http://, so the access key id, request signatures and object data would travel in clear: use https://, or set insecure: true to accept that',
    ]);
  });

  it('reads a field left empty (null) as absent, and refuses a name with an empty label, as the API server does', () => {
    const m = parseManifests(docs(location('a'), location('b', { tls: null }), rule('r1', { filter: null, priority: null })));
    assert.equal(m.rules.get('r1')?.spec.filter, undefined);
    assert.equal(m.rules.get('r1')?.spec.priority, 0);
    assert.equal(m.locations.get('b')?.spec.tls, undefined);
    assert.deepEqual(problems(docs(location('a..b'))).map((p) => p.replace(/ does not match .*/, '')), ['m.yaml: Location/a..b: metadata.name: "a..b"', 'm.yaml: Location/a..b: spec.credentialsSecretRef.name: "a..b-creds"']);
  });

  it('validates every example folder beside the two sites', () => {
    const examples = new URL('../../examples/', import.meta.url).pathname;
    for (const dir of ['transient', 'scan-only', 'aws', 'azure']) {
      const m = loadManifests([`${examples}site-a.yaml`, `${examples}site-b.yaml`, `${examples}${dir}`]);
      assert.equal(m.rules.size, 1, dir);
    }
  });

  it('round-trips through YAML text as users write it', () => {
    const text = dump(location('a'));
    assert.match(text, /kind: Location/);
  });
});

describe('per-bucket replication config', () => {
  const m = parseManifests(
    docs(
      location('a'),
      location('b'),
      location('c'),
      rule('low', { priority: 1, destinations: [{ location: 'b', bucket: 'photos' }, { location: 'c', bucket: 'all' }] }),
      rule('high', {
        priority: 9,
        filter: { prefix: 'raw/', tags: [{ key: 'team', value: 'blue' }] },
        destinations: [{ location: 'b', bucket: 'photos', storageClass: 'REDUCED_REDUNDANCY', keyPrefix: 'from-a/' }],
        replicateDeleteMarkers: true,
      }),
      rule('other-bucket', { source: { location: 'a', bucket: 'docs' } }),
    ),
  );
  const configs = compileBucketConfigs(m);

  it('compiles every rule of a source bucket into one config, highest priority first', () => {
    assert.deepEqual([...configs.keys()], ['a/docs', 'a/photos']);
    const photos = configs.get('a/photos');
    assert.ok(photos);
    assert.deepEqual(photos.Rules.map((r) => [r.ID, r.Priority]), [['high', 9], ['low', 1]]);
    assert.deepEqual(photos.Rules[0]?.Filter, { Prefix: 'raw/', Tags: [{ Key: 'team', Value: 'blue' }] });
    assert.equal(configs.get('a/docs')?.Rules[0]?.Status, 'Enabled');
  });

  it('sends an object to each destination under the highest-priority rule that matches it', () => {
    const photos = configs.get('a/photos');
    assert.ok(photos);
    const tagged = matchDestinations(photos, { key: 'raw/x.jpg', tags: { team: 'blue' } });
    assert.deepEqual(
      tagged.map((d) => [d.Id, d.Rule, d.StorageClass, d.KeyPrefix, d.ReplicateDeleteMarkers]),
      [
        ['b/photos', 'high', 'REDUCED_REDUNDANCY', 'from-a/', true],
        ['c/all', 'low', undefined, undefined, false],
      ],
    );
    const untagged = matchDestinations(photos, { key: 'raw/x.jpg', tags: { team: 'red' } });
    assert.deepEqual(untagged.map((d) => [d.Id, d.Rule]), [['b/photos', 'low'], ['c/all', 'low']]);
    assert.equal(needsTags(photos, 'raw/x.jpg'), true);
    assert.equal(needsTags(photos, 'cooked/x.jpg'), false);
  });
});
