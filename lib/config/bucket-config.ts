import type { Manifests } from './manifests.ts';
import type { ReplicationRule } from './schema.ts';

// The data plane's only input: for each source bucket, every rule that reads it, compiled into one
// config shaped like S3's ReplicationConfiguration (Rules with ID, Priority, Status, Filter, Destination),
// so that users recognise it. Workers read it from a file (a ConfigMap in Kubernetes).

export type Status = 'Enabled' | 'Disabled';

export interface CompiledDestination {
  /** `location/bucket`: unique among a rule's destinations. */
  Id: string;
  Location: string;
  Bucket: string;
  StorageClass?: string;
  KeyPrefix?: string;
  /** Encryption at rest the replicas are written with (x-amz-server-side-encryption), and the KMS key. */
  ServerSideEncryption?: 'AES256' | 'aws:kms';
  KMSKeyId?: string;
}

export interface CompiledRule {
  ID: string;
  Priority: number;
  /** Always Enabled: rules are not paused (their destinations are, with `backbeat pause`). */
  Status: Status;
  Filter: { Prefix?: string; Tags?: { Key: string; Value: string }[] };
  DeleteMarkerReplication: { Status: Status };
  VersionDeleteReplication: { Status: Status };
  ExistingObjectReplication: { Status: Status };
  /** Replicas written by another rule are replicated on (a chain); absent in configs published before it existed. */
  ReplicaReplication?: { Status: Status };
  Destinations: CompiledDestination[];
  /**
   * When the rule took effect (ISO 8601): versions written before it replicate only where
   * ExistingObjectReplication is Enabled, or by a backfill. Absent: every version is covered.
   */
  Since?: string;
}

export interface BucketReplicationConfig {
  /** `location/bucket` of the source. */
  Source: string;
  SourceLocation: string;
  SourceBucket: string;
  /** Highest priority first; ties by rule name, so the order is stable. */
  Rules: CompiledRule[];
}

const status = (on: boolean): { Status: Status } => ({ Status: on ? 'Enabled' : 'Disabled' });

/** Every destination the rules of these configs write to, each once (by Id), in Id order. */
export function allDestinations(configs: Iterable<BucketReplicationConfig>): CompiledDestination[] {
  const byId = new Map<string, CompiledDestination>();
  for (const c of configs) for (const r of c.Rules) for (const d of r.Destinations) if (!byId.has(d.Id)) byId.set(d.Id, d);
  return [...byId.values()].sort((a, b) => (a.Id < b.Id ? -1 : a.Id > b.Id ? 1 : 0));
}

/** The locations the rules of these configs write to, each once, sorted. */
export function destinationLocations(configs: Iterable<BucketReplicationConfig>): string[] {
  return [...new Set(allDestinations(configs).map((d) => d.Location))].sort();
}

/** Every location these configs read or write (sources and destinations), each once, sorted. */
export function usedLocations(configs: Iterable<BucketReplicationConfig>): string[] {
  const list = [...configs];
  return [...new Set([...list.map((c) => c.SourceLocation), ...destinationLocations(list)])].sort();
}

/** A rule starts at its creation (the API server's creationTimestamp), unless `since` says otherwise. */
export function compileRule(rule: ReplicationRule, since = rule.metadata.creationTimestamp): CompiledRule {
  const { spec } = rule;
  const filter: CompiledRule['Filter'] = {};
  if (spec.filter?.prefix !== undefined && spec.filter.prefix !== '') filter.Prefix = spec.filter.prefix;
  if (spec.filter?.tags !== undefined && spec.filter.tags.length > 0) {
    filter.Tags = spec.filter.tags.map((t) => ({ Key: t.key, Value: t.value }));
  }
  return {
    ID: rule.metadata.name,
    Priority: spec.priority,
    Status: 'Enabled',
    Filter: filter,
    DeleteMarkerReplication: status(spec.replicateDeleteMarkers),
    VersionDeleteReplication: status(spec.replicateVersionDeletes),
    ExistingObjectReplication: status(spec.replicateExistingObjects),
    ReplicaReplication: status(spec.replicateReplicas === true),
    Destinations: spec.destinations.map((d) => ({
      Id: `${d.location}/${d.bucket}`,
      Location: d.location,
      Bucket: d.bucket,
      ...(d.storageClass !== undefined ? { StorageClass: d.storageClass } : {}),
      ...(d.keyPrefix !== undefined && d.keyPrefix !== '' ? { KeyPrefix: d.keyPrefix } : {}),
      ...(d.serverSideEncryption !== undefined ? { ServerSideEncryption: d.serverSideEncryption } : {}),
      ...(d.kmsKeyId !== undefined ? { KMSKeyId: d.kmsKeyId } : {}),
    })),
    ...(since !== undefined ? { Since: since } : {}),
  };
}

/** A compiled rule and the source bucket it reads. */
export interface SourcedRule {
  location: string;
  bucket: string;
  rule: CompiledRule;
}

/** One config per source bucket, keyed `location/bucket`, sorted. */
export function assembleBucketConfigs(rules: Iterable<SourcedRule>): Map<string, BucketReplicationConfig> {
  const bySource = new Map<string, BucketReplicationConfig>();
  for (const { location, bucket, rule } of rules) {
    const source = `${location}/${bucket}`;
    let config = bySource.get(source);
    if (config === undefined) {
      config = { Source: source, SourceLocation: location, SourceBucket: bucket, Rules: [] };
      bySource.set(source, config);
    }
    config.Rules.push(rule);
  }
  for (const config of bySource.values()) {
    config.Rules.sort((a, b) => b.Priority - a.Priority || a.ID.localeCompare(b.ID));
  }
  return new Map([...bySource.entries()].sort(([a], [b]) => a.localeCompare(b)));
}

/** One config per source bucket, keyed `location/bucket`; `starts` gives rules their start by name (local mode). */
export function compileBucketConfigs(manifests: Pick<Manifests, 'rules'>, starts?: ReadonlyMap<string, string>): Map<string, BucketReplicationConfig> {
  return assembleBucketConfigs(
    [...manifests.rules.values()].map((r) => ({ location: r.spec.source.location, bucket: r.spec.source.bucket, rule: compileRule(r, starts?.get(r.metadata.name) ?? r.metadata.creationTimestamp) })),
  );
}

export interface ObjectFacts {
  key: string;
  /** Needed only when a rule filters on tags; see needsTags(). */
  tags?: Record<string, string>;
  /** When the version was written (ms since the epoch): a rule covers what was written after its start. */
  time?: number;
}

/**
 * How long before a rule's start a version still counts as written after it: a write under way as the
 * rule was created (Last-Modified precedes visibility), and a server clock a little behind.
 */
export const RULE_START_GRACE_MS = 10_000;

/**
 * Whether a rule covers a version by when it was written: a backfill covers exactly its rules; otherwise
 * a rule covers versions from its start on, or every version when it asks for existing objects.
 */
function covers(rule: CompiledRule, time: number | undefined, backfill: ReadonlySet<string> | undefined): boolean {
  if (backfill !== undefined) return backfill.has(rule.ID);
  if (rule.Since === undefined || time === undefined || rule.ExistingObjectReplication.Status === 'Enabled') return true;
  return time >= Date.parse(rule.Since) - RULE_START_GRACE_MS;
}

export interface MatchedDestination extends CompiledDestination {
  Rule: string;
  ReplicateDeleteMarkers: boolean;
  ReplicateVersionDeletes: boolean;
  ReplicateReplicas: boolean;
}

function filterMatches(rule: CompiledRule, facts: ObjectFacts): boolean {
  if (rule.Filter.Prefix !== undefined && !facts.key.startsWith(rule.Filter.Prefix)) return false;
  return (rule.Filter.Tags ?? []).every((t) => facts.tags?.[t.Key] === t.Value);
}

/** True when deciding whether `key` replicates needs the object's tags (a prefix-matching rule filters on tags). */
export function needsTags(config: BucketReplicationConfig, key: string): boolean {
  return config.Rules.some((r) => (r.Filter.Tags?.length ?? 0) > 0 && (r.Filter.Prefix === undefined || key.startsWith(r.Filter.Prefix)));
}

/**
 * The destinations an object goes to: for each destination, the highest-priority matching rule decides
 * (its storage class, key prefix, delete handling). Rules are already in priority order. With
 * `backfill`, only those rules are matched, whenever the version was written.
 */
export function matchDestinations(config: BucketReplicationConfig, facts: ObjectFacts, backfill?: ReadonlySet<string>): MatchedDestination[] {
  const chosen = new Map<string, MatchedDestination>();
  for (const rule of config.Rules) {
    if (!covers(rule, facts.time, backfill) || !filterMatches(rule, facts)) continue;
    for (const d of rule.Destinations) {
      if (chosen.has(d.Id)) continue;
      chosen.set(d.Id, {
        ...d,
        Rule: rule.ID,
        ReplicateDeleteMarkers: rule.DeleteMarkerReplication.Status === 'Enabled',
        ReplicateVersionDeletes: rule.VersionDeleteReplication.Status === 'Enabled',
        ReplicateReplicas: rule.ReplicaReplication?.Status === 'Enabled',
      });
    }
  }
  return [...chosen.values()];
}
