import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueueAdmin } from './queue/queue.ts';

// Prometheus metrics of the worker roles: prefixed `backbeat_`, base units, and only low-cardinality
// labels (destination ids, locations, error codes); never a key or a version.

export interface Metrics {
  registry: Registry;
  replicatedObjects: Counter<'destination'>;
  replicatedBytes: Counter<'destination'>;
  failures: Counter<'destination' | 'reason'>;
  skipped: Counter<'destination'>;
  latency: Histogram<'destination'>;
  inFlight: Gauge<'destination'>;
  paused: Gauge<'location'>;
  pending: Gauge<'destination'>;
  lag: Gauge<'group'>;
  expiring: Gauge<'group'>;
  journalChanges: Counter<'location'>;
  journalMalformed: Counter<'location'>;
  webhookRequests: Counter<'location' | 'code'>;
  rejectedMessages: Counter<'topic'>;
  populatorFailures: Counter<'location' | 'reason'>;
  scanFailures: Counter<'location' | 'bucket'>;
  scanCompleted: Gauge<'location' | 'bucket'>;
  gcDeleted: Counter<'location'>;
  gcRefused: Counter<'location'>;
}

/** A fresh registry with every metric (one per process; tests may make several). */
export function createMetrics(): Metrics {
  const registry = new Registry();
  // backbeat_process_resident_memory_bytes, backbeat_nodejs_heap_size_used_bytes, ...
  collectDefaultMetrics({ register: registry, prefix: 'backbeat_' });
  const registers = [registry];
  return {
    registry,
    replicatedObjects: new Counter({ name: 'backbeat_replicated_objects_total', help: 'Object versions replicated, per destination (location/bucket).', labelNames: ['destination'], registers }),
    replicatedBytes: new Counter({ name: 'backbeat_replicated_bytes_total', help: 'Bytes copied to each destination.', labelNames: ['destination'], registers }),
    failures: new Counter({ name: 'backbeat_replication_failures_total', help: 'Object versions that failed to replicate, by destination and error code.', labelNames: ['destination', 'reason'], registers }),
    skipped: new Counter({ name: 'backbeat_replication_skipped_total', help: 'Tasks with nothing to copy (superseded, replica of a replica, source gone).', labelNames: ['destination'], registers }),
    latency: new Histogram({
      name: 'backbeat_replication_latency_seconds',
      help: 'From the source write to the replica written.',
      labelNames: ['destination'],
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    }),
    inFlight: new Gauge({ name: 'backbeat_copies_in_flight', help: 'Copies under way, per destination location.', labelNames: ['destination'], registers }),
    paused: new Gauge({ name: 'backbeat_destination_paused', help: 'Whether replication to a destination location is paused (1) or not (0).', labelNames: ['location'], registers }),
    pending: new Gauge({ name: 'backbeat_pending_objects', help: 'Object versions waiting to replicate, per destination.', labelNames: ['destination'], registers }),
    lag: new Gauge({ name: 'backbeat_queue_lag_messages', help: 'Messages not yet consumed by each consumer group.', labelNames: ['group'], registers }),
    expiring: new Gauge({ name: 'backbeat_queue_expiring_messages', help: 'Messages a consumer group has not consumed that are older than half their topic\'s retention: Kafka deletes them at its end.', labelNames: ['group'], registers }),
    journalChanges: new Counter({ name: 'backbeat_journal_changes_total', help: 'Changes read from each source location journal.', labelNames: ['location'], registers }),
    journalMalformed: new Counter({ name: 'backbeat_journal_malformed_total', help: 'Journal messages set aside as malformed.', labelNames: ['location'], registers }),
    webhookRequests: new Counter({ name: 'backbeat_webhook_requests_total', help: 'Requests to the webhook journal\'s receiver, by source location (empty when none of its Locations) and HTTP answer.', labelNames: ['location', 'code'], registers }),
    rejectedMessages: new Counter({ name: 'backbeat_queue_rejected_messages_total', help: 'Messages of the engine\'s own topics refused because they did not fit their schema, set aside on the rejected topic.', labelNames: ['topic'], registers }),
    populatorFailures: new Counter({ name: 'backbeat_populator_failures_total', help: 'Source changes set aside because what they need could not be read (their tags, a delete marker the event did not name), by location and error code.', labelNames: ['location', 'reason'], registers }),
    scanFailures: new Counter({ name: 'backbeat_scan_failures_total', help: 'Listing scans of a source bucket that failed.', labelNames: ['location', 'bucket'], registers }),
    scanCompleted: new Gauge({ name: 'backbeat_scan_last_success_timestamp_seconds', help: 'When the last listing scan of a source bucket went through.', labelNames: ['location', 'bucket'], registers }),
    gcDeleted: new Counter({ name: 'backbeat_gc_deletions_total', help: 'Object versions deleted from a transient source after verification.', labelNames: ['location'], registers }),
    gcRefused: new Counter({ name: 'backbeat_gc_refusals_total', help: 'GC deletions refused because a replica check failed.', labelNames: ['location'], registers }),
  };
}

/**
 * Sets the lag of each [group, topic], and how many of its unconsumed messages are older than
 * `expiringAfterMs` (asked only of a group that lags).
 */
export async function recordLag(admin: QueueAdmin, metrics: Metrics, groups: [string, string][], expiringAfterMs: number): Promise<void> {
  for (const [group, topic] of groups) {
    const lag = await admin.groupLag(group, topic);
    metrics.lag.set({ group }, lag.reduce((n, p) => n + p.lag, 0));
    const lagging = lag.some((p) => p.lag > 0);
    metrics.expiring.set({ group }, lagging ? ((await admin.unconsumedOlderThan?.(group, topic, expiringAfterMs)) ?? 0) : 0);
  }
}

/** The error code of a failure reason ("NoSuchBucket (HTTP 404): ..." → "NoSuchBucket"), as a bounded label. */
export function reasonCode(reason: string): string {
  const code = /^(?:gave up after \d+ attempts: )?([A-Za-z][A-Za-z0-9_.-]{0,63})/.exec(reason)?.[1];
  return code ?? 'Other';
}
