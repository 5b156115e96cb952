import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log/logger.ts';

interface KafkaError {
  name?: string;
  retriable?: boolean;
  cause?: unknown;
  originalError?: unknown;
}

// kafkajs gives up on some of these after its own few retries, or marks them not retriable once its
// retries ran out (KafkaJSNumberOfRetriesExceeded): a cluster still settling after a start, a leader
// election or a broker restart. The cause, not the wrapper, decides.
const SETTLING = new Set(['KafkaJSGroupCoordinatorNotFound', 'KafkaJSNoBrokerAvailableError', 'KafkaJSBrokerNotFound', 'KafkaJSMetadataNotLoaded', 'KafkaJSTopicMetadataNotLoaded', 'KafkaJSConnectionError', 'KafkaJSConnectionClosedError', 'KafkaJSRequestTimeoutError', 'KafkaJSLockTimeout', 'KafkaJSTimeout']);

/** Whether a Kafka error is one of a cluster settling (leader or coordinator moving, broker away): worth retrying. */
export function isSettling(err: unknown): boolean {
  let e = err as KafkaError | null | undefined;
  for (let depth = 0; e !== null && e !== undefined && depth < 5; depth++) {
    if (SETTLING.has(e.name ?? '')) return true;
    if (e.name !== 'KafkaJSNumberOfRetriesExceeded' && e.retriable === true) return true;
    e = (e.originalError ?? e.cause) as KafkaError | null | undefined;
  }
  return false;
}

/**
 * Runs `fn` again while it fails with a settling error, with backoff, for up to `forMs` (then the last
 * error is thrown). Only for what is safe to repeat: connecting, subscribing, reading metadata.
 */
export async function retryKafka<T>(what: string, fn: () => Promise<T>, logger: Logger | undefined, { forMs = 120_000, signal }: { forMs?: number; signal?: AbortSignal } = {}): Promise<T> {
  const deadline = Date.now() + forMs;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await fn();
    } catch (err) {
      if (!isSettling(err) || Date.now() + delay > deadline || signal?.aborted === true) throw err;
      logger?.warn(`${what}: Kafka not ready; retrying`, { error: (err as Error).message, retryInMs: delay });
      await sleep(delay, undefined, signal !== undefined ? { signal } : {}).catch(() => undefined);
    }
  }
}
