import type { Logger } from '../log/logger.ts';
import type { Metrics } from '../metrics.ts';
import type { OutgoingRecord, QueueMessage } from './queue.ts';
import { encode, type QueueNames } from './messages.ts';

/** What is kept of a refused message's value: enough to see what it was, well under Kafka's 1 MB record limit. */
const KEPT_BYTES = 64 * 1024;

export interface Rejecter {
  names: QueueNames;
  logger: Logger;
  metrics?: Metrics | undefined;
  send(topic: string, records: OutgoingRecord[]): Promise<unknown>;
}

/**
 * Sets aside a message of this engine's own topics that did not fit its schema: logged, counted, and
 * kept with the reason on the rejected topic (awaited, so that it is there before the offset is
 * committed). A bug or a forged record: an operator inspects it, nothing acts on it.
 */
export async function reject(r: Rejecter, message: QueueMessage, reason: string): Promise<void> {
  const where = { topic: message.topic, partition: message.partition, offset: message.offset };
  r.logger.warn('malformed message refused', { ...where, reason });
  r.metrics?.rejectedMessages.inc({ topic: message.topic });
  const value = message.value === null ? null : message.value.subarray(0, KEPT_BYTES).toString('utf8');
  await r.send(r.names.rejected, [{ ...(message.key !== null ? { key: message.key.slice(0, 1024) } : {}), value: encode({ ...where, reason, value, bytes: message.value?.length ?? 0, at: new Date().toISOString() }) }]);
}
