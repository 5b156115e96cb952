import type { BucketReplicationConfig, CompiledRule } from '../../lib/config/bucket-config.ts';
import type { Location } from '../../lib/config/schema.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { Metrics } from '../../lib/metrics.ts';
import type { Populator } from './populator.ts';

export interface ScanSchedule {
  /** Stops the timers and waits for the scan under way. */
  stop(): Promise<void>;
}

/**
 * How far before the previous scan's start an incremental scan looks: a write under way then (its
 * Last-Modified precedes its visibility) and a server clock somewhat behind this one.
 */
export const SCAN_OVERLAP_MS = 15 * 60_000;

/** The listing page size a Location asks for, as scan options. */
export const pageSizeOf = (l: Location | undefined): { pageSize?: number } => (l?.spec.listPageSize !== undefined ? { pageSize: l.spec.listPageSize } : {});

type ScanReason = 'existing objects' | 'periodic scan';

const wantsExisting = (r: CompiledRule): boolean => r.ExistingObjectReplication.Status === 'Enabled';

/** When a bucket's last periodic scan and last full one began, so that periodic scans between full ones queue less. */
interface Watermark {
  lastStart: number;
  lastFull: number;
  /**
   * The versions periodic scans queued that the next incremental scan lists again (modified within
   * its overlap), by `key\0versionId`: not queued twice. Bounded by what is written in one overlap.
   */
  seen: Map<string, number>;
}

/**
 * Listing scans of the source buckets of `sources`: once at start for the rules asking for their
 * existing objects (those rules alone) where no periodic scan does it, and every
 * `journal.scan.intervalSeconds` where a location has a scan journal (each rule queueing what was
 * written since it took effect, or ever for a rule asking for existing objects). A periodic scan is full
 * (every version listed) at start and every `fullIntervalSeconds`; in between it queues only
 * versions modified since the previous scan began, less `overlapMs`, and not queued by an earlier
 * scan, so that a large bucket is not re-queued whole every few minutes. Scans run one at a time; a location's
 * periodic tick while its previous scan is still queued or running is dropped rather than queued behind it. A bucket whose scan fails is logged and counted
 * (backbeat_scan_failures_total), and the scan goes on with the next bucket.
 */
export function scheduleScans(
  populator: Populator,
  configs: Map<string, BucketReplicationConfig>,
  locations: ReadonlyMap<string, Location>,
  sources: Set<string>,
  logger: Logger,
  { overlapMs = SCAN_OVERLAP_MS, metrics }: { overlapMs?: number; metrics?: Metrics } = {},
): ScanSchedule {
  // Per source bucket: a bucket that fails does not hold back the others, nor move its own watermark.
  const marks = new Map<string, Watermark>();
  const scanBucketOf = async (c: BucketReplicationConfig, why: ScanReason): Promise<void> => {
    const { SourceLocation: location, SourceBucket: bucket } = c;
    const id = `${location}/${bucket}`;
    const mark = marks.get(id);
    const scan = locations.get(location)?.spec.journal?.scan;
    // A full scan that began late (a busy machine) leaves a shorter gap to a later tick: half an interval of slack.
    const fullEveryMs = ((scan?.fullIntervalSeconds ?? 0) - (scan?.intervalSeconds ?? 0) / 2) * 1000;
    const started = Date.now();
    // A backfill lists everything for the rules that ask for existing objects, and only for them.
    const backfill = why === 'existing objects' ? new Set(c.Rules.filter(wantsExisting).map((r) => r.ID)) : undefined;
    // A periodic scan is full at start and every fullIntervalSeconds.
    const full = backfill !== undefined || mark === undefined || started - mark.lastFull >= fullEveryMs;
    const since = full ? undefined : new Date(mark.lastStart - overlapMs);
    const fields = { why, location, bucket, full, ...(since !== undefined ? { since: since.toISOString() } : {}) };
    const seen = mark?.seen ?? new Map<string, number>();
    // A full scan queues every version again (the repair of whatever was missed), and records anew.
    if (full) seen.clear();
    let versions: number;
    try {
      versions = await populator.scan(location, bucket, { ...pageSizeOf(locations.get(location)), ...(since !== undefined ? { since } : {}), ...(backfill !== undefined ? { backfill } : { seen: { ids: seen, from: started - overlapMs } }) });
    } catch (err) {
      // Only a periodic scan that went through moves the watermark: after a failure the next one looks as far back.
      metrics?.scanFailures.inc({ location, bucket });
      logger.error('scan of a source bucket failed; the next scan tries again', { ...fields, error: err });
      return;
    }
    if (backfill === undefined) {
      // What the next incremental scan will not list again is forgotten.
      for (const [v, time] of seen) if (time < started - overlapMs) seen.delete(v);
      marks.set(id, { lastStart: started, lastFull: full ? started : mark.lastFull, seen });
    }
    metrics?.scanCompleted.set({ location, bucket }, Date.now() / 1000);
    logger.info('scan queued changes', { ...fields, versions });
  };
  let scanning: Promise<unknown> = Promise.resolve();
  // Periodic scans waiting or running, by source location: a location's tick is dropped while its own
  // scan is still to come, never because another location's is (their timers fire together).
  const queued = new Map<string, number>();
  const safeScan = (why: ScanReason, buckets: BucketReplicationConfig[], location?: string): void => {
    if (location !== undefined && (queued.get(location) ?? 0) > 0) return;
    if (location !== undefined) queued.set(location, (queued.get(location) ?? 0) + 1);
    scanning = scanning
      .then(async () => {
        for (const c of buckets) await scanBucketOf(c, why);
      })
      .catch((err: unknown) => {
        logger.error('scan failed', { why, error: err });
      })
      .finally(() => {
        if (location !== undefined) queued.set(location, (queued.get(location) ?? 1) - 1);
      });
  };
  const scanned = [...configs.values()].filter((c) => sources.has(c.SourceLocation));
  // A bucket with periodic scans gets a full one at start, where a rule asking for existing objects
  // matches every version (bucket-config.ts `covers`): that scan is its backfill, not one more listing
  // that queues every version a second time.
  const periodic = (c: BucketReplicationConfig): boolean => locations.get(c.SourceLocation)?.spec.journal?.scan !== undefined;
  const backfills = scanned.filter((c) => c.Rules.some(wantsExisting) && !periodic(c));
  if (backfills.length > 0) safeScan('existing objects', backfills);
  const timers = [...sources].flatMap((name) => {
    const scan = locations.get(name)?.spec.journal?.scan;
    if (scan === undefined) return [];
    const buckets = scanned.filter((c) => c.SourceLocation === name);
    safeScan('periodic scan', buckets, name);
    return [setInterval(() => safeScan('periodic scan', buckets, name), scan.intervalSeconds * 1000)];
  });
  return {
    async stop() {
      timers.forEach(clearInterval);
      await scanning;
    },
  };
}
