import { HeadObjectCommand, ListObjectVersionsCommand, type S3Client } from '@aws-sdk/client-s3';
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
 * Every version and delete marker of exactly `key`, newest first. Listing by prefix returns `key` before
 * any longer key that starts with it, so the walk stops at the first other key.
 */
export async function keyHistory(client: S3Client, bucket: string, key: string, limit = 1000): Promise<VersionEntry[]> {
  const entries: VersionEntry[] = [];
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListObjectVersionsCommand({
        Bucket: bucket,
        Prefix: key,
        MaxKeys: Math.min(limit, 1000),
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(versionIdMarker !== undefined ? { VersionIdMarker: versionIdMarker } : {}),
      }),
    );
    const mine = [
      ...(page.Versions ?? []).filter((v) => v.Key === key).map((v) => ({ v, dm: false })),
      ...(page.DeleteMarkers ?? []).filter((m) => m.Key === key).map((m) => ({ v: m, dm: true })),
    ];
    for (const { v, dm } of mine) {
      entries.push({ versionId: v.VersionId ?? 'null', isDeleteMarker: dm, lastModified: v.LastModified?.getTime() ?? 0, isLatest: v.IsLatest === true });
    }
    const otherKeySeen = [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])].some((v) => v.Key !== key);
    if (page.IsTruncated !== true || otherKeySeen || entries.length >= limit) break;
    keyMarker = page.NextKeyMarker;
    versionIdMarker = page.NextVersionIdMarker;
  }
  // Versions and delete markers come in two lists: merge them, newest first. Times can tie (AWS gives
  // seconds): the latest entry goes first, and the rest keep the server's order.
  return entries.sort((a, b) => b.lastModified - a.lastModified || Number(b.isLatest) - Number(a.isLatest));
}

export type Current =
  | { kind: 'absent' }
  | { kind: 'deleteMarker'; versionId: string }
  /** `sourceTime`: its source version's Last-Modified, recorded on replicas written since it was. */
  | { kind: 'object'; versionId: string; replicaOf: string | undefined; sourceTime?: number };

/** What a GET of `key` would see now, and which source version it replicates, if it is a replica. */
export async function currentState(client: S3Client, bucket: string, key: string): Promise<Current> {
  const page = await client.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: key, MaxKeys: 1 }));
  const marker = page.DeleteMarkers?.[0];
  if (marker?.Key === key) return { kind: 'deleteMarker', versionId: marker.VersionId ?? 'null' };
  const version = page.Versions?.[0];
  if (version?.Key !== key) return { kind: 'absent' };
  const versionId = version.VersionId ?? 'null';
  const meta = await replicaMeta(client, bucket, key, versionId);
  const time = Number(meta?.[REPLICA_TIME_META]);
  return { kind: 'object', versionId, replicaOf: meta?.[REPLICA_VERSION_META], ...(Number.isFinite(time) && time > 0 ? { sourceTime: time } : {}) };
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
    return (await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key, VersionId: versionId }))).Metadata ?? {};
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The source version a replica version copies; undefined when it is not a replica (or is gone). */
export async function replicaOf(client: S3Client, bucket: string, key: string, versionId: string): Promise<string | undefined> {
  return (await replicaMeta(client, bucket, key, versionId))?.[REPLICA_VERSION_META];
}
