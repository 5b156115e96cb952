import assert from 'node:assert/strict';
import type { StatusEvent, TaskDestination } from '../../lib/queue/messages.ts';
import { fold, goneAt, type ObjectStatus } from './fold.ts';

const object = { location: 'a', bucket: 'b', key: 'k', versionId: 'v1' };
const target = (id: string): TaskDestination => ({ id, location: id.split('/')[0] ?? '', bucket: id.split('/')[1] ?? '', rule: 'r' });
const queued = (ids: string[], kind: 'object' | 'tags' | 'versionDelete' = 'object'): StatusEvent => ({
  type: 'queued',
  object,
  kind,
  eventTime: '2026-01-01T00:00:00Z',
  destinations: ids,
  targets: ids.map(target),
  at: new Date().toISOString(),
});
const result = (destination: string, state: 'COMPLETED' | 'FAILED' | 'SKIPPED', reason?: string, kind?: 'object' | 'tags' | 'versionDelete'): StatusEvent => ({
  type: 'result',
  object,
  ...(kind !== undefined ? { kind } : {}),
  destination,
  state,
  attempts: 1,
  bytes: state === 'COMPLETED' ? 10 : 0,
  ...(reason !== undefined ? { reason } : {}),
  at: new Date().toISOString(),
});
const run = (...events: StatusEvent[]): ObjectStatus | undefined => events.reduce<ObjectStatus | undefined>((s, e) => fold(s, e), undefined);

describe('status folding', () => {
  it('keeps a failed tag change of a COMPLETED version as a follow-up, until a retry succeeds', () => {
    const done = run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'), result('y/2', 'COMPLETED'));
    // A tag change that succeeds leaves nothing behind.
    assert.equal(fold(fold(done, queued(['x/1'], 'tags')), result('x/1', 'COMPLETED', undefined, 'tags')), done);
    const failed = fold(fold(done, queued(['x/1'], 'tags')), result('x/1', 'FAILED', 'AccessDenied (HTTP 403)', 'tags'));
    assert.equal(failed.state, 'COMPLETED');
    assert.deepEqual(Object.values(failed.followUps ?? {}).map((f) => [f.kind, f.destination, f.state, f.reason, f.attempts]), [['tags', 'x/1', 'FAILED', 'AccessDenied (HTTP 403)', 1]]);
    const again = fold(failed, result('x/1', 'FAILED', 'AccessDenied (HTTP 403)', 'tags'));
    assert.equal(again.followUps?.['tags x/1']?.attempts, 2);
    assert.equal(again.followUps['tags x/1'].firstFailureAt, failed.followUps?.['tags x/1']?.firstFailureAt);
    const retried = fold(again, queued(['x/1'], 'tags'));
    assert.equal(retried.followUps?.['tags x/1']?.state, 'PENDING');
    const fixed = fold(retried, result('x/1', 'COMPLETED', undefined, 'tags'));
    assert.equal(fixed.followUps, undefined);
    assert.deepEqual(fixed.destinations, done?.destinations);
    // A result without a kind (written before kinds were recorded) is the version's own: final as before.
    assert.equal(fold(done, result('x/1', 'FAILED', 'late duplicate')), done);
  });

  it('keeps a follow-up of a destination already done while another is pending, and a new target of a change', () => {
    const partly = run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'));
    const failed = fold(partly, result('x/1', 'FAILED', 'AccessDenied (HTTP 403)', 'tags'));
    assert.equal(failed.state, 'PENDING');
    assert.equal(failed.destinations['x/1']?.state, 'COMPLETED');
    assert.equal(failed.followUps?.['tags x/1']?.state, 'FAILED');
    // New tags match a rule to z/3: its target is known, so a failure there can be retried.
    const done = fold(failed, result('y/2', 'COMPLETED'));
    assert.equal(done.state, 'COMPLETED');
    const widened = fold(done, queued(['z/3'], 'tags'));
    assert.deepEqual(widened.targets?.map((t) => t.id), ['x/1', 'y/2', 'z/3']);
  });

  it('is PENDING until every destination is done, then COMPLETED', () => {
    assert.equal(run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'))?.state, 'PENDING');
    assert.equal(run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'), result('y/2', 'SKIPPED', 'superseded'))?.state, 'COMPLETED');
  });

  it('keeps COMPLETED final, for the object and for each destination', () => {
    const done = run(queued(['x/1']), result('x/1', 'COMPLETED'));
    assert.equal(fold(done, result('x/1', 'FAILED', 'late duplicate')), done);
    assert.equal(fold(done, result('x/1', 'SKIPPED', 'redelivered')), done);
    const partly = run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'));
    const after = fold(partly, result('x/1', 'SKIPPED', 'redelivered'));
    assert.equal(after.destinations['x/1']?.state, 'COMPLETED');
    assert.equal(after.destinations['x/1'].bytes, 10);
  });

  it('records failures with first and last time, and a re-queue makes them PENDING again', () => {
    const failed = run(queued(['x/1']), result('x/1', 'FAILED', 'NoSuchBucket'), result('x/1', 'FAILED', 'NoSuchBucket'));
    assert.ok(failed);
    assert.equal(failed.state, 'FAILED');
    const d = failed.destinations['x/1'];
    assert.ok(d?.firstFailureAt !== undefined && d.lastFailureAt !== undefined && d.firstFailureAt <= d.lastFailureAt);
    assert.equal(d.attempts, 2);
    const retried = fold(failed, queued(['x/1']));
    assert.equal(retried.state, 'PENDING');
    assert.equal(retried.destinations['x/1']?.attempts, 2, 'attempts carry over');
    assert.equal(fold(retried, result('x/1', 'COMPLETED')).state, 'COMPLETED');
  });

  it('re-opens a COMPLETED version for a destination added since, for that destination alone', () => {
    const done = run(queued(['x/1']), result('x/1', 'COMPLETED'));
    assert.equal(fold(done, queued(['x/1'])), done, 'queued again for what it has: nothing changes');
    const reopened = fold(done, queued(['x/1', 'z/3']));
    assert.equal(reopened.state, 'PENDING');
    assert.deepEqual(Object.entries(reopened.destinations).map(([id, d]) => [id, d.state]), [['x/1', 'COMPLETED'], ['z/3', 'PENDING']]);
    assert.deepEqual(reopened.targets?.map((t) => t.id), ['x/1', 'z/3']);
    assert.equal(fold(reopened, result('x/1', 'FAILED', 'late duplicate')).destinations['x/1']?.state, 'COMPLETED', 'completed stays completed');
    assert.equal(fold(reopened, result('z/3', 'COMPLETED')).state, 'COMPLETED');
    assert.equal(fold(done, queued(['z/3'], 'tags')).state, 'COMPLETED', 'a later change to a new destination does not re-open the copy');
  });

  it('knows when a version is gone: collected, or deleted on the source and then on every destination', () => {
    const done = run(queued(['x/1', 'y/2']), result('x/1', 'COMPLETED'), result('y/2', 'COMPLETED'));
    assert.ok(done);
    assert.equal(goneAt(done), undefined);
    assert.equal(goneAt(fold(done, { type: 'gc', object, state: 'DELETED', at: 't9' })), 't9');
    const deletes = (id: string): StatusEvent => ({ ...result(id, 'COMPLETED', undefined, 'versionDelete'), at: `t-${id}` });
    const once = fold(fold(done, queued(['x/1', 'y/2'], 'versionDelete')), deletes('x/1'));
    assert.equal(goneAt(once), undefined, 'still on y/2');
    assert.equal(goneAt(fold(once, deletes('y/2'))), 't-y/2');
  });

  it('keeps the version its own kind when its tags change', () => {
    assert.equal(run(queued(['x/1']), queued(['x/1'], 'tags'))?.kind, 'object');
  });

  it('records the GC verdict after COMPLETED, and DELETED is final', () => {
    const done = run(queued(['x/1']), result('x/1', 'COMPLETED'));
    const refused = fold(done, { type: 'gc', object, state: 'REFUSED', reason: 'x/1: no replica', at: 't1' });
    assert.deepEqual(refused.gc, { state: 'REFUSED', reason: 'x/1: no replica', at: 't1', attempts: 1, firstAt: 't1' });
    assert.deepEqual(fold(refused, { type: 'gc', object, state: 'REFUSED', reason: 'again', at: 't1b' }).gc, { state: 'REFUSED', reason: 'again', at: 't1b', attempts: 2, firstAt: 't1' });
    const deleted = fold(refused, { type: 'gc', object, state: 'DELETED', at: 't2' });
    assert.equal(fold(deleted, { type: 'gc', object, state: 'REFUSED', reason: 'late', at: 't3' }).gc?.state, 'DELETED');
  });

  it('keeps the transient mark of a queued event, and a rescan from a source made transient since adds it to a COMPLETED version', () => {
    const marked: StatusEvent = { type: 'queued', object, kind: 'object', eventTime: '2026-01-01T00:00:00Z', destinations: ['x/1'], targets: [target('x/1')], transient: true, at: new Date().toISOString() };
    assert.equal(run(marked, result('x/1', 'COMPLETED'))?.transient, true);
    assert.equal(run(marked, queued(['x/1']))?.transient, true, 'a later unmarked queue does not take it away');
    const done = run(queued(['x/1']), result('x/1', 'COMPLETED'));
    assert.equal(done?.transient, undefined);
    const rescanned = fold(done, marked);
    assert.equal(rescanned.transient, true);
    assert.equal(rescanned.state, 'COMPLETED');
  });
});
