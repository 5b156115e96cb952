import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { deleteMarkerOf, isNotFound, reasonOf } from './errors.ts';
import { headObject } from './objects.ts';

/**
 * Where this engine writes its probes in a destination bucket: each is deleted, every version of it, once
 * read. The journal ignores keys under it (a destination can be the source of another rule).
 */
export const PROBE_PREFIX = '.backbeat-probe/';

export const isProbeKey = (key: string): boolean => key.startsWith(PROBE_PREFIX);

export interface DestinationTraits {
  /**
   * A HEAD of a key whose current version is a delete marker says so (`x-amz-delete-marker: true` on
   * its 404), as S3 and MinIO do. Ceph RGW 16 answers a bare 404, the same as for a key never written:
   * there a 404 is told apart by listing the key.
   */
  markersOnHead: boolean;
}

export interface Probed {
  traits: DestinationTraits;
  /** Why a probe version could not be deleted (it is left under PROBE_PREFIX). */
  leftBehind?: string;
}

/**
 * What a destination bucket's server does where servers differ and a request cannot tell: learned once
 * by writing a zero-byte probe, deleting it (a delete marker) and reading it back, then deleting both
 * versions. Throws when the probe cannot be written or read.
 */
export async function probeDestination(client: S3Client, bucket: string): Promise<Probed> {
  const Key = `${PROBE_PREFIX}${randomUUID()}`;
  const versions = [(await client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Buffer.alloc(0) }))).VersionId];
  let markersOnHead = false;
  let failure: Error | undefined;
  try {
    versions.push((await client.send(new DeleteObjectCommand({ Bucket: bucket, Key }))).VersionId);
    await headObject(client, { Bucket: bucket, Key });
  } catch (err) {
    if (isNotFound(err)) markersOnHead = deleteMarkerOf(err) !== undefined;
    else failure = err as Error;
  }
  // Its own versions only, by id (in an unversioned bucket its DELETE already removed it).
  const left: string[] = [];
  for (const VersionId of versions) {
    if (VersionId === undefined || VersionId === 'null') continue;
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key, VersionId })).catch((err: unknown) => left.push(reasonOf(err)));
  }
  if (failure !== undefined) throw failure;
  return { traits: { markersOnHead }, ...(left.length > 0 ? { leftBehind: `${bucket}/${Key}: ${left.join('; ')}` } : {}) };
}

interface Memo<T> {
  stamp: string;
  answer: Promise<T | undefined>;
  /** The answer, once the probe gave one. */
  value?: T;
  /** When a failed probe may be tried again. */
  until: number;
}

/**
 * Probe answers kept by key: one stands while its `stamp` does (a Location's generation, say); a probe
 * that failed answers undefined and is tried again `retryMs` later, not at every call.
 */
export class ProbeMemo<T> {
  private readonly entries = new Map<string, Memo<T>>();
  private readonly retryMs: number;
  private readonly failed: (key: string, err: unknown) => void;

  constructor(retryMs: number, failed: (key: string, err: unknown) => void) {
    this.retryMs = retryMs;
    this.failed = failed;
  }

  get(key: string, probe: () => Promise<T>, stamp = ''): Promise<T | undefined> {
    const known = this.entries.get(key);
    if (known !== undefined && known.stamp === stamp && Date.now() < known.until) return known.answer;
    const entry: Memo<T> = { stamp, until: Number.POSITIVE_INFINITY, answer: Promise.resolve(undefined) };
    entry.answer = probe().then((value) => (entry.value = value), (err: unknown) => {
      entry.until = Date.now() + this.retryMs;
      this.failed(key, err);
      return undefined;
    });
    this.entries.set(key, entry);
    return entry.answer;
  }

  /** The answer if the probe (started by `get` if it was not) has given one; undefined meanwhile, without waiting. */
  peek(key: string, probe: () => Promise<T>, stamp = ''): T | undefined {
    void this.get(key, probe, stamp);
    const known = this.entries.get(key);
    return known?.stamp === stamp ? known.value : undefined;
  }

  /** Forgets the keys `keep` refuses (Locations that are gone). */
  retain(keep: (key: string) => boolean): void {
    for (const key of this.entries.keys()) if (!keep(key)) this.entries.delete(key);
  }
}
