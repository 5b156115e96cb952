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
