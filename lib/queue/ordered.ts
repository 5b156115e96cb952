import { DRAIN_MS, tpKey, type Batch, type QueueConsumer, type QueueMessage, type TopicPartition } from './queue.ts';

/**
 * Thrown by work that cannot go on now (its destination unreachable, the consumer paused for it): the
 * batch starts nothing more and ends without error, and this message and the rest are redelivered.
 */
export class Deferred extends Error {
  override name = 'Deferred';
}

/** Caps the tasks in flight across every batch of one worker (bounded memory whatever the backlog). */
export class Limiter {
  private limit: number;
  private active = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(max: number) {
    this.limit = Limiter.checked(max);
  }

  private static checked(max: number): number {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`concurrency must be a positive integer, got ${max}`);
    return max;
  }

  get max(): number {
    return this.limit;
  }

  /** A new limit: more lets waiters in now; fewer takes effect as work in flight ends. */
  resize(max: number): void {
    this.limit = Limiter.checked(max);
    while (this.active < this.limit && this.waiters.length > 0) {
      this.active++;
      this.waiters.shift()?.();
    }
  }

  get inFlight(): number {
    return this.active;
  }

  async acquire(): Promise<void> {
    if (this.active < this.limit) {
      this.active++;
      return;
    }
    // The releasing task hands its slot over directly, so `active` stays the same.
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.active <= this.limit ? this.waiters.shift() : undefined;
    if (next !== undefined) next();
    else this.active--;
  }
}

/** What work on a partition's message holds: the right to act for the partition's owner. */
export interface Lease {
  /** False once the partition is taken away or the consumer stops: start nothing more, report nothing. */
  isActive(): boolean;
  /** Aborted when work still running must end: the partition is no longer this member's, or the drain time is over. */
  signal: AbortSignal;
}

export interface OrderedOptions {
  limiter: Limiter;
  /**
   * Handles one message; a throw is a bug or a stop, and a Deferred asks for the message later: the
   * partition starts nothing more, and what is not done is delivered again. Long work (retries) should
   * give up when `lease.isActive()` turns false.
   */
  work(message: QueueMessage, lease: Lease): Promise<void>;
  /**
   * Told of the messages of a batch that each start their key's chain (nothing of their key runs or
   * waits in this partition), before any of them runs: until it does, no work here touches their keys,
   * so what is read of those keys now is still true when it starts (a prefetch).
   */
  taken?(messages: QueueMessage[], lease: Lease): void;
  /** Told of the member's whole assignment each time it changes (see QueueHandler.onAssign). */
  assigned?(assignment: TopicPartition[]): void;
  /** Messages per partition taken in and not yet committed: what a slow key lets the others run ahead. */
  window?: number;
  commitIntervalMs?: number;
  /** How long a stop waits for work in flight before aborting it. */
  drainMs?: number;
  /**
   * How long the same gap before a batch must last, read again each time, before it is taken for
   * retention (those offsets gone from the log) rather than batches fetched before a rewind, which may
   * come more than once. Default 60 s.
   */
  gapPatienceMs?: number;
}

/** A partition's messages are taken in up to this many past its last commit. */
export const WINDOW = 1_000;
const GAP_PATIENCE_MS = 60_000;

interface Slot {
  offset: bigint;
  done: boolean;
}

/**
 * The work of one partition across its batches: messages of one key strictly one after another in offset
 * order, different keys concurrently within the limiter's bound, and later batches taken in while a slow
 * key still runs, up to the window. Only the contiguous prefix of finished offsets is committed, so a
 * crash redelivers everything not yet done and nothing is skipped.
 */
class PartitionWindow {
  readonly tp: TopicPartition;
  private readonly consumer: QueueConsumer;
  private readonly options: OrderedOptions;
  /** Every message taken in and not yet committed, in offset order; slots[low] is the first not done. */
  private slots: Slot[] = [];
  private low = 0;
  /** The offset after the last message taken in. */
  private next: bigint | undefined;
  /** The next offset to read as last committed (or as found, before the first commit). */
  private committed: bigint | undefined;
  /** Keys with messages to do; the first of each chain is the one running (or about to). */
  private readonly chains = new Map<string, { message: QueueMessage; slot: Slot }[]>();
  private running = 0;
  /** False while what runs is drained before the partition is read again from its commit. */
  private accepting = true;
  private owned = true;
  private stopping = false;
  private failure: unknown;
  private readonly fence = new AbortController();
  private commitChain = Promise.resolve();
  private wake: (() => void)[] = [];
  /** Where a batch started past `next` last asked to read again from (a second time: those offsets are gone). */
  private gapAt: bigint | undefined;
  /** When the gap at `gapAt` was first seen. */
  private gapSince = 0;
  readonly lease: Lease;

  /** Whether `next` has been set from the group's commit, before the first batch is taken in. */
  private started = false;

  constructor(tp: TopicPartition, consumer: QueueConsumer, options: OrderedOptions) {
    this.tp = tp;
    this.consumer = consumer;
    this.options = options;
    this.lease = { isActive: () => this.owned && !this.stopping, signal: this.fence.signal };
  }

  /** Work runs or waits: the group should leave the partition here through a rebalance. */
  get busy(): boolean {
    return this.running > 0 || this.chains.size > 0;
  }

  private changed(): void {
    const wake = this.wake;
    this.wake = [];
    for (const w of wake) w();
  }

  private waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wake.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Takes a batch in, then holds it while the window is full: the queue fetches on once this returns. */
  async take(batch: Batch): Promise<void> {
    while (!this.accepting && this.owned && batch.isActive()) {
      await this.waitForChange(1_000);
      // kafkajs heartbeats only between batches: while this one waits for a rewind, a heartbeat is how
      // the member learns the group evicted it, which ends the batch (a wait without one can last for good).
      await batch.heartbeat().catch(() => undefined);
    }
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      throw failure instanceof Error ? failure : new Error('work failed', { cause: failure });
    }
    if (!this.owned || this.stopping || !batch.isActive()) return;
    if (!this.started) {
      // The window starts at the group's commit, not at its first batch: that batch may have been fetched
      // before a rewind or a rejoin (a window of this partition revoked here, its task aborted), and
      // taking it as it is would skip what lies between. Without a commit, the first batch is the start.
      const committed = await this.consumer.committed(this.tp);
      if (committed !== null) this.next = this.committed = BigInt(committed);
      this.started = true;
      // Revoked or stopped while it asked.
      if (!this.lease.isActive() || !batch.isActive()) return;
    }
    const first = batch.messages[0];
    if (first !== undefined && this.next !== undefined && BigInt(first.offset) > this.next) {
      // Messages from `next` on were never taken in (a batch fetched before a rewind, and there can be
      // several): taking this one in would skip them, and commit past them. Read again from `next`, as
      // long as the gap has not lasted `gapPatienceMs`; past that, those offsets are no longer in the log
      // (retention), and the batch is taken as it is.
      const now = Date.now();
      const repeated = this.gapAt === this.next;
      if (!repeated) {
        this.gapAt = this.next;
        this.gapSince = now;
      }
      if (now - this.gapSince < (this.options.gapPatienceMs ?? GAP_PATIENCE_MS)) {
        // The same gap again: not in a hot loop of fetches while it lasts.
        if (repeated) await this.waitForChange(200);
        this.consumer.rewind({ ...this.tp, offset: this.next.toString() });
        return;
      }
    }
    const heads: QueueMessage[] = [];
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      // Delivered again (a rebalance that left the partition here restarts from the commit): taken in already.
      if (this.next !== undefined && offset < this.next) continue;
      this.next = offset + 1n;
      this.committed ??= offset;
      const slot = { offset, done: false };
      this.slots.push(slot);
      // Messages without a key have no order to keep with any other.
      const key = message.key ?? `\0offset:${message.offset}`;
      const chain = this.chains.get(key);
      if (chain !== undefined) chain.push({ message, slot });
      else {
        this.chains.set(key, [{ message, slot }]);
        heads.push(message);
        void this.runChain(key);
      }
    }
    // Each chain's work starts after an await: the hook runs first.
    if (heads.length > 0) this.options.taken?.(heads, this.lease);
    const window = this.options.window ?? WINDOW;
    while (this.accepting && this.slots.length >= window && batch.isActive()) {
      await this.waitForChange(1_000);
      await this.commit();
      await batch.heartbeat().catch(() => undefined);
    }
  }

  private async runChain(key: string): Promise<void> {
    this.running++;
    try {
      for (;;) {
        const chain = this.chains.get(key);
        const entry = chain?.[0];
        if (chain === undefined || entry === undefined) return;
        await this.options.limiter.acquire();
        try {
          if (!this.accepting || !this.lease.isActive()) return;
          await this.options.work(entry.message, this.lease);
        } catch (err) {
          // A throw while the partition is being given up is the stop itself.
          if (!(err instanceof Deferred) && this.lease.isActive()) this.failure ??= err;
          this.accepting = false;
          return;
        } finally {
          this.options.limiter.release();
        }
        entry.slot.done = true;
        while (this.slots[this.low]?.done === true) this.low++;
        chain.shift();
        if (chain.length === 0) {
          this.chains.delete(key);
          return;
        }
      }
    } finally {
      this.running--;
      if (this.running === 0 && !this.accepting && this.owned && !this.stopping) void this.rewind();
      this.changed();
    }
  }

  /** The offset after the contiguous prefix of finished messages. */
  private get doneUpTo(): bigint | undefined {
    return this.slots[this.low]?.offset ?? this.next;
  }

  /** Commits what is done, serialised; a refused commit (a rebalance under way) is tried again later. */
  commit(): Promise<void> {
    this.commitChain = this.commitChain.then(async () => {
      const upTo = this.doneUpTo;
      if (!this.owned || upTo === undefined || this.committed === undefined || upTo <= this.committed) return;
      try {
        await this.consumer.commit([{ ...this.tp, offset: upTo.toString() }]);
      } catch {
        return;
      }
      this.committed = upTo;
      const cut = this.slots.findIndex((s) => s.offset >= upTo);
      this.slots = cut < 0 ? [] : this.slots.slice(cut);
      this.low = Math.max(0, this.low - (cut < 0 ? this.low : cut));
    });
    return this.commitChain;
  }

  /** After a Deferred or a failure, with nothing running: commit, forget the rest, read again from the commit. */
  private async rewind(): Promise<void> {
    await this.commit();
    if (!this.owned || this.stopping) return;
    this.chains.clear();
    this.slots = [];
    this.low = 0;
    this.next = this.committed;
    if (this.committed !== undefined) this.consumer.rewind({ ...this.tp, offset: this.committed.toString() });
    this.accepting = true;
    this.changed();
  }

  /** The partition is no longer this member's: everything stops now, and nothing is committed or reported. */
  revoke(): void {
    if (!this.owned) return;
    this.owned = false;
    this.accepting = false;
    this.fence.abort(new Error(`${tpKey(this.tp)} is no longer ours`));
    // The queue may still hold the partition (an expired lease): it reads again from the last commit.
    if (this.committed !== undefined) this.consumer.rewind({ ...this.tp, offset: this.committed.toString() });
    this.changed();
  }

  /** A stop: start nothing more, give what runs `drainMs`, abort the rest, commit what is done. */
  async drain(drainMs: number): Promise<void> {
    this.stopping = true;
    this.accepting = false;
    this.changed();
    const until = Date.now() + drainMs;
    while (this.running > 0 && Date.now() < until) await this.waitForChange(Math.min(250, until - Date.now()));
    await this.commit();
    if (this.running > 0) this.fence.abort(new Error(`stopping: ${tpKey(this.tp)} is left to its next owner`));
    this.owned = false;
  }
}

/** Commits a whole batch: for consumers that finish each batch before returning. */
export function commitBatch(consumer: QueueConsumer, batch: Batch): Promise<void> {
  const last = batch.messages.at(-1);
  if (last === undefined) return Promise.resolve();
  return consumer.commit([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }]);
}

/**
 * Starts `consumer` with its partitions worked through partition windows, each committing to its own
 * partition. A partition with work in flight stays with this member through a rebalance (the queue's
 * busy-first assignment); one taken away all the same is aborted at once.
 */
export async function consumeOrdered(consumer: QueueConsumer, limiter: Limiter, work: OrderedOptions['work'], more: Omit<OrderedOptions, 'limiter' | 'work'> = {}): Promise<void> {
  const options: OrderedOptions = { limiter, work, ...more };
  const windows = new Map<string, PartitionWindow>();
  let stopping = false;
  const ticker = setInterval(() => {
    for (const w of windows.values()) void w.commit();
  }, options.commitIntervalMs ?? 1_000);
  ticker.unref();
  await consumer.run({
    onBatch: async (batch) => {
      if (stopping) return;
      let w = windows.get(tpKey(batch));
      if (w === undefined) {
        w = new PartitionWindow({ topic: batch.topic, partition: batch.partition }, consumer, options);
        windows.set(tpKey(batch), w);
      }
      await w.take(batch);
    },
    onAssign: (assignment) => {
      options.assigned?.(assignment);
      const kept = new Set(assignment.map(tpKey));
      for (const [k, w] of windows) {
        if (kept.has(k)) continue;
        w.revoke();
        windows.delete(k);
      }
    },
    windowed: {
      busy: () => [...windows.values()].filter((w) => w.busy).map((w) => w.tp),
      drain: async () => {
        stopping = true;
        clearInterval(ticker);
        await Promise.all([...windows.values()].map((w) => w.drain(options.drainMs ?? DRAIN_MS)));
        windows.clear();
      },
    },
  });
}
