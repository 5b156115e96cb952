import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileBucketConfigs, compileRule, type BucketReplicationConfig } from '../lib/config/bucket-config.ts';
import { locationsText, readPublishedConfig } from '../lib/config/published.ts';
import type { Location, ReplicationRule } from '../lib/config/schema.ts';
import { notReady, ready } from './conditions.ts';
import { PERMANENT, planPublication, publishedConditions } from './publish-plan.ts';
import { mountedLayouts, publishedBuckets, publishedRules, type PublishedRule } from './published-state.ts';
import { MAX_BYTES, planShards, shardCount, shardIndex, shardName, shardsOf, SPLIT_BYTES } from './shards.ts';

type Rule = ReplicationRule & { metadata: { name: string; generation?: number } };

const rule = (name: string, bucket: string, spec: Partial<ReplicationRule['spec']> = {}, generation = 1): Rule => ({
  apiVersion: 'backbeat.io/v1alpha1',
  kind: 'ReplicationRule',
  metadata: { name, generation },
  spec: { source: { location: 'a', bucket }, priority: 0, destinations: [{ location: 'b', bucket: `${bucket}-replica` }], replicateDeleteMarkers: false, replicateVersionDeletes: false, replicateExistingObjects: false, ...spec },
});
const configsOf = (...rules: Rule[]): BucketReplicationConfig[] => [...compileBucketConfigs({ rules: new Map(rules.map((r) => [r.metadata.name, r])) }).values()];
const many = (n: number, location = 'a'): BucketReplicationConfig[] =>
  configsOf(...Array.from({ length: n }, (_, i) => rule(`rule-${String(i).padStart(5, '0')}`, `bucket-${String(i).padStart(5, '0')}`))).map((c) => ({ ...c, Source: `${location}/${c.SourceBucket}`, SourceLocation: location }));
const published = (r: Rule): PublishedRule => ({ location: r.spec.source.location, bucket: r.spec.source.bucket, rule: compileRule(r) });

describe('Publication plan', () => {
  const down = notReady('LocationNotReady', 'Location "b" is not ready: b cannot be reached');

  it('publishes a rule whose preconditions hold, in its current form', () => {
    const r = rule('r', 'photos');
    const { rules, plan } = planPublication([r], new Map([['r', ready('Replicating', 'ok')]]), new Map());
    assert.deepEqual(rules, [published(r)]);
    assert.equal(plan.get('r'), 'current');
  });

  it('never publishes a rule that has not been Ready, whatever the reason', () => {
    for (const d of [down, notReady('BucketNotFound', 'x'), notReady('InvalidSpec', 'x'), undefined]) {
      const { rules, plan } = planPublication([rule('r', 'photos')], new Map(d === undefined ? [] : [['r', d]]), new Map());
      assert.deepEqual(rules, []);
      assert.equal(plan.get('r'), 'none');
    }
  });

  it('keeps a published rule at its published form through every failure of the world around it', () => {
    const old = rule('r', 'photos', { priority: 1 }, 1);
    const now = rule('r', 'photos', { priority: 5 }, 2);
    for (const reason of ['LocationNotReady', 'BucketUnavailable', 'BucketNotFound', 'VersioningDisabled', 'JournalNotWired']) {
      const { rules, plan } = planPublication([now], new Map([['r', notReady(reason, 'x')]]), new Map([['r', published(old)]]));
      assert.deepEqual(rules, [published(old)], reason);
      assert.equal(plan.get('r'), 'kept', reason);
    }
    // A check that threw leaves no decision: kept too.
    assert.deepEqual(planPublication([now], new Map(), new Map([['r', published(old)]])).rules, [published(old)]);
  });

  it('takes a published rule out only when the rule itself cannot be published as written', () => {
    const r = rule('r', 'photos');
    for (const reason of PERMANENT) {
      const { rules } = planPublication([r], new Map([['r', notReady(reason, 'x')]]), new Map([['r', published(r)]]));
      assert.deepEqual(rules, [], reason);
    }
    // Deleted: not among the live rules, so not published.
    assert.deepEqual(planPublication([], new Map(), new Map([['r', published(r)]])).rules, []);
    // A form published for another bucket (a rule deleted and created again under its name) is not its own.
    const elsewhere = { ...published(r), bucket: 'other' };
    assert.deepEqual(planPublication([r], new Map([['r', down]]), new Map([['r', elsewhere]])).rules, []);
  });

  it('tells in the conditions whether the workers have the rule, and which form', () => {
    const r = rule('r', 'photos', { priority: 5 }, 3);
    const ok = ready('Replicating', 'replicating');
    assert.deepEqual(publishedConditions(r, ok, published(r)).published, { type: 'Published', status: 'True', reason: 'Current', message: 'the workers read generation 3' });
    assert.equal(publishedConditions(r, ok, published(r)).ready, ok);
    // Written, but a Deployment that reads it still runs the pods of before: not current yet.
    assert.deepEqual(publishedConditions(r, ok, published(r), 'bb-status').published, { type: 'Published', status: 'True', reason: 'Rolling', message: 'generation 3 is written; Deployment bb-status, which reads it, could not be rolled onto it yet; retrying' });
    const kept = publishedConditions(r, down, published(r));
    assert.equal(kept.published.reason, 'Current');
    assert.match(kept.ready.message, /^Location "b" is not ready: .* \(still published: replication resumes once this is fixed\)$/);
    assert.equal(kept.ready.reason, 'LocationNotReady');
    const older = publishedConditions(r, down, published(rule('r', 'photos', { priority: 1 }, 2)));
    assert.deepEqual([older.published.status, older.published.reason], ['True', 'PreviousConfig']);
    assert.match(older.ready.message, /the config published before stays in effect/);
    assert.deepEqual([publishedConditions(r, down, undefined).published.reason, publishedConditions(r, ok, undefined).published.reason], ['NotPublished', 'PublishFailed']);
  });
});

describe('Shards', () => {
  it('place a bucket by a stable hash: doubling the count splits each shard in two', () => {
    for (const b of ['photos', 'logs', 'bucket-00017']) {
      const i = shardIndex(b, 8);
      assert.equal(shardIndex(b, 8), i, 'stable');
      assert.ok([i, i + 8].includes(shardIndex(b, 16)), `${b}: ${String(i)} of 8 → ${String(shardIndex(b, 16))} of 16`);
    }
    assert.equal(shardName('bb', 'site-a', 3, 8), 'bb-buckets-site-a-3-of-8');
    const long = shardName('bb', `${'x'.repeat(250)}.example`, 3, 8);
    assert.ok(long.length <= 253 && /-[0-9a-f]{16}$/.test(long), long);
  });

  it('grow by doubling so that every shard stays under the split size, and shrink only well below it', () => {
    const configs = many(5_000);
    const count = shardCount(configs, undefined);
    const shards = shardsOf('bb', 'a', configs, count);
    assert.ok(count >= 8 && (count & (count - 1)) === 0, `count ${String(count)}`);
    assert.ok(shards.every((s) => s.bytes <= SPLIT_BYTES && s.bytes < MAX_BYTES), `largest ${String(Math.max(...shards.map((s) => s.bytes)))}`);
    assert.equal(shards.reduce((n, s) => n + Object.keys(s.data).length, 0), 5_000, 'every bucket in exactly one shard');
    assert.equal(new Set(shards.flatMap((s) => Object.keys(s.data))).size, 5_000);
    // Stable where it stands: the same count again, and a few buckets less change nothing.
    assert.equal(shardCount(configs, count), count);
    assert.equal(shardCount(configs.slice(100), count), count);
    // Far fewer buckets: shrinks; one bucket: one shard.
    assert.ok(shardCount(configs.slice(0, 200), count) < count);
    assert.equal(shardCount(configs.slice(0, 1), undefined), 1);
    assert.equal(shardCount(configs.slice(0, 1), count), 1);
  });

  it('are planned per source location, non-empty only', () => {
    const shards = planShards('bb', [...many(3, 'a'), ...many(2, 'b')], new Map());
    assert.deepEqual(
      shards.map((s) => [s.name, s.location, Object.keys(s.data).length]),
      [
        ['bb-buckets-a-0-of-1', 'a', 3],
        ['bb-buckets-b-0-of-1', 'b', 2],
      ],
    );
  });

  it('are mounted as one whole layout: the new one once all of it is written, else the one before', () => {
    const configs = many(40);
    const old = shardsOf('bb', 'a', configs, 2);
    const next = shardsOf('bb', 'a', configs, 4);
    const names = (list: { name: string }[]): string[] => list.map((s) => s.name);
    assert.deepEqual(mountedLayouts(next, [...old, ...next], new Set(names(next))).get('a'), names(next));
    const partial = new Set(names(next).slice(1));
    assert.deepEqual(mountedLayouts(next, [...old, ...next.slice(1)], partial).get('a'), names(old), 'a resize half done keeps the old layout');
    // Same layout, one write failed: that shard keeps what it held and stays mounted.
    assert.deepEqual(mountedLayouts(old, old, new Set([old[0]?.name ?? ''])).get('a'), names(old));
    // A new shard that could not be created holds nothing published yet.
    assert.deepEqual(mountedLayouts(next, next.slice(1), partial).get('a'), names(next.slice(1)));
  });

  it('are read back as the workers read them: every bucket once, the larger layout first', () => {
    const configs = many(10);
    const old = shardsOf('bb', 'a', configs, 1);
    const changed = configs.map((c) => ({ ...c, Rules: c.Rules.map((r) => ({ ...r, Priority: 9 })) }));
    const next = shardsOf('bb', 'a', changed, 2);
    const buckets = publishedBuckets({ base: { data: { 'locations.json': '[]' } }, shards: [...old, ...next.slice(0, 1)] });
    assert.equal(buckets.size, 10);
    for (const [file] of Object.entries(next[0]?.data ?? {})) {
      const source = `a/${file.replace(/^bucket_a_|\.json$/g, '')}`;
      assert.equal(buckets.get(source)?.Rules[0]?.Priority, 9, source);
    }
    assert.deepEqual([...publishedRules(buckets.values()).keys()].sort(), configs.map((c) => c.Rules[0]?.ID).sort());
    // A worker's folder: locations.json and the files of its shards, read with the workers' own reader.
    const dir = mkdtempSync(join(tmpdir(), 'shards-'));
    try {
      const location = (name: string): Location => ({ apiVersion: 'backbeat.io/v1alpha1', kind: 'Location', metadata: { name }, spec: { type: 's3', region: 'us-east-1', credentialsSecretRef: { name: `${name}-creds` }, checksumMode: 'whenRequired', maxConnections: 64, listPageSize: 1000, transient: false } });
      writeFileSync(join(dir, 'locations.json'), locationsText([location('a'), location('b')]));
      for (const s of next) for (const [k, v] of Object.entries(s.data)) writeFileSync(join(dir, k), v);
      const read = readPublishedConfig(dir);
      assert.equal(read.buckets.size, 10);
      assert.deepEqual([...read.locations.keys()], ['a', 'b']);
    } finally {
      // Not left in the machine's temporary folder after the run.
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
