import { HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import type { BlobAccount } from '../../lib/azure/account.ts';
import type { Logger } from '../../lib/log/logger.ts';
import type { ReplicationTask, TaskDestination, QueueNames } from '../../lib/queue/messages.ts';
import type { Queue, QueueProducer } from '../../lib/queue/queue.ts';
import { probeDestination, ProbeMemo, type DestinationTraits } from '../../lib/s3/capabilities.ts';
import { abortable } from '../../lib/s3/client.ts';
import { classify, reasonOf } from '../../lib/s3/errors.ts';
import { replicateToBlob } from './blob.ts';
import { replicate, type CopyContext, type Outcome } from './replicate.ts';
import { statesFromListing, type Current } from './s3-state.ts';
import { UploadLedger } from './uploads.ts';

// Where the processor's destinations differ (an S3 endpoint, an Azure Blob Storage account): what each
// keeps beside its copies, how it is probed while unreachable, whether a backfill's batch can be read
// ahead, and the copy itself. The processor decides which task runs, when and how often; a writer
// only how one attempt is carried out there.

/** What a copy attempt is, wherever it writes. */
export interface CopyRequest {
  /** The source's client, bound to `signal`. */
  source: S3Client;
  task: ReplicationTask;
  /** The destination as the current rule gives it. */
  destination: TaskDestination;
  /** Ends every call of the attempt (the partition taken away, drained). */
  signal: AbortSignal;
  /** What the task's rule asks (a blob's missing copy may be one a delete marker deleted). */
  rule: Pick<CopyContext, 'replicateReplicas' | 'partsIgnored' | 'throttle'> & { replicateDeleteMarkers?: boolean };
  /** The destination key's state read ahead by a listing (a backfill's first attempt), in place of a read. */
  known?: Current | undefined;
}

export interface DestinationWriter {
  /** Starts what the destination keeps beside its copies (S3: the multipart upload ledger, the buckets' probes). */
  start(): Promise<void>;
  /** Whether the bucket's endpoint answers at all, whatever it says (an outage ends once it does). */
  answers(bucket: string): Promise<boolean>;
  /** The states of a backfill batch's keys from one listing; undefined where this destination reads none ahead. */
  readAhead(bucket: string, keys: string[], signal: AbortSignal): Promise<Map<string, Current>> | undefined;
  copy(request: CopyRequest): Promise<Outcome>;
  close(): Promise<void>;
}

/** Any answer of the endpoint will do: only "unreachable" is not one. */
async function answered(probe: () => Promise<unknown>): Promise<boolean> {
  try {
    await probe();
    return true;
  } catch (err) {
    return classify(err) !== 'unavailable';
  }
}

export const s3Answers = (client: S3Client, bucket: string): Promise<boolean> => answered(() => client.send(new HeadBucketCommand({ Bucket: bucket })));

const UPLOAD_SWEEP_MS = 3600_000;
/** A destination bucket that could not be probed is probed again after this long. */
const PROBE_RETRY_MS = 60_000;

export interface S3WriterOptions {
  client: S3Client;
  /** Its buckets, probed at start. */
  buckets: string[];
  /** The multipart upload ledger's topic and records (by location). */
  queue: Queue;
  names: QueueNames;
  location: string;
  producer: () => QueueProducer | undefined;
  log: Logger;
  /** How old a recorded upload nobody resumed gets before it is aborted. */
  uploadMaxAgeMs: number;
  /** Whether an upload's ledger key is a copy under way here (never old, whatever its age). */
  copying: (ledgerKey: string) => boolean;
}

/** An S3 endpoint: multipart uploads recorded to be resumed, each bucket's traits probed, backfills read ahead. */
export function s3Writer(o: S3WriterOptions): DestinationWriter {
  let uploads: UploadLedger | undefined;
  let sweep: NodeJS.Timeout | undefined;
  const traits = new ProbeMemo<DestinationTraits>(PROBE_RETRY_MS, (bucket, err) => {
    o.log.warn('destination not probed: a 404 there is confirmed by a listing until it is', { bucket, reason: reasonOf(err) });
  });
  // With the writer's own client, not one bound to a copy: a probe cut short would leave its object behind.
  const probe = (bucket: string) => async (): Promise<DestinationTraits> => {
    const probed = await probeDestination(o.client, bucket);
    o.log.info('destination probed', { bucket, ...probed.traits });
    if (probed.leftBehind !== undefined) o.log.warn('a probe object could not be deleted', { bucket, reason: probed.leftBehind });
    return probed.traits;
  };
  const sweepUploads = async (): Promise<void> => {
    const aborted = await uploads?.abortStale(o.client, o.uploadMaxAgeMs, o.copying).catch((err: unknown) => {
      o.log.warn('old multipart uploads not swept', { error: err });
      return 0;
    });
    if (aborted !== undefined && aborted > 0) o.log.info('old multipart uploads of this engine aborted', { count: aborted });
  };
  return {
    async start() {
      // Probed now, beside the ledger's read, rather than by each bucket's first copy.
      for (const bucket of o.buckets) void traits.get(bucket, probe(bucket));
      uploads = new UploadLedger({ queue: o.queue, names: o.names, location: o.location, producer: o.producer, logger: o.log });
      await uploads.start();
      void sweepUploads();
      sweep = setInterval(() => void sweepUploads(), UPLOAD_SWEEP_MS);
    },
    answers: (bucket) => s3Answers(o.client, bucket),
    readAhead: (bucket, keys, signal) => statesFromListing(abortable(o.client, signal), bucket, keys),
    copy({ source, task, destination, signal, rule, known }) {
      const ctx: CopyContext = { source, destination: abortable(o.client, signal), signal, ...(uploads !== undefined ? { uploads } : {}), traits: () => traits.peek(destination.bucket, probe(destination.bucket)), ...rule };
      return replicate(ctx, task, destination, known);
    },
    async close() {
      clearInterval(sweep);
      await uploads?.close();
    },
  };
}

/** An Azure Blob Storage account: nothing kept beside the copies (the service drops uncommitted blocks), nothing read ahead. */
export function blobWriter(account: BlobAccount): DestinationWriter {
  return {
    start: () => Promise.resolve(),
    answers: (container) => answered(() => account.service.getContainerClient(container).exists()),
    readAhead: () => undefined,
    copy: ({ source, task, destination, signal, rule }) => replicateToBlob({ source, account, signal, ...rule }, task, destination),
    close: () => Promise.resolve(),
  };
}
