import { readSecretFile, SecretFileError } from '../lib/config/secret-file.ts';
import { createLogger } from '../lib/log/logger.ts';
import { kafkaSecurity, KafkaSecurityError, type KafkaSecurity } from '../lib/queue/kafka-security.ts';
import type { KafkaMounts } from '../operator/workers.ts';
import type { ApiAuth } from '../workers/status/auth.ts';
import type { PeerKey } from '../workers/status/peers.ts';
import { UsageError } from './exit.ts';

// `backbeat run`, `backbeat worker` and `backbeat operator`: the settings they take, checked, and how they
// start and stop. The values come from cli/main.ts, flag or environment variable (what a pod template
// sets) alike, keyed by flag name.

export type Values = Record<string, string | boolean | string[] | undefined>;

/** A setting that holds a JSON object, or a usage error that shows what one looks like. */
function json(value: string | undefined, flag: string, example: string): Record<string, unknown> | undefined {
  if (value === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(value);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new UsageError(`${flag} must be a JSON object, e.g. ${example}`);
}

/** A setting given (by flag or environment variable): a string that is not empty. */
function given(values: Values, flag: string): string | undefined {
  const v = values[flag];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function text(values: Values, flag: string, fallback?: string): string {
  const v = given(values, flag) ?? fallback;
  if (v === undefined) throw new UsageError(`give --${flag}`);
  return v;
}

function count(values: Values, flag: string, fallback: number, min = 0): number {
  const raw = given(values, flag);
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag} must be an integer ≥ ${String(min)}, got "${raw ?? ''}"`);
  return n;
}

export function hostPort(value: string, flag = '--listen'): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(value);
  const port = Number(m?.[2]);
  if (m === null || port > 65535) throw new UsageError(`${flag} must be HOST:PORT, got "${value}"`);
  return { host: m[1] ?? '127.0.0.1', port };
}

const listen = (values: Values, fallbackPort: number): { host: string; port: number } => hostPort(text(values, 'listen', `127.0.0.1:${String(fallbackPort)}`));

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/;

/**
 * Who may call the status API: Kubernetes RBAC (--api-auth kubernetes: TokenReview and
 * SubjectAccessReview in --namespace), one token (--api-token-file), or anyone, only on loopback.
 */
export async function controlAuth(values: Values, listenHost: string): Promise<ApiAuth> {
  const { kubernetesAuth, openAuth, tokenAuth } = await import('../workers/status/auth.ts');
  const mode = given(values, 'api-auth');
  const tokenFile = given(values, 'api-token-file');
  if (mode === 'kubernetes') {
    if (tokenFile !== undefined) throw new UsageError('give --api-auth kubernetes or --api-token-file, not both');
    const { kubeRest } = await import('../lib/kube/rest.ts');
    const { loadKubeConfig } = await import('../lib/kube/client.ts');
    const kubeconfig = given(values, 'kubeconfig');
    return kubernetesAuth(kubeRest(loadKubeConfig(kubeconfig)), text(values, 'namespace', process.env['POD_NAMESPACE']));
  }
  if (tokenFile !== undefined) {
    const token = usage(() => readSecretFile(tokenFile, '--api-token-file')).trim();
    if (token.length < 16) throw new UsageError(`the token in --api-token-file ${tokenFile} is under 16 characters: make a long random one, e.g. openssl rand -hex 32`);
    return tokenAuth(token);
  }
  if (!LOOPBACK.test(listenHost)) throw new UsageError(`the status API would listen on ${listenHost} with no authentication, so anyone reaching it could pause or retry: give --api-token-file FILE (or --api-auth kubernetes), or listen on 127.0.0.1`);
  return openAuth;
}

/** The status replicas' shared key (--peer-key-file, a Secret the operator creates): see workers/status/peers.ts. */
async function peerKeyOf(values: Values): Promise<{ peerKey?: PeerKey }> {
  const file = given(values, 'peer-key-file');
  if (file === undefined) return {};
  const { PeerKey } = await import('../workers/status/peers.ts');
  const key = Buffer.from(usage(() => readSecretFile(file, '--peer-key-file')));
  if (key.length < 16) throw new UsageError(`the key in --peer-key-file ${file} is under 16 bytes: make a long random one, e.g. openssl rand -base64 32`);
  return { peerKey: new PeerKey(key) };
}

/**
 * What the worker pods mount to reach Kafka as the operator does: the Secrets holding the CA bundle
 * (--kafka-ca-secret) and the SASL password (--kafka-sasl-password-secret), and the other settings.
 */
function kafkaMounts(values: Values, security: KafkaSecurity): KafkaMounts {
  const caSecret = given(values, 'kafka-ca-secret');
  const passwordSecret = given(values, 'kafka-sasl-password-secret');
  if (security.tls?.ca !== undefined && caSecret === undefined) throw new UsageError('the workers need the Kafka CA bundle too: give --kafka-ca-secret (the Secret whose ca.crt it is)');
  if (security.sasl !== undefined && passwordSecret === undefined) throw new UsageError('the workers need the Kafka password too: give --kafka-sasl-password-secret (the Secret whose password key it is)');
  return {
    tls: security.tls !== undefined,
    ...(security.tls?.ca !== undefined && caSecret !== undefined ? { caSecret } : {}),
    ...(security.sasl !== undefined && passwordSecret !== undefined ? { sasl: { mechanism: security.sasl.mechanism, username: security.sasl.username, passwordSecret } } : {}),
  };
}

/** TLS and SASL to Kafka, from --kafka-*; the files they name are read now. */
export function kafkaSecurityOf(values: Values): KafkaSecurity {
  const tls = given(values, 'kafka-tls');
  return usage(() =>
    kafkaSecurity({
      tls: tls === 'true',
      ...optional('caFile', given(values, 'kafka-ca-file')),
      ...optional('saslMechanism', given(values, 'kafka-sasl-mechanism')),
      ...optional('saslUsername', given(values, 'kafka-sasl-username')),
      ...optional('saslPasswordFile', given(values, 'kafka-sasl-password-file')),
    }),
  );
}

/** A setting the user got wrong (a file that cannot be read, a value that makes no sense) as a usage error. */
function usage<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof KafkaSecurityError || err instanceof SecretFileError) throw new UsageError(err.message);
    throw err;
  }
}

const brokers = (values: Values): string[] => {
  const list = (given(values, 'brokers') ?? '').split(',').filter((b) => b !== '');
  if (list.length === 0) throw new UsageError('give the Kafka brokers: --brokers host:port,...');
  return list;
};

/**
 * How long a stop may drain work in flight before the process exits anyway: what is left is redelivered
 * (its offsets were not committed). The worker pods' terminationGracePeriodSeconds (60) leaves room.
 */
export const DRAIN_TIMEOUT_MS = 45_000;

/**
 * Runs until SIGTERM or SIGINT, then stops gracefully within DRAIN_TIMEOUT_MS (a second signal exits at
 * once), and exits: a client that keeps a handle open must not keep a stopped process alive.
 */
export async function untilSignal(logger: ReturnType<typeof createLogger>, stop: () => Promise<void>): Promise<number> {
  const reason = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => {
      resolve('SIGINT');
    });
    process.once('SIGTERM', () => {
      resolve('SIGTERM');
    });
  });
  logger.info('stopping: draining work in flight', { reason, timeoutMs: DRAIN_TIMEOUT_MS });
  const again = (): void => {
    logger.warn('second signal: exiting without waiting for the drain');
    process.exit(1);
  };
  process.once('SIGINT', again);
  process.once('SIGTERM', again);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), DRAIN_TIMEOUT_MS);
  });
  const drained = await Promise.race([stop().then(() => false), timedOut]);
  clearTimeout(timer);
  if (drained) logger.warn('drain timed out; exiting: unfinished work is redelivered', { timeoutMs: DRAIN_TIMEOUT_MS });
  else logger.info('stopped');
  // Whatever handle a client library left open, the process ends now.
  setTimeout(() => process.exit(), 100).unref();
  return drained ? 1 : 0;
}

/** `backbeat run`: every role in one process, from manifests; the queue embedded unless --brokers. */
export async function runLocal(values: Values): Promise<number> {
  const files = Array.isArray(values['file']) ? values['file'] : [];
  const gcDelay = count(values, 'gc-delay', 0);
  const concurrency = count(values, 'concurrency', 16, 1);
  const threads = count(values, 'processor-threads', 0);
  if (threads > 64) throw new UsageError('--processor-threads must be an integer from 0 to 64');
  const kafka = given(values, 'brokers') !== undefined ? brokers(values) : undefined;
  if (threads > 0 && kafka === undefined) throw new UsageError('--processor-threads needs --brokers: the embedded queue lives in the main thread');
  const where = listen(values, 8900);
  const webhook = hostPort(text(values, 'webhook-listen', '127.0.0.1:8901'), '--webhook-listen');
  const kafkaSecurity = kafkaSecurityOf(values);
  if (Object.keys(kafkaSecurity).length > 0 && kafka === undefined) throw new UsageError('--kafka-* settings are for Kafka: give --brokers too (without, the queue is embedded)');
  const { startLocal } = await import('../workers/local/local.ts');
  const logger = createLogger({ component: 'backbeat' });
  const local = await startLocal({
    files,
    logger,
    ...(kafka !== undefined ? { brokers: kafka } : {}),
    kafkaSecurity,
    stateDir: text(values, 'state-dir', '.backbeat'),
    listenHost: where.host,
    listenPort: where.port,
    webhookHost: webhook.host,
    webhookPort: webhook.port,
    apiAuth: await controlAuth(values, where.host),
    concurrency,
    ...(threads > 0 ? { processorThreads: threads } : {}),
    ...optional('prefix', given(values, 'prefix')),
    gcDelayMs: gcDelay * 1000,
  });
  return untilSignal(logger, () => local.stop());
}

export async function worker(values: Values): Promise<number> {
  const { ROLES, startWorker } = await import('../workers/worker/worker.ts');
  const role = text(values, 'role');
  if (!(ROLES as readonly string[]).includes(role)) throw new UsageError(`--role must be one of ${ROLES.join(', ')}, got "${role}"`);
  const location = given(values, 'location');
  if (role !== 'status' && role !== 'gc' && location === undefined) throw new UsageError(`the ${role} role needs --location (its ${role === 'processor' ? 'destination' : 'source'} location)`);
  const where = listen(values, 8900);
  const logger = createLogger({ component: `backbeat-${role}` });
  const gcDelay = count(values, 'gc-delay', 0);
  const run = await startWorker({
    role: role as (typeof ROLES)[number],
    ...(location !== undefined ? { location } : {}),
    configDir: text(values, 'config', '/etc/backbeat/config'),
    credentialsDir: text(values, 'credentials', '/etc/backbeat/credentials'),
    brokers: brokers(values),
    kafkaSecurity: kafkaSecurityOf(values),
    prefix: text(values, 'prefix', 'backbeat'),
    partitions: count(values, 'partitions', 8, 1),
    ...replicationFactor(values),
    listenHost: where.host,
    listenPort: where.port,
    concurrency: count(values, 'concurrency', 16, 1),
    gcDelayMs: gcDelay * 1000,
    ...optional('stateDir', given(values, 'state-dir')),
    ...optional('advertiseUrl', given(values, 'advertise-url')),
    ...(role === 'status' ? { apiAuth: await controlAuth(values, where.host), ...(await peerKeyOf(values)) } : {}),
    logger,
  });
  return untilSignal(logger, () => run.stop());
}

/** Replicas of the topics created; unset: min(3, brokers). */
function replicationFactor(values: Values): { replicationFactor?: number } {
  const set = given(values, 'replication-factor') !== undefined;
  return set ? { replicationFactor: count(values, 'replication-factor', 0, 1) } : {};
}

const optional = <K extends string>(name: K, value: string | undefined): Partial<Record<K, string>> => (value === undefined ? {} : ({ [name]: value } as Record<K, string>));

export async function operator(values: Values): Promise<number> {
  const { startOperator } = await import('../operator/operator.ts');
  const where = listen(values, 8080);
  const logger = createLogger({ component: 'backbeat-operator' });
  const parsedResources = json(given(values, 'worker-resources'), '--worker-resources', '{"requests":{"cpu":"100m"}}');
  const roleResources = json(given(values, 'worker-role-resources'), '--worker-role-resources', '{"processor":{"limits":{"memory":"2Gi"}}}');
  const pod = json(given(values, 'worker-pod'), '--worker-pod', '{"nodeSelector":{"disk":"ssd"}}');
  const rolePod = json(given(values, 'worker-role-pod'), '--worker-role-pod', '{"processor":{"priorityClassName":"high"}}');
  const { ROLES } = await import('../workers/worker/worker.ts');
  const { POD_EXTRAS } = await import('../operator/workers.ts');
  for (const [flag, byRole] of [['--worker-role-resources', roleResources], ['--worker-role-pod', rolePod]] as const) {
    const unknownRole = Object.keys(byRole ?? {}).find((r) => !(ROLES as readonly string[]).includes(r));
    if (unknownRole !== undefined) throw new UsageError(`${flag}: no role "${unknownRole}" (roles: ${ROLES.join(', ')})`);
  }
  for (const [flag, extras] of [['--worker-pod', pod], ...Object.entries(rolePod ?? {}).map(([role, e]) => [`--worker-role-pod ${role}`, e] as const)] as const) {
    const unknown = Object.keys(extras ?? {}).find((k) => !(POD_EXTRAS as readonly string[]).includes(k));
    if (unknown !== undefined) throw new UsageError(`${flag}: no field "${unknown}" (fields: ${POD_EXTRAS.join(', ')})`);
  }
  const min = count(values, 'min-replicas', 1, 0);
  const max = count(values, 'max-replicas', 8, 1);
  if (min > max) throw new UsageError(`--min-replicas (${String(min)}) exceeds --max-replicas (${String(max)})`);
  const kubeconfig = given(values, 'kubeconfig');
  const owner = given(values, 'owner');
  const security = kafkaSecurityOf(values);
  const run = await startOperator({
    kafkaSecurity: security,
    namespace: text(values, 'namespace', process.env['POD_NAMESPACE']),
    settings: {
      name: text(values, 'name', 'backbeat'),
      image: text(values, 'image'),
      imagePullPolicy: text(values, 'image-pull-policy', 'IfNotPresent'),
      brokers: brokers(values),
      prefix: text(values, 'prefix', 'backbeat'),
      partitions: count(values, 'partitions', 8, 1),
      ...replicationFactor(values),
      logLevel: process.env['BACKBEAT_WORKER_LOG_LEVEL'] ?? process.env['BACKBEAT_LOG_LEVEL'] ?? 'info',
      scaling: { lagThreshold: count(values, 'lag-threshold', 1000, 1), minReplicas: min, maxReplicas: max },
      ...(parsedResources !== undefined ? { resources: parsedResources } : {}),
      ...(roleResources !== undefined ? { roleResources } : {}),
      ...(pod !== undefined ? { pod } : {}),
      ...(rolePod !== undefined ? { rolePod } : {}),
      statusServiceAccount: text(values, 'status-service-account', `${text(values, 'name', 'backbeat')}-status`),
      kafkaMounts: kafkaMounts(values, security),
      listenAddress: text(values, 'worker-listen-address', '0.0.0.0'),
    },
    ...(owner !== undefined ? { ownerDeployment: owner } : {}),
    ...(kubeconfig !== undefined ? { kubeconfig } : {}),
    resyncMs: count(values, 'resync', 15, 1) * 1000,
    scaleDownDelayMs: count(values, 'scale-down-delay', 60, 0) * 1000,
    listenHost: where.host,
    listenPort: where.port,
    logger,
  });
  void run.done.then(() => {
    // No drain: a pass still under way must not write anything once another operator may lead.
    logger.error('exiting at once: no longer the leader');
    process.exit(1);
  });
  return untilSignal(logger, () => run.stop());
}
