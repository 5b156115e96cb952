import assert from 'node:assert/strict';
import { Value } from '@sinclair/typebox/value';
import fc from 'fast-check';
import { ReplicationTask } from '../../lib/queue/messages.ts';
import type { ChangeRecord } from '../../lib/journal/change.ts';
import { MalformedEvent, parseNotification } from './notifications.ts';

// Fuzzing the journal parser: whatever a source server (or whoever can write to its journal topic)
// publishes, the parser answers at once with changes a task can carry, or with MalformedEvent and the
// reason (the populator sets the message aside then). Any other exception would stop the partition.

const SEED = Number(process.env['BACKBEAT_FUZZ_SEED'] ?? 20261204);
const RUNS = Number(process.env['BACKBEAT_FUZZ_RUNS'] ?? 3000);
/** Cases run per property, for the closing line, and how many of them carried changes. */
const counted = new Map<string, number>();
let accepted = 0;

const event = (fields: Record<string, unknown> = {}, object: Record<string, unknown> = {}): Record<string, unknown> => ({
  eventVersion: '2.0',
  eventSource: 'minio:s3',
  eventName: 's3:ObjectCreated:Put',
  eventTime: '2026-12-04T10:00:00.000Z',
  s3: { bucket: { name: 'photos' }, object: { key: 'a%2Fb+c.txt', size: 12, eTag: '"0123456789abcdef0123456789abcdef"', versionId: 'v1', ...object } },
  ...fields,
});

/** Parses one message: the changes, or the MalformedEvent reason; anything else fails the property. */
function parse(bytes: Buffer): ChangeRecord[] | string {
  const started = performance.now();
  try {
    return parseNotification('src', bytes);
  } catch (err) {
    if (!(err instanceof MalformedEvent)) throw new Error(`not a MalformedEvent: ${String(err)}`, { cause: err });
    assert.ok(err.message.length > 0 && err.message.length < 2_000, `a short reason: ${err.message.slice(0, 200)}`);
    return err.message;
  } finally {
    // No hang: even the 10 MB messages below parse in well under this.
    assert.ok(performance.now() - started < 5_000, `parsed in ${String(performance.now() - started)} ms`);
  }
}

/** Each change fits in a task exactly as the populator queues it (the processor checks that schema). */
function fitsTask(change: ChangeRecord): void {
  // Only a delete marker's version may be left unnamed (Ceph RGW's): the populator finds it before queueing.
  if (change.versionId === '') assert.equal(change.kind, 'deleteMarker');
  const task = {
    source: { location: change.location, bucket: change.bucket, key: change.key, versionId: change.versionId || 'found-by-the-populator' },
    kind: change.kind,
    ...(change.size !== undefined ? { size: change.size } : {}),
    ...(change.etag !== undefined ? { etag: change.etag } : {}),
    eventTime: change.eventTime,
    ...(change.modTime !== undefined ? { modTime: change.modTime } : {}),
    destinations: [],
    origin: change.origin,
  };
  assert.ok(Value.Check(ReplicationTask, task), `${JSON.stringify(task).slice(0, 300)}: ${[...Value.Errors(ReplicationTask, task)].map((e) => `${e.path} ${e.message}`).join('; ')}`);
}

function property(name: string, arbitrary: fc.Arbitrary<Buffer>, runs = RUNS): void {
  it(name, () => {
    let n = 0;
    fc.assert(
      fc.property(arbitrary, (bytes) => {
        n++;
        const result = parse(bytes);
        if (typeof result === 'string') return;
        result.forEach(fitsTask);
        if (result.length > 0) accepted++;
      }),
      { seed: SEED, numRuns: runs },
    );
    counted.set(name, n);
  });
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
/** A value of any JSON type, or nothing at all. */
const anything = fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 3 }), fc.string({ unit: 'grapheme', maxLength: 40 }));
/** Mostly the right type, so that many cases also get past the first check. */
const maybe = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 12, arbitrary: a }, { weight: 1, arbitrary: anything });

describe('journal parser, fuzzed (seeded; BACKBEAT_FUZZ_SEED and BACKBEAT_FUZZ_RUNS change it)', function () {
  this.timeout(300_000);

  after(() => {
    console.log(`      journal parser fuzz: ${[...counted].map(([k, v]) => `${String(v)} ${k.split(':')[0] ?? k}`).join(', ')}; ${String([...counted.values()].reduce((a, b) => a + b, 0))} cases (${String(accepted)} carried changes), seed ${String(SEED)}`);
  });

  property('random bytes: parsed or refused', fc.uint8Array({ maxLength: 4096 }).map((a) => Buffer.from(a)));
  property('random JSON: parsed or refused', fc.jsonValue({ maxDepth: 6 }).map(json));
  property(
    'S3 events with fields of the wrong type or missing: parsed or refused',
    fc
      .record({
        eventName: maybe(fc.constantFrom('s3:ObjectCreated:Put', 's3:ObjectCreated:CompleteMultipartUpload', 's3:ObjectRemoved:Delete', 's3:ObjectRemoved:DeleteMarkerCreated', 's3:ObjectCreated:PutTagging', 's3:ObjectAccessed:Get')),
        eventTime: maybe(fc.oneof({ weight: 5, arbitrary: fc.date({ noInvalidDate: true, min: new Date(0), max: new Date('9999-12-31') }).map((d) => d.toISOString()) }, { weight: 1, arbitrary: fc.constantFrom('Dec 4 2026', '2026-12-04', 'yesterday', '') })),
        bucket: maybe(fc.oneof({ weight: 6, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/) }, { weight: 1, arbitrary: fc.string({ maxLength: 70 }) })),
        key: maybe(fc.oneof({ weight: 6, arbitrary: fc.webPath() }, { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) }, { weight: 1, arbitrary: fc.constantFrom('%', '%E0%A4%A', 'a'.repeat(1025), '%2F'.repeat(400)) })),
        size: maybe(fc.oneof({ weight: 6, arbitrary: fc.nat() }, { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.constant(2 ** 60)) })),
        eTag: maybe(fc.oneof({ weight: 6, arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'.split('')), maxLength: 40 }) }, { weight: 1, arbitrary: fc.string({ maxLength: 2000 }) })),
        versionId: maybe(fc.oneof({ weight: 6, arbitrary: fc.uuid() }, { weight: 1, arbitrary: fc.oneof(fc.constant(''), fc.string({ maxLength: 1100 })) })),
        userMetadata: maybe(fc.dictionary(fc.string({ maxLength: 30 }), fc.string({ maxLength: 10 }))),
        sequencer: maybe(fc.oneof({ weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((n) => n.toString(16).toUpperCase()) }, { weight: 1, arbitrary: fc.string({ maxLength: 30 }) })),
        eventSource: maybe(fc.constantFrom('minio:s3', 'aws:s3', 'ceph:s3')),
        records: fc.integer({ min: 1, max: 3 }),
        nulls: fc.oneof({ weight: 5, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      })
      .map((f) => {
        const one = event({ eventName: f.eventName, eventTime: f.eventTime, eventSource: f.eventSource }, { key: f.key, size: f.size, eTag: f.eTag, versionId: f.versionId, userMetadata: f.userMetadata, sequencer: f.sequencer });
        (one['s3'] as { bucket: unknown }).bucket = { name: f.bucket };
        return json({ EventName: one['eventName'], Records: [...Array.from({ length: f.records }, () => one), ...(f.nulls ? [null, 7, 'x', []] : [])] });
      }),
  );
  property(
    'valid S3 events cut short: refused',
    fc.tuple(fc.integer({ min: 1, max: 3 }), fc.nat()).map(([n, cut]) => {
      const whole = json({ Records: Array.from({ length: n }, () => event()) });
      return whole.subarray(0, cut % whole.length);
    }),
    500,
  );

  it('10 MB messages (a huge key, many records, deep nesting, one long string): parsed or refused quickly', () => {
    const big = [
      json({ Records: [event({}, { key: 'k'.repeat(10 * 1024 * 1024) })] }),
      json({ Records: Array.from({ length: 30_000 }, () => event()) }),
      Buffer.from(`${'{"Records":['.repeat(1)}${'['.repeat(2_000_000)}${']'.repeat(2_000_000)}]}`),
      json({ Records: [], padding: 'x'.repeat(10 * 1024 * 1024) }),
    ];
    for (const bytes of big) {
      assert.ok(bytes.length > 2 * 1024 * 1024);
      const result = parse(bytes);
      if (typeof result !== 'string') result.forEach(fitsTask);
    }
    counted.set('10 MB', big.length);
  });

  it('reads what Ceph RGW sends: keys as they are, metadata as a list, a delete marker without its version', () => {
    const rgw = (eventName: string, versionId: string, metadata: { key: string; val: string }[]): Buffer =>
      json({ Records: [{ eventVersion: '2.2', eventSource: 'ceph:s3', awsRegion: '', eventTime: '2026-12-05T09:28:25.536735Z', eventName, s3: { bucket: { name: 'bkt1' }, object: { key: 'a b+c%2F', size: 1, eTag: '9dd4e461268c8034f5c8564e155c67a6', versionId, sequencer: '39D9136B6DA43E20', metadata, tags: [] } } }] });
    const put = parse(rgw('ObjectCreated:Put', 'nkev1qq', [{ key: 'x-amz-meta-m', val: '1' }]));
    assert.ok(typeof put !== 'string', put as string);
    assert.deepEqual(put.map((c) => [c.key, c.versionId, c.kind, c.replicaPath]), [['a b+c%2F', 'nkev1qq', 'object', undefined]]);
    const replica = parse(rgw('ObjectCreated:Put', 'v2', [{ key: 'x-amz-meta-backbeat-source-version-id', val: 'v0' }, { key: 'x-amz-meta-backbeat-path', val: 'minio/docs,weed/docs' }]));
    assert.ok(typeof replica !== 'string');
    assert.deepEqual(replica[0]?.replicaPath, ['minio/docs', 'weed/docs'], 'a replica this engine wrote is recognised, with the buckets it went through');
    const marker = parse(rgw('ObjectRemoved:DeleteMarkerCreated', '', []));
    assert.ok(typeof marker !== 'string');
    assert.deepEqual(marker.map((c) => [c.kind, c.versionId]), [['deleteMarker', '']]);
  });

  it('still reads what MinIO sends (the fuzz refuses nothing it should take)', () => {
    const changes = parse(json({ EventName: 's3:ObjectCreated:Put', Key: 'photos/a/b c.txt', Records: [event()] }));
    assert.ok(typeof changes !== 'string', changes as string);
    assert.deepEqual(changes, [{ location: 'src', bucket: 'photos', key: 'a/b c.txt', versionId: 'v1', kind: 'object', size: 12, etag: '0123456789abcdef0123456789abcdef', eventTime: '2026-12-04T10:00:00.000Z', origin: 'notification' }]);
  });

  it("takes a MinIO event's sequencer (its version's ModTime in ns) as the version's Last-Modified, and no other sequencer", () => {
    const modTime = (source: string, sequencer: string): number | undefined => {
      const changes = parse(json({ Records: [event({ eventSource: source }, { sequencer })] }));
      assert.ok(typeof changes !== 'string', changes as string);
      return changes[0]?.modTime;
    };
    // Written 3 ms before its event, 456 789 ns into that millisecond (as MinIO sent it in a run here).
    const ns = (BigInt(Date.parse('2026-12-04T10:00:00.000Z') - 3) * 1_000_000n + 456_789n).toString(16).toUpperCase();
    assert.equal(modTime('minio:s3', ns), Date.parse('2026-12-04T10:00:00.000Z') - 3);
    // AWS and Ceph sequencers only order events; a MinIO one after its event, or hours before, is no ModTime.
    assert.equal(modTime('aws:s3', ns), undefined);
    assert.equal(modTime('ceph:s3', '00000000000000001'), undefined);
    assert.equal(modTime('minio:s3', (BigInt(Date.parse('2026-12-04T10:00:01.000Z')) * 1_000_000n).toString(16)), undefined);
    assert.equal(modTime('minio:s3', (BigInt(Date.parse('2026-12-04T08:00:00.000Z')) * 1_000_000n).toString(16)), undefined);
    assert.equal(modTime('minio:s3', 'not hex'), undefined);
  });
});
