import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BucketReplicationConfig } from './bucket-config.ts';
import type { Location, Secret } from './schema.ts';
import { ConfigError } from './validate.ts';

// What the operator publishes for the workers. A worker sees one folder (a projected volume of several
// ConfigMaps on Kubernetes):
//   locations.json                  every Location (name and spec: no secret, only the Secret's name)
//   bucket_<location>_<bucket>.json the compiled config of one source bucket ('_' is in neither name)
// and the credentials, as each Location's Secret mounted under <credentials dir>/<secret name>/<key>.
// The operator spreads the bucket files over several ConfigMaps (operator/shards.ts); every file name is
// unique, so the folder is the same whichever ConfigMap a file came from.

export interface PublishedConfig {
  locations: Map<string, Location>;
  /** Keyed `location/bucket`, as compileBucketConfigs returns them. */
  buckets: Map<string, BucketReplicationConfig>;
}

export const LOCATIONS_FILE = 'locations.json';
const BUCKET_FILE = /^bucket_.+\.json$/;

export const bucketFile = (c: BucketReplicationConfig): string => `bucket_${c.SourceLocation}_${c.SourceBucket}.json`;
export const bucketText = (c: BucketReplicationConfig): string => `${JSON.stringify(c, null, 2)}\n`;

/** The locations.json of these Locations; equal inputs give equal text. */
export function locationsText(locations: Location[]): string {
  const sorted = [...locations].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  return `${JSON.stringify(sorted.map((l) => ({ apiVersion: l.apiVersion, kind: l.kind, metadata: { name: l.metadata.name }, spec: l.spec })), null, 2)}\n`;
}

/** Every file in one folder, as a worker sees them once all its ConfigMaps are mounted. */
export function publishConfig(locations: Location[], buckets: Iterable<BucketReplicationConfig>): Record<string, string> {
  const data: Record<string, string> = { [LOCATIONS_FILE]: locationsText(locations) };
  for (const c of buckets) data[bucketFile(c)] = bucketText(c);
  return data;
}

/**
 * The bucket configs among published files (a folder's, or a ConfigMap's data), keyed `location/bucket`.
 * A file that does not parse is reported through `unreadable` and left out, so that the caller decides.
 */
export function bucketsOf(files: Iterable<[string, string]>, unreadable: (file: string, err: Error) => void): Map<string, BucketReplicationConfig> {
  const buckets = new Map<string, BucketReplicationConfig>();
  // Sorted, as compileBucketConfigs sorts, so every reader sees the same order.
  for (const [file, text] of [...files].filter(([f]) => BUCKET_FILE.test(f)).sort(([a], [b]) => a.localeCompare(b))) {
    try {
      const c = JSON.parse(text) as BucketReplicationConfig;
      buckets.set(c.Source, c);
    } catch (err) {
      unreadable(file, err as Error);
    }
  }
  return buckets;
}

function unreadable(dir: string, file: string, err: Error): ConfigError {
  return new ConfigError([{ resource: `${dir}/${file}`, path: '', message: `unreadable published config: ${err.message}` }]);
}

function readText(dir: string, file: string): string {
  try {
    return readFileSync(join(dir, file), 'utf8');
  } catch (err) {
    throw unreadable(dir, file, err as Error);
  }
}

export function readPublishedConfig(dir: string): PublishedConfig {
  if (!existsSync(join(dir, LOCATIONS_FILE))) throw new ConfigError([{ resource: dir, path: '', message: `no ${LOCATIONS_FILE}: is the operator's ConfigMap mounted here?` }]);
  let locations: Map<string, Location>;
  try {
    locations = new Map((JSON.parse(readText(dir, LOCATIONS_FILE)) as Location[]).map((l) => [l.metadata.name, l]));
  } catch (err) {
    throw err instanceof ConfigError ? err : unreadable(dir, LOCATIONS_FILE, err as Error);
  }
  const files = readdirSync(dir).filter((f) => BUCKET_FILE.test(f));
  const buckets = bucketsOf(
    files.map((f): [string, string] => [f, readText(dir, f)]),
    (file, err) => {
      throw unreadable(dir, file, err);
    },
  );
  return { locations, buckets };
}

/**
 * Secrets mounted as folders (`<dir>/<secret name>/<key>`), in the shape resolveCredentials reads.
 * Kubernetes' own entries of a Secret volume (`..data`, timestamped folders) start with dots.
 */
export function secretsFromDir(dir: string): Map<string, Secret> {
  const out = new Map<string, Secret>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).filter((n) => !n.startsWith('.'))) {
    const stringData: Record<string, string> = {};
    for (const key of readdirSync(join(dir, name)).filter((k) => !k.startsWith('.'))) stringData[key] = readFileSync(join(dir, name, key), 'utf8');
    out.set(name, { apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData });
  }
  return out;
}
