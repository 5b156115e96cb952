import type { S3Client } from '@aws-sdk/client-s3';
import { historyPages, keyHistory } from '../../lib/s3/history.ts';
import { headObject, listVersions } from '../../lib/s3/objects.ts';
import { deleteMarkerOf, isNotFound } from '../../lib/s3/errors.ts';
import { REPLICA_TIME_META, REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';

// Reads of the state of one key that the processor decides on.

export type Current =
  | { kind: 'absent' }
  | { kind: 'deleteMarker'; versionId: string }
  /** `sourceTime`: its source version's listed Last-Modified (ms), recorded on replicas written since it was. */
  | { kind: 'object'; versionId: string; replicaOf: string | undefined; sourceTime?: number };

/**
 * What a GET of `key` would see now, and which source version it replicates, if it is a replica: one
 * HEAD. A current delete marker answers 404 with `x-amz-delete-marker: true` (S3, MinIO); where the
 * server leaves that out (`markersOnHead` false: Ceph RGW 16), a 404 is told apart from a delete marker
 * by the key's newest listed entry.
 */
export async function currentState(client: S3Client, bucket: string, key: string, markersOnHead: boolean): Promise<Current> {
  try {
    const head = await headObject(client, { Bucket: bucket, Key: key });
    const time = Number(head.Metadata?.[REPLICA_TIME_META]);
    return { kind: 'object', versionId: head.VersionId ?? 'null', replicaOf: head.Metadata?.[REPLICA_VERSION_META], ...(Number.isFinite(time) && time > 0 ? { sourceTime: time } : {}) };
  } catch (err) {
    if (!isNotFound(err)) throw err;
    const marker = deleteMarkerOf(err);
    if (marker !== undefined) return { kind: 'deleteMarker', ...marker };
    if (markersOnHead) return { kind: 'absent' };
    for await (const [newest] of historyPages(client, bucket, key, 1)) {
      if (newest?.isDeleteMarker === true && newest.isLatest) return { kind: 'deleteMarker', versionId: newest.versionId };
      break;
    }
    return { kind: 'absent' };
  }
}

const utf8Order = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * What one listing page of `bucket` says of each of `keys` whose state it tells whole: `absent` (no
 * version, no delete marker) or a current delete marker. A key whose current version is an object is
 * left out (its replica marks need a HEAD), as is a key past the page. The page starts just before the
 * first key (at a proper prefix of it: S3 lists from after a marker, in UTF-8 byte order).
 */
export async function statesFromListing(client: S3Client, bucket: string, keys: string[]): Promise<Map<string, Current>> {
  const sorted = [...new Set(keys)].sort(utf8Order);
  const first = sorted[0];
  if (first === undefined) return new Map();
  const marker = Array.from(first).slice(0, -1).join('');
  // The batch's keys are spread among those of the other partitions, already copied perhaps: a page of a
  // few entries per key covers its range, where a page of a thousand made the server read a thousand
  // versions' metadata for a batch of twenty (a key past the page gets its HEAD).
  const page = await listVersions(client, { Bucket: bucket, MaxKeys: Math.min(1000, Math.max(64, sorted.length * 8)), ...(marker !== '' ? { KeyMarker: marker } : {}) });
  // A key the next page continues may have more entries there: only keys before it are told whole.
  const end = page.IsTruncated === true ? page.NextKeyMarker : undefined;
  const listed = new Map<string, Current | 'object'>();
  for (const v of page.Versions ?? []) if (v.Key !== undefined && v.IsLatest === true) listed.set(v.Key, 'object');
  for (const m of page.DeleteMarkers ?? []) if (m.Key !== undefined && m.IsLatest === true) listed.set(m.Key, { kind: 'deleteMarker', versionId: m.VersionId ?? 'null' });
  const named = new Set([...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].map((e) => e.Key));
  const states = new Map<string, Current>();
  for (const key of sorted) {
    if (end !== undefined && (end === '' || utf8Order(key, end) >= 0)) break;
    const state = listed.get(key);
    if (state === undefined && !named.has(key)) states.set(key, { kind: 'absent' });
    else if (state !== undefined && state !== 'object') states.set(key, state);
  }
  return states;
}

/** The versions of `key` that replicate source version `sourceVersionId`, newest first (one, unless a copy was repeated). */
export async function replicaVersions(client: S3Client, bucket: string, key: string, sourceVersionId: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await keyHistory(client, bucket, key)) {
    if (!entry.isDeleteMarker && (await replicaOf(client, bucket, key, entry.versionId)) === sourceVersionId) found.push(entry.versionId);
  }
  return found;
}

/** The user metadata of a version; undefined when it is gone. */
async function replicaMeta(client: S3Client, bucket: string, key: string, versionId: string): Promise<Record<string, string> | undefined> {
  try {
    return (await headObject(client, { Bucket: bucket, Key: key, VersionId: versionId })).Metadata ?? {};
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The source version a replica version copies; undefined when it is not a replica (or is gone). */
export async function replicaOf(client: S3Client, bucket: string, key: string, versionId: string): Promise<string | undefined> {
  return (await replicaMeta(client, bucket, key, versionId))?.[REPLICA_VERSION_META];
}
