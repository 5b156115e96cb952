import type { S3Client } from '@aws-sdk/client-s3';
import type { BlobAccount } from '../../lib/azure/account.ts';
import type { BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import type { Location } from '../../lib/config/schema.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import type { Queue } from '../../lib/queue/queue.ts';
import type { RetryPolicy } from '../../lib/retry.ts';
import type { QueueNames } from '../../lib/queue/messages.ts';
import { Processor } from '../processor/processor.ts';

/** Local mode's processors, one per destination location, started (in the main thread or a worker thread). */
export async function startProcessors(
  locations: string[],
  o: { queue: Queue; names: QueueNames; metrics: Metrics; logger: Logger; clients: Map<string, S3Client>; blobs: Map<string, BlobAccount>; configs: ReadonlyMap<string, BucketReplicationConfig>; locations: ReadonlyMap<string, Location>; concurrency?: number | undefined; retry?: Partial<RetryPolicy> | undefined },
): Promise<Map<string, Processor>> {
  const processors = new Map<string, Processor>();
  for (const location of locations) {
    const destination = o.blobs.get(location) ?? o.clients.get(location);
    if (destination === undefined) continue;
    const p = new Processor({
      queue: o.queue,
      names: o.names,
      metrics: o.metrics,
      logger: o.logger,
      location,
      destination,
      sources: o.clients,
      configs: o.configs,
      limits: o.locations.get(location)?.spec.limits,
      // Every role of local mode reads the same rules: a task none of them names is not from a newer config.
      unknownRuleWaitMs: 0,
      ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
      ...(o.retry !== undefined ? { retry: o.retry } : {}),
    });
    await p.start();
    processors.set(location, p);
  }
  return processors;
}
