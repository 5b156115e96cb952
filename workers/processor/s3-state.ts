import { ListObjectVersionsCommand, type S3Client } from '@aws-sdk/client-s3';
import { headObject } from '../../lib/s3/objects.ts';
import { isNotFound } from '../../lib/s3/errors.ts';
import { REPLICA_TIME_META, REPLICA_VERSION_META } from '../journal/change.ts';

// Reads of the state of one key that the processor decides on.

export interface VersionEntry {
  versionId: string;
  isDeleteMarker: boolean;
  lastModified: number;
  isLatest: boolean;
}

/**
 * The listing pages of exactly `key`'s versions and delete markers (unsorted within a page). Listing by
 * prefix returns `key` before any longer key that starts with it, so the walk stops at the first other key.
 */
async function* historyPages(client: S3Client, bucket: string, key: string, pageSize = 1000, firstPageSize = pageSize): AsyncGenerator<VersionEntry[]> {
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        Prefix: key,
        MaxKeys: keyMarker === undefined ? firstPageSize : pageSize,
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(versionIdMarker !== undefined ? { VersionIdMarker: versionIdMarker } : {}),
      }),
    );
    const entry = (v: { VersionId?: string | undefined; LastModified?: Date | undefined; IsLatest?: boolean | undefined }, isDeleteMarker: boolean): VersionEntry => ({
      versionId: v.VersionId ?? 'null',
      isDeleteMarker,
      lastModified: v.LastModified?.getTime() ?? 0,
      isLatest: v.IsLatest === true,
    });
    yield [
      ...(page.Versions ?? []).filter((v) => v.Key === key).map((v) => entry(v, false)),
      ...(page.DeleteMarkers ?? []).filter((m) => m.Key === key).map((m) => entry(m, true)),
    ];
    const otherKeySeen = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].some((v) => v.Key !== key);
    if (page.IsTruncated !== true || otherKeySeen) return;
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }
}

const newestFirst = (a: VersionEntry, b: VersionEntry): number => b.lastModified - a.lastModified || Number(b.isLatest) - Number(a.isLatest);

/** Every version and delete marker of exactly `key` (up to `limit`), newest first. */
export async function keyHistory(client: S3Client, bucket: string, key: string, limit = 1000): Promise<VersionEntry[]> {
  const entries: VersionEntry[] = [];
  for await (const page of historyPages(client, bucket, key, Math.min(limit, 1000))) {
    entries.push(...page);
    if (entries.length >= limit) break;
  }
  // Versions and delete markers come in two lists: merge them, newest first. Times can tie (AWS gives
  // seconds): the latest entry goes first, and the rest keep the server's order.
  return entries.sort(newestFirst);
}

/**
 * The history of `key` from its newest entry down to `versionId` (and the rest of that listing page),
 * newest first; `at` is that version's index, -1 when it is gone (then the whole history is walked).
 * Listed times are to the millisecond where the server keeps them (MinIO); a GET or HEAD gives seconds.
 */
export async function historyThrough(client: S3Client, bucket: string, key: string, versionId: string): Promise<{ history: VersionEntry[]; at: number }> {
  const history: VersionEntry[] = [];
  // A short first page: the version a task copies is most often at the top of its key's history.
  for await (const page of historyPages(client, bucket, key, 1000, 50)) {
    history.push(...page);
    if (page.some((e) => e.versionId === versionId)) break;
  }
  history.sort(newestFirst);
  return { history, at: history.findIndex((e) => e.versionId === versionId) };
}

export type Current =
  | { kind: 'absent' }
  | { kind: 'deleteMarker'; versionId: string }
  /** `sourceTime`: its source version's listed Last-Modified (ms), recorded on replicas written since it was. */
  | { kind: 'object'; versionId: string; replicaOf: string | undefined; sourceTime?: number };

/**
 * What a GET of `key` would see now, and which source version it replicates, if it is a replica: one
 * HEAD. A current delete marker answers 404 with `x-amz-delete-marker: true` (S3, MinIO), read from the
 * error's raw response.
 */
export async function currentState(client: S3Client, bucket: string, key: string): Promise<Current> {
  try {
    const head = await headObject(client, { Bucket: bucket, Key: key });
    const time = Number(head.Metadata?.[REPLICA_TIME_META]);
    return { kind: 'object', versionId: head.VersionId ?? 'null', replicaOf: head.Metadata?.[REPLICA_VERSION_META], ...(Number.isFinite(time) && time > 0 ? { sourceTime: time } : {}) };
  } catch (err) {
    if (!isNotFound(err)) throw err;
    const headers = (err as { $response?: { headers?: Record<string, string | undefined> } }).$response?.headers ?? {};
    return headers['x-amz-delete-marker'] === 'true' ? { kind: 'deleteMarker', versionId: headers['x-amz-version-id'] ?? 'null' } : { kind: 'absent' };
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
  const page = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, MaxKeys: 1000, ...(marker !== '' ? { KeyMarker: marker } : {}) }));
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
