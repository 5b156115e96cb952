import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BucketReplicationConfig } from './bucket-config.ts';
import type { Location, Secret } from './schema.ts';
import { ConfigError } from './validate.ts';

// What the operator publishes for the workers, as the data of one ConfigMap mounted as a folder:
//   locations.json                  every Location (name and spec: no secret, only the Secret's name)
//   bucket_<location>_<bucket>.json the compiled config of one source bucket ('_' is in neither name)
// and the credentials, as each Location's Secret mounted under <credentials dir>/<secret name>/<key>.

export interface PublishedConfig {
  locations: Map<string, Location>;
  /** Keyed `location/bucket`, as compileBucketConfigs returns them. */
  buckets: Map<string, BucketReplicationConfig>;
}

const LOCATIONS = 'locations.json';
const bucketFile = (c: BucketReplicationConfig): string => `bucket_${c.SourceLocation}_${c.SourceBucket}.json`;

/** ConfigMap data for these locations and bucket configs; equal inputs give equal data. */
export function publishConfig(locations: Location[], buckets: Iterable<BucketReplicationConfig>): Record<string, string> {
  const data: Record<string, string> = {};
  const sorted = [...locations].sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  data[LOCATIONS] = `${JSON.stringify(sorted.map((l) => ({ apiVersion: l.apiVersion, kind: l.kind, metadata: { name: l.metadata.name }, spec: l.spec })), null, 2)}\n`;
  for (const c of buckets) data[bucketFile(c)] = `${JSON.stringify(c, null, 2)}\n`;
  return data;
}

function readJson(dir: string, file: string): unknown {
  try {
    return JSON.parse(readFileSync(join(dir, file), 'utf8'));
  } catch (err) {
    throw new ConfigError([{ resource: `${dir}/${file}`, path: '', message: `unreadable published config: ${(err as Error).message}` }]);
  }
}

export function readPublishedConfig(dir: string): PublishedConfig {
  if (!existsSync(join(dir, LOCATIONS))) throw new ConfigError([{ resource: dir, path: '', message: `no ${LOCATIONS}: is the operator's ConfigMap mounted here?` }]);
  const locations = new Map((readJson(dir, LOCATIONS) as Location[]).map((l) => [l.metadata.name, l]));
  const buckets = new Map<string, BucketReplicationConfig>();
  // Sorted, as compileBucketConfigs sorts, so every worker sees the same order.
  for (const file of readdirSync(dir).filter((f) => /^bucket_.+\.json$/.test(f)).sort()) {
    const c = readJson(dir, file) as BucketReplicationConfig;
    buckets.set(c.Source, c);
  }
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
