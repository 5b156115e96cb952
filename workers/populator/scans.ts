import type { BucketReplicationConfig } from '../../lib/config/bucket-config.ts';
import type { Location } from '../../lib/config/schema.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { Populator } from './populator.ts';

export interface ScanSchedule {
  /** Stops the timers and waits for the scan under way. */
  stop(): Promise<void>;
}

/**
 * Listing scans of the source buckets of `sources`: once at start for rules asking for their existing
 * objects, and every `journal.scan.intervalSeconds` where a location has a scan journal. Scans run one
 * at a time; a periodic tick while one still runs is dropped rather than queued behind it.
 */
export function scheduleScans(populator: Populator, configs: Map<string, BucketReplicationConfig>, locations: Map<string, Location>, sources: Set<string>, logger: Logger): ScanSchedule {
  const scanSources = async (filter: (location: string) => boolean): Promise<number> => {
    let n = 0;
    for (const c of configs.values()) if (sources.has(c.SourceLocation) && filter(c.SourceLocation)) n += await populator.scan(c.SourceLocation, c.SourceBucket);
    return n;
  };
  let scanning: Promise<unknown> = Promise.resolve();
  let scansQueued = 0;
  const safeScan = (why: string, filter: (location: string) => boolean): void => {
    if (why === 'periodic scan' && scansQueued > 0) return;
    scansQueued++;
    scanning = scanning
      .then(() => scanSources(filter))
      .then((n) => {
        logger.info('scan queued changes', { why, versions: n });
      })
      .catch((err: unknown) => {
        logger.error('scan failed', { why, error: err });
      })
      .finally(() => scansQueued--);
  };
  const backfill = [...configs.values()].filter((c) => c.Rules.some((r) => r.ExistingObjectReplication.Status === 'Enabled'));
  if (backfill.length > 0) safeScan('existing objects', (l) => backfill.some((c) => c.SourceLocation === l));
  const timers = [...sources].flatMap((name) => {
    const scan = locations.get(name)?.spec.journal?.scan;
    if (scan === undefined) return [];
    safeScan('periodic scan', (l) => l === name);
    return [setInterval(() => safeScan('periodic scan', (l) => l === name), scan.intervalSeconds * 1000)];
  });
  return {
    async stop() {
      timers.forEach(clearInterval);
      await scanning;
    },
  };
}
