// The user metadata this engine writes on every replica it makes (x-amz-meta-…, documented in
// docs/design.md): what it copies, where it came from, and the path it went through.

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
