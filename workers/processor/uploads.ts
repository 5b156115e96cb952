import { randomUUID } from 'node:crypto';
import { AbortMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';
import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from '../../lib/log/logger.ts';
import { follow } from '../../lib/queue/follow.ts';
import { readToEnd } from '../../lib/queue/read-all.ts';
import type { Queue, QueueConsumer, QueueMessage, QueueProducer } from '../../lib/queue/queue.ts';
import { isNotFound, reasonOf } from '../../lib/s3/errors.ts';
import { encode, parseMessage, type QueueNames } from '../../lib/queue/messages.ts';

/** A multipart upload this engine started on a destination, for one source version. */
export const UploadRecord = Type.Object({ uploadId: Type.String({ minLength: 1, maxLength: 1024 }), sourceVersionId: Type.String({ minLength: 1, maxLength: 1024 }), initiated: Type.String({ format: 'date-time' }) });
export type UploadRecord = Static<typeof UploadRecord>;

/** Where a copy's upload is recorded: the destination (location/bucket) and the replica's key. */
export interface UploadPlace {
  destination: string;
  key: string;
}

/** The ledger's key of a place: its destination (location/bucket), then the replica's key. */
export const ledgerKey = (p: UploadPlace): string => `${p.destination}/${p.key}`;

/**
 * The multipart uploads this engine has under way on one destination location, kept in a compacted
 * topic: a copy cut short (a crash, a scale-down, a rebalance) is resumed by whichever processor takes
 * it next from the parts already uploaded, and uploads nobody resumed are aborted once old. Only uploads
 * recorded here are touched: an upload someone else started on the same key is never resumed nor aborted.
 */
export class UploadLedger {
  private readonly records = new Map<string, UploadRecord>();
  private follower: QueueConsumer | undefined;
  private readonly options: { queue: Queue; names: QueueNames; location: string; producer: () => QueueProducer | undefined; logger: Logger };

  constructor(options: UploadLedger['options']) {
    this.options = options;
  }

  async start(): Promise<void> {
    const { queue, names } = this.options;
    await readToEnd(queue, names.uploads, (m) => {
      this.onRecord(m);
    });
    this.follower = await follow(queue, names.uploads, (m) => {
      this.onRecord(m);
    }, `${names.processorGroup(this.options.location)}-uploads-${randomUUID()}`);
  }

  private onRecord(m: QueueMessage): void {
    if (m.key === null || !m.key.startsWith(`${this.options.location}/`)) return;
    if (m.value === null) {
      this.records.delete(m.key);
      return;
    }
    try {
      this.records.set(m.key, parseMessage(UploadRecord, m.value));
    } catch (err) {
      // Not resumed nor aborted: only uploads this engine recorded are touched.
      this.options.logger.warn('malformed upload record ignored', { key: m.key, reason: (err as Error).message });
    }
  }

  /** The upload under way for this source version, if one was recorded. */
  find(place: UploadPlace, sourceVersionId: string): UploadRecord | undefined {
    const r = this.records.get(ledgerKey(place));
    return r?.sourceVersionId === sourceVersionId ? r : undefined;
  }

  async record(place: UploadPlace, record: UploadRecord): Promise<void> {
    this.records.set(ledgerKey(place), record);
    await this.send(ledgerKey(place), encode(record));
  }

  async forget(place: UploadPlace): Promise<void> {
    this.records.delete(ledgerKey(place));
    await this.send(ledgerKey(place), null);
  }

  private async send(key: string, value: string | null): Promise<void> {
    const producer = this.options.producer();
    if (producer === undefined) throw new Error('the upload ledger is used before its processor started');
    await producer.send(this.options.names.uploads, [{ key, value }]);
  }

  /**
   * Aborts the recorded uploads older than `maxAgeMs` (nobody resumed them: their task was completed
   * another way, or is gone), except those `busy` says are in use here.
   */
  async abortStale(destination: S3Client, maxAgeMs: number, busy: (key: string) => boolean): Promise<number> {
    let aborted = 0;
    for (const [key, r] of [...this.records]) {
      if (Date.now() - Date.parse(r.initiated) < maxAgeMs || busy(key)) continue;
      const [location, bucket, ...rest] = key.split('/');
      const place = { destination: `${location ?? ''}/${bucket ?? ''}`, key: rest.join('/') };
      try {
        await destination.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: place.key, UploadId: r.uploadId }));
        aborted++;
      } catch (err) {
        if (!isNotFound(err) && (err as { name?: string }).name !== 'NoSuchUpload') {
          this.options.logger.warn('an old multipart upload could not be aborted; trying again later', { key, error: reasonOf(err) });
          continue;
        }
      }
      await this.forget(place);
    }
    return aborted;
  }

  async close(): Promise<void> {
    await this.follower?.close();
  }
}

