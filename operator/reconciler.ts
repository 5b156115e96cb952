import type { S3Client } from '@aws-sdk/client-s3';
import { compileBucketConfigs, type BucketReplicationConfig } from '../lib/config/bucket-config.ts';
import { publishConfig } from '../lib/config/published.ts';
import { API_GROUP, API_VERSION, type Location, type ReplicationRule, type Secret } from '../lib/config/schema.ts';
import { checkSemantics } from '../lib/config/semantics.ts';
import type { Logger } from '../lib/log/logger.ts';
import { KubeError, type KubeObject, type KubeRest } from '../lib/kube/rest.ts';
import type { QueueAdmin } from '../lib/queue/queue.ts';
import { reasonOf } from '../lib/s3/errors.ts';
import { figuresKey, type Figures, type QueueNames } from '../workers/messages.ts';
import { checkBucket, journalArns, unwireJournal, wireJournal } from './buckets.ts';
import { canonical, notReady, ready, setCondition, type Condition, type ConditionInput } from './conditions.ts';
import { checkLocation } from './locations.ts';
import { configHash, deploymentFor, desiredWorkers, MANAGED_BY, replicasFor, roleInputs, type SecretKeys, type WorkerSettings, type WorkerSpec } from './workers.ts';

// One level-triggered pass over the whole installation: read every Location and ReplicationRule, decide
// what should exist, change only what differs, and write each status once, only when it changed. A rule
// is published to the workers whole or not at all: only rules whose every precondition holds (or held at
// this generation, see publishable) are compiled.

export const FINALIZER = `${API_GROUP}/journal`;
/** On a rule: delete it without removing the notification configuration (e.g. its Location is gone for good). */
export const SKIP_CLEANUP = `${API_GROUP}/skip-cleanup`;
/** Precondition failures that may pass by themselves: a rule already published stays published. */
const PASSING = new Set(['LocationNotReady', 'BucketUnavailable', 'JournalNotWired']);

type Status = { observedGeneration?: number; conditions?: Condition[] } & Record<string, unknown>;
type LocationObject = Location & KubeObject & { status?: Status };
type RuleObject = ReplicationRule & KubeObject & { status?: Status };

export interface ReconcilerOptions {
  rest: KubeRest;
  namespace: string;
  settings: WorkerSettings;
  names: QueueNames;
  /** Kafka's admin client; throws while Kafka has not been reached yet. */
  admin(): QueueAdmin;
  logger: Logger;
  /** Latest figures from the status processor, by figuresKey. */
  figures: Map<string, Figures>;
  /** A lower replica count is applied only after it has been wanted this long (no flapping). */
  scaleDownDelayMs?: number;
}

export class Reconciler {
  private readonly o: ReconcilerOptions;
  private readonly base: string;
  private readonly scaling = new Map<string, { replicas: number; lowSince?: number }>();
  private journalTopics = '';
  /** Rules published to the workers, with the generation they were published at. */
  private readonly published = new Map<string, number>();
  /** The last cleanup failure reported per rule: an Event only when it changes. */
  private readonly cleanupReported = new Map<string, string>();
  /** Whether each Location and rule is Ready (`Location/<name>`), as of the last pass that decided it. */
  readonly readiness = new Map<string, boolean>();

  constructor(options: ReconcilerOptions) {
    this.o = options;
    this.base = `/apis/${API_GROUP}/v1alpha1/namespaces/${options.namespace}`;
  }

  get configMapName(): string {
    return `${this.o.settings.name}-config`;
  }

  async reconcile(): Promise<void> {
    const { rest, namespace, logger } = this.o;
    const locations = (await rest.list<LocationObject>(`${this.base}/locations`)).items;
    const rules = (await rest.list<RuleObject>(`${this.base}/replicationrules`)).items;
    // One object's failure is logged and retried; it never holds up the others.
    const failures: string[] = [];
    const attempt = async (what: string, work: () => Promise<void>): Promise<void> => {
      try {
        await work();
      } catch (err) {
        failures.push(`${what}: ${(err as Error).message}`);
        logger.warn('reconcile step failed; retrying', { what, error: reasonOf(err) });
      }
    };
    const secrets = new Map<string, KubeObject & Secret>();
    const clients = new Map<string, S3Client>();
    try {
      for (const name of new Set(locations.map((l) => l.spec.credentialsSecretRef.name))) {
        await attempt(`Secret/${name}`, async () => {
          const s = await rest.find<KubeObject & Secret>(`/api/v1/namespaces/${namespace}/secrets/${name}`);
          if (s !== undefined) secrets.set(name, s);
        });
      }
      // Locations: credentials and a probe of the endpoint.
      const locationReady = new Map<string, ConditionInput>();
      for (const l of locations) {
        await attempt(`Location/${l.metadata.name}`, async () => {
          const check = await checkLocation(l, secrets.get(l.spec.credentialsSecretRef.name));
          if (check.client !== undefined) clients.set(l.metadata.name, check.client);
          locationReady.set(l.metadata.name, check.condition);
          this.readiness.set(`Location/${l.metadata.name}`, check.condition.status === 'True');
          await this.writeStatus('locations', l, { conditions: setCondition(l.status?.conditions, check.condition, l.metadata.generation ?? 0) }, check.condition);
        });
      }
      await attempt('journal topics', () => this.ensureJournalTopics(locations));

      // Rules: preconditions, then the journal wiring.
      const byName = new Map(locations.map((l) => [l.metadata.name, l]));
      const live = rules.filter((r) => r.metadata.deletionTimestamp === undefined);
      const decisions = new Map<string, ConditionInput>();
      for (const rule of live) {
        await attempt(`ReplicationRule/${rule.metadata.name}`, async () => {
          await this.ensureFinalizer(rule);
          const decision = await this.checkRule(rule, byName, locationReady, clients);
          decisions.set(rule.metadata.name, decision);
          this.readiness.set(`ReplicationRule/${rule.metadata.name}`, decision.status === 'True');
        });
      }
      const existing = new Set([...locations.map((l) => `Location/${l.metadata.name}`), ...live.map((r) => `ReplicationRule/${r.metadata.name}`)]);
      for (const k of this.readiness.keys()) if (!existing.has(k)) this.readiness.delete(k);
      const publishedRules = this.publishable(live, decisions);
      const configs = [...compileBucketConfigs({ rules: new Map(publishedRules.map((r) => [r.metadata.name, r])) }).values()];
      const used = new Set(configs.flatMap((c) => [c.SourceLocation, ...c.Rules.flatMap((r) => r.Destinations.map((d) => d.Location))]));
      const published = locations.filter((l) => clients.has(l.metadata.name) || used.has(l.metadata.name));
      // Without the ConfigMap written, rolling the workers would roll them onto the old one: stop here.
      await this.applyConfigMap(publishConfig(published, configs));

      for (const rule of rules.filter((r) => r.metadata.deletionTimestamp !== undefined)) {
        await attempt(`ReplicationRule/${rule.metadata.name} cleanup`, () => this.finalize(rule, live, byName, clients));
      }

      const secretVersion = (l: Location): string => `${l.spec.credentialsSecretRef.name}@${secrets.get(l.spec.credentialsSecretRef.name)?.metadata.resourceVersion ?? ''}`;
      const lags = await this.applyWorkers(configs, new Map(published.map((l) => [l.metadata.name, l])), secretVersion, secretKeys(published), attempt);

      for (const rule of live) {
        const decision = decisions.get(rule.metadata.name);
        if (decision === undefined) continue;
        await attempt(`ReplicationRule/${rule.metadata.name} status`, () =>
          this.writeStatus('replicationrules', rule, { conditions: setCondition(rule.status?.conditions, decision, rule.metadata.generation ?? 0), ...this.figuresOf(rule, lags) }, decision),
        );
      }
    } finally {
      for (const c of clients.values()) c.destroy();
    }
    if (failures.length > 0) throw new Error(`${String(failures.length)} step(s) to retry: ${failures.join('; ')}`);
  }

  /**
   * The rules the workers get: those whose every precondition holds, and those published before at the
   * same generation whose check failed for a passing reason (an endpoint that timed out once). Dropping
   * and re-adding those would restart their workers twice for nothing.
   */
  private publishable(live: RuleObject[], decisions: Map<string, ConditionInput>): RuleObject[] {
    const out: RuleObject[] = [];
    for (const rule of live) {
      const { name, generation } = rule.metadata;
      const decision = decisions.get(name);
      const before = this.published.get(name);
      if (decision?.status === 'True') this.published.set(name, generation ?? 0);
      else if (before === undefined || before !== generation || (decision !== undefined && !PASSING.has(decision.reason))) {
        this.published.delete(name);
        continue;
      }
      out.push(rule);
    }
    for (const name of this.published.keys()) if (!live.some((r) => r.metadata.name === name)) this.published.delete(name);
    return out;
  }

  /** Every precondition of a rule, in the order a person would fix them; the first failure is reported. */
  private async checkRule(rule: RuleObject, locations: Map<string, LocationObject>, locationReady: Map<string, ConditionInput>, clients: Map<string, S3Client>): Promise<ConditionInput> {
    const name = rule.metadata.name;
    const problems = checkSemantics({ locations, rules: new Map([[name, rule]]), secrets: new Map() }, () => undefined).filter((p) => p.resource === `ReplicationRule/${name}`);
    const unknown = problems.find((p) => p.message.startsWith('unknown Location'));
    if (unknown !== undefined) return notReady('LocationNotFound', `${unknown.path}: ${unknown.message}`);
    const invalid = problems[0];
    if (invalid !== undefined) return notReady('InvalidSpec', `${invalid.path}: ${invalid.message}`);
    const { source, destinations } = rule.spec;
    for (const d of [source.location, ...destinations.map((x) => x.location)]) {
      if (!locations.has(d)) return notReady('LocationNotFound', `Location "${d}" does not exist`);
      const c = locationReady.get(d);
      if (c?.status !== 'True') return notReady('LocationNotReady', `Location "${d}" is not ready: ${c?.message ?? 'not checked yet'}`);
    }
    const client = (l: string): S3Client => clients.get(l) as S3Client;
    try {
      const failure =
        (await checkBucket(client(source.location), source.location, source.bucket, 'source')) ??
        (await firstOf(destinations.map((d) => () => checkBucket(client(d.location), d.location, d.bucket, 'destination'))));
      if (failure !== undefined) return failure;
    } catch (err) {
      return notReady('BucketUnavailable', `buckets cannot be checked: ${reasonOf(err)}`);
    }
    const sourceLocation = locations.get(source.location) as LocationObject;
    const arns = journalArns(sourceLocation);
    if (arns.length === 0) {
      const how = sourceLocation.spec.journal?.kafka !== undefined ? 'notifications are the user\'s to wire (no targetId)' : 'listing scans';
      return ready('Replicating', `replicating ${source.location}/${source.bucket} to ${String(destinations.length)} destination(s); journal: ${how}`);
    }
    try {
      const wired = await wireJournal(client(source.location), source.bucket, arns);
      if (wired === 'added') this.o.logger.info('journal wired', { bucket: `${source.location}/${source.bucket}` });
    } catch (err) {
      return notReady('JournalNotWired', `event notifications of ${source.location}/${source.bucket} could not be sent to target ${sourceLocation.spec.journal?.kafka?.targetId ?? ''}: ${reasonOf(err)}`);
    }
    return ready('Replicating', `replicating ${source.location}/${source.bucket} to ${String(destinations.length)} destination(s); journal: event notifications`);
  }

  private async ensureFinalizer(rule: RuleObject): Promise<void> {
    const finalizers = rule.metadata.finalizers ?? [];
    if (finalizers.includes(FINALIZER)) return;
    const updated = await this.o.rest.patch<RuleObject>(`${this.base}/replicationrules/${rule.metadata.name}`, { metadata: { resourceVersion: rule.metadata.resourceVersion, finalizers: [...finalizers, FINALIZER] } });
    rule.metadata = updated.metadata;
  }

  /**
   * A rule being deleted: when no other rule reads its source bucket, the notification configuration
   * the operator added is removed (the user's own stay), then the finalizer goes.
   */
  private async finalize(rule: RuleObject, live: RuleObject[], locations: Map<string, LocationObject>, clients: Map<string, S3Client>): Promise<void> {
    const { name, annotations } = rule.metadata;
    const finalizers = rule.metadata.finalizers ?? [];
    if (!finalizers.includes(FINALIZER)) return;
    const { source } = rule.spec;
    const shared = live.some((r) => r.spec.source.location === source.location && r.spec.source.bucket === source.bucket);
    const skip = annotations?.[SKIP_CLEANUP] === 'true';
    // Removed by its id whatever the Location's targetId says now; a Location deleted for good has nothing left to clean.
    if (!shared && !skip && locations.has(source.location)) {
      const client = clients.get(source.location);
      if (client === undefined) {
        const message = `Location "${source.location}" is not ready, so the notification configuration added to ${source.location}/${source.bucket} cannot be removed yet; annotate the rule ${SKIP_CLEANUP}=true to delete it without that`;
        if (this.cleanupReported.get(name) !== message) await this.event(rule, 'Warning', 'CleanupBlocked', message);
        this.cleanupReported.set(name, message);
        throw new Error(message);
      }
      try {
        if (await unwireJournal(client, source.bucket)) this.o.logger.info('journal unwired', { bucket: `${source.location}/${source.bucket}` });
      } catch (err) {
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
      }
    }
    await this.o.rest.patch(`${this.base}/replicationrules/${name}`, { metadata: { resourceVersion: rule.metadata.resourceVersion, finalizers: finalizers.filter((f) => f !== FINALIZER) } });
    this.cleanupReported.delete(name);
    await this.event(rule, 'Normal', 'Finalized', skip ? `deleted without cleanup (${SKIP_CLEANUP})` : 'removed what the operator added for this rule');
  }

  private async applyConfigMap(data: Record<string, string>): Promise<void> {
    const path = `/api/v1/namespaces/${this.o.namespace}/configmaps`;
    const current = await this.o.rest.find<KubeObject & { data?: Record<string, string> }>(`${path}/${this.configMapName}`);
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: this.configMapName, labels: { 'app.kubernetes.io/managed-by': MANAGED_BY, 'app.kubernetes.io/instance': this.o.settings.name }, ...this.ownerRefs() }, data };
    if (current === undefined) await this.o.rest.create(path, body);
    else if (canonical(current.data ?? {}) !== canonical(data)) await this.o.rest.replace(`${path}/${this.configMapName}`, { ...body, metadata: { ...body.metadata, resourceVersion: current.metadata.resourceVersion } });
  }

  private ownerRefs(): { ownerReferences?: unknown[] } {
    const owner = this.o.settings.owner;
    return owner !== undefined ? { ownerReferences: [{ ...owner, controller: true, blockOwnerDeletion: false }] } : {};
  }

  private async ensureJournalTopics(locations: LocationObject[]): Promise<void> {
    const topics = [...new Set(locations.flatMap((l) => (l.spec.journal?.kafka !== undefined ? [l.spec.journal.kafka.topic] : [])))].sort();
    if (topics.join(',') === this.journalTopics) return;
    await this.o.admin().ensureTopics(topics.map((topic) => ({ topic, partitions: this.o.settings.partitions })));
    this.journalTopics = topics.join(',');
  }

  /** Creates, updates and deletes the worker Deployments; returns the lag of each processor location. */
  private async applyWorkers(
    configs: BucketReplicationConfig[],
    locations: Map<string, Location>,
    secretVersion: (l: Location) => string,
    credentials: SecretKeys[],
    attempt: (what: string, work: () => Promise<void>) => Promise<void>,
  ): Promise<Map<string, number>> {
    const { rest, namespace, settings, logger } = this.o;
    const path = `/apis/apps/v1/namespaces/${namespace}/deployments`;
    const specs = desiredWorkers(settings, this.o.names, configs, locations);
    const lags = new Map<string, number>();
    for (const spec of specs) {
      await attempt(`Deployment/${spec.deployment}`, async () => {
        const current = await rest.find<KubeObject & { spec: { replicas?: number } }>(`${path}/${spec.deployment}`);
        let replicas = current?.spec.replicas ?? 1;
        try {
          const lag = spec.lag === undefined ? 0 : (await this.o.admin().groupLag(spec.lag.group, spec.lag.topic)).reduce((n, p) => n + p.lag, 0);
          const partitions = spec.lag === undefined ? 1 : await this.o.admin().partitionCount(spec.lag.topic);
          if (spec.role === 'processor' && spec.location !== undefined) lags.set(spec.location, lag);
          replicas = this.damped(spec, current?.spec.replicas, replicasFor(spec, lag, partitions, settings.scaling));
        } catch (err) {
          // Kafka unreachable: keep the replicas as they are rather than guess.
          logger.warn('consumer lag unknown; replicas unchanged', { deployment: spec.deployment, error: (err as Error).message });
          if (!spec.active) replicas = 0;
        }
        // Each role rolls only when what it reads changed.
        const inputs = roleInputs(spec, configs);
        const hash = configHash(
          JSON.stringify(inputs.configs),
          inputs.locations.flatMap((name) => {
            const l = locations.get(name);
            return l === undefined ? [] : [JSON.stringify(l.spec), secretVersion(l)];
          }),
        );
        const desired = deploymentFor(settings, spec, replicas, this.configMapName, credentials, hash);
        if (current === undefined) {
          await rest.create(path, desired);
          logger.info('worker deployment created', { deployment: spec.deployment, replicas });
        } else if (current.metadata.annotations?.['backbeat.io/spec-hash'] !== desired.metadata.annotations['backbeat.io/spec-hash'] || current.spec.replicas !== replicas || current.metadata.labels?.['app.kubernetes.io/managed-by'] !== MANAGED_BY) {
          await rest.replace(`${path}/${spec.deployment}`, { ...desired, metadata: { ...desired.metadata, resourceVersion: current.metadata.resourceVersion } });
          if (current.spec.replicas !== replicas) logger.info('worker deployment scaled', { deployment: spec.deployment, from: current.spec.replicas, to: replicas });
        }
      });
    }
    await attempt('unwanted Deployments', async () => {
      const wanted = new Set(specs.map((s) => s.deployment));
      const selector = encodeURIComponent(`app.kubernetes.io/managed-by=${MANAGED_BY},app.kubernetes.io/instance=${settings.name}`);
      for (const d of (await rest.list(`${path}?labelSelector=${selector}`)).items) {
        if (wanted.has(d.metadata.name)) continue;
        await rest.delete(`${path}/${d.metadata.name}`);
        this.scaling.delete(d.metadata.name);
        logger.info('worker deployment removed', { deployment: d.metadata.name });
      }
    });
    return lags;
  }

  /** Scale up at once; scale down only once the lower count has been wanted for scaleDownDelayMs. */
  private damped(spec: WorkerSpec, current: number | undefined, wanted: number): number {
    const { deployment } = spec;
    const now = Date.now();
    const state = this.scaling.get(deployment);
    if (current === undefined || wanted >= current || !spec.active) {
      this.scaling.set(deployment, { replicas: wanted });
      return wanted;
    }
    const lowSince = state?.lowSince ?? now;
    this.scaling.set(deployment, { replicas: current, lowSince });
    return now - lowSince >= (this.o.scaleDownDelayMs ?? 60_000) ? wanted : current;
  }

  private figuresOf(rule: RuleObject, lags: Map<string, number>): Record<string, unknown> {
    const source = `${rule.spec.source.location}/${rule.spec.source.bucket}`;
    const destinations = rule.spec.destinations.map((d) => {
      const f = this.o.figures.get(figuresKey(source, `${d.location}/${d.bucket}`));
      return { location: d.location, bucket: d.bucket, replicated: f?.replicated ?? 0, pending: f?.pending ?? 0, failed: f?.failed ?? 0, lag: lags.get(d.location) ?? 0 };
    });
    const sum = (k: 'replicated' | 'pending' | 'failed'): number => destinations.reduce((n, d) => n + d[k], 0);
    return { replicated: sum('replicated'), pending: sum('pending'), failed: sum('failed'), destinations };
  }

  /** Writes the status when it differs from what is stored, and records an Event when Ready flips. */
  private async writeStatus(plural: string, object: LocationObject | RuleObject, status: Status, decision: ConditionInput): Promise<void> {
    const next: Status = { observedGeneration: object.metadata.generation ?? 0, ...status };
    if (canonical(object.status ?? {}) === canonical(next)) return;
    const before = object.status?.conditions?.find((c) => c.type === 'Ready');
    try {
      const updated = await this.o.rest.replace(`${this.base}/${plural}/${object.metadata.name}/status`, { ...object, status: next });
      object.metadata = updated.metadata;
      object.status = next;
    } catch (err) {
      // Changed or deleted meanwhile: the watch brings the news and the next pass writes again.
      if (err instanceof KubeError && (err.code === 409 || err.code === 404)) return;
      throw err;
    }
    if (before?.status !== decision.status || before.reason !== decision.reason) {
      await this.event(object, decision.status === 'True' ? 'Normal' : 'Warning', decision.reason, decision.message);
    }
  }

  private async event(object: KubeObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    const { name, uid } = object.metadata;
    await this.o.rest
      .create(`/api/v1/namespaces/${this.o.namespace}/events`, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${name}.` },
        involvedObject: { apiVersion: API_VERSION, kind: object.kind, name, namespace: this.o.namespace, uid },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: MANAGED_BY },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      })
      .catch((err: unknown) => {
        this.o.logger.warn('event not recorded', { reason, error: (err as Error).message });
      });
  }
}

/** The Secrets the Locations name, with the keys each Location reads from them. */
function secretKeys(locations: Location[]): SecretKeys[] {
  const keys = new Map<string, string[]>();
  for (const { spec } of locations) {
    const ref = spec.credentialsSecretRef;
    keys.set(ref.name, [...(keys.get(ref.name) ?? []), ref.accessKeyIdKey ?? 'accessKeyId', ref.secretAccessKeyKey ?? 'secretAccessKey']);
  }
  return [...keys].map(([name, k]) => ({ name, keys: k }));
}

/** The first defined answer of checks run one after the other. */
async function firstOf<T>(checks: (() => Promise<T | undefined>)[]): Promise<T | undefined> {
  for (const check of checks) {
    const answer = await check();
    if (answer !== undefined) return answer;
  }
  return undefined;
}
