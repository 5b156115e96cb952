import { unquote } from '../../lib/s3/etag.ts';
import type { S3Client } from '@aws-sdk/client-s3';
import { listVersions } from '../../lib/s3/objects.ts';
import type { ChangeRecord } from '../../lib/journal/change.ts';

const FIRST_PAGE = 100;

/**
 * A listing scan of a bucket's versions and delete markers, as change records. It serves existing-object
 * replication (backfill) and the periodic reconcile that repairs what a lossy notification journal
 * missed; the processors make a change already replicated a no-op, so rescanning is harmless.
 * Replicas cannot be told apart in a listing; the processor checks each source object's metadata.
 */
export async function* scanBucket(client: S3Client, location: string, bucket: string, { prefix, pageSize = 1000 }: { prefix?: string; pageSize?: number } = {}): AsyncGenerator<ChangeRecord[]> {
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  // A short first page: the processors start on it while the next, full, pages are listed.
  let maxKeys = Math.min(pageSize, FIRST_PAGE);
  do {
    const page = await listVersions(client, {
      Bucket: bucket,
      ...(prefix !== undefined ? { Prefix: prefix } : {}),
      MaxKeys: maxKeys,
      ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
      ...(versionIdMarker !== undefined ? { VersionIdMarker: versionIdMarker } : {}),
    });
    const records: ChangeRecord[] = [];
    // Reversed: the listing gives each key's versions newest first, and times can tie (same millisecond,
    // or AWS's whole seconds), where the stable sort below keeps this order.
    for (const v of (page.Versions ?? []).toReversed()) {
      if (v.Key === undefined) continue;
      records.push({
        location,
        bucket,
        key: v.Key,
        versionId: v.VersionId ?? 'null',
        kind: 'object',
        ...(v.Size !== undefined ? { size: v.Size } : {}),
        ...(v.ETag !== undefined ? { etag: unquote(v.ETag) } : {}),
        eventTime: (v.LastModified ?? new Date(0)).toISOString(),
        ...(v.LastModified !== undefined ? { modTime: v.LastModified.getTime() } : {}),
        origin: 'scan',
      });
    }
    for (const m of (page.DeleteMarkers ?? []).toReversed()) {
      if (m.Key === undefined) continue;
      records.push({
        location,
        bucket,
        key: m.Key,
        versionId: m.VersionId ?? 'null',
        kind: 'deleteMarker',
        eventTime: (m.LastModified ?? new Date(0)).toISOString(),
        ...(m.LastModified !== undefined ? { modTime: m.LastModified.getTime() } : {}),
        origin: 'scan',
      });
    }
    // Oldest first within a key, so replaying a key's history keeps its order.
    records.sort((a, b) => (a.key === b.key ? a.eventTime.localeCompare(b.eventTime) : a.key < b.key ? -1 : 1));
    if (records.length > 0) yield records;
    maxKeys = pageSize;
    keyMarker = page.IsTruncated === true ? page.NextKeyMarker : undefined;
    versionIdMarker = page.IsTruncated === true ? page.NextVersionIdMarker : undefined;
  } while (keyMarker !== undefined);
}
