import { createHash } from 'node:crypto';
import { destinationLocations, usedLocations, type BucketReplicationConfig } from '../lib/config/bucket-config.ts';
import type { Location, ReplicationRule } from '../lib/config/schema.ts';
import type { Json } from '../lib/kube/rest.ts';
import type { SaslMechanism } from '../lib/queue/kafka-security.ts';
import type { QueueNames } from '../lib/queue/messages.ts';
import type { Role } from '../workers/worker/worker.ts';

// The worker Deployments the operator owns: what should exist, with how many replicas, and their pods.

export interface Scaling {
  /** Consumer lag one replica is expected to carry: replicas = ceil(lag / lagThreshold). */
  lagThreshold: number;
  minReplicas: number;
  maxReplicas: number;
}

export interface WorkerSettings {
  /** The installation's name: prefixes the ConfigMap and every Deployment. */
  name: string;
  image: string;
  imagePullPolicy: string;
  brokers: string[];
  prefix: string;
  partitions: number;
  /** Replicas of the topics created (unset: min(3, brokers)); the workers check topics against it. */
  replicationFactor?: number;
  logLevel: string;
  scaling: Scaling;
  resources?: Json;
  /** Replaces `resources` for one role, e.g. a processor that copies large objects. */
  roleResources?: Partial<Record<Role, Json>>;
  /** Scheduling, pull secrets, annotations and extra env of every worker pod. */
  pod?: PodExtras;
  /** Per role, the fields of `pod` it replaces, e.g. processors on the nodes near the storage. */
  rolePod?: Partial<Record<Role, PodExtras>>;
  /** The operator's own Deployment: deleting it (the install) deletes the workers too. */
  owner?: { apiVersion: string; kind: string; name: string; uid: string };
  /**
   * The ServiceAccount of the status pods, bound to system:auth-delegator: their API checks callers'
   * tokens with TokenReview and SubjectAccessReview. The other roles get no token at all.
   */
  statusServiceAccount: string;
  /** Where the workers' port binds (e.g. "::" on an IPv6-only cluster). */
  listenAddress: string;
  /** TLS and SASL to Kafka; plaintext when unset. */
  kafkaMounts?: KafkaMounts;
}

/** What a worker pod template takes from the chart's values, as Kubernetes spells each field. */
export interface PodExtras {
  nodeSelector?: Record<string, string>;
  tolerations?: Json[];
  affinity?: Json;
  podAnnotations?: Record<string, string>;
  priorityClassName?: string;
  imagePullSecrets?: Json[];
  /** Added to the container's env; the operator's own variables win over one of the same name. */
  env?: Json[];
}
/** `{ [name]: value }` where the value says something: the chart's empty defaults leave the template (and its hash) as it was. */
function given<K extends string>(name: K, value: unknown): Partial<Record<K, unknown>> {
  const empty = value === undefined || value === '' || (Array.isArray(value) ? value.length === 0 : typeof value === 'object' && value !== null && Object.keys(value).length === 0);
  return empty ? {} : ({ [name]: value } as Record<K, unknown>);
}
export const POD_EXTRAS: readonly (keyof PodExtras)[] = ['nodeSelector', 'tolerations', 'affinity', 'podAnnotations', 'priorityClassName', 'imagePullSecrets', 'env'];

/** How the worker pods reach Kafka: TLS, the CA bundle and the SASL password from the Secrets the chart names. */
export interface KafkaMounts {
  tls: boolean;
  /** The Secret whose `ca.crt` the brokers' certificates chain to (unset: the system's CAs). */
  caSecret?: string;
  sasl?: { mechanism: SaslMechanism; username: string; passwordSecret: string };
}

const KAFKA_DIR = '/etc/backbeat/kafka';

/** The env and the projected volume that give a worker the operator's way to Kafka. */
function kafkaPodParts(k: KafkaMounts | undefined): { env: Json[]; sources: Json[] } {
  if (k === undefined) return { env: [], sources: [] };
  const env: Json[] = [];
  const sources: Json[] = [];
  if (k.tls) env.push({ name: 'BACKBEAT_KAFKA_TLS', value: 'true' });
  if (k.caSecret !== undefined) {
    env.push({ name: 'BACKBEAT_KAFKA_CA_FILE', value: `${KAFKA_DIR}/ca.crt` });
    sources.push({ secret: { name: k.caSecret, items: [{ key: 'ca.crt', path: 'ca.crt' }] } });
  }
  if (k.sasl !== undefined) {
    env.push(
      { name: 'BACKBEAT_KAFKA_SASL_MECHANISM', value: k.sasl.mechanism },
      { name: 'BACKBEAT_KAFKA_SASL_USERNAME', value: k.sasl.username },
      { name: 'BACKBEAT_KAFKA_SASL_PASSWORD_FILE', value: `${KAFKA_DIR}/sasl-password` },
    );
    sources.push({ secret: { name: k.sasl.passwordSecret, items: [{ key: 'password', path: 'sasl-password' }] } });
  }
  return { env, sources };
}

export interface WorkerSpec {
  role: Role;
  location?: string;
  deployment: string;
  /** The consumer group and topic whose lag sizes it; none for the scanner (one replica). */
  lag?: { group: string; topic: string };
  /** False for a role with nothing to do (the GC without a transient source): zero replicas. */
  active: boolean;
}

export const MANAGED_BY = 'backbeat-operator';

/** A Secret the workers need, and which of its keys. */
export interface SecretKeys {
  name: string;
  keys: string[];
  /** Keys that may be missing: an Azure account's Secret holds an account key or a SAS token. */
  optional?: boolean;
}
const PORT = 8900;
export const CONFIG_DIR = '/etc/backbeat/config';
export const CREDENTIALS_DIR = '/etc/backbeat/credentials';
/** The status role's local store: an emptyDir, restored from the changelog when the pod is new. */
export const STATE_DIR = '/var/lib/backbeat';

const withResources = (resources: Json | undefined): { resources?: Json } => (resources === undefined ? {} : { resources });

const shortHash = (s: string, n = 8): string => createHash('sha256').update(s).digest('hex').slice(0, n);

/** Deployment names become pod-name prefixes: kept to 52 characters, with a hash when cut. */
function deploymentName(base: string, role: string, location?: string): string {
  const given = [base, role, location].filter((p) => p !== undefined).join('-');
  const full = given.replace(/\./g, '-');
  // A hash whenever the name was altered, so that Locations `a.b` and `a-b` never share a Deployment.
  return full === given && full.length <= 52 ? full : `${full.slice(0, 43)}-${shortHash(given)}`;
}

const labelValue = (v: string): string => (v.length <= 63 ? v : `${v.slice(0, 54)}-${shortHash(v)}`);

export function desiredWorkers(settings: WorkerSettings, names: QueueNames, configs: BucketReplicationConfig[], locations: Map<string, Location>): WorkerSpec[] {
  const sources = [...new Set(configs.map((c) => c.SourceLocation))].sort();
  const destinations = destinationLocations(configs);
  const transient = sources.some((l) => locations.get(l)?.spec.transient === true);
  return [
    ...sources.flatMap((location): WorkerSpec[] => {
      const journal = locations.get(location)?.spec.journal;
      const topic = journal?.kafka?.topic;
      const scans = journal?.scan !== undefined || configs.some((c) => c.SourceLocation === location && c.Rules.some((r) => r.ExistingObjectReplication.Status === 'Enabled'));
      return [
        ...(topic !== undefined ? [{ role: 'populator' as const, location, deployment: deploymentName(settings.name, 'populator', location), lag: { group: names.populatorGroup(location), topic }, active: true }] : []),
        // Listings run in one replica of their own, however far the populators scale.
        ...(scans ? [{ role: 'scanner' as const, location, deployment: deploymentName(settings.name, 'scanner', location), active: true }] : []),
        // The webhook journal's receiver, behind a Service of its own name: one replica (a server
        // retries what it could not deliver while the pod is replaced).
        ...(topic !== undefined && journal?.webhook !== undefined ? [{ role: 'webhook' as const, location, deployment: deploymentName(settings.name, 'webhook', location), active: true }] : []),
      ];
    }),
    ...destinations.map((location): WorkerSpec => ({ role: 'processor', location, deployment: deploymentName(settings.name, 'processor', location), lag: { group: names.processorGroup(location), topic: names.replication }, active: true })),
    // Scaled like the others: each replica owns the status partitions the group gives it.
    { role: 'status', deployment: deploymentName(settings.name, 'status'), lag: { group: names.statusGroup, topic: names.status }, active: true },
    { role: 'gc', deployment: deploymentName(settings.name, 'gc'), lag: { group: names.gcGroup, topic: names.gc }, active: transient },
  ];
}

/**
 * Replicas from consumer lag: ceil(lag / threshold) within [min, max], and never more than the topic's
 * partitions (a consumer beyond that would sit idle). The scanner has no lag and keeps one replica, so
 * that each listing runs once.
 */
export function replicasFor(spec: WorkerSpec, lag: number, partitions: number, scaling: Scaling): number {
  if (!spec.active) return 0;
  if (spec.lag === undefined) return 1;
  const wanted = Math.max(scaling.minReplicas, Math.ceil(lag / scaling.lagThreshold));
  return Math.min(wanted, scaling.maxReplicas, Math.max(partitions, 1));
}

export function labels(settings: WorkerSettings, spec: WorkerSpec): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'backbeat',
    'app.kubernetes.io/instance': settings.name,
    'app.kubernetes.io/component': spec.role,
    'app.kubernetes.io/managed-by': MANAGED_BY,
    ...(spec.location !== undefined ? { 'backbeat.io/location': labelValue(spec.location) } : {}),
  };
}

/**
 * The Deployment of a worker role. Its config folder is one projected volume: the ConfigMap with
 * locations.json and the bucket shards the role reads (`configMaps`, in that order). `configHash`
 * changes with what the role reads and with the Secrets, and sits on the pod template, so that a change
 * rolls the pods.
 */
export function deploymentFor(settings: WorkerSettings, spec: WorkerSpec, replicas: number, configMaps: string[], credentials: SecretKeys[], configHash: string): Json & { metadata: { name: string; labels: Record<string, string>; annotations: Record<string, string> } } {
  const selector = labels(settings, spec);
  const status = spec.role === 'status';
  // One folder of credentials, <secret>/<key>, projected from the Secrets of the Locations this role reads.
  const projected = [...credentials]
    .sort((x, y) => x.name.localeCompare(y.name))
    .map((c) => ({ secret: { name: c.name, items: [...new Set(c.keys)].sort().map((key) => ({ key, path: `${c.name}/${key}` })), ...(c.optional === true ? { optional: true } : {}) } }));
  const kafka = kafkaPodParts(settings.kafkaMounts);
  const extras: PodExtras = { ...settings.pod, ...settings.rolePod?.[spec.role] };
  const template = {
    metadata: { labels: selector, annotations: { ...extras.podAnnotations, 'backbeat.io/config-hash': configHash, 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(PORT) } },
    spec: {
      ...(status ? { serviceAccountName: settings.statusServiceAccount } : {}),
      ...given('nodeSelector', extras.nodeSelector),
      ...given('tolerations', extras.tolerations),
      ...given('affinity', extras.affinity),
      ...given('priorityClassName', extras.priorityClassName),
      ...given('imagePullSecrets', extras.imagePullSecrets),
      automountServiceAccountToken: status,
      // Service environment variables (KAFKA_PORT, ...) are noise to the workers, and some images read them.
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 60,
      // fsGroup: the kubelet gives the mounted Secret files to this group, so uid 10001 can read them.
      securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: spec.role,
          image: settings.image,
          imagePullPolicy: settings.imagePullPolicy,
          command: ['node', 'dist/main.mjs'],
          args: [
            'worker',
            '--role',
            spec.role,
            ...(spec.location !== undefined ? ['--location', spec.location] : []),
            '--config',
            CONFIG_DIR,
            '--credentials',
            CREDENTIALS_DIR,
            '--listen',
            `${settings.listenAddress}:$(BACKBEAT_PORT)`,
          ],
          env: [
            // The user's first: where a name repeats, the later (the operator's) is the one that counts.
            ...(extras.env ?? []),
            { name: 'BACKBEAT_PORT', value: String(PORT) },
            { name: 'BACKBEAT_KAFKA_BROKERS', value: settings.brokers.join(',') },
            ...kafka.env,
            { name: 'BACKBEAT_PREFIX', value: settings.prefix },
            { name: 'BACKBEAT_PARTITIONS', value: String(settings.partitions) },
            ...(settings.replicationFactor !== undefined ? [{ name: 'BACKBEAT_REPLICATION_FACTOR', value: String(settings.replicationFactor) }] : []),
            { name: 'BACKBEAT_LOG_LEVEL', value: settings.logLevel },
            ...(status
              ? [
                  { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                  // Callers show a Kubernetes token; RBAC in this namespace decides what they may do.
                  { name: 'BACKBEAT_API_AUTH', value: 'kubernetes' },
                  { name: 'BACKBEAT_STATE_DIR', value: STATE_DIR },
                  // Where the other status replicas forward requests for the partitions this one owns.
                  { name: 'BACKBEAT_ADVERTISE_URL', value: 'http://$(POD_IP):$(BACKBEAT_PORT)' },
                  // What they trust each other by (workers/status/peers.ts); no other pod mounts it.
                  { name: 'BACKBEAT_PEER_KEY_FILE', value: `${PEER_DIR}/${PEER_KEY}` },
                ]
              : []),
          ],
          ports: [{ name: 'http', containerPort: PORT }],
          readinessProbe: { httpGet: { path: '/readyz', port: 'http' }, periodSeconds: 5 },
          livenessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 20, failureThreshold: 6 },
          securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          ...withResources(settings.roleResources?.[spec.role] ?? settings.resources),
          volumeMounts: [
            { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
            { name: 'credentials', mountPath: CREDENTIALS_DIR, readOnly: true },
            ...(kafka.sources.length > 0 ? [{ name: 'kafka', mountPath: KAFKA_DIR, readOnly: true }] : []),
            ...(status ? [{ name: 'state', mountPath: STATE_DIR }, { name: 'peer', mountPath: PEER_DIR, readOnly: true }] : []),
          ],
        },
      ],
      volumes: [
        // Never optional: a worker started without one of its shards would drop that shard's changes.
        { name: 'config', projected: { sources: configMaps.map((name) => ({ configMap: { name } })) } },
        { name: 'credentials', projected: { sources: projected, defaultMode: 0o440 } },
        ...(kafka.sources.length > 0 ? [{ name: 'kafka', projected: { sources: kafka.sources, defaultMode: 0o440 } }] : []),
        ...(status ? [{ name: 'state', emptyDir: {} }, { name: 'peer', secret: { secretName: peerKeySecret(settings), defaultMode: 0o440 } }] : []),
      ],
    },
  };
  const specHash = shortHash(JSON.stringify({ selector, template }), 16);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name: spec.deployment,
      labels: selector,
      annotations: { 'backbeat.io/spec-hash': specHash },
      ...(settings.owner !== undefined ? { ownerReferences: [{ ...settings.owner, controller: true, blockOwnerDeletion: false }] } : {}),
    },
    spec: {
      replicas,
      selector: { matchLabels: selector },
      // A new status pod joins before an old one leaves: partitions move to it (caught up from the
      // changelog) instead of waiting, unowned, for a pod to start.
      ...(status ? { strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } } } : {}),
      template,
    },
  };
}

/** An object the operator keeps beside a worker Deployment, named as it is, with a hash of its spec. */
export type OwnedObject = Json & { metadata: { name: string; labels: Record<string, string>; annotations: Record<string, string> } };

/** One of those: a hash of the rest sits on it, so that one already as wanted is not written again. */
function owned(settings: WorkerSettings, spec: WorkerSpec, apiVersion: string, kind: string, body: Json): OwnedObject {
  const owner = settings.owner !== undefined ? { ownerReferences: [{ ...settings.owner, controller: true, blockOwnerDeletion: false }] } : {};
  return {
    apiVersion,
    kind,
    metadata: { name: spec.deployment, labels: labels(settings, spec), annotations: { 'backbeat.io/spec-hash': shortHash(JSON.stringify({ body, owner }), 16) }, ...owner },
    spec: body,
  };
}

/** The Service in front of a webhook receiver's pods: its name is the Deployment's. */
export function serviceFor(settings: WorkerSettings, spec: WorkerSpec): OwnedObject {
  return owned(settings, spec, 'v1', 'Service', { selector: labels(settings, spec), ports: [{ name: 'http', port: PORT, targetPort: 'http', protocol: 'TCP' }] });
}

/**
 * A node drain takes one pod of a worker Deployment at a time: its consumer group rebalances once per
 * pod rather than losing every member at once (a status replica's partitions are restored one by one).
 * With one replica it holds nothing up.
 */
export function disruptionBudgetFor(settings: WorkerSettings, spec: WorkerSpec): OwnedObject {
  return owned(settings, spec, 'policy/v1', 'PodDisruptionBudget', { maxUnavailable: 1, selector: { matchLabels: labels(settings, spec) } });
}

/** Where the source server reaches a Location's webhook receiver by default: its Service, in the namespace. */
export const webhookServiceUrl = (settings: Pick<WorkerSettings, 'name'>, location: string, namespace: string): string =>
  `http://${deploymentName(settings.name, 'webhook', location)}.${namespace}.svc:${String(PORT)}`;

/**
 * What a role reads of the published config (see workers/worker/worker.ts), which decides when it rolls:
 * - populator, scanner of location L: the bucket configs of L's buckets, and Location L;
 * - processor of location D: only which source locations send to D (their clients), and those Locations;
 * - status: every bucket config (rules for backfill, destinations), and the source Locations (clients,
 *   which are transient);
 * - gc: every Location used (a client of each).
 * `mounts` are the source locations whose bucket shards its pods mount: those it reads configs from.
 */
export function roleInputs(spec: WorkerSpec, configs: BucketReplicationConfig[]): { reads: unknown; locations: string[]; mounts: string[] } {
  const allSources = [...new Set(configs.map((c) => c.SourceLocation))].sort();
  switch (spec.role) {
    case 'populator':
    case 'scanner': {
      const mine = configs.filter((c) => c.SourceLocation === spec.location);
      return { reads: mine, locations: spec.location !== undefined ? [spec.location] : [], mounts: spec.location !== undefined ? [spec.location] : [] };
    }
    case 'processor': {
      // The rules that send here: a processor carries out a task only as far as one of them asks
      // (workers/processor/rule-check.ts), so it rolls when one of them changes.
      const mine = configs.flatMap((c) => {
        const rules = c.Rules.filter((r) => r.Destinations.some((d) => d.Location === spec.location));
        return rules.length > 0 ? [{ Source: c.Source, Rules: rules }] : [];
      });
      const sources = [...new Set(mine.map((c) => c.Source.split('/')[0] ?? ''))].sort();
      return { reads: mine, locations: [...new Set([...(spec.location !== undefined ? [spec.location] : []), ...sources])].sort(), mounts: sources };
    }
    case 'status':
      return { reads: configs, locations: allSources, mounts: allSources };
    case 'gc':
      return { reads: null, locations: usedLocations(configs), mounts: allSources };
    case 'webhook':
      // Only its Location (the topic and the token's Secret): no bucket config.
      return { reads: null, locations: spec.location !== undefined ? [spec.location] : [], mounts: [] };
  }
}

/**
 * What a role's pods read of a Location they use, so that only a change of it rolls them: the webhook
 * receiver reads its topic and its token's Secret (its URL and topic wiring are the operator's).
 */
export function readOfLocation(role: Role, l: Location): unknown {
  return role === 'webhook' ? { topic: l.spec.journal?.kafka?.topic, token: l.spec.journal?.webhook?.tokenSecretRef } : l.spec;
}

/** Whether the pods of a role read a rule, so must roll before the workers have its new generation. */
export function readsRule(spec: WorkerSpec, rule: ReplicationRule): boolean {
  switch (spec.role) {
    case 'populator':
    case 'scanner':
      return spec.location === rule.spec.source.location;
    case 'processor':
      return rule.spec.destinations.some((d) => d.location === spec.location);
    case 'status':
      return true;
    case 'gc':
    case 'webhook':
      return false;
  }
}

/**
 * The Secrets a role's pods mount, with the keys they read: the credentials of the Locations it uses;
 * for the webhook receiver, its Location's token alone (it makes no S3 call).
 */
export function secretKeys(role: Role, locations: Location[]): SecretKeys[] {
  const keys = new Map<string, SecretKeys>();
  const add = (name: string, k: string[], optional = false): void => {
    const had = keys.get(name);
    keys.set(name, { name, keys: [...(had?.keys ?? []), ...k], ...(optional || had?.optional === true ? { optional: true } : {}) });
  };
  for (const { spec } of locations) {
    const token = spec.journal?.webhook?.tokenSecretRef;
    const ref = spec.credentialsSecretRef;
    if (role === 'webhook') {
      if (token !== undefined) add(token.name, [token.key ?? 'token']);
    } else if (spec.type === 'azure') add(ref.name, [ref.accountKeyKey ?? 'accountKey', ref.sasTokenKey ?? 'sasToken'], true);
    else add(ref.name, [ref.accessKeyIdKey ?? 'accessKeyId', ref.secretAccessKeyKey ?? 'secretAccessKey']);
  }
  return [...keys.values()];
}

const PEER_DIR = '/etc/backbeat/peer';
export const PEER_KEY = 'key';
/** The Secret of the status replicas' peer key: created once by the operator, mounted in the status pods only. */
export const peerKeySecret = (settings: Pick<WorkerSettings, 'name'>): string => `${settings.name}-status-peer-key`;

/** A hash of what a worker reads at start (config and Secret versions): on the pod template, it rolls the pods. */
export function configHash(reads: string, locations: string[]): string {
  return shortHash(JSON.stringify({ reads, locations }), 16);
}
