import type { S3Client } from '@aws-sdk/client-s3';
import { listVersions } from './objects.ts';

// The versions and delete markers of one key, as a listing tells them: what orders a key's changes.

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
export async function* historyPages(client: S3Client, bucket: string, key: string, pageSize = 1000, firstPageSize = pageSize): AsyncGenerator<VersionEntry[]> {
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const page = await listVersions(client, {
      Bucket: bucket,
      Prefix: key,
      MaxKeys: keyMarker === undefined ? firstPageSize : pageSize,
      ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
      ...(versionIdMarker !== undefined ? { VersionIdMarker: versionIdMarker } : {}),
    });
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
