#!/usr/bin/env node
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadManifests } from '../lib/config/manifests.ts';
import { ConfigError, formatProblem } from '../lib/config/validate.ts';
import { createLogger } from '../lib/log/logger.ts';
import { redactString } from '../lib/log/redact.ts';
import { compileBucketConfigs } from '../lib/config/bucket-config.ts';
import { apiServer, callApi } from './api.ts';
import { listFailed, retryFailed } from './failed.ts';
import { setPause, untilTime } from './pause.ts';
import { controlAuth, hostPort, KAFKA_OPTIONS, kafkaSecurityOf, operator, SERVE_OPTIONS, untilSignal, UsageError, worker } from './serve.ts';
import { printStatus } from './status.ts';

const USAGE = `backbeat — asynchronous S3 replication

Usage:
  backbeat run -f <file|dir>... [--brokers host:port,...] [--state-dir DIR] [--listen HOST:PORT] [--webhook-listen HOST:PORT] [--concurrency N] [--processor-threads N] [--prefix NAME] [--gc-delay SECONDS]
      Runs every role in one process from Location, ReplicationRule and Secret manifests. Without
      --brokers the queue is embedded and kept in --state-dir (default ./.backbeat). The status API
      listens on --listen (default 127.0.0.1:8900). --prefix names the topics and consumer groups
      (default backbeat), to keep installations sharing a Kafka cluster apart. --gc-delay waits that
      long before deleting the source copy of an object of a transient Location (default 0).
      --processor-threads N runs the copies on N worker threads, to use more cores (needs --brokers).
      Listening anywhere but loopback needs --api-token-file FILE: the API then asks for that token.
      A source Location with spec.journal.webhook gets its S3 event notifications on --webhook-listen
      (default 127.0.0.1:8901) at POST /v1/journal/<location>, with the token of its Secret.
  backbeat validate -f <file|dir>...
      Checks manifests and prints the per-bucket replication configs they compile to.
  backbeat status <location>/<bucket>/<key> [--version-id V] [--server URL] [--json]
      Replication status of an object, per destination.
  backbeat failed list [--destination D] [--limit N] [--cursor C] [--json] [--server URL]
      Object versions whose replication failed, per destination: reason, attempts, first and last failure.
      Oldest failure first, N a page (default 100); the last line gives the --cursor of the next page.
  backbeat failed retry (<location>/<bucket>/<key> [--version-id V] | --destination D | --all) [--server URL]
      Sends failed entries back through the pipeline. D is a destination (location/bucket) or a location.

  backbeat pause <location> [--until <time|duration>] [--server URL]
      Stops replicating to a destination location; changes keep queueing. --until schedules the resume
      (an ISO 8601 time, or a duration such as 30m or 2h).
  backbeat resume <location> [--server URL]
      Resumes it: what was written meanwhile replicates.

  backbeat backfill <rule> [--server URL]
      Replicates the objects that were in the rule's source bucket before it (or that it missed).

  backbeat worker --role populator|scanner|processor|status|gc|webhook [--location L] [--config DIR] [--credentials DIR] --brokers B [--listen HOST:PORT]
                 [--state-dir DIR] [--advertise-url URL] [--peer-key-file FILE]
      One worker role, as the operator's Deployments run it, from the config the operator publishes. The
      status role keeps its partitions' state in --state-dir, and other replicas reach it at --advertise-url;
      with --peer-key-file (a key only the status replicas hold), they trust only owner records signed
      with it, and forward requests with a signed assertion instead of the caller's token.
  backbeat operator --namespace NS --image IMAGE --brokers B [--name NAME] [--owner DEPLOYMENT] [--kubeconfig FILE]
      The Kubernetes operator. Every flag of worker and operator can be set as $BACKBEAT_<FLAG> instead.

  status, failed, pause, resume and backfill ask the status API at --server (default http://127.0.0.1:8900),
  sending the token of --token-file FILE ($BACKBEAT_TOKEN_FILE), else the token of --kubeconfig's user.
  run, worker and operator reach Kafka over TLS with --kafka-tls true [--kafka-ca-file PEM], and with SASL
  through --kafka-sasl-mechanism plain|scram-sha-256|scram-sha-512 --kafka-sasl-username U
  --kafka-sasl-password-file FILE.
`;


/** How the commands that ask the status API find it and authenticate. */
const API_OPTIONS = { server: { type: 'string' }, 'token-file': { type: 'string' }, kubeconfig: { type: 'string' } } as const;

function options(args: string[], spec: ParseArgsConfig['options']): ReturnType<typeof parseArgs> {
  try {
    return parseArgs({ args, options: spec ?? {}, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function files(value: unknown): string[] {
  const list = Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
  if (list.length === 0) throw new UsageError('give the manifests with -f <file|dir>');
  return list;
}

async function run(args: string[]): Promise<number> {
  const { values } = options(args, {
    file: { type: 'string', short: 'f', multiple: true },
    brokers: { type: 'string' },
    'state-dir': { type: 'string' },
    listen: { type: 'string' },
    'webhook-listen': { type: 'string' },
    concurrency: { type: 'string' },
    'processor-threads': { type: 'string' },
    prefix: { type: 'string' },
    'gc-delay': { type: 'string' },
    'api-token-file': { type: 'string' },
    ...KAFKA_OPTIONS,
  });
  const gcDelay = values['gc-delay'] === undefined ? undefined : Number(values['gc-delay']);
  if (gcDelay !== undefined && (!Number.isFinite(gcDelay) || gcDelay < 0)) throw new UsageError('--gc-delay must be a number of seconds, 0 or more');
  const concurrency = values.concurrency === undefined ? undefined : Number(values.concurrency);
  if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1)) throw new UsageError('--concurrency must be a positive integer');
  const threads = values['processor-threads'] === undefined ? undefined : Number(values['processor-threads']);
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 0 || threads > 64)) throw new UsageError('--processor-threads must be an integer from 0 to 64');
  if ((threads ?? 0) > 0 && typeof values.brokers !== 'string') throw new UsageError('--processor-threads needs --brokers: the embedded queue lives in the main thread');
  const listen = hostPort(typeof values.listen === 'string' ? values.listen : '127.0.0.1:8900');
  const webhook = hostPort(typeof values['webhook-listen'] === 'string' ? values['webhook-listen'] : '127.0.0.1:8901', '--webhook-listen');
  const kafkaSecurity = kafkaSecurityOf(values);
  if (Object.keys(kafkaSecurity).length > 0 && typeof values.brokers !== 'string') throw new UsageError('--kafka-* settings are for Kafka: give --brokers too (without, the queue is embedded)');
  const { startLocal } = await import('../workers/local/local.ts');
  const logger = createLogger({ component: 'backbeat' });
  const local = await startLocal({
    files: files(values.file),
    logger,
    ...(typeof values.brokers === 'string' ? { brokers: values.brokers.split(',').filter((b) => b !== '') } : {}),
    kafkaSecurity,
    stateDir: typeof values['state-dir'] === 'string' ? values['state-dir'] : '.backbeat',
    listenHost: listen.host,
    listenPort: listen.port,
    webhookHost: webhook.host,
    webhookPort: webhook.port,
    apiAuth: await controlAuth(values, listen.host),
    ...(concurrency !== undefined ? { concurrency } : {}),
    ...(threads !== undefined ? { processorThreads: threads } : {}),
    ...(typeof values.prefix === 'string' ? { prefix: values.prefix } : {}),
    ...(gcDelay !== undefined ? { gcDelayMs: gcDelay * 1000 } : {}),
  });
  return untilSignal(logger, () => local.stop());
}

function validate(args: string[]): number {
  const { values } = options(args, { file: { type: 'string', short: 'f', multiple: true } });
  const manifests = loadManifests(files(values.file));
  const configs = [...compileBucketConfigs(manifests).values()];
  process.stdout.write(`${JSON.stringify(configs, null, 2)}\n`);
  process.stderr.write(`valid: ${manifests.locations.size} locations, ${manifests.rules.size} rules, ${configs.length} source buckets\n`);
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = options(args, {
    'version-id': { type: 'string' },
    ...API_OPTIONS,
    json: { type: 'boolean' },
  });
  const target = positionals[0];
  const m = target === undefined ? null : /^([^/]+)\/([^/]+)\/(.+)$/s.exec(target);
  if (m === null || positionals.length !== 1) throw new UsageError('give one object as <location>/<bucket>/<key>');
  return printStatus({
    location: m[1] ?? '',
    bucket: m[2] ?? '',
    key: m[3] ?? '',
    ...(typeof values['version-id'] === 'string' ? { versionId: values['version-id'] } : {}),
    server: await apiServer(values),
    json: values.json === true,
  });
}

async function failed(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = options(rest, {
    destination: { type: 'string' },
    'version-id': { type: 'string' },
    all: { type: 'boolean' },
    json: { type: 'boolean' },
    ...API_OPTIONS,
    limit: { type: 'string' },
    cursor: { type: 'string' },
  });
  const server = await apiServer(values);
  const destination = typeof values.destination === 'string' ? values.destination : undefined;
  if (sub === 'list') {
    if (positionals.length > 0) throw new UsageError('failed list takes no object; use --destination to narrow it');
    const limit = typeof values.limit === 'string' ? values.limit : undefined;
    if (limit !== undefined && !/^[1-9]\d*$/.test(limit)) throw new UsageError(`--limit must be a positive whole number, got "${limit}"`);
    return listFailed(server, { ...(destination !== undefined ? { destination } : {}), ...(limit !== undefined ? { limit } : {}), ...(typeof values.cursor === 'string' ? { cursor: values.cursor } : {}) }, values.json === true);
  }
  if (sub === 'retry') {
    const object = positionals[0];
    const chosen = [values.all === true, destination !== undefined, object !== undefined].filter(Boolean).length;
    if (chosen !== 1 || positionals.length > 1) throw new UsageError('failed retry takes one of: <location>/<bucket>/<key>, --destination D, --all');
    if (values.all === true) return retryFailed(server, { all: true });
    if (destination !== undefined) return retryFailed(server, { destination });
    const versionId = typeof values['version-id'] === 'string' ? values['version-id'] : undefined;
    return retryFailed(server, { object: object ?? '', ...(versionId !== undefined ? { versionId } : {}) });
  }
  throw new UsageError('failed needs list or retry');
}

async function pause(action: 'pause' | 'resume', args: string[]): Promise<number> {
  const { values, positionals } = options(args, { until: { type: 'string' }, ...API_OPTIONS });
  const [location] = positionals;
  if (location === undefined || positionals.length !== 1) throw new UsageError(`${action} takes one destination location`);
  if (action === 'resume' && values.until !== undefined) throw new UsageError('resume takes no --until');
  let until: string | undefined;
  try {
    until = typeof values.until === 'string' ? untilTime(values.until) : undefined;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return setPause(await apiServer(values), location, action, until);
}

async function backfill(args: string[]): Promise<number> {
  const { values, positionals } = options(args, API_OPTIONS);
  const [rule] = positionals;
  if (rule === undefined || positionals.length !== 1) throw new UsageError('backfill takes one rule name');
  const answer = await callApi(await apiServer(values), `/v1/rules/${encodeURIComponent(rule)}/backfill`, { method: 'POST', body: {} });
  const body = answer.body as { error?: string; queued?: number };
  if (answer.status !== 200) {
    process.stderr.write(`backbeat: ${body.error ?? `status API answered HTTP ${answer.status}`}\n`);
    return 2;
  }
  process.stdout.write(`rule ${rule}: queued ${String(body.queued)} object versions\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  switch (command) {
    case 'run':
      return run(args);
    case 'validate':
      return validate(args);
    case 'status':
      return status(args);
    case 'failed':
      return failed(args);
    case 'pause':
    case 'resume':
      return pause(command, args);
    case 'backfill':
      return backfill(args);
    case 'worker':
      return worker(options(args, SERVE_OPTIONS).values);
    case 'operator':
      return operator(options(args, SERVE_OPTIONS).values);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // Bad input is the user's to fix: say what is wrong, one line each, without a stack trace.
    // (process.exit: a run that failed half-way may hold connections that would keep it alive.)
    if (err instanceof ConfigError) {
      for (const p of err.problems) process.stderr.write(`${formatProblem(p)}\n`);
      process.exitCode = 2;
    } else if (err instanceof UsageError) {
      process.stderr.write(`backbeat: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`backbeat: ${redactString(err instanceof Error ? err.message : String(err))}\n`);
      process.exitCode = 1;
    }
    process.exit();
  },
);
