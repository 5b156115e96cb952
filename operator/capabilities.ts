import type { S3Client } from '@aws-sdk/client-s3';
import type { Location } from '../lib/config/schema.ts';
import type { KubeObject } from '../lib/kube/rest.ts';
import type { Logger } from '../lib/log/logger.ts';
import { probeDestination, ProbeMemo } from '../lib/s3/capabilities.ts';
import { reasonOf } from '../lib/s3/errors.ts';

/** What a Location's server was found to do, shown in the Location's status. */
export interface Capabilities {
  /** A HEAD tells a current delete marker (x-amz-delete-marker); without it a 404 is confirmed by a listing. */
  deleteMarkersOnHead: boolean;
  /** The destination bucket the probe wrote its object to (then deleted). */
  probedBucket: string;
  probedAt: string;
}

/** A failed probe is tried again after this long, not at every pass. */
const RETRY_MS = 10 * 60_000;

/**
 * Probes a destination Location once per generation (and Secret version), in one of the buckets its
 * rules write to: the processors probe each bucket they write to for themselves (local mode has no
 * operator); this shows the user what the server does.
 */
export class CapabilityProbes {
  private readonly memo: ProbeMemo<Capabilities>;
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
    this.memo = new ProbeMemo(RETRY_MS, (location, err) => {
      logger.warn('location capabilities not probed', { location, reason: reasonOf(err) });
    });
  }

  /** The Location's capabilities; undefined while none of the buckets its rules write to exists (or a probe failed). */
  of(location: Location & KubeObject, secretVersion: string, client: S3Client, buckets: string[]): Promise<Capabilities | undefined> {
    const [bucket] = buckets;
    const name = location.metadata.name;
    if (bucket === undefined) return Promise.resolve(undefined);
    const stamp = `${location.metadata.uid ?? ''}@${String(location.metadata.generation ?? 0)}@${secretVersion}@${bucket}`;
    return this.memo.get(
      name,
      async () => {
        const { traits, leftBehind } = await probeDestination(client, bucket);
        if (leftBehind !== undefined) this.logger.warn('a probe object could not be deleted', { location: name, reason: leftBehind });
        return { deleteMarkersOnHead: traits.markersOnHead, probedBucket: bucket, probedAt: new Date().toISOString() };
      },
      stamp,
    );
  }

  /** Forgets Locations that are gone. */
  keep(names: ReadonlySet<string>): void {
    this.memo.retain((name) => names.has(name));
  }
}
