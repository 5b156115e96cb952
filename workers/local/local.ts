import { join } from 'node:path';
import { listenOn } from '../../lib/http/health.ts';
import { compileBucketConfigs, destinationLocations, usedLocations } from '../../lib/config/bucket-config.ts';
import { reasonOf } from '../../lib/s3/errors.ts';
import { journalArns, wireJournal } from '../../lib/s3/notifications.ts';
import { resolveWebhookToken } from '../../lib/config/credentials.ts';
import { loadManifests } from '../../lib/config/manifests.ts';
import { ConfigError, type Problem } from '../../lib/config/validate.ts';
import type { Logger } from '../../lib/log/logger.ts';
import { createMetrics, recordLag } from '../../lib/metrics.ts';
import { embeddedQueue } from '../../lib/queue/embedded.ts';
import type { Queue } from '../../lib/queue/queue.ts';
import { WINDOW } from '../../lib/queue/ordered.ts';
import { installationTopics, queueNames, TASK_RETENTION_MS } from '../../lib/queue/messages.ts';
import { GarbageCollector } from '../gc/gc.ts';
import { Populator } from '../populator/populator.ts';
import { scheduleScans } from '../populator/scans.ts';
import { Processor } from '../processor/processor.ts';
import type { RetryPolicy } from '../../lib/retry.ts';
import { ruleStarts } from './rule-starts.ts';
import { type ApiAuth, openAuth } from '../status/auth.ts';
import type { KafkaSecurity } from '../../lib/queue/kafka-security.ts';
import { StatusProcessor } from '../status/status.ts';
import { WebhookReceiver, type WebhookLocation } from '../webhook/receiver.ts';
import { ProcessorThreads } from './processor-threads.ts';
import { buildGc, buildPopulator, buildStatusApi, connector, journalTopics, sourcesOf, transientSources, type RoleBase } from '../worker/build.ts';
import { startProcessors } from './processors.ts';

export interface LocalOptions {
  /** Manifest files or folders: Location, ReplicationRule, Secret. */
  files: string[];
  logger: Logger;
  /** Kafka brokers; without them an embedded queue persists under stateDir. */
  brokers?: string[];
  /** TLS and SASL to those brokers. */
  kafkaSecurity?: KafkaSecurity;
  stateDir: string;
  listenHost?: string;
  /** 0 picks a free port. */
  listenPort?: number;
  /** Who may call the status API; anyone when unset (the API then listens on loopback only). */
  apiAuth?: ApiAuth;
  concurrency?: number;
  partitions?: number;
  retry?: Partial<RetryPolicy>;
  /** Names every topic and consumer group: installations sharing a Kafka cluster use different ones. */
  prefix?: string;
  /** Delay between an object of a transient source completing and the deletion of its source copy. */
  gcDelayMs?: number;
  /** Runs the processors on this many worker threads instead of the main thread (Kafka only). */
  processorThreads?: number;
  /** Where the webhook journal's receiver listens, when a source Location has one (default 127.0.0.1, a free port). */
  webhookHost?: string;
  webhookPort?: number;
}

export interface LocalRun {
  /** Base URL of the status API. */
  url: string;
  status: StatusProcessor;
  populator: Populator;
  gc: GarbageCollector | undefined;
  /** The processors, when they run in the main thread. */
  processors: Map<string, Processor>;
  /** The processors' threads, when they run on worker threads. */
  threads: ProcessorThreads | undefined;
  /** The webhook journal's receiver and its base URL, when a source Location has one. */
  webhook: { receiver: WebhookReceiver; url: string } | undefined;
  stop(): Promise<void>;
}

/** Every role in one process, from the same manifests the operator takes. */
/** Partitions per topic local mode makes on Kafka (and those an embedded queue of earlier versions has). */
const KAFKA_PARTITIONS = 4;

export async function startLocal(options: LocalOptions): Promise<LocalRun> {
  const { logger } = options;
  const manifests = loadManifests(options.files);
  const starts = ruleStarts(options.stateDir, manifests.rules.keys());
  const configs = compileBucketConfigs(manifests, starts);

  const problems: Problem[] = [];
  const clients = connector(manifests.locations, manifests);
  const webhooks = new Map<string, WebhookLocation>();
  const sources = new Set(sourcesOf(configs));
  for (const name of usedLocations(configs.values())) {
    const location = manifests.locations.get(name);
    if (location === undefined) continue;
    try {
      clients.connect(name);
    } catch (err) {
      if (err instanceof ConfigError) problems.push(...err.problems);
      else throw err;
    }
    const isSource = sources.has(name);
    // A webhook journal's topic is written here: the embedded queue can hold it.
    if (location.spec.journal?.kafka !== undefined && location.spec.journal.webhook === undefined && options.brokers === undefined && isSource) {
      problems.push({ resource: `Location/${name}`, path: 'spec.journal.kafka', message: 'a Kafka journal needs Kafka: give --brokers' });
    }
    const topic = location.spec.journal?.kafka?.topic;
    if (isSource && topic !== undefined && location.spec.journal?.webhook !== undefined) {
      try {
        webhooks.set(name, { topic, token: resolveWebhookToken(location, manifests) });
      } catch (err) {
        if (err instanceof ConfigError) problems.push(...err.problems);
        else throw err;
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if ((options.processorThreads ?? 0) > 0 && options.brokers === undefined) throw new Error('processor threads need Kafka (the embedded queue lives in the main thread)');

  const embedded = options.brokers === undefined ? embeddedQueue({
          dir: join(options.stateDir, 'queue'),
          onError: (what, error) => logger.warn(`embedded queue: ${what} failed; retrying`, { error }),
          onRepair: (what) => logger.warn('embedded queue repaired at open', { what }),
        }) : undefined;
  // kafkajs is loaded only when asked for.
  const queue: Queue = embedded ?? (await import('../../lib/queue/kafka.ts')).kafkaQueue({ brokers: options.brokers ?? [], clientId: 'backbeat-local', logger, ...(options.kafkaSecurity !== undefined ? { security: options.kafkaSecurity } : {}) });
  const prefix = options.prefix ?? 'backbeat';
  const names = queueNames(prefix);
  const metrics = createMetrics();
  // One partition per topic on the embedded queue: it has no consumers to spread them over (processor
  // threads need Kafka), and each partition is a file synced on its own: with four, a backfill of small
  // objects took 13 % more CPU per object (alternating runs, docs/benchmarks.md). An existing queue keeps
  // its partitions.
  const partitions = options.partitions ?? (embedded !== undefined ? 1 : KAFKA_PARTITIONS);
  const admin = await queue.admin();
  await admin.ensureTopics(installationTopics(names, partitions, journalTopics(manifests.locations.values())));
  // A slow key lets the tasks behind it go on up to a window per partition: as many in all on one
  // partition as on Kafka's.
  const window = embedded !== undefined ? Math.ceil((KAFKA_PARTITIONS * WINDOW) / (await admin.partitionCount(names.replication))) : undefined;
  if (embedded !== undefined) {
    // Groups of an earlier run that this one does not use (readers and followers take fresh names; a
    // destination gone from the manifests) would hold the embedded logs for ever.
    const keep = new Set([
      names.statusGroup,
      names.gcGroup,
      ...destinationLocations(configs.values()).map((l) => names.processorGroup(l)),
    ]);
    const stale = embedded.groupIds().filter((g) => [`${prefix}-`, 'backbeat-reader-', 'follow-'].some((p) => g.startsWith(p)) && !keep.has(g));
    if (stale.length > 0) {
      await admin.deleteGroups(stale);
      logger.info('removed consumer groups of an earlier run', { groups: stale });
    }
  }
  await admin.close();

  const base: RoleBase = { queue, names, metrics, logger, buckets: configs, locations: manifests.locations, ...clients };
  const role = (name: string): RoleBase => ({ ...base, logger: logger.child({ role: name }) });
  const transient = transientSources(base);
  const status = new StatusProcessor({
    metrics,
    queue,
    names,
    transientSources: transient,
    logger: logger.child({ role: 'status' }),
    // A copy of the status changelog, per installation prefix: a restart reads only what it missed.
    storeFile: join(options.stateDir, `status-${prefix}.db`),
  });
  await status.start();
  await status.whenReady();
  // The GC runs only where a transient source exists.
  const gc = transient.size > 0 ? buildGc(role('gc'), options.gcDelayMs) : undefined;
  await gc?.start();

  const destinations = destinationLocations(configs.values());
  const threads =
    (options.processorThreads ?? 0) > 0
      ? await ProcessorThreads.start(
          options.processorThreads ?? 0,
          {
            files: options.files,
            brokers: options.brokers ?? [],
            ...(options.kafkaSecurity !== undefined ? { kafkaSecurity: options.kafkaSecurity } : {}),
            prefix,
            starts: [...starts],
            locations: destinations,
            ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
            ...(options.retry !== undefined ? { retry: options.retry } : {}),
          },
          logger,
        )
      : undefined;
  const processors = await startProcessors(base, threads === undefined ? destinations : [], { concurrency: options.concurrency, retry: options.retry, window });

  const populator = buildPopulator(role('populator'), sources);
  for (const name of sources) {
    const topic = manifests.locations.get(name)?.spec.journal?.kafka?.topic;
    if (topic !== undefined) await populator.followJournal(name, topic);
  }

  const receiver = webhooks.size > 0 ? new WebhookReceiver({ queue, metrics, logger: logger.child({ role: 'webhook' }), locations: webhooks }) : undefined;
  const hook = await receiver?.listen(options.webhookPort ?? 0, options.webhookHost ?? '127.0.0.1');
  const webhook = receiver !== undefined && hook !== undefined ? { receiver, url: `http://${hook.address}:${String(hook.port)}` } : undefined;

  await wireJournals(base);
  const scans = scheduleScans(populator, configs, manifests.locations, sources, logger, { metrics });

  const controlProducer = await queue.producer();
  // Consumer groups whose lag /metrics reports.
  const lagGroups: [string, string][] = [
    ...destinations.map((l): [string, string] => [names.processorGroup(l), names.replication]),
    [names.statusGroup, names.status],
    ...(gc !== undefined ? [[names.gcGroup, names.gc] as [string, string]] : []),
    ...[...sources].flatMap((l): [string, string][] => {
      const topic = manifests.locations.get(l)?.spec.journal?.kafka?.topic;
      return topic !== undefined ? [[names.populatorGroup(l), topic]] : [];
    }),
  ];
  const lagAdmin = await queue.admin();
  let stopping = false;
  const server = buildStatusApi(base, {
    status,
    producer: controlProducer,
    backfiller: populator,
    auth: options.apiAuth ?? openAuth,
    states: () =>
      threads?.states() ??
      [...processors.entries()].map(([location, p]) => ({
        location,
        paused: p.paused,
        ...(p.paused && p.pause?.until !== undefined ? { until: p.pause.until } : {}),
      })),
    health: {
      async metrics() {
        metrics.pending.reset();
        for (const [destination, n] of status.pendingByDestination()) metrics.pending.set({ destination }, n);
        await recordLag(lagAdmin, metrics, lagGroups, TASK_RETENTION_MS / 2);
        if (threads !== undefined) return threads.metrics(await metrics.registry.getMetricsAsJSON());
        return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
      },
      ready: () => !stopping && status.ready() && [...processors.values()].every((p) => p.settled) && (threads?.settled ?? true) && populator.consuming && (gc?.consuming ?? true),
      readiness: () => ({ restoring: status.restores() }),
    },
  });
  const url = await listenOn(server, options.listenPort ?? 0, options.listenHost ?? '127.0.0.1');
  logger.info('local mode running', { url, queue: options.brokers !== undefined ? 'kafka' : 'embedded', sources: [...sources], destinations, ...(threads !== undefined ? { processorThreads: options.processorThreads } : {}), ...(webhook !== undefined ? { webhook: webhook.url } : {}) });

  return {
    url,
    status,
    populator,
    gc,
    processors,
    threads,
    webhook,
    async stop() {
      stopping = true;
      server.close();
      server.closeAllConnections();
      await receiver?.close();
      await scans.stop();
      // Upstream first, so that nothing new reaches a role that already stopped.
      await populator.close();
      await Promise.all([...[...processors.values()].map((p) => p.close()), threads?.stop()]);
      await gc?.close();
      await status.close();
      await controlProducer.close();
      await lagAdmin.close();
    },
  };
}

/**
 * Points each source bucket's event notifications at its Location's Kafka target, as the operator does
 * (journal.kafka.targetId: MinIO's MINIO_NOTIFY_KAFKA_*_<ID>), keeping the user's own. A bucket that
 * cannot be wired, or a Kafka journal without a targetId, is said in the log: its changes arrive only
 * through notifications wired by hand, or the next scan.
 */
async function wireJournals({ buckets, locations, logger, client }: RoleBase): Promise<void> {
  for (const c of buckets.values()) {
    const location = locations.get(c.SourceLocation);
    const kafka = location?.spec.journal?.kafka;
    if (location === undefined || kafka === undefined || location.spec.journal?.webhook !== undefined) continue;
    const bucket = `${c.SourceLocation}/${c.SourceBucket}`;
    if (kafka.targetId === undefined) {
      logger.warn('journal not wired: the Location names no notification target (journal.kafka.targetId); send the bucket\'s events to its topic yourself', { bucket, topic: kafka.topic, ...(location.spec.journal?.scan !== undefined ? {} : { meanwhile: 'nothing replicates until they arrive' }) });
      continue;
    }
    try {
      if ((await wireJournal(client(c.SourceLocation), c.SourceBucket, journalArns(location))) === 'added') logger.info('journal wired', { bucket, target: kafka.targetId });
    } catch (err) {
      logger.warn('journal not wired: the bucket\'s notifications could not be set', { bucket, target: kafka.targetId, reason: reasonOf(err) });
    }
  }
}
