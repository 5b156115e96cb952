import { join } from 'node:path';
import type { Server } from 'node:http';
import { destinationLocations, type BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import { resolveWebhookToken } from '../../lib/config/credentials.ts';
import { buildGc, buildPopulator, buildProcessor, buildStatusApi, connector, journalTopics, sourcesOf, transientSources, type RoleBase } from './build.ts';
import { readPublishedConfig, secretsFromDir } from '../../lib/config/published.ts';
import { ConfigError } from '../../lib/config/validate.ts';
import type { Logger } from '../../lib/log/logger.ts';
import { createMetrics, recordLag } from '../../lib/metrics.ts';
import { follow } from '../../lib/queue/follow.ts';
import { kafkaQueue } from '../../lib/queue/kafka.ts';
import { encode, installationTopics, TASK_RETENTION_MS, partitionFiguresKey, isPaused, parseMessage, pauseKey, PauseState, queueNames } from '../../lib/queue/messages.ts';
import { Populator } from '../populator/populator.ts';
import { scheduleScans } from '../populator/scans.ts';
import { type HealthContext, healthServer, listenOn } from '../../lib/http/health.ts';
import { type ApiAuth, openAuth } from '../status/auth.ts';
import type { PeerKey } from '../status/peers.ts';
import type { KafkaSecurity } from '../../lib/queue/kafka-security.ts';
import { StatusProcessor } from '../status/status.ts';
import { WebhookReceiver } from '../webhook/receiver.ts';

// One role per process, as the operator's worker Deployments run them: the populator (journal follower),
// the scanner and the webhook receiver of a source location, the processor of a destination location, the
// status processor (with the status API), or the GC. Each reads the config the operator published (a mounted ConfigMap) and serves /metrics.

export const ROLES = ['populator', 'scanner', 'processor', 'status', 'gc', 'webhook'] as const;
export type Role = (typeof ROLES)[number];

export interface WorkerOptions {
  role: Role;
  /** The source location of a populator or scanner, the destination location of a processor. */
  location?: string;
  /** The mounted ConfigMap (see lib/config/published.ts). */
  configDir: string;
  /** The mounted Secrets, one folder each. */
  credentialsDir: string;
  brokers: string[];
  kafkaSecurity?: KafkaSecurity;
  prefix?: string;
  partitions?: number;
  /** Replicas of the topics created (unset: min(3, brokers)). */
  replicationFactor?: number;
  listenHost?: string;
  listenPort?: number;
  concurrency?: number;
  gcDelayMs?: number;
  /** How often the status role publishes its figures for the operator. */
  figuresIntervalMs?: number;
  /** Where the status role keeps its local store (an emptyDir in a pod); in memory without one. */
  stateDir?: string;
  /** The URL other status replicas reach this one's API at (e.g. http://$(POD_IP):8080). */
  advertiseUrl?: string;
  /** Who may call the status role's API; anyone when unset (tests on loopback). */
  apiAuth?: ApiAuth;
  /** What the status replicas trust each other by (workers/status/peers.ts). */
  peerKey?: PeerKey;
  logger: Logger;
}

export interface WorkerRun {
  url: string;
  stop(): Promise<void>;
}

interface RoleRun {
  /** [group, topic] pairs whose lag /metrics reports. */
  lagGroups: [string, string][];
  /** Sets the role's own gauges before a scrape. */
  refresh?: () => void;
  stop(): Promise<void>;
  /** The status role serves its API instead of metrics alone. */
  server?: (health: HealthContext) => Server;
  /** False while the role cannot do its work yet (the status role restoring its partitions). */
  ready?: () => boolean;
  /** What /readyz adds to its answer. */
  readiness?: () => Record<string, unknown>;
}

/** What a role is built from (build.ts), with the worker's options and its mounted Secrets. */
interface RoleContext extends RoleBase {
  options: WorkerOptions;
  secrets: ReturnType<typeof secretsFromDir>;
}

function needLocation(options: WorkerOptions): string {
  if (options.location === undefined) throw new ConfigError([{ resource: `worker ${options.role}`, path: '--location', message: `the ${options.role} role needs --location` }]);
  return options.location;
}

function sourcePopulator(ctx: RoleContext): { location: string; configs: Map<string, BucketReplicationConfig>; populator: Populator } {
  const location = needLocation(ctx.options);
  const configs = new Map([...ctx.buckets].filter(([, c]) => c.SourceLocation === location));
  return { location, configs, populator: buildPopulator({ ...ctx, buckets: configs }, [location]) };
}

/** Follows the journal topic of a source location; scaled from its lag. */
async function populator(ctx: RoleContext): Promise<RoleRun> {
  const { location, populator: p } = sourcePopulator(ctx);
  const topic = ctx.locations.get(location)?.spec.journal?.kafka?.topic;
  if (topic === undefined) throw new ConfigError([{ resource: `Location/${location}`, path: 'spec.journal.kafka', message: 'the populator role follows a Kafka journal, and this location has none' }]);
  await p.followJournal(location, topic);
  return { lagGroups: [[ctx.names.populatorGroup(location), topic]], ready: () => p.consuming, stop: () => p.close() };
}

/** The listing scans of a source location (periodic repair, existing objects): one replica, so each listing runs once. */
function scanner(ctx: RoleContext): Promise<RoleRun> {
  const { location, configs, populator: p } = sourcePopulator(ctx);
  const scans = scheduleScans(p, configs, ctx.locations, new Set([location]), ctx.logger, { metrics: ctx.metrics });
  return Promise.resolve({
    lagGroups: [],
    async stop() {
      await scans.stop();
      await p.close();
    },
  });
}

async function processor(ctx: RoleContext): Promise<RoleRun> {
  const location = needLocation(ctx.options);
  const p = buildProcessor(ctx, location, { concurrency: ctx.options.concurrency });
  await p.start();
  // Not ready while it should consume and does not (a subscription failed and is being retried).
  return { lagGroups: [[ctx.names.processorGroup(location), ctx.names.replication]], ready: () => p.settled, stop: () => p.close() };
}

async function gc(ctx: RoleContext): Promise<RoleRun> {
  const g = buildGc(ctx, ctx.options.gcDelayMs);
  await g.start();
  return { lagGroups: [[ctx.names.gcGroup, ctx.names.gc]], ready: () => g.consuming, stop: () => g.close() };
}

async function status(ctx: RoleContext): Promise<RoleRun> {
  const { queue, names } = ctx;
  const { stateDir, advertiseUrl, peerKey } = ctx.options;
  if (peerKey !== undefined) ctx.logger.info('status peer key read', { fingerprint: peerKey.fingerprint });
  if (advertiseUrl !== undefined && peerKey === undefined) {
    ctx.logger.warn('no peer key (--peer-key-file): the replicas trust unsigned owner records and forward callers\' tokens; whoever can write to the owners topic could collect them');
  }
  const s = new StatusProcessor({
    metrics: ctx.metrics,
    queue,
    names,
    transientSources: transientSources(ctx),
    logger: ctx.logger,
    ...(stateDir !== undefined ? { storeFile: join(stateDir, 'status.db') } : {}),
    ...(advertiseUrl !== undefined ? { advertiseUrl } : {}),
    ...(peerKey !== undefined ? { peerKey } : {}),
  });
  await s.start();
  const producer = await queue.producer();

  // Pause states as every processor sees them: the compacted control topic, followed.
  const pauses = new Map<string, PauseState>();
  const control = await follow(queue, names.control, (m) => {
    try {
      const state = parseMessage(PauseState, m.value);
      if (m.key === pauseKey(state.location)) pauses.set(state.location, state);
    } catch {
      // other control records, or a tombstone: not a pause state
    }
  }, `${names.statusGroup}-control-${String(process.pid)}-${String(Date.now())}`);

  // Figures for the operator's ReplicationRule status, per partition owned here (the operator adds up
  // every partition's): sent when they change, and again by the next owner when a partition moves.
  const sent = new Map<string, string>();
  const publish = async (): Promise<void> => {
    const records = [...s.partitionFigures()].flatMap(([partition, list]) =>
      list.flatMap((f) => {
        const key = partitionFiguresKey(f.source, f.destination, partition);
        const value = JSON.stringify(f);
        if (sent.get(key) === value) return [];
        sent.set(key, value);
        return [{ key, value: encode({ ...f, at: new Date().toISOString() }) }];
      }),
    );
    if (records.length > 0) await producer.send(names.figures, records);
  };
  let publishing = Promise.resolve();
  const timer = setInterval(() => {
    publishing = publishing.then(publish).catch((err: unknown) => {
      sent.clear();
      ctx.logger.warn('figures not published', { error: err });
    });
  }, ctx.options.figuresIntervalMs ?? 5_000);

  // Backfill on demand needs a populator of every source (it queues what a listing finds).
  const backfiller = buildPopulator(ctx, sourcesOf(ctx.buckets));
  const locations = destinationLocations(ctx.buckets.values());

  return {
    lagGroups: [[names.statusGroup, names.status]],
    refresh() {
      ctx.metrics.pending.reset();
      for (const [destination, n] of s.pendingByDestination()) ctx.metrics.pending.set({ destination }, n);
    },
    ready: () => s.ready(),
    readiness: () => ({ restoring: s.restores() }),
    server: (health) =>
      buildStatusApi(ctx, {
        status: s,
        producer,
        backfiller,
        health,
        auth: ctx.options.apiAuth ?? openAuth,
        peerKey,
        advertiseUrl,
        states: () =>
          locations.map((location) => {
            const p = pauses.get(location);
            const paused = isPaused(p);
            return { location, paused, ...(paused && p?.until !== undefined ? { until: p.until } : {}) };
          }),
      }),
    async stop() {
      clearInterval(timer);
      await publishing;
      await backfiller.close();
      await control.close();
      await s.close();
      await producer.close();
    },
  };
}

/** The webhook journal's receiver for a source location: events over HTTP, written to its journal topic. */
function webhook(ctx: RoleContext): Promise<RoleRun> {
  const location = needLocation(ctx.options);
  const l = ctx.locations.get(location);
  const topic = l?.spec.journal?.kafka?.topic;
  if (l === undefined || topic === undefined || l.spec.journal?.webhook === undefined) {
    throw new ConfigError([{ resource: `Location/${location}`, path: 'spec.journal.webhook', message: 'the webhook role receives a webhook journal, and this location has none' }]);
  }
  const receiver = new WebhookReceiver({ queue: ctx.queue, metrics: ctx.metrics, logger: ctx.logger, locations: new Map([[location, { topic, token: resolveWebhookToken(l, { secrets: ctx.secrets }, {}) }]]) });
  return Promise.resolve({ lagGroups: [], server: (health) => healthServer(health, receiver.handler), stop: () => receiver.close() });
}

const START: Record<Role, (ctx: RoleContext) => Promise<RoleRun>> = { populator, scanner, processor, status, gc, webhook };

export async function startWorker(options: WorkerOptions): Promise<WorkerRun> {
  const config = readPublishedConfig(options.configDir);
  const secrets = secretsFromDir(options.credentialsDir);
  const logger = options.logger.child({ role: options.role, ...(options.location !== undefined ? { location: options.location } : {}) });
  const queue = kafkaQueue({
    brokers: options.brokers,
    clientId: `backbeat-${options.role}`,
    logger,
    ...(options.replicationFactor !== undefined ? { replicationFactor: options.replicationFactor } : {}),
    ...(options.kafkaSecurity !== undefined ? { security: options.kafkaSecurity } : {}),
  });
  const names = queueNames(options.prefix);
  const admin = await queue.admin();
  await admin.ensureTopics(installationTopics(names, options.partitions ?? 8, journalTopics(config.locations.values())));
  const metrics = createMetrics();
  const run = await START[options.role]({ options, secrets, queue, names, metrics, logger, buckets: config.buckets, locations: config.locations, ...connector(config.locations, { secrets }) });

  let stopping = false;
  const health: HealthContext = {
    ready: () => !stopping && (run.ready?.() ?? true),
    ...(run.readiness !== undefined ? { readiness: run.readiness } : {}),
    async metrics() {
      run.refresh?.();
      await recordLag(admin, metrics, run.lagGroups, TASK_RETENTION_MS / 2);
      return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
    },
  };
  const server = run.server?.(health) ?? healthServer(health);
  const url = await listenOn(server, options.listenPort ?? 0, options.listenHost ?? '127.0.0.1');
  logger.info('worker running', { url, role: options.role });
  return {
    url,
    async stop() {
      stopping = true;
      server.close();
      server.closeAllConnections();
      await run.stop();
      await admin.close();
    },
  };
}
