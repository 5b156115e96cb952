import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createLogger } from '../../lib/log/logger.ts';
import { type ObjectRef, versionKey } from '../../lib/queue/messages.ts';
import { fold, type ObjectStatus } from './fold.ts';
import { StatusStore } from './store.ts';

const quiet = createLogger({ component: 'test', stream: new PassThrough() });
const queued = (object: ObjectRef, eventTime: string): ObjectStatus | undefined =>
  fold(undefined, { type: 'queued', object, kind: 'object', eventTime, destinations: ['d/x'], targets: [{ id: 'd/x', location: 'd', bucket: 'x', rule: 'r' }], at: eventTime });

describe('status store (node:sqlite)', () => {
  it('lists the versions of one object only, newest first, even beside keys that extend its version keys', () => {
    const store = StatusStore.open(undefined, quiet);
    const versions: ObjectRef[] = [
      { location: 'a', bucket: 'b', key: 'k', versionId: 'v1' },
      { location: 'a', bucket: 'b', key: 'k', versionId: 'v2' },
      // Keys whose version keys fall in the range of k's: a key ending in the separator, a longer key.
      { location: 'a', bucket: 'b', key: 'k?versionId=v3', versionId: 'v4' },
      { location: 'a', bucket: 'b', key: 'k2', versionId: 'v5' },
      { location: 'a', bucket: 'b', key: 'j', versionId: 'v6' },
    ];
    store.apply(0, versions.map((o, i) => [versionKey(o), queued(o, `2026-01-01T00:00:0${String(i)}Z`) ?? null]), { next: '1' });
    assert.deepEqual(store.versionsOf('a', 'b', 'k', new Set([0])).map((s) => s.object.versionId), ['v2', 'v1']);
    assert.deepEqual(store.versionsOf('a', 'b', 'k?versionId=v3', new Set([0])).map((s) => s.object.versionId), ['v4']);
    assert.deepEqual(store.versionsOf('a', 'b', 'k', new Set([1])), [], 'only the partitions asked for');
    store.close();
  });
});
