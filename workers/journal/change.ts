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
  /** A replica written by this engine (loop prevention in two-way setups). */
  isReplica: boolean;
  origin: 'notification' | 'scan';
}

/** User metadata that marks a replica: the source version it copies, and the source it came from. */
export const REPLICA_VERSION_META = 'backbeat-source-version-id';
export const REPLICA_SOURCE_META = 'backbeat-source';
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
