import type { BucketReplicationConfig, CompiledRule } from '../lib/config/bucket-config.ts';
import { bucketsOf, LOCATIONS_FILE } from '../lib/config/published.ts';
import type { KubeObject, KubeRest } from '../lib/kube/rest.ts';
import type { Logger } from '../lib/log/logger.ts';
import { forEachLimit } from './pool.ts';
import { dataBytes, MAX_BYTES, planShards, type Shard, type ShardId } from './shards.ts';

// What the workers read lives in the API server only, and the operator reads it back at every pass: a
// new leader, or an operator restarted during an outage, knows which rules are published from there,
// not from its memory. The ConfigMaps:
//   <release>-config                          locations.json (it held the bucket files too before shards)
//   <release>-buckets-<location>-<i>-of-<n>   the bucket files of one shard of a source location

const PUBLISHED = 'backbeat.io/published';
const SOURCE_LOCATION = 'backbeat.io/source-location';
const SHARD = 'backbeat.io/shard';

type ConfigMapObject = KubeObject & { data?: Record<string, string> };

/** A ConfigMap's data as stored, and the version to replace it from. */
interface Stored {
  data: Record<string, string>;
  resourceVersion?: string | undefined;
}

export type StoredShard = ShardId & Stored;

export interface PublishedState {
  base: Stored | undefined;
  shards: StoredShard[];
}

/** A published rule in its compiled form, and the source bucket it was published for. */
export interface PublishedRule {
  location: string;
  bucket: string;
  rule: CompiledRule;
}

export interface PublishResult {
  /** Per source location, the shards its readers mount: always one whole layout. */
  mounted: Map<string, string[]>;
  /** The bucket configs in the mounted shards: what the workers read. */
  buckets: Map<string, BucketReplicationConfig>;
  /** Shards neither mounted nor wanted: to delete once no Deployment mounts them. */
  stale: string[];
  /** Shards that could not be written this pass, with why. */
  failures: string[];
}

export interface PublishedConfigMapsOptions {
  rest: KubeRest;
  namespace: string;
  /** The installation's name: prefixes every ConfigMap. */
  release: string;
  /** Labels every ConfigMap carries (managed-by, instance): the list selects on them. */
  labels: Record<string, string>;
  ownerReferences?: unknown[];
  concurrency: number;
  logger: Logger;
}

const sameData = (a: Record<string, string>, b: Record<string, string>): boolean => {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
};

/** Every published bucket config: a shard of a larger layout wins over a smaller one (a resize under way). */
export function publishedBuckets(state: PublishedState, logger?: Logger): Map<string, BucketReplicationConfig> {
  const out = new Map<string, BucketReplicationConfig>();
  const skip =
    (where: string) =>
    (file: string, err: Error): void => {
      logger?.warn('published config unreadable; ignored', { configMap: where, file, error: err.message });
    };
  for (const [k, v] of bucketsOf(Object.entries(state.base?.data ?? {}), skip('base'))) out.set(k, v);
  for (const s of [...state.shards].sort((a, b) => a.count - b.count)) for (const [k, v] of bucketsOf(Object.entries(s.data), skip(s.name))) out.set(k, v);
  return new Map([...out].sort(([a], [b]) => a.localeCompare(b)));
}

/** Published rules by name. */
export function publishedRules(buckets: Iterable<BucketReplicationConfig>): Map<string, PublishedRule> {
  const out = new Map<string, PublishedRule>();
  for (const c of buckets) for (const rule of c.Rules) if (!out.has(rule.ID)) out.set(rule.ID, { location: c.SourceLocation, bucket: c.SourceBucket, rule });
  return out;
}

export class PublishedConfigMaps {
  private readonly o: PublishedConfigMapsOptions;
  private readonly path: string;

  constructor(options: PublishedConfigMapsOptions) {
    this.o = options;
    this.path = `/api/v1/namespaces/${options.namespace}/configmaps`;
  }

  get baseName(): string {
    return `${this.o.release}-config`;
  }

  /** What is published now. Throws when it cannot be read: nothing may be decided without it. */
  async read(): Promise<PublishedState> {
    const selector = encodeURIComponent(Object.entries(this.o.labels).map(([k, v]) => `${k}=${v}`).join(','));
    const { items } = await this.o.rest.list<ConfigMapObject>(`${this.path}?labelSelector=${selector}`);
    const state: PublishedState = { base: undefined, shards: [] };
    for (const cm of items) {
      const { name, annotations, resourceVersion } = cm.metadata;
      if (name === this.baseName) {
        state.base = { data: cm.data ?? {}, resourceVersion };
        continue;
      }
      const location = annotations?.[SOURCE_LOCATION];
      const [index, count] = (annotations?.[SHARD] ?? '').split('/').map(Number);
      if (location === undefined || index === undefined || count === undefined || !Number.isInteger(index) || !Number.isInteger(count)) continue;
      state.shards.push({ name, location, index, count, data: cm.data ?? {}, resourceVersion });
    }
    state.shards.sort((a, b) => a.name.localeCompare(b.name));
    return state;
  }

  /**
   * Writes locations.json, then every shard of `configs`, each on its own: a shard that fails keeps what
   * it held. Throws only when locations.json cannot be written (then no shard is written either, as a
   * shard may name a Location the workers would not find).
   */
  async publish(locations: string, configs: Iterable<BucketReplicationConfig>, before: PublishedState): Promise<PublishResult> {
    // Bucket files in the base ConfigMap come from before shards: kept until every shard is written.
    const legacy = Object.fromEntries(Object.entries(before.base?.data ?? {}).filter(([k]) => k !== LOCATIONS_FILE));
    let base = await this.write(this.baseName, { [PUBLISHED]: 'locations' }, {}, { [LOCATIONS_FILE]: locations, ...legacy }, before.base);
    const counts = new Map<string, number>();
    for (const s of before.shards) counts.set(s.location, Math.max(counts.get(s.location) ?? 0, s.count));
    const desired = planShards(this.o.release, configs, counts);
    const stored = new Map(before.shards.map((s) => [s.name, s]));
    const written = new Set<string>();
    const failures: string[] = [];
    await forEachLimit(desired, this.o.concurrency, async (shard) => {
      try {
        const { resourceVersion } = await this.write(shard.name, { [PUBLISHED]: 'buckets' }, { [SOURCE_LOCATION]: shard.location, [SHARD]: `${String(shard.index)}/${String(shard.count)}` }, shard.data, stored.get(shard.name));
        stored.set(shard.name, { ...shard, resourceVersion });
        written.add(shard.name);
      } catch (err) {
        failures.push(`ConfigMap ${shard.name}: ${(err as Error).message}`);
        this.o.logger.warn('shard not written; it keeps what it held', { configMap: shard.name, bytes: shard.bytes, error: (err as Error).message });
      }
    });
    if (Object.keys(legacy).length > 0 && failures.length === 0) {
      try {
        base = await this.write(this.baseName, { [PUBLISHED]: 'locations' }, {}, { [LOCATIONS_FILE]: locations }, base);
      } catch (err) {
        failures.push(`ConfigMap ${this.baseName}: ${(err as Error).message}`);
      }
    }
    const mounted = mountedLayouts(desired, [...stored.values()], written);
    const buckets = publishedBuckets({ base, shards: [...mounted.values()].flat().map((n) => stored.get(n) as StoredShard) }, this.o.logger);
    const keep = new Set([...[...mounted.values()].flat(), ...desired.map((s) => s.name)]);
    return { mounted, buckets, stale: [...stored.keys()].filter((n) => !keep.has(n)), failures };
  }

  async remove(names: string[]): Promise<void> {
    await forEachLimit(names, this.o.concurrency, async (name) => {
      await this.o.rest.delete(`${this.path}/${name}`);
      this.o.logger.info('shard removed', { configMap: name });
    });
  }

  /** Creates or replaces one ConfigMap unless it already holds `data`; returns what it holds now. */
  private async write(name: string, labels: Record<string, string>, annotations: Record<string, string>, data: Record<string, string>, current: Stored | undefined): Promise<Stored> {
    if (current !== undefined && sameData(current.data, data)) return current;
    const bytes = dataBytes(data);
    if (bytes > MAX_BYTES) throw new Error(`${String(bytes)} bytes of configs, over the ${String(MAX_BYTES)} a ConfigMap may hold`);
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, labels: { ...this.o.labels, ...labels }, annotations, ...(this.o.ownerReferences !== undefined ? { ownerReferences: this.o.ownerReferences } : {}) }, data };
    const answer =
      current === undefined
        ? await this.o.rest.create<ConfigMapObject>(this.path, body)
        : await this.o.rest.replace<ConfigMapObject>(`${this.path}/${name}`, { ...body, metadata: { ...body.metadata, resourceVersion: current.resourceVersion } });
    return { data, resourceVersion: answer.metadata.resourceVersion };
  }
}

/**
 * Per source location, the shards its readers mount: the wanted layout once every shard of it is
 * written; while a resize is incomplete, the layout they had (whose shards are all still there).
 */
export function mountedLayouts(desired: Shard[], stored: ShardId[], written: ReadonlySet<string>): Map<string, string[]> {
  const wanted = new Map<string, Shard[]>();
  for (const s of desired) wanted.set(s.location, [...(wanted.get(s.location) ?? []), s]);
  const present = new Set(stored.map((s) => s.name));
  const mounted = new Map<string, string[]>();
  for (const [location, want] of wanted) {
    const count = want[0]?.count;
    const others = stored.filter((s) => s.location === location && s.count !== count);
    if (want.every((s) => written.has(s.name)) || others.length === 0) {
      // Same layout as before: a shard that failed keeps its earlier content, one never written holds
      // nothing published yet.
      mounted.set(location, want.filter((s) => present.has(s.name)).map((s) => s.name));
    } else {
      const previous = Math.max(...others.map((s) => s.count));
      mounted.set(location, others.filter((s) => s.count === previous).sort((a, b) => a.index - b.index).map((s) => s.name));
    }
  }
  return mounted;
}
