import type { S3Client } from '@aws-sdk/client-s3';
import type { Location } from '../lib/config/schema.ts';
import type { KubeObject } from '../lib/kube/rest.ts';
import type { Logger } from '../lib/log/logger.ts';
import { probeDestination } from '../lib/s3/capabilities.ts';
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
  private readonly known = new Map<string, { key: string; answer: Promise<Capabilities | undefined>; until: number }>();
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  /** The Location's capabilities; undefined while none of the buckets its rules write to exists (or a probe failed). */
  of(location: Location & KubeObject, secretVersion: string, client: S3Client, buckets: string[]): Promise<Capabilities | undefined> {
    const [bucket] = buckets;
    const name = location.metadata.name;
    if (bucket === undefined) {
      this.known.delete(name);
      return Promise.resolve(undefined);
    }
    const key = `${location.metadata.uid ?? ''}@${String(location.metadata.generation ?? 0)}@${secretVersion}@${bucket}`;
    const cached = this.known.get(name);
    if (cached !== undefined && cached.key === key && Date.now() < cached.until) return cached.answer;
    const entry = { key, until: Number.POSITIVE_INFINITY, answer: Promise.resolve<Capabilities | undefined>(undefined) };
    entry.answer = probeDestination(client, bucket).then(
      ({ traits, leftBehind }) => {
        if (leftBehind !== undefined) this.logger.warn('a probe object could not be deleted', { location: name, reason: leftBehind });
        return { deleteMarkersOnHead: traits.markersOnHead, probedBucket: bucket, probedAt: new Date().toISOString() };
      },
      (err: unknown) => {
        entry.until = Date.now() + RETRY_MS;
        this.logger.warn('location capabilities not probed', { location: name, bucket, reason: reasonOf(err) });
        return undefined;
      },
    );
    this.known.set(name, entry);
    return entry.answer;
  }

  /** Forgets Locations that are gone. */
  keep(names: ReadonlySet<string>): void {
    for (const name of this.known.keys()) if (!names.has(name)) this.known.delete(name);
  }
}
