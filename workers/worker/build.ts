import type { Server } from 'node:http';
import type { S3Client } from '@aws-sdk/client-s3';
import { isBlobAccount, type BlobAccount } from '../../lib/azure/account.ts';
import { allDestinations, usedLocations, type BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import { connectLocation } from '../../lib/config/credentials.ts';
import type { Manifests } from '../../lib/config/manifests.ts';
import type { Location } from '../../lib/config/schema.ts';
import { ConfigError } from '../../lib/config/validate.ts';
import type { HealthContext } from '../../lib/http/health.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import { encode, pauseKey, type QueueNames } from '../../lib/queue/messages.ts';
import type { Queue, QueueProducer } from '../../lib/queue/queue.ts';
import type { RetryPolicy } from '../../lib/retry.ts';
import { GarbageCollector } from '../gc/gc.ts';
import { Populator } from '../populator/populator.ts';
import { pageSizeOf } from '../populator/scans.ts';
import { Processor } from '../processor/processor.ts';
import { statusServer, type DestinationControls } from '../status/api.ts';
import type { ApiAuth } from '../status/auth.ts';
import type { PeerKey } from '../status/peers.ts';
import type { StatusProcessor } from '../status/status.ts';

// The parts each role is made of, built from the configuration in one place: a worker pod runs one role
// (worker.ts), local mode runs them all in one process (workers/local/local.ts).

/** The clients of a configuration's locations. */
export interface Connector {
  /** The client of a Location, whatever its type. */
  connect: (location: string) => S3Client | BlobAccount;
  /** The client of an S3 Location (a source, or an S3 destination). */
  client: (location: string) => S3Client;
}

/** What every role is built from. */
export interface RoleBase extends Connector {
  queue: Queue;
  names: QueueNames;
  metrics: Metrics;
  logger: Logger;
  buckets: Map<string, BucketReplicationConfig>;
  locations: ReadonlyMap<string, Location>;
}

/** Each location's client made once, on first use, with the credentials its Secret holds (or `env`). */
export function connector(locations: ReadonlyMap<string, Location>, m: Pick<Manifests, 'secrets'>, env: NodeJS.ProcessEnv = process.env): Connector {
  const made = new Map<string, S3Client | BlobAccount>();
  const connect = (name: string): S3Client | BlobAccount => {
    let c = made.get(name);
    if (c !== undefined) return c;
    const location = locations.get(name);
    if (location === undefined) throw new ConfigError([{ resource: `Location/${name}`, path: '', message: 'no such Location in the configuration' }]);
    c = connectLocation(location, m, env);
    made.set(name, c);
    return c;
  };
  return {
    connect,
    client: (name) => {
      const c = connect(name);
      if (isBlobAccount(c)) throw new ConfigError([{ resource: `Location/${name}`, path: 'spec.type', message: 'type: azure is a destination only' }]);
      return c;
    },
  };
}

/** Every source location of the configs (that send to `destination`, when given). */
export function sourcesOf(buckets: ReadonlyMap<string, BucketReplicationConfig>, destination?: string): string[] {
  const configs = [...buckets.values()].filter((c) => destination === undefined || c.Rules.some((r) => r.Destinations.some((d) => d.Location === destination)));
  return [...new Set(configs.map((c) => c.SourceLocation))];
}

/** The source locations whose copies are deleted once every destination holds them. */
export function transientSources(base: Pick<RoleBase, 'buckets' | 'locations'>): Set<string> {
  return new Set(sourcesOf(base.buckets).filter((l) => base.locations.get(l)?.spec.transient === true));
}

/** The journal topics of the locations, created with the installation's own. */
export function journalTopics(locations: Iterable<Location>): string[] {
  return [...locations].flatMap((l) => (l.spec.journal?.kafka !== undefined ? [l.spec.journal.kafka.topic] : []));
}

/** A populator of the `sources` locations (queues the tasks of their changes and listings). */
export function buildPopulator(base: RoleBase, sources: Iterable<string>): Populator {
  return new Populator({ queue: base.queue, names: base.names, metrics: base.metrics, logger: base.logger, configs: base.buckets, sources: new Map([...sources].map((l) => [l, base.client(l)])), transientSources: transientSources(base) });
}

/** What a processor is given beyond its configuration. */
export interface ProcessorSettings {
  concurrency?: number | undefined;
  retry?: Partial<RetryPolicy> | undefined;
  /** How long a task of a rule the processor does not know is held (a newer configuration may be rolling out). */
  unknownRuleWaitMs?: number;
  window?: number | undefined;
}

/** The processor of a destination location, reading from the sources of the rules that send to it. */
export function buildProcessor(base: RoleBase, location: string, options: ProcessorSettings): Processor {
  return new Processor({
    queue: base.queue,
    names: base.names,
    metrics: base.metrics,
    logger: base.logger,
    location,
    destination: base.connect(location),
    sources: new Map(sourcesOf(base.buckets, location).map((l) => [l, base.client(l)])),
    configs: base.buckets,
    limits: base.locations.get(location)?.spec.limits,
    ...(options.unknownRuleWaitMs !== undefined ? { unknownRuleWaitMs: options.unknownRuleWaitMs } : {}),
    ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
    ...(options.retry !== undefined ? { retry: options.retry } : {}),
    ...(options.window !== undefined ? { window: options.window } : {}),
  });
}

/** The GC of transient sources: it verifies every destination of today's rules, matched as the populator matches them. */
export function buildGc(base: RoleBase, delayMs?: number): GarbageCollector {
  const clients = new Map<string, S3Client>();
  const blobs = new Map<string, BlobAccount>();
  for (const l of usedLocations(base.buckets.values())) {
    const c = base.connect(l);
    if (isBlobAccount(c)) blobs.set(l, c);
    else clients.set(l, c);
  }
  const transient = transientSources(base);
  const planner = new Populator({ queue: base.queue, names: base.names, logger: base.logger, configs: base.buckets, sources: clients, transientSources: transient });
  return new GarbageCollector({ queue: base.queue, names: base.names, clients, blobs, planner, transientSources: transient, metrics: base.metrics, logger: base.logger, ...(delayMs !== undefined ? { delayMs } : {}) });
}

/**
 * The status API: the status store's answers, pause and resume written to the control topic by
 * `producer`, and backfills queued by `backfiller` (a populator of every source).
 */
export function buildStatusApi(
  base: RoleBase,
  o: { status: StatusProcessor; producer: QueueProducer; backfiller: Populator; auth: ApiAuth; peerKey?: PeerKey | undefined; advertiseUrl?: string | undefined; states: DestinationControls['states']; health: HealthContext },
): Server {
  const rules = new Map([...base.buckets.values()].flatMap((c) => c.Rules.map((r) => [r.ID, { config: c, destinations: r.Destinations.map((d) => d.Id) }] as const)));
  return statusServer({
    ...o.health,
    status: o.status,
    destinations: allDestinations(base.buckets.values()).map((d) => d.Id),
    auth: o.auth,
    peerKey: o.peerKey,
    ...(o.advertiseUrl !== undefined ? { advertiseUrl: o.advertiseUrl } : {}),
    controls: {
      set: async (state) => {
        await o.producer.send(base.names.control, [{ key: pauseKey(state.location), value: encode(state) }]);
      },
      states: o.states,
    },
    rules: new Map([...rules].map(([name, r]) => [name, { source: `${r.config.SourceLocation}/${r.config.SourceBucket}`, destinations: r.destinations }])),
    backfill(name) {
      const c = rules.get(name)?.config;
      return c === undefined ? undefined : o.backfiller.scan(c.SourceLocation, c.SourceBucket, { backfill: new Set([name]), ...pageSizeOf(base.locations.get(c.SourceLocation)) });
    },
  });
}
