import { createHash } from 'node:crypto';
import type { BucketReplicationConfig } from '../lib/config/bucket-config.ts';
import { bucketFile, bucketText } from '../lib/config/published.ts';

// The per-bucket configs spread over ConfigMaps ("shards"), so that none nears the API server's 1 MiB
// limit and one failed write touches only its own shard. Each source location's buckets go to `count`
// shards by a stable hash of the bucket name, so a bucket stays in its shard as others come and go.
// `count` is a power of two per location: doubled while a shard would pass SPLIT_BYTES, halved only
// when every shard would stay under a quarter of that (no flapping at the edge). A shard's name carries
// its count, so a resize writes a new set beside the old one and the workers switch over whole.

/** A shard grows past this: the location's shards double. */
export const SPLIT_BYTES = 512 * 1024;
/** A shard over this is not written: the API server refuses a ConfigMap over 1 MiB (keys and values). */
export const MAX_BYTES = 1024 * 1024 - 64 * 1024;
/** Past this many shards per location, one bucket config alone is too large: nothing more to split. */
const MAX_COUNT = 1024;
/** ConfigMap names are DNS subdomains. */
const MAX_NAME = 253;

export interface ShardId {
  name: string;
  location: string;
  index: number;
  count: number;
}

export interface Shard extends ShardId {
  data: Record<string, string>;
  bytes: number;
}

const hash = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The shard of a bucket among `count` (a power of two): doubling splits shard i into i and i + count. */
export function shardIndex(bucket: string, count: number): number {
  return hash(bucket).readUInt32BE(0) & (count - 1);
}

export function shardName(release: string, location: string, index: number, count: number): string {
  const full = `${release}-buckets-${location}-${String(index)}-of-${String(count)}`;
  return full.length <= MAX_NAME ? full : `${full.slice(0, MAX_NAME - 17)}-${hash(full).toString('hex').slice(0, 16)}`;
}

/** Bytes a ConfigMap's data counts against its limit. */
export const dataBytes = (data: Record<string, string>): number => Object.entries(data).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(v), 0);

/**
 * The shard count of one source location's configs: from the count it has now (undefined for a new
 * location), grown or shrunk as the module comment says.
 */
export function shardCount(configs: BucketReplicationConfig[], current: number | undefined): number {
  const sizes = configs.map((c) => ({ index: hash(c.SourceBucket).readUInt32BE(0), bytes: Buffer.byteLength(bucketFile(c)) + Buffer.byteLength(bucketText(c)) }));
  const largest = (count: number): number => {
    const totals = new Map<number, number>();
    for (const s of sizes) totals.set(s.index & (count - 1), (totals.get(s.index & (count - 1)) ?? 0) + s.bytes);
    return Math.max(0, ...totals.values());
  };
  let count = current !== undefined && current >= 1 && current <= MAX_COUNT && (current & (current - 1)) === 0 ? current : 1;
  while (count < MAX_COUNT && largest(count) > SPLIT_BYTES) count *= 2;
  while (count > 1 && largest(count / 2) < SPLIT_BYTES / 4) count /= 2;
  return count;
}

/** The non-empty shards of one source location's configs at `count`. */
export function shardsOf(release: string, location: string, configs: BucketReplicationConfig[], count: number): Shard[] {
  const byIndex = new Map<number, Record<string, string>>();
  for (const c of configs) {
    const index = shardIndex(c.SourceBucket, count);
    const data = byIndex.get(index) ?? {};
    data[bucketFile(c)] = bucketText(c);
    byIndex.set(index, data);
  }
  return [...byIndex.entries()]
    .sort(([a], [b]) => a - b)
    .map(([index, data]) => ({ name: shardName(release, location, index, count), location, index, count, data, bytes: dataBytes(data) }));
}

/**
 * Every shard of an installation: per source location, the count it has now (`current`) adjusted to
 * the configs' sizes.
 */
export function planShards(release: string, configs: Iterable<BucketReplicationConfig>, current: ReadonlyMap<string, number>): Shard[] {
  const bySource = new Map<string, BucketReplicationConfig[]>();
  for (const c of configs) bySource.set(c.SourceLocation, [...(bySource.get(c.SourceLocation) ?? []), c]);
  return [...bySource.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([location, list]) => shardsOf(release, location, list, shardCount(list, current.get(location))));
}
