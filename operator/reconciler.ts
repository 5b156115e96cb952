import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { S3Client } from '@aws-sdk/client-s3';
import { assembleBucketConfigs, usedLocations, type BucketReplicationConfig } from '../lib/config/bucket-config.ts';
import { resolveWebhookToken } from '../lib/config/credentials.ts';
import { locationsText } from '../lib/config/published.ts';
import { API_GROUP, API_VERSION, type Location, type Secret } from '../lib/config/schema.ts';
import type { Logger } from '../lib/log/logger.ts';
import { KubeError, type KubeObject, type KubeRest } from '../lib/kube/rest.ts';
import type { QueueAdmin } from '../lib/queue/queue.ts';
import { reasonOf } from '../lib/s3/errors.ts';
import { figuresKey, type Figures, type QueueNames } from '../lib/queue/messages.ts';
import { unwireJournal } from '../lib/s3/notifications.ts';
import { CapabilityProbes } from './capabilities.ts';
import { canonical, setCondition, type Condition, type ConditionInput } from './conditions.ts';
import { LocationProbes } from './location-probes.ts';
import { checkLocation, granted } from './locations.ts';
import { forEachLimit } from './pool.ts';
import { planPublication, publishedConditions } from './publish-plan.ts';
import { PublishedConfigMaps, publishedBuckets, publishedRules, type PublishResult } from './published-state.ts';
import { RuleChecks, type LocationObject as CheckedLocation, type RuleObject as CheckedRule, type WebhookTarget } from './rule-checks.ts';
import { configHash, deploymentFor, desiredWorkers, disruptionBudgetFor, MANAGED_BY, type OwnedObject, PEER_KEY, peerKeySecret, readOfLocation, readsRule, replicasFor, roleInputs, secretKeys, serviceFor, webhookServiceUrl, type WorkerSettings, type WorkerSpec } from './workers.ts';

// One level-triggered pass over the whole installation: read every Location and ReplicationRule, and
// what is published now; decide what should exist; change only what differs; write each status once,
// only when it changed. Which form of each rule the workers get is publish-plan.ts's decision. What is
// published is read back from the API server at every pass (published-state.ts), never remembered, so
// that a new leader, or an operator restarted during an outage, decides as the old one would have.

export const FINALIZER = `${API_GROUP}/journal`;
/** On a rule: delete it without removing the notification configuration (e.g. its Location is gone for good). */
export const SKIP_CLEANUP = `${API_GROUP}/skip-cleanup`;

type Status = { observedGeneration?: number; conditions?: Condition[] } & Record<string, unknown>;
type LocationObject = CheckedLocation & { status?: Status };
type RuleObject = CheckedRule & { status?: Status };
type Attempt = (what: string, work: () => Promise<void>) => Promise<boolean>;

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
  /** S3 and API calls in flight at once within a pass (default 16). */
  concurrency?: number;
  /** How often a rule's per-bucket checks (versioning, notifications) repeat when nothing changed (default 10 min). */
  recheckMs?: number;
  /** Rules checked against the servers per pass at most (default 500); the rest go on in the next pass. */
  checksPerPass?: number;
  /**
   * How long a Ready Location's probe serves the passes after it, its spec and Secret unchanged (default
   * 10 s, under the 15 s resync: every resync probes again, and an outage shows within one).
   */
  probeMaxAgeMs?: number;
}

export interface PassResult {
  /** Work was left for another pass, to run at once. */
  again: boolean;
}

/** A pass that went through, some of whose steps failed: they are to be retried. */
export class PassFailed extends Error {
  override name = 'PassFailed';
  readonly again: boolean;
  constructor(message: string, again: boolean) {
    super(message);
    this.again = again;
  }
}

export class Reconciler {
  private readonly o: ReconcilerOptions;
  private readonly base: string;
  private readonly scaling = new Map<string, { replicas: number; lowSince?: number }>();
  private journalTopics = '';
  private readonly concurrency: number;
  private readonly checks: RuleChecks;
  private readonly capabilities: CapabilityProbes;
  private readonly probes: LocationProbes;
  private readonly publication: PublishedConfigMaps;
  /** Each processor location's lag, as of the last pass that could read it. */
  private lags = new Map<string, number>();
  /** The last cleanup failure reported per rule: an Event only when it changes. */
  private readonly cleanupReported = new Map<string, string>();
  /** Whether each Location and rule is Ready (`Location/<name>`), as of the last pass that decided it. */
  readonly readiness = new Map<string, boolean>();
  /**
   * The Secrets of Locations that are not Ready, each with the resourceVersion the last pass read ('' when
   * it did not exist): the operator reads them again every second or so, and a change starts a pass.
   * Secrets are read by name only, never listed or watched.
   */
  readonly awaitedSecrets = new Map<string, string>();
  /** How long the event loop stalled at most during a pass (a stall delays the lease's renewal too). */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 20 });

  constructor(options: ReconcilerOptions) {
    this.o = options;
    this.loopDelay.enable();
    this.base = `/apis/${API_GROUP}/v1alpha1/namespaces/${options.namespace}`;
    this.concurrency = options.concurrency ?? 16;
    this.capabilities = new CapabilityProbes(options.logger);
    this.probes = new LocationProbes(options.probeMaxAgeMs ?? 10_000);
    this.checks = new RuleChecks({ recheckMs: options.recheckMs ?? 600_000, perPass: options.checksPerPass ?? 500, concurrency: this.concurrency, logger: options.logger });
    this.publication = new PublishedConfigMaps({
      rest: options.rest,
      namespace: options.namespace,
      release: options.settings.name,
      labels: { 'app.kubernetes.io/managed-by': MANAGED_BY, 'app.kubernetes.io/instance': options.settings.name },
      ...this.ownerRefs(),
      concurrency: this.concurrency,
      logger: options.logger,
    });
  }

  /** The ConfigMap with locations.json; the bucket configs are in its shards. */
  get configMapName(): string {
    return this.publication.baseName;
  }

  async reconcile(): Promise<PassResult> {
    const { rest, namespace, logger } = this.o;
    // Where a pass spends its time, for the debug log: thousands of rules make any phase count.
    const phases: Record<string, number> = {};
    let lapStart = Date.now();
    const lap = (phase: string): void => {
      const now = Date.now();
      phases[phase] = now - lapStart;
      lapStart = now;
    };
    const locations = (await rest.list<LocationObject>(`${this.base}/locations`)).items;
    const rules = (await rest.list<RuleObject>(`${this.base}/replicationrules`)).items;
    lap('list');
    // One object's failure is logged and retried; it never holds up the others.
    const failures: string[] = [];
    const failed = (what: string, err: unknown): void => {
      failures.push(`${what}: ${(err as Error).message}`);
      logger.warn('reconcile step failed; retrying', { what, error: reasonOf(err) });
    };
    const attempt: Attempt = async (what, work) => {
      try {
        await work();
        return true;
      } catch (err) {
        failed(what, err);
        return false;
      }
    };
    const secrets = new Map<string, KubeObject & Secret>();
    const clients = new Map<string, S3Client>();
    const listings = new Map<string, Set<string>>();
    const pass: PassResult = { again: false };
    try {
      for (const name of new Set(locations.flatMap((l) => [l.spec.credentialsSecretRef.name, ...(l.spec.journal?.webhook !== undefined ? [l.spec.journal.webhook.tokenSecretRef.name] : [])]))) {
        await attempt(`Secret/${name}`, async () => {
          const s = await rest.find<KubeObject & Secret>(`/api/v1/namespaces/${namespace}/secrets/${name}`);
          if (s !== undefined) secrets.set(name, s);
        });
      }
      // Locations: credentials and a probe of the endpoint, which lists its buckets.
      const locationReady = new Map<string, ConditionInput>();
      const awaited = new Map<string, string>();
      // The buckets the rules name on each Location: one missing from a kept listing is probed for.
      const named = new Map<string, Set<string>>();
      for (const r of rules) for (const b of [r.spec.source, ...r.spec.destinations]) named.set(b.location, (named.get(b.location) ?? new Set()).add(b.bucket));
      await forEachLimit(locations, this.concurrency, async (l) => {
        await attempt(`Location/${l.metadata.name}`, async () => {
          const secret = secrets.get(l.spec.credentialsSecretRef.name);
          const check = await this.probes.check(l, secret, named.get(l.metadata.name) ?? [], () => checkLocation(l, secret));
          if (check.client !== undefined) clients.set(l.metadata.name, check.client);
          if (check.buckets !== undefined) listings.set(l.metadata.name, check.buckets);
          locationReady.set(l.metadata.name, check.condition);
          this.readiness.set(`Location/${l.metadata.name}`, check.condition.status === 'True');
          const credentials = l.spec.credentialsSecretRef.name;
          if (check.condition.status !== 'True') awaited.set(credentials, secrets.get(credentials)?.metadata.resourceVersion ?? '');
          // What the server does where servers differ, probed in a bucket the rules write to.
          const written = [...new Set(rules.filter((r) => r.metadata.deletionTimestamp === undefined).flatMap((r) => r.spec.destinations.filter((d) => d.location === l.metadata.name).map((d) => d.bucket)))].filter((b) => check.buckets?.has(b) === true).sort();
          const capabilities = check.client !== undefined ? await this.capabilities.of(l, secrets.get(credentials)?.metadata.resourceVersion ?? '', check.client, written) : undefined;
          await this.writeStatus('locations', l, { conditions: setCondition(l.status?.conditions, check.condition, l.metadata.generation ?? 0), endpoint: endpointOf(l), ...(capabilities !== undefined ? { capabilities } : {}) }, check.condition);
        });
      });
      const present = new Set(locations.map((l) => l.metadata.name));
      this.capabilities.keep(present);
      this.probes.keep(present);
      this.awaitedSecrets.clear();
      for (const [name, version] of awaited) this.awaitedSecrets.set(name, version);
      await attempt('journal topics', () => this.ensureJournalTopics(locations));
      lap('locations');

      // What the workers read now, as the API server holds it. Unreadable: nothing can be decided.
      const before = await this.publication.read();

      // Rules: finalizer, preconditions, journal wiring.
      const byName = new Map(locations.map((l) => [l.metadata.name, l]));
      const live = rules.filter((r) => r.metadata.deletionTimestamp === undefined);
      const { decisions, deferred } = await this.checks.decide(
        live,
        { locations: byName, locationReady, clients, listings, webhooks: this.webhookTargets(byName, secrets) },
        (rule) => this.ensureFinalizer(rule),
        (rule, err) => {
          failed(`ReplicationRule/${rule.metadata.name}`, err);
        },
      );
      pass.again = deferred > 0;
      lap('ruleChecks');
      for (const [name, d] of decisions) this.readiness.set(`ReplicationRule/${name}`, d.status === 'True');
      const existing = new Set([...locations.map((l) => `Location/${l.metadata.name}`), ...live.map((r) => `ReplicationRule/${r.metadata.name}`)]);
      for (const k of this.readiness.keys()) if (!existing.has(k)) this.readiness.delete(k);

      // Publication: every rule in the form publish-plan.ts gives it, and the Locations they name.
      const { rules: forms } = planPublication(live, decisions, publishedRules(publishedBuckets(before, logger).values()));
      const configs = [...assembleBucketConfigs(forms).values()];
      const used = new Set(usedLocations(configs));
      const published = locations.filter((l) => locationReady.get(l.metadata.name)?.status === 'True' || used.has(l.metadata.name));
      let result: PublishResult | undefined;
      await attempt('published config', async () => {
        result = await this.publication.publish(locationsText(published), configs, before);
        failures.push(...result.failures);
      });
      // What the workers read once the writes are done: a shard that failed still holds its old configs.
      const reading = result?.buckets ?? publishedBuckets(before, logger);
      lap('publish');
      const nowPublished = publishedRules(reading.values());

      // A deleted rule is cleaned up once the workers no longer read it.
      for (const rule of rules.filter((r) => r.metadata.deletionTimestamp !== undefined)) {
        const form = nowPublished.get(rule.metadata.name);
        if (form !== undefined && form.location === rule.spec.source.location && form.bucket === rule.spec.source.bucket) continue;
        await attempt(`ReplicationRule/${rule.metadata.name} cleanup`, () => this.finalize(rule, live, byName, clients));
      }
      lap('cleanup');

      // Without locations.json written, rolling the workers would roll them onto the old one.
      let behind: WorkerSpec[] = [];
      if (result !== undefined) {
        const { mounted, stale } = result;
        const secretVersion = (name: string): string => `${name}@${secrets.get(name)?.metadata.resourceVersion ?? ''}`;
        // Only Secrets their owners labelled are mounted, even for a Location published before the label went.
        const givenSecret = (name: string): boolean => granted(secrets.get(name));
        const workers = await this.applyWorkers([...reading.values()], mounted, new Map(published.map((l) => [l.metadata.name, l])), secretVersion, givenSecret, attempt);
        behind = workers.behind;
        // Removed only once no Deployment mounts them: while one could not be updated, it still may.
        if (workers.ok && stale.length > 0) await attempt('unused shards', () => this.publication.remove(stale));
      }
      lap('workers');

      await forEachLimit(live, this.concurrency, async (rule) => {
        const decision = decisions.get(rule.metadata.name);
        if (decision === undefined) return;
        const { ready, published: current } = publishedConditions(rule, decision, nowPublished.get(rule.metadata.name), behind.find((w) => readsRule(w, rule))?.deployment);
        const generation = rule.metadata.generation ?? 0;
        const conditions = setCondition(setCondition(rule.status?.conditions, ready, generation), current, generation);
        await attempt(`ReplicationRule/${rule.metadata.name} status`, () => this.writeStatus('replicationrules', rule, { conditions, ...this.figuresOf(rule) }, ready));
      });
      lap('ruleStatus');
    } finally {
      logger.debug('reconcile phases', { ms: phases, rules: rules.length, loopDelayMaxMs: Math.round(this.loopDelay.max / 1e6) });
      this.loopDelay.reset();
    }
    if (failures.length > 0) throw new PassFailed(`${String(failures.length)} step(s) to retry: ${failures.slice(0, 5).join('; ')}${failures.length > 5 ? '; ...' : ''}`, pass.again);
    return pass;
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

  /**
   * Creates, updates and deletes the worker Deployments, from what the workers read (`configs`, in the
   * `mounted` shards); records each processor location's lag. Tells which Deployments are not as
   * wanted, and whether every step succeeded.
   */
  private async applyWorkers(
    configs: BucketReplicationConfig[],
    mounted: Map<string, string[]>,
    locations: Map<string, Location>,
    secretVersion: (name: string) => string,
    givenSecret: (name: string) => boolean,
    attempt: Attempt,
  ): Promise<{ ok: boolean; behind: WorkerSpec[] }> {
    const { rest, namespace, settings, logger } = this.o;
    const path = `/apis/apps/v1/namespaces/${namespace}/deployments`;
    const specs = desiredWorkers(settings, this.o.names, configs, locations);
    const lags = new Map<string, number>();
    const behind: WorkerSpec[] = [];
    let peerKey = '';
    if (specs.some((s) => s.role === 'status')) {
      await attempt(`Secret/${peerKeySecret(settings)}`, async () => {
        peerKey = await this.ensurePeerKey();
      });
    }
    for (const spec of specs) {
      // Without its key known, the status Deployment stays as it is this pass (its hash would change).
      if (spec.role === 'status' && peerKey === '') {
        behind.push(spec);
        continue;
      }
      const ok = await attempt(`Deployment/${spec.deployment}`, async () => {
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
        // Each role mounts the shards and the credentials it reads, and rolls only when what it reads changed.
        const inputs = roleInputs(spec, configs);
        const used = inputs.locations.flatMap((name) => locations.get(name) ?? []);
        // The status pods read the peer key at start: one made again (deleted) rolls them all onto it.
        const mounts = secretKeys(spec.role, used).filter((k) => givenSecret(k.name));
        const hash = configHash(JSON.stringify(inputs.reads), [...used.map((l) => JSON.stringify(readOfLocation(spec.role, l))), ...mounts.map((k) => secretVersion(k.name)), ...(spec.role === 'status' ? [peerKey] : [])]);
        const configMaps = [this.configMapName, ...inputs.mounts.flatMap((l) => mounted.get(l) ?? [])];
        const desired = deploymentFor(settings, spec, replicas, configMaps, mounts, hash);
        // Server-side apply, creation included; skipped when nothing it would set has changed.
        if (current === undefined || current.metadata.annotations?.['backbeat.io/spec-hash'] !== desired.metadata.annotations['backbeat.io/spec-hash'] || current.spec.replicas !== replicas || current.metadata.labels?.['app.kubernetes.io/managed-by'] !== MANAGED_BY) {
          await rest.apply(`${path}/${spec.deployment}`, desired, MANAGED_BY);
          if (current === undefined) logger.info('worker deployment created', { deployment: spec.deployment, replicas });
          else if (current.spec.replicas !== replicas) logger.info('worker deployment scaled', { deployment: spec.deployment, from: current.spec.replicas, to: replicas });
        }
      });
      if (!ok) behind.push(spec);
    }
    const cleaned = await attempt('unwanted Deployments', async () => {
      const wanted = new Set(specs.map((s) => s.deployment));
      const selector = encodeURIComponent(`app.kubernetes.io/managed-by=${MANAGED_BY},app.kubernetes.io/instance=${settings.name}`);
      for (const d of (await rest.list(`${path}?labelSelector=${selector}`)).items) {
        if (wanted.has(d.metadata.name)) continue;
        await rest.delete(`${path}/${d.metadata.name}`);
        this.scaling.delete(d.metadata.name);
        logger.info('worker deployment removed', { deployment: d.metadata.name });
      }
    });
    const served = await this.applyOwned('Service', `/api/v1/namespaces/${namespace}/services`, 'webhook', specs.filter((spec) => spec.role === 'webhook').map((spec) => serviceFor(settings, spec)), attempt);
    const budgets = await this.applyOwned('PodDisruptionBudget', `/apis/policy/v1/namespaces/${namespace}/poddisruptionbudgets`, undefined, specs.map((spec) => disruptionBudgetFor(settings, spec)), attempt);
    this.lags = lags;
    return { ok: cleaned && served && budgets && behind.length === 0, behind };
  }

  /** Where each Location with a webhook journal is received, and the token its topic gives (an unlabelled Secret's is not used). */
  private webhookTargets(locations: ReadonlyMap<string, Location>, secrets: ReadonlyMap<string, Secret>): Map<string, WebhookTarget> {
    const { settings, namespace } = this.o;
    const targets = new Map<string, WebhookTarget>();
    for (const [name, l] of locations) {
      const hook = l.spec.journal?.webhook;
      if (hook === undefined) continue;
      const secret = secrets.get(hook.tokenSecretRef.name);
      let token: string | undefined;
      try {
        token = granted(secret) && secret !== undefined ? resolveWebhookToken(l, { secrets: new Map([[hook.tokenSecretRef.name, secret]]) }, {}) : undefined;
      } catch {
        // no such key: said in the rule's condition
      }
      targets.set(name, { url: (hook.url ?? webhookServiceUrl(settings, name, namespace)).replace(/\/$/, ''), token, topic: `${settings.name}-journal-${name.replace(/\./g, '_')}` });
    }
    return targets;
  }

  /**
   * Objects of one kind owned beside the worker Deployments (applied server-side, written only when their
   * spec hash changed); those of this installation no longer wanted are deleted.
   */
  private async applyOwned(kind: string, path: string, component: string | undefined, desired: OwnedObject[], attempt: Attempt): Promise<boolean> {
    const { rest, settings, logger } = this.o;
    const selector = encodeURIComponent(`app.kubernetes.io/managed-by=${MANAGED_BY},app.kubernetes.io/instance=${settings.name}${component !== undefined ? `,app.kubernetes.io/component=${component}` : ''}`);
    let existing: KubeObject[] | undefined;
    const listed = await attempt(`${kind}s`, async () => {
      existing = (await rest.list(`${path}?labelSelector=${selector}`)).items;
    });
    if (existing === undefined) return listed;
    let ok = true;
    for (const object of desired) {
      const { name, annotations } = object.metadata;
      if (existing.some((x) => x.metadata.name === name && x.metadata.annotations?.['backbeat.io/spec-hash'] === annotations['backbeat.io/spec-hash'])) continue;
      ok = (await attempt(`${kind}/${name}`, async () => {
        await rest.apply(`${path}/${name}`, object, MANAGED_BY);
      })) && ok;
    }
    const wanted = new Set(desired.map((o) => o.metadata.name));
    for (const x of existing.filter((o) => !wanted.has(o.metadata.name))) {
      ok = (await attempt(`${kind}/${x.metadata.name}`, async () => {
        await rest.delete(`${path}/${x.metadata.name}`);
        logger.info('worker object removed', { kind, name: x.metadata.name });
      })) && ok;
    }
    return ok;
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

  private figuresOf(rule: RuleObject): Record<string, unknown> {
    const lags = this.lags;
    const source = `${rule.spec.source.location}/${rule.spec.source.bucket}`;
    const destinations = rule.spec.destinations.map((d) => {
      const f = this.o.figures.get(figuresKey(source, `${d.location}/${d.bucket}`));
      // Never below 0, which the status schema refuses (a lag read between a commit and the log's end).
      const count = (n: number | undefined): number => Math.max(0, n ?? 0);
      return { location: d.location, bucket: d.bucket, replicated: count(f?.replicated), pending: count(f?.pending), failed: count(f?.failed), lag: count(lags.get(d.location)) };
    });
    const sum = (k: 'replicated' | 'pending' | 'failed'): number => destinations.reduce((n, d) => n + d[k], 0);
    // The lag of each destination location once, however many of its buckets the rule names.
    const lag = [...new Set(destinations.map((d) => d.location))].reduce((n, l) => n + Math.max(0, lags.get(l) ?? 0), 0);
    const targets = destinations.map((d) => `${d.location}/${d.bucket}`).join(',');
    return { source, targets, replicated: sum('replicated'), pending: sum('pending'), failed: sum('failed'), lag, destinations };
  }

  /**
   * Creates the status replicas' peer key once (a random one), and returns its uid; never rewritten, so
   * that the replicas keep trusting each other's records. Deleted, it is made again, with a new uid that
   * rolls the status pods onto it.
   */
  private async ensurePeerKey(): Promise<string> {
    const { rest, namespace, settings, logger } = this.o;
    const path = `/api/v1/namespaces/${namespace}/secrets`;
    const name = peerKeySecret(settings);
    const existing = await rest.find(`${path}/${name}`);
    if (existing !== undefined) return existing.metadata.uid ?? '';
    const created = await rest.create(path, {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name,
        labels: { 'app.kubernetes.io/managed-by': MANAGED_BY, 'app.kubernetes.io/instance': settings.name },
        ...(settings.owner !== undefined ? { ownerReferences: [{ ...settings.owner, controller: true, blockOwnerDeletion: false }] } : {}),
      },
      // Text (base64 of 32 random bytes), so that the mounted file reads the same as any other secret file.
      data: { [PEER_KEY]: Buffer.from(randomBytes(32).toString('base64')).toString('base64') },
    });
    logger.info('status peer key created', { secret: name });
    return created.metadata.uid ?? '';
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

/** The endpoint a Location's workers reach: its own, or the default of AWS S3 in its region, or of its Azure account. */
export function endpointOf(l: Pick<LocationObject, 'spec'>): string {
  if (l.spec.endpoint !== undefined) return l.spec.endpoint;
  return l.spec.type === 'azure' ? `https://${l.spec.azure?.accountName ?? ''}.blob.core.windows.net` : `https://s3.${l.spec.region}.amazonaws.com`;
}
