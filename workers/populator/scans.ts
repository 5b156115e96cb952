import type { BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import type { Location } from '../../lib/config/schema.ts';
import type { Logger } from '../../lib/log/logger.ts';
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

type ScanReason = 'existing objects' | 'periodic scan';

/** When each location's last scan and last full scan began, so that periodic scans between full ones queue less. */
interface Watermark {
  lastStart: number;
  lastFull: number;
}

/**
 * Listing scans of the source buckets of `sources`: once at start for rules asking for their existing
 * objects, and every `journal.scan.intervalSeconds` where a location has a scan journal. A periodic scan
 * is full (every version queued) at start and every `fullIntervalSeconds`; in between it queues only
 * versions modified since the previous scan began, less `overlapMs`, so that a large bucket is not
 * re-queued whole every few minutes. Scans run one at a time; a periodic tick while one still runs is
 * dropped rather than queued behind it.
 */
export function scheduleScans(
  populator: Populator,
  configs: Map<string, BucketReplicationConfig>,
  locations: Map<string, Location>,
  sources: Set<string>,
  logger: Logger,
  { overlapMs = SCAN_OVERLAP_MS }: { overlapMs?: number } = {},
): ScanSchedule {
  const marks = new Map<string, Watermark>();
  const scanLocation = async (location: string, why: ScanReason): Promise<void> => {
    const mark = marks.get(location);
    const fullEveryMs = (locations.get(location)?.spec.journal?.scan?.fullIntervalSeconds ?? 0) * 1000;
    const started = Date.now();
    // A backfill lists everything; a periodic scan only at start and every fullIntervalSeconds.
    const full = why === 'existing objects' || mark === undefined || started - mark.lastFull >= fullEveryMs;
    const since = full ? undefined : new Date(mark.lastStart - overlapMs);
    let versions = 0;
    for (const c of configs.values()) {
      if (c.SourceLocation === location) versions += await populator.scan(location, c.SourceBucket, since !== undefined ? { since } : {});
    }
    // Only a scan that went through moves the watermark: after a failure the next one looks as far back.
    marks.set(location, { lastStart: started, lastFull: full ? started : mark.lastFull });
    logger.info('scan queued changes', { why, location, full, ...(since !== undefined ? { since: since.toISOString() } : {}), versions });
  };
  let scanning: Promise<unknown> = Promise.resolve();
  let scansQueued = 0;
  const safeScan = (why: ScanReason, locationsToScan: string[]): void => {
    if (why === 'periodic scan' && scansQueued > 0) return;
    scansQueued++;
    scanning = scanning
      .then(async () => {
        for (const l of locationsToScan) await scanLocation(l, why);
      })
      .catch((err: unknown) => {
        logger.error('scan failed', { why, error: err });
      })
      .finally(() => scansQueued--);
  };
  const backfill = new Set([...configs.values()].filter((c) => sources.has(c.SourceLocation) && c.Rules.some((r) => r.ExistingObjectReplication.Status === 'Enabled')).map((c) => c.SourceLocation));
  if (backfill.size > 0) safeScan('existing objects', [...backfill]);
  const timers = [...sources].flatMap((name) => {
    const scan = locations.get(name)?.spec.journal?.scan;
    if (scan === undefined) return [];
    safeScan('periodic scan', [name]);
    return [setInterval(() => safeScan('periodic scan', [name]), scan.intervalSeconds * 1000)];
  });
  return {
    async stop() {
      timers.forEach(clearInterval);
      await scanning;
    },
  };
}
