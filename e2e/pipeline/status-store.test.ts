import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger } from '../../lib/log/logger.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import type { Queue, QueueProducer } from '../../lib/queue/queue.ts';
import { encode, installationTopics, objectKey, versionKey, type ObjectRef, queueNames, type QueueNames, type StatusEvent, type TaskDestination } from '../../lib/queue/messages.ts';
import { StatusProcessor } from '../../workers/status/status.ts';
import { TOTALS_KEY } from '../../workers/status/store.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import { follow } from '../../lib/queue/follow.ts';
import type { GcTask } from '../../lib/queue/messages.ts';
import { sharedKafka } from '../harness/env.ts';
import { eventually } from '../harness/wait.ts';

// The status store on a real Kafka broker: replicas of one group that overlap (as in a RollingUpdate),
// hand partitions over, restart with their local copy, lose it, and drop the records of collected versions.

const quiet = createLogger({ component: 'test', stream: new PassThrough() });
const PARTITIONS = 4;
const target = (id: string): TaskDestination => ({ id, location: id.split('/')[0] ?? '', bucket: id.split('/')[1] ?? '', rule: 'r' });
const DESTINATIONS = ['b/x', 'c/y'];

describe('status store: partitioned, persistent, handed over with its partitions (real Kafka)', function () {
  this.timeout(240_000);
  let queue: Queue;
  let names: QueueNames;
  let producer: QueueProducer;
  let dir: string;
  const running: StatusProcessor[] = [];

  before(async () => {
    queue = kafkaQueue({ brokers: (await sharedKafka()).brokers, clientId: 'status-store-test', logger: quiet });
    producer = await queue.producer();
    dir = mkdtempSync(join(tmpdir(), 'status-store-'));
  });
  beforeEach(async () => {
    names = queueNames(`st-${randomUUID().slice(0, 8)}`);
    const admin = await queue.admin();
    await admin.ensureTopics(installationTopics(names, PARTITIONS, []));
    await admin.close();
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.close()));
  });
  after(async () => {
    await producer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const objects = (n: number, prefix = 'k'): ObjectRef[] => Array.from({ length: n }, (_, i) => ({ location: 'a', bucket: 'src', key: `${prefix}-${String(i)}`, versionId: `v${String(i)}` }));
  const at = (): string => new Date().toISOString();
  const send = (events: StatusEvent[]): Promise<unknown> => producer.send(names.status, events.map((e) => ({ key: objectKey(e.object), value: encode(e) })));
  const queued = (os: ObjectRef[]): StatusEvent[] => os.map((object) => ({ type: 'queued', object, kind: 'object', eventTime: at(), destinations: DESTINATIONS, targets: DESTINATIONS.map(target), at: at() }));
  const results = (os: ObjectRef[], destination: string): StatusEvent[] => os.map((object) => ({ type: 'result', object, kind: 'object', destination, state: 'COMPLETED', attempts: 1, bytes: 10, at: at() }));

  async function replica(name: string, extra: Partial<ConstructorParameters<typeof StatusProcessor>[0]> = {}): Promise<StatusProcessor> {
    const s = new StatusProcessor({ queue, names, logger: quiet, storeFile: join(dir, `${names.statusGroup}-${name}.db`), advertiseUrl: `http://${name}`, ...extra });
    await s.start();
    running.push(s);
    return s;
  }
  async function stop(s: StatusProcessor): Promise<void> {
    running.splice(running.indexOf(s), 1);
    await s.close();
  }
  /** What every replica answers for `o`, from the one that owns its partition. */
  async function stateOf(replicas: StatusProcessor[], o: ObjectRef): Promise<string | undefined> {
    const partition = await replicas[0]?.partitionOf(o.location, o.bucket, o.key);
    const owner = replicas.find((r) => partition !== undefined && r.ownsPartition(partition));
    return owner?.lookup(o.location, o.bucket, o.key, o.versionId)[0]?.state;
  }
  const sumOf = (replicas: StatusProcessor[], state: 'COMPLETED' | 'PENDING'): number => replicas.reduce((n, r) => n + r.summary()[state], 0);

  it('folds every version to COMPLETED while a second replica joins mid-stream and the first one leaves (the RollingUpdate overlap)', async () => {
    const os = objects(300);
    const old = await replica('old');
    await eventually(() => assert.ok(old.ready()), 60_000, 100);
    await send(queued(os));
    await send(results(os, 'b/x'));
    await eventually(() => assert.equal(sumOf([old], 'PENDING'), 300), 60_000, 100);

    // The new pod joins while the old one still runs: partitions move to it, caught up from the changelog.
    const fresh = await replica('new');
    await send(results(os.slice(0, 150), 'c/y'));
    await eventually(() => assert.ok(old.ready() && fresh.ready() && old.summary().PENDING + fresh.summary().PENDING + sumOf([old, fresh], 'COMPLETED') === 300), 60_000, 100);
    // The old one leaves; the rest of the results arrive.
    await stop(old);
    await send(results(os.slice(150), 'c/y'));
    await eventually(() => assert.equal(fresh.summary().COMPLETED, 300), 60_000, 200);
    assert.equal(fresh.summary().PENDING, 0);
    for (const o of os.slice(0, 20)) assert.equal(await stateOf([fresh], o), 'COMPLETED');
    const figures = [...fresh.figures().values()].map((f) => [f.destination, f.replicated, f.pending]).sort();
    assert.deepEqual(figures, [['b/x', 300, 0], ['c/y', 300, 0]]);
  });

  it('three rolling replacements (new replica joins, then the old one leaves) during a stream of 2 000 versions: one GC task each, and the changelog alone rebuilds the same state', async () => {
    const os = objects(2_000, 'roll');
    // The GC's part, played here: each task's version reported DELETED, as the real GC does.
    const tasks = new Map<string, number>();
    const gc = await follow(queue, names.gc, (m) => {
      const t = JSON.parse(m.value?.toString() ?? '{}') as GcTask;
      tasks.set(t.object.key, (tasks.get(t.object.key) ?? 0) + 1);
      void send([{ type: 'gc', object: t.object, state: 'DELETED', at: at() }]);
    });
    // The first replica started before its source was known to be transient (a pod of an older config,
    // as in a rollout under way): the mark on each `queued` event is what tells it.
    const transient = { transientSources: new Set(['a']) };
    let current = await replica('roll-0');
    // Each version's three events go out in small bursts, interleaved with other versions', for about as long as the replicas take to roll.
    const streaming = (async () => {
      for (let i = 0; i < os.length; i += 50) {
        const chunk = os.slice(i, i + 50);
        await send(queued(chunk).map((e) => ({ ...e, transient: true })));
        await send(results(chunk, 'b/x'));
        await send(results(chunk, 'c/y'));
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    for (let round = 1; round <= 3; round++) {
      await new Promise((r) => setTimeout(r, 1_500));
      const next = await replica(`roll-${String(round)}`, transient);
      await eventually(() => assert.ok(next.ready()), 60_000, 100);
      await stop(current);
      current = next;
    }
    await streaming;
    await eventually(() => assert.equal(tasks.size, os.length, `GC tasks for ${String(tasks.size)} of ${String(os.length)} versions`), 120_000, 200);
    await eventually(() => assert.deepEqual(current.summary(), { PENDING: 0, COMPLETED: 2_000, FAILED: 0, SKIPPED: 0 }), 60_000, 200);
    await eventually(() => assert.equal(os.filter((o) => current.lookup(o.location, o.bucket, o.key, o.versionId)[0]?.gc?.state === 'DELETED').length, os.length), 60_000, 200);
    const repeated = [...tasks].filter(([, n]) => n > 1);
    await gc.close();
    // A replica with no local copy, alone: what it restores is what the changelog says.
    await stop(current);
    const rebuilt = await replica('roll-rebuilt', transient);
    await eventually(() => assert.ok(rebuilt.ready()), 60_000, 100);
    assert.deepEqual(rebuilt.summary(), { PENDING: 0, COMPLETED: 2_000, FAILED: 0, SKIPPED: 0 });
    const wrong = os.filter((o) => rebuilt.lookup(o.location, o.bucket, o.key, o.versionId)[0]?.gc?.state !== 'DELETED');
    assert.deepEqual(wrong.map((o) => o.key), [], 'every version restored as COMPLETED and collected');
    // A handover may repeat a GC task (the GC is idempotent); most are sent once.
    assert.ok(repeated.length < os.length / 10, `${String(repeated.length)} GC tasks repeated`);
  });

  it('answers for every key from one of three replicas, and agrees after scaling back to one', async () => {
    const os = objects(120, 'scale');
    const first = await replica('s1');
    await send(queued(os));
    const others = [await replica('s2'), await replica('s3')];
    const all = [first, ...others];
    await send(results(os, 'b/x'));
    await send(results(os, 'c/y'));
    await eventually(() => assert.equal(sumOf(all, 'COMPLETED'), 120), 90_000, 200);
    const owned = all.map((r) => Array.from({ length: PARTITIONS }, (_, p) => p).filter((p) => r.ownsPartition(p)));
    assert.deepEqual(owned.flat().sort(), [0, 1, 2, 3], `each partition has one owner: ${JSON.stringify(owned)}`);
    assert.ok(owned.filter((p) => p.length > 0).length >= 2, 'more than one replica owns partitions');
    for (const o of os) assert.equal(await stateOf(all, o), 'COMPLETED', `${o.key} on its owner`);
    // Each replica knows the others' URLs for forwarding.
    await eventually(() => assert.ok(all.every((r) => r.peers().length >= 1)), 30_000, 200);
    for (const r of others) await stop(r);
    await eventually(() => assert.equal(first.summary().COMPLETED, 120), 60_000, 200);
  });

  it('restarts from its intact local copy without re-reading the changelog, and rebuilds a damaged one', async () => {
    const os = objects(200, 'restart');
    let s = await replica('r');
    await send(queued(os));
    await send(results(os, 'b/x'));
    await send(results(os, 'c/y'));
    await eventually(() => assert.equal(s.summary().COMPLETED, 200), 60_000, 100);
    await stop(s);

    s = await replica('r');
    await eventually(() => assert.ok(s.ready()), 60_000, 100);
    assert.equal(s.restoredRecords, 0, 'the local copy was current: nothing to read');
    assert.equal(s.summary().COMPLETED, 200);
    await stop(s);

    // Records no replica wrote, on the changelog: read back like any message, set aside, never folded.
    const forged = os[7] ?? assert.fail();
    const partition = await s.partitionOf(forged.location, forged.bucket, forged.key);
    await producer.send(names.statusStore, [
      { key: versionKey(forged), value: encode({ object: forged, state: 'PENDING', destinations: 'all of them' }), partition },
      { key: TOTALS_KEY, value: encode({ figures: { x: { replicated: -1 } }, states: {} }), partition },
    ]);
    writeFileSync(join(dir, `${names.statusGroup}-r.db`), 'not a database at all, a damaged disk');
    rmSync(join(dir, `${names.statusGroup}-r.db-wal`), { force: true });
    s = await replica('r');
    await eventually(() => assert.ok(s.ready()), 60_000, 100);
    assert.ok(s.restoredRecords >= 202, `rebuilt from the changelog (${String(s.restoredRecords)} records)`);
    assert.equal(s.summary().COMPLETED, 200);
    assert.equal(s.lookup('a', 'src', 'restart-7', 'v7')[0]?.state, 'COMPLETED');
    const rejected: { topic: string; reason: string }[] = [];
    await readToEnd(queue, names.rejected, (m) => rejected.push(JSON.parse(m.value?.toString() ?? '{}') as (typeof rejected)[number]));
    assert.deepEqual(rejected.map((r) => r.topic), [names.statusStore, names.statusStore]);
    assert.match(rejected[0]?.reason ?? '', /kind: Expected required property/);
    assert.match(rejected[1]?.reason ?? '', /figures\/x\/source: Expected required property/);
  });

  it('sends a version superseded everywhere to the GC with the version that superseded it, whichever settles first', async () => {
    const s = await replica('sup', { transientSources: new Set(['a']) });
    const tasks: GcTask[] = [];
    const reader = await follow(queue, names.gc, (m) => tasks.push(JSON.parse(m.value?.toString() ?? '{}') as GcTask));
    const version = (key: string, versionId: string): ObjectRef => ({ location: 'a', bucket: 'src', key, versionId });
    const skipped = (os: ObjectRef[]): StatusEvent[] => os.flatMap((object) => DESTINATIONS.map((destination): StatusEvent => ({ type: 'result', object, kind: 'object', destination, state: 'SKIPPED', reason: 'superseded: newer source version v2 is already replicated', attempts: 1, bytes: 0, at: at() })));
    const queuedAt = (o: ObjectRef, eventTime: string): StatusEvent => ({ type: 'queued', object: o, kind: 'object', eventTime, destinations: DESTINATIONS, targets: DESTINATIONS.map(target), at: at() });
    // k1: the old version is skipped before the new one completes; k2: after it.
    const [k1v1, k1v2, k2v1, k2v2] = [version('k1', 'v1'), version('k1', 'v2'), version('k2', 'v1'), version('k2', 'v2')];
    await send([queuedAt(k1v1, '2026-01-01T00:00:01Z'), queuedAt(k1v2, '2026-01-01T00:00:02Z'), queuedAt(k2v1, '2026-01-01T00:00:01Z'), queuedAt(k2v2, '2026-01-01T00:00:02Z')]);
    await send([...skipped([k1v1]), ...results([k1v2, k2v2], 'b/x'), ...results([k1v2, k2v2], 'c/y')]);
    await send(skipped([k2v1]));
    await eventually(() => assert.equal(tasks.length, 4), 60_000, 200);
    const line = (t: GcTask): string => `${t.object.key}@${t.object.versionId}${t.supersededBy !== undefined ? ` after ${t.supersededBy.versionId}` : ''}`;
    assert.deepEqual(tasks.filter((t) => t.object.key === 'k1').map(line), ['k1@v1 after v2', 'k1@v2'], 'the superseded version first, checked against the one that replaced it');
    assert.deepEqual(tasks.filter((t) => t.object.key === 'k2').map(line).sort(), ['k2@v1 after v2', 'k2@v2']);
    await reader.close();
    assert.ok(s.ready());
  });

  it('drops the records of versions the GC collected, keeps them counted, and ignores late events for them', async () => {
    const os = objects(10, 'gone');
    const s = await replica('g', { collectedRetentionMs: 0, transientSources: new Set(['a']) });
    await send(queued(os));
    await send(results(os, 'b/x'));
    await send(results(os, 'c/y'));
    await eventually(() => assert.equal(s.summary().COMPLETED, 10), 60_000, 100);
    await send(os.map((object) => ({ type: 'gc', object, state: 'DELETED', at: at() })));
    // The sweep rides on the next batch of each partition: late duplicate results are those batches,
    // and change nothing.
    await eventually(async () => {
      await send(results(os, 'b/x'));
      assert.equal(os.filter((o) => s.lookup(o.location, o.bucket, o.key, o.versionId).length > 0).length, 0);
    }, 60_000, 500);
    assert.equal(s.summary().COMPLETED, 10, 'collected versions stay counted');
    assert.deepEqual([...s.figures().values()].map((f) => f.replicated), [10, 10]);
    // A new replica restores the same: no records, the same totals.
    await s.close();
    running.splice(running.indexOf(s), 1);
    const again = await replica('g2');
    await eventually(() => assert.ok(again.ready()), 60_000, 100);
    assert.equal(again.summary().COMPLETED, 10);
    assert.equal(again.lookup('a', 'src', 'gone-3', 'v3').length, 0);
  });
});
