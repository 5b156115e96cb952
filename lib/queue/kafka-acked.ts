import type { Logger } from '../log/logger.ts';

/** A record with its partition chosen: what kafkajs must acknowledge partition by partition. */
export interface PartitionedMessage {
  partition: number;
}

/** What kafkajs answers per partition written. */
export interface PartitionAck {
  partition: number;
  baseOffset?: string;
}

/** Sends before giving up on partitions kafkajs keeps leaving out (a cluster still moving leaders). */
const ROUNDS = 5;

/**
 * Sends `messages` until every partition they go to is acknowledged, and returns the acknowledgements.
 * kafkajs 2.2.4 can resolve a send without writing some partitions: a retry after NOT_LEADER skips
 * every broker that answered the first attempt, so a partition whose leader moved to one of them is
 * silently dropped (tulios/kafkajs#1798, open). Seen in broker-loss.test.ts: `queued` events acknowledged
 * and never in the log. A partition left out is sent again in a new send; its records were not written
 * (kafkajs never sent them to its new leader), so nothing is duplicated.
 */
export async function sendAcknowledged<M extends PartitionedMessage>(
  send: (messages: M[]) => Promise<PartitionAck[]>,
  messages: M[],
  log: Logger,
  topic: string,
): Promise<PartitionAck[]> {
  const acks: PartitionAck[] = [];
  let pending = messages;
  for (let round = 1; pending.length > 0; round++) {
    const got = await send(pending);
    acks.push(...got);
    const acked = new Set(got.map((a) => a.partition));
    pending = pending.filter((m) => !acked.has(m.partition));
    if (pending.length === 0) break;
    const partitions = [...new Set(pending.map((m) => m.partition))].sort((a, b) => a - b);
    if (round >= ROUNDS) throw new Error(`Kafka acknowledged no write to ${topic} partitions ${partitions.join(', ')} in ${String(ROUNDS)} sends`);
    log.warn('a send came back without some partitions written (their leader moved): sending their records again', { topic, partitions });
  }
  return acks;
}
