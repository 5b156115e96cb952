import { Type, type Static, type TSchema } from '@sinclair/typebox';

// The one definition of the Location and ReplicationRule resources: TypeScript types (Static<>), the JSON
// Schema local mode validates against, and the source the CRDs are generated from. Descriptions become
// `kubectl explain` text; x-kubernetes-validations are CEL rules the API server enforces (local mode
// checks the same rules in semantics.ts).

export const API_GROUP = 'backbeat.io';
export const API_VERSION = `${API_GROUP}/v1alpha1`;

function cel(rules: { rule: string; message: string }[]): Record<string, unknown> {
  return { 'x-kubernetes-validations': rules };
}

/** DNS-1123 subdomain, as Kubernetes object names are. */
const NameOf = (description?: string) => Type.String({ minLength: 1, maxLength: 253, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$', ...(description !== undefined ? { description } : {}) });
const Name = NameOf();
const SecretName = NameOf('Name of the Secret, in this namespace. On Kubernetes, label it backbeat.io/credentials=true: the operator reads no other.');
/** What S3's bucket naming rules refuse beyond the pattern, as CEL (the API server) and as a predicate (local mode). */
export const BUCKET_NAME_RULES: { rule: string; message: string; refuses: (name: string) => boolean }[] = [
  { rule: "!self.contains('..')", message: 'a bucket name must not hold two adjacent periods', refuses: (n) => n.includes('..') },
  { rule: "!self.matches('^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$')", message: 'a bucket name must not be formatted as an IP address', refuses: (n) => /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(n) },
  {
    rule: "!self.startsWith('xn--') && !self.startsWith('sthree-') && !self.endsWith('-s3alias') && !self.endsWith('--ol-s3')",
    message: 'a bucket name must not start with xn-- or sthree-, nor end with -s3alias or --ol-s3 (reserved by S3)',
    refuses: (n) => n.startsWith('xn--') || n.startsWith('sthree-') || n.endsWith('-s3alias') || n.endsWith('--ol-s3'),
  },
];

/** S3 bucket naming rules (those of AWS, which S3-compatible servers follow or loosen). */
const BucketName = Type.String({
  minLength: 3,
  maxLength: 63,
  pattern: '^[a-z0-9][a-z0-9.-]*[a-z0-9]$',
  description: 'S3 bucket name: 3 to 63 lowercase letters, digits, periods and hyphens, starting and ending with a letter or digit, no two periods together, not an IP address.',
  ...cel(BUCKET_NAME_RULES.map(({ rule, message }) => ({ rule, message }))),
});

/** An endpoint URL with user:password@ before its host (the credentials would be published with it). */
export const USERINFO = '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@';
export const ENDPOINT_USERINFO = 'must not carry credentials (user:password@host): give them in credentialsSecretRef';
export const AZURE_NEEDS_ACCOUNT = 'spec.azure (the account name) is given with type: azure, and only then';
export const AZURE_DESTINATION_ONLY = 'a type: azure Location is a replication destination only: it has no journal and is not transient';
export const TAG_KEY_TWICE = 'a tag key is named twice: an object has one value per key, so the filter could never match';
export const JOURNAL_NEEDS_A_SOURCE = 'journal needs kafka, scan, or both';
export const DESTINATIONS_UNIQUE = 'destinations must be unique (location and bucket)';
export const DESTINATION_IS_SOURCE = 'a destination cannot be the source bucket itself';
export const KMS_KEY_NEEDS_KMS = 'kmsKeyId is for SSE-KMS: set serverSideEncryption: aws:kms';
/** Why an http:// endpoint needs `insecure: true`: the access key id, the signatures and the data travel in clear. */
export const ENDPOINT_PLAIN = 'is http://, so the access key id, request signatures and object data would travel in clear: use https://, or set insecure: true to accept that';

const ObjectMeta = Type.Object(
  {
    name: Name,
    namespace: Type.Optional(Name),
    labels: Type.Optional(Type.Record(Type.String(), Type.String())),
    annotations: Type.Optional(Type.Record(Type.String(), Type.String())),
    creationTimestamp: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

export const KafkaJournal = Type.Object(
  {
    topic: Type.String({ minLength: 1, maxLength: 249, pattern: '^[a-zA-Z0-9._-]+$', description: 'Kafka topic the server publishes this location\'s S3 event notifications to.' }),
    /** The notification target id configured on the server (MinIO: MINIO_NOTIFY_KAFKA_*_<ID>). */
    targetId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_]+$', description: 'Notification target id on the server; the operator uses it to wire bucket notifications.' })),
  },
  { additionalProperties: false, description: 'S3 event notifications the server publishes to a Kafka topic (a MinIO notification target, or the webhook receiver for journal.webhook).' },
);

export const ScanJournal = Type.Object(
  {
    intervalSeconds: Type.Integer({ minimum: 10, maximum: 604800, default: 300, description: 'Seconds between listing scans of each source bucket.' }),
    fullIntervalSeconds: Type.Integer({
      minimum: 10,
      maximum: 2592000,
      default: 86400,
      description:
        'Seconds between full scans, which queue every version. The scans in between queue only the versions modified since the previous scan began, less 15 minutes; a full scan also catches a version that became visible long after its Last-Modified time (a long multipart upload, a server clock behind). Every scan is full when this is not above intervalSeconds.',
    }),
  },
  { additionalProperties: false, description: 'Periodic listing scans of each source bucket, alone or repairing what notifications missed.' },
);

export const WEBHOOK_NEEDS_KAFKA = 'journal.webhook writes the events it receives to journal.kafka.topic: give journal.kafka too';

export const WebhookJournal = Type.Object(
  {
    tokenSecretRef: Type.Object(
      {
        name: SecretName,
        key: Type.Optional(Type.String({ minLength: 1, maxLength: 253, default: 'token', description: 'Key of the Secret whose value is the token.' })),
      },
      { additionalProperties: false, description: 'Secret holding the token a sender presents, as `Authorization: Bearer <token>` or as the `token` query parameter (for servers that cannot set a header, such as Ceph RGW topics). On Kubernetes, label it backbeat.io/credentials=true: only the receiver pods mount it.' },
    ),
    url: Type.Optional(
      Type.String({
        maxLength: 2048,
        pattern: '^https?://[^\\s/?#@]+(/[^\\s?#]*)?$',
        description: 'The receiver\'s base URL as the source server reaches it (an Ingress, a LoadBalancer). Default: its Service in this namespace, http://<installation>-webhook-<location>.<namespace>.svc:8900.',
      }),
    ),
    createTopic: Type.Optional(Type.Boolean({
      default: false,
      description:
        'Create on the server a persistent SNS-style topic pushing to the receiver (url, with the token as a query parameter), and point each source bucket\'s notifications at it: Ceph RGW. A persistent topic keeps what the receiver did not take and delivers it again. Without it, wire the server yourself.',
    })),
  },
  {
    additionalProperties: false,
    description:
      'S3 event notifications POSTed over HTTP to the webhook receiver at /v1/journal/<location name>, for servers that cannot publish to Kafka (Ceph RGW topics, MinIO webhook targets). Each event is written to journal.kafka.topic before the receiver answers 200, so a server that retries failed deliveries (RGW persistent topics, MinIO queue folders) loses nothing.',
  },
);

export type WebhookJournal = Static<typeof WebhookJournal>;

export const Journal = Type.Object(
  {
    kafka: Type.Optional(KafkaJournal),
    webhook: Type.Optional(WebhookJournal),
    scan: Type.Optional(ScanJournal),
  },
  {
    additionalProperties: false,
    description: 'How changes of this location are observed when it is a replication source: S3 event notifications on a Kafka topic (published there by the server, or by the webhook receiver), periodic listing scans, or both (scans then repair what notifications missed).',
    ...cel([
      { rule: 'has(self.kafka) || has(self.scan)', message: JOURNAL_NEEDS_A_SOURCE },
      { rule: '!has(self.webhook) || has(self.kafka)', message: WEBHOOK_NEEDS_KAFKA },
    ]),
  },
);

export const LocationSpec = Type.Object(
  {
    type: Type.Union([Type.Literal('s3'), Type.Literal('azure')], {
      description:
        'Storage type. s3: AWS S3 or any S3-compatible server. azure: an Azure Blob Storage account, as a destination only (its containers are the rules\' destination buckets; see spec.azure).',
    }),
    azure: Type.Optional(
      Type.Object(
        {
          accountName: Type.String({ minLength: 3, maxLength: 24, pattern: '^[a-z0-9]+$', description: 'The storage account\'s name.' }),
        },
        { additionalProperties: false, description: 'The Azure Blob Storage account of a type: azure Location. Its credentials (an account key, or a SAS token with read, write, delete and tag permissions on its containers) come from credentialsSecretRef.' },
      ),
    ),
    endpoint: Type.Optional(
      Type.String({
        maxLength: 2048,
        pattern: '^https?://[^\\s/?#]+(/[^\\s?#]*)?$',
        description:
          'Endpoint URL of an S3-compatible server; omit for AWS S3. For type: azure, the account\'s blob service URL (default https://<accountName>.blob.core.windows.net; Azurite: http://host:10000/<accountName>). Credentials never go in it: they come from credentialsSecretRef.',
        ...cel([{ rule: `!self.matches('${USERINFO}')`, message: ENDPOINT_USERINFO }]),
      }),
    ),
    region: Type.String({ minLength: 1, maxLength: 64, pattern: '^[a-z0-9-]+$', default: 'us-east-1', description: 'Region the requests are signed for (AWS: the buckets\' region). Default us-east-1.' }),
    forcePathStyle: Type.Optional(Type.Boolean({ description: 'Path-style addressing (bucket in the path); default: true with an endpoint, false for AWS.' })),
    tls: Type.Optional(
      Type.Object(
        {
          insecureSkipVerify: Type.Optional(Type.Boolean({ description: 'Accept any server certificate. For tests only.' })),
          caBundle: Type.Optional(
            Type.String({
              maxLength: 65536,
              pattern: '-----BEGIN CERTIFICATE-----',
              description: 'PEM certificates of the CAs that sign the endpoint\'s certificate (a private CA), trusted instead of the system\'s; not a secret, published with the Location.',
            }),
          ),
        },
        { additionalProperties: false, description: 'TLS to an https endpoint: which certificates are trusted.' },
      ),
    ),
    credentialsSecretRef: Type.Object(
      {
        name: SecretName,
        accessKeyIdKey: Type.Optional(Type.String({ minLength: 1, maxLength: 253, default: 'accessKeyId', description: 'type: s3: key of the Secret holding the access key id.' })),
        secretAccessKeyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 253, default: 'secretAccessKey', description: 'type: s3: key of the Secret holding the secret access key.' })),
        accountKeyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: 'type: azure: key of the Secret holding the account key (default accountKey).' })),
        sasTokenKey: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: 'type: azure: key of the Secret holding a SAS token, used where the Secret has no account key (default sasToken).' })),
      },
      { additionalProperties: false, description: 'Secret holding the credentials: an access key id and secret access key (type: s3), or an account key or SAS token (type: azure).' },
    ),
    checksumMode: Type.Union([Type.Literal('whenRequired'), Type.Literal('whenSupported')], {
      default: 'whenRequired',
      description: 'whenRequired sends request checksums only where an operation demands them: some S3-compatible servers reject the newer default checksums.',
    }),
    maxConnections: Type.Integer({ minimum: 1, maximum: 1024, default: 64, description: 'Keep-alive connections per worker to this endpoint.' }),
    listPageSize: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 1000,
      description: 'Versions asked for per listing request (max-keys) when a scan or a backfill lists a bucket of this location; lower it for a server slow to answer large pages.',
    }),
    transient: Type.Boolean({ default: false, description: 'A transient source: objects are deleted from it once every destination holds them.' }),
    limits: Type.Optional(
      Type.Object(
        {
          bandwidthMiBps: Type.Optional(
            Type.Number({
              minimum: 0.01,
              maximum: 1048576,
              description: 'Object data copied to this Location, in MiB per second (e.g. 16, or 0.5), over every processor replica together: each takes a share in proportion to the queue partitions it holds. Unset: no limit.',
            }),
          ),
          concurrency: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 4096,
              description: 'Copies in flight to this Location, over every processor replica together (each takes its share of the partitions, at least one). Unset: each replica copies as many as its --concurrency.',
            }),
          ),
        },
        { additionalProperties: false, description: 'What the copies to this Location may take when it is a destination, so that replication leaves room for the server\'s other users.' },
      ),
    ),
    journal: Type.Optional(Journal),
    insecure: Type.Optional(
      Type.Boolean({ description: 'Allows an http:// endpoint, whose traffic (the access key id, request signatures, object data) anyone on the path can read. Without it an http:// endpoint is refused.' }),
    ),
  },
  {
    additionalProperties: false,
    description: 'Where objects are kept: an S3 endpoint or an Azure Blob Storage account, the Secret of its credentials, and, for a source, how its changes are seen.',
    ...cel([
      { rule: "!has(self.endpoint) || !self.endpoint.startsWith('http://') || (has(self.insecure) && self.insecure)", message: `spec.endpoint ${ENDPOINT_PLAIN}` },
      { rule: "self.type == 'azure' ? has(self.azure) : !has(self.azure)", message: AZURE_NEEDS_ACCOUNT },
      { rule: "self.type != 'azure' || (!has(self.journal) && !self.transient)", message: AZURE_DESTINATION_ONLY },
    ]),
  },
);

export const Location = Type.Object(
  {
    apiVersion: Type.Literal(API_VERSION),
    kind: Type.Literal('Location'),
    metadata: ObjectMeta,
    spec: LocationSpec,
  },
  { additionalProperties: true },
);

const Tag = Type.Object(
  {
    key: Type.String({ minLength: 1, maxLength: 128, description: 'Tag key.' }),
    value: Type.String({ maxLength: 256, description: 'Tag value (may be empty).' }),
  },
  { additionalProperties: false },
);

export const Destination = Type.Object(
  {
    location: NameOf('Name of the Location of the destination bucket (type s3), or of the account whose container it is (type azure).'),
    bucket: BucketName,
    storageClass: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Z_]+$', description: 'Storage class of the replicas; default: the source object\'s.' })),
    keyPrefix: Type.Optional(Type.String({ maxLength: 512, description: 'Prepended to every replica key.' })),
    serverSideEncryption: Type.Optional(
      Type.Union([Type.Literal('AES256'), Type.Literal('aws:kms')], {
        description: 'Has the destination encrypt each replica at rest: AES256 (SSE-S3) or aws:kms (SSE-KMS, with kmsKeyId or the server\'s default key). Default: as the destination bucket\'s own setting says.',
      }),
    ),
    kmsKeyId: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'The KMS key of SSE-KMS replicas (serverSideEncryption: aws:kms).' })),
  },
  { additionalProperties: false, ...cel([{ rule: "!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')", message: KMS_KEY_NEEDS_KMS }]) },
);

export const ReplicationRuleSpec = Type.Object(
  {
    source: Type.Object(
      { location: NameOf('Name of the Location the source bucket is on.'), bucket: BucketName },
      { additionalProperties: false, description: 'The source bucket. Immutable: a rule of another bucket is another rule.', ...cel([{ rule: 'self == oldSelf', message: 'source is immutable; create a new rule instead' }]) },
    ),
    filter: Type.Optional(
      Type.Object(
        {
          prefix: Type.Optional(Type.String({ maxLength: 1024, description: 'Only keys starting with this prefix.' })),
          tags: Type.Optional(
            Type.Array(Tag, {
              maxItems: 10,
              description: 'Only objects carrying every one of these tags (a list of {key, value}).',
              ...cel([{ rule: 'self.all(t, self.exists_one(u, u.key == t.key))', message: TAG_KEY_TWICE }]),
            }),
          ),
        },
        { additionalProperties: false, description: 'Which objects: every object when absent; else those matching every condition given.' },
      ),
    ),
    priority: Type.Integer({ minimum: 0, maximum: 1000, default: 0, description: 'When several rules send one object to the same destination, the highest priority decides how.' }),
    destinations: Type.Array(Destination, {
      minItems: 1,
      maxItems: 16,
      description: 'Where each object goes: 1 to 16 buckets (or Azure containers), each on a Location.',
      ...cel([
        { rule: 'self.all(d, self.exists_one(e, e.location == d.location && e.bucket == d.bucket))', message: DESTINATIONS_UNIQUE },
      ]),
    }),
    replicateDeleteMarkers: Type.Boolean({ default: false, description: 'Replicate delete markers (a DELETE without a version id).' }),
    replicateVersionDeletes: Type.Boolean({ default: false, description: 'Also permanently delete a replica version when its source version is permanently deleted. Off by default: replication never destroys data unless asked.' }),
    replicateExistingObjects: Type.Boolean({ default: false, description: 'Backfill: replicate the objects that were in the source bucket before the rule existed.' }),
    replicateReplicas: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          'Also replicate versions that are replicas written by another rule (a chain: A → B by one rule, B → C by this one). Never into a bucket a replica came through, and not past 8 buckets. Off by default, as in S3: a replica stays where it was written.',
      }),
    ),
  },
  {
    additionalProperties: false,
    description: 'What to replicate from one source bucket, where to, and how: deletes, existing objects, replicas of other rules.',
    ...cel([
      {
        rule: '!self.destinations.exists(d, d.location == self.source.location && d.bucket == self.source.bucket)',
        message: DESTINATION_IS_SOURCE,
      },
    ]),
  },
);

export const ReplicationRule = Type.Object(
  {
    apiVersion: Type.Literal(API_VERSION),
    kind: Type.Literal('ReplicationRule'),
    metadata: ObjectMeta,
    spec: ReplicationRuleSpec,
  },
  { additionalProperties: true },
);

// Status: written by the operator only (the status subresource), typed so that `kubectl explain` shows it.
const Condition = Type.Object(
  {
    type: Type.String({ description: 'Ready: whether the resource is usable.' }),
    status: Type.Union([Type.Literal('True'), Type.Literal('False'), Type.Literal('Unknown')], { description: 'True, False or Unknown.' }),
    reason: Type.String({ description: 'Why, in one CamelCase word (Reachable, SecretKeyMissing, BucketNotFound, Replicating, ...).' }),
    message: Type.String({ description: 'Why, for a person: what is wrong and how to fix it.' }),
    observedGeneration: Type.Integer({ description: 'The generation of the spec this condition is about.' }),
    lastTransitionTime: Type.String({ format: 'date-time', description: 'When status last changed.' }),
  },
  { description: 'A condition, as Kubernetes conventions shape them.' },
);
const Conditions = Type.Array(Condition, { description: 'The Ready condition.' });
const ObservedGeneration = Type.Integer({ description: 'The generation of the spec the operator last acted on.' });
const Count = (what: string): TSchema => Type.Integer({ minimum: 0, description: what });

const STATUS = { description: 'Written by the operator: whether the resource is usable, and why.' };
export const LocationStatus = Type.Object({
  observedGeneration: Type.Optional(ObservedGeneration),
  conditions: Type.Optional(Conditions),
  endpoint: Type.Optional(Type.String({ description: 'The endpoint the workers reach: spec.endpoint, or the default of AWS S3 (its region) or of the Azure account.' })),
  capabilities: Type.Optional(
    Type.Object(
      {
        deleteMarkersOnHead: Type.Boolean({ description: 'A HEAD of a key whose current version is a delete marker says so (x-amz-delete-marker); when false (Ceph RGW 16) a 404 is confirmed by a listing.' }),
        probedBucket: Type.String({ description: 'The bucket the probe wrote its zero-byte object to (then deleted).' }),
        probedAt: Type.String({ format: 'date-time', description: 'When the probe ran.' }),
      },
      { description: 'What the server does where S3 servers differ, probed once per generation in a bucket the rules write to.' },
    ),
  ),
}, STATUS);

export const ReplicationRuleStatus = Type.Object({
  observedGeneration: Type.Optional(ObservedGeneration),
  conditions: Type.Optional(Conditions),
  source: Type.Optional(Type.String({ description: 'The source bucket, as location/bucket.' })),
  targets: Type.Optional(Type.String({ description: 'The destination buckets, as location/bucket, comma-separated.' })),
  replicated: Type.Optional(Count('Object versions replicated to every destination, since the status store began.')),
  pending: Type.Optional(Count('Object versions waiting to reach a destination.')),
  failed: Type.Optional(Count('Object versions whose replication to a destination failed (backbeat failed list).')),
  lag: Type.Optional(Count('Tasks the processors of the destination locations have not read yet (Kafka consumer lag).')),
  destinations: Type.Optional(
    Type.Array(
      Type.Object({
        location: Type.String({ description: 'The destination\'s Location.' }),
        bucket: Type.String({ description: 'The destination bucket.' }),
        replicated: Count('Versions replicated there.'),
        pending: Count('Versions waiting for it.'),
        failed: Count('Versions that failed there.'),
        lag: Count('Unread tasks of its location\'s processors.'),
      }),
      { description: 'The same figures per destination.' },
    ),
  ),
}, { description: 'Written by the operator: whether the rule is replicating, and its figures.' });

/** A Kubernetes Secret, as local mode reads credentials from YAML. */
export const Secret = Type.Object(
  {
    apiVersion: Type.Literal('v1'),
    kind: Type.Literal('Secret'),
    metadata: ObjectMeta,
    type: Type.Optional(Type.String()),
    data: Type.Optional(Type.Record(Type.String(), Type.String({ contentEncoding: 'base64' }))),
    stringData: Type.Optional(Type.Record(Type.String(), Type.String())),
  },
  { additionalProperties: true },
);

export type Location = Static<typeof Location>;
export type LocationSpec = Static<typeof LocationSpec>;
export type LocationLimits = NonNullable<LocationSpec['limits']>;
export type ReplicationRule = Static<typeof ReplicationRule>;
export type ReplicationRuleSpec = Static<typeof ReplicationRuleSpec>;
export type Destination = Static<typeof Destination>;
export type Secret = Static<typeof Secret>;

export const RESOURCE_SCHEMAS: Record<string, TSchema> = { Location, ReplicationRule, Secret };
