// One change record, whatever observed it (an S3 event notification or a listing scan): the populator's
// only input.

export type ChangeKind =
  /** A new object version (PUT, copy, completed multipart upload). */
  | 'object'
  /** A DELETE without version id on a versioned bucket. */
  | 'deleteMarker'
  /** A version permanently deleted (DELETE with a version id, or any DELETE on an unversioned bucket). */
  | 'versionDelete'
  /** Tags of an existing version set or removed. */
  | 'tags';

export interface ChangeRecord {
  location: string;
  bucket: string;
  key: string;
  /**
   * 'null' for the null version of an unversioned or suspended bucket, as S3 names it; '' for a delete
   * marker whose event did not name it (Ceph RGW), until the populator finds it.
   */
  versionId: string;
  kind: ChangeKind;
  size?: number;
  etag?: string;
  /** When the source wrote it (ISO 8601). */
  eventTime: string;
  /**
   * The version's Last-Modified to the millisecond, as a listing gives it (ms since the epoch): from a
   * listing, or from a MinIO notification's sequencer. It orders the versions of a key.
   */
  modTime?: number;
  /**
   * A replica written by this engine, as its event tells it: the buckets (`location/bucket`) its object
   * went through, the first written first; [] when it does not say which (it is then never queued).
   * Undefined for an object the event does not mark (a user's write, or a scan, which reads no metadata).
   */
  replicaPath?: string[];
  origin: 'notification' | 'scan';
}

/** User metadata that marks a replica: the source version it copies, and the source it came from. */
export const REPLICA_VERSION_META = 'backbeat-source-version-id';
export const REPLICA_SOURCE_META = 'backbeat-source';
/**
 * On a replica: every bucket (`location/bucket`) its object went through, comma-separated, where it was
 * first written first. A replica is replicated on (a chain A → B → C) but never into a bucket of its path
 * (two-way setups, cycles), and not past MAX_HOPS buckets.
 */
export const REPLICA_PATH_META = 'backbeat-path';
export const MAX_HOPS = 8;

/**
 * The path of a replica from its user metadata (keys lower-case, without x-amz-meta-): undefined when it
 * is not a replica; [] when it is one that names no bucket. Replicas written before the path was kept
 * name their source alone.
 */
export function replicaPath(meta: Record<string, string | undefined>): string[] | undefined {
  if (meta[REPLICA_VERSION_META] === undefined) return undefined;
  const path = meta[REPLICA_PATH_META] ?? meta[REPLICA_SOURCE_META] ?? '';
  return path.split(',').filter((b) => b !== '');
}
/**
 * On a replica: its source version's Last-Modified (ms since the epoch). It orders the versions of one
 * key on the destination without the source's live history, which the GC of a transient source thins.
 */
export const REPLICA_TIME_META = 'backbeat-source-time';

/**
 * A change that cannot be matched against the rules (its tags cannot be read): the populator sets it
 * aside with the reason and goes on; the GC, which matches today's rules the same way, refuses.
 */
export class ChangeFailed extends Error {
  override name = 'ChangeFailed';
  /** The S3 error code, a bounded metric label. */
  readonly code: string;

  constructor(message: string, code: string) {
    super(message);
    this.code = code;
  }
}
