import type { Batch, QueueConsumer, QueueMessage } from './queue.ts';

/**
 * Thrown by work that cannot go on now (its destination unreachable, the consumer paused for it): the
 * batch starts nothing more and ends without error, and this message and the rest are redelivered.
 */
export class Deferred extends Error {
  override name = 'Deferred';
}

/** Caps the tasks in flight across every batch of one worker (bounded memory whatever the backlog). */
export class Limiter {
  readonly max: number;
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`concurrency must be a positive integer, got ${max}`);
    this.max = max;
  }

  get inFlight(): number {
    return this.active;
  }

  async acquire(): Promise<void> {
    if (this.active < this.max) {
      this.active++;
      return;
    }
    // The releasing task hands its slot over directly, so `active` stays the same.
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next !== undefined) next();
    else this.active--;
  }
}

export interface OrderedOptions {
  limiter: Limiter;
  /**
   * Handles one message; a throw is a bug or a stop: the batch ends and uncommitted offsets are
   * redelivered. Long work (retries) should give up when `batch.isActive()` turns false.
   */
  work(message: QueueMessage, batch: Batch): Promise<void>;
  /** Commits `offset` (the next offset to read) for the batch's partition. */
  commit(offset: string): Promise<void>;
  commitIntervalMs?: number;
  heartbeatIntervalMs?: number;
}

/**
 * Runs a batch: messages of one key strictly one after another in offset order, different keys
 * concurrently within the limiter's bound. Commits only the contiguous prefix of finished offsets, so a
 * crash redelivers everything not yet done and nothing is skipped. Stops starting work as soon as the
 * batch becomes inactive (stop, rebalance), waits for what is in flight, commits, and returns.
 */
export async function runOrdered(batch: Batch, options: OrderedOptions): Promise<void> {
  const { messages } = batch;
  const done = new Array<boolean>(messages.length).fill(false);
  let low = 0; // index of the first message not done
  let committed = 0; // number of messages covered by the last commit
  let failure: unknown;
  let deferred = false;
  let lastCommit = Date.now();
  let commitChain = Promise.resolve();
  const commitIntervalMs = options.commitIntervalMs ?? 1_000;

  const commitUpTo = (count: number): Promise<void> => {
    commitChain = commitChain.then(async () => {
      if (count <= committed) return;
      const last = messages[count - 1];
      if (last === undefined) return;
      await options.commit((BigInt(last.offset) + 1n).toString());
      committed = count;
    });
    return commitChain;
  };

  const finished = (index: number): void => {
    done[index] = true;
    while (low < messages.length && done[low] === true) low++;
    if (low > committed && Date.now() - lastCommit >= commitIntervalMs) {
      lastCommit = Date.now();
      commitUpTo(low).catch((err: unknown) => (failure ??= err));
    }
  };

  const chains = new Map<string, number[]>();
  messages.forEach((m, i) => {
    // Messages without a key have no order to keep with any other.
    const key = m.key ?? `\0offset:${m.offset}`;
    const chain = chains.get(key);
    if (chain === undefined) chains.set(key, [i]);
    else chain.push(i);
  });

  const runChain = async (indices: number[]): Promise<void> => {
    for (const i of indices) {
      const message = messages[i];
      if (message === undefined) return;
      await options.limiter.acquire();
      try {
        if (failure !== undefined || deferred || !batch.isActive()) return;
        await options.work(message, batch);
        finished(i);
      } catch (err) {
        if (err instanceof Deferred) deferred = true;
        else failure ??= err;
        return;
      } finally {
        options.limiter.release();
      }
    }
  };

  const heartbeat = setInterval(() => {
    batch.heartbeat().catch(() => undefined);
  }, options.heartbeatIntervalMs ?? 3_000);
  try {
    await Promise.all([...chains.values()].map(runChain));
    await commitUpTo(low);
  } finally {
    clearInterval(heartbeat);
  }
  // A failure while the batch is being taken away is the stop itself: what is uncommitted is redelivered.
  if (failure !== undefined && batch.isActive()) throw failure instanceof Error ? failure : new Error('batch failed', { cause: failure });
}

/** Commits a whole batch: for consumers that finish each batch before returning. */
export function commitBatch(consumer: QueueConsumer, batch: Batch): Promise<void> {
  const last = batch.messages.at(-1);
  if (last === undefined) return Promise.resolve();
  return consumer.commit([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }]);
}

/** Starts `consumer` with every batch run by runOrdered, committing to its own partition. */
export function consumeOrdered(consumer: QueueConsumer, limiter: Limiter, work: OrderedOptions['work']): Promise<void> {
  return consumer.run({
    onBatch: (batch) =>
      runOrdered(batch, {
        limiter,
        work,
        commit: (offset) => consumer.commit([{ topic: batch.topic, partition: batch.partition, offset }]),
      }),
  });
}
