import { Worker } from 'node:worker_threads';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Logger } from '../../lib/log/logger.ts';
import type { KafkaSecurity } from '../../lib/queue/kafka-security.ts';
import type { RetryPolicy } from '../../lib/retry.ts';
import type { ProcessorCounters } from '../processor/processor.ts';

// Local mode's processors on worker threads, so that one machine's cores share the copies: with Kafka,
// each thread runs the processors of every destination as consumers of the same groups, and Kafka
// spreads each destination's partitions over them. (The embedded queue lives in the main thread's
// memory: there the processors run in the main thread.) A thread that ends unexpectedly is started again.

/** What a thread is given (cloneable). */
export interface ThreadSetup {
  index: number;
  files: string[];
  brokers: string[];
  kafkaSecurity?: KafkaSecurity;
  prefix: string;
  /** When each rule took effect, as the main thread read it. */
  starts: [string, string][];
  /** The destination locations (a processor each). */
  locations: string[];
  concurrency?: number;
  retry?: Partial<RetryPolicy>;
}

export type ThreadRequest = { type: 'state'; id: number } | { type: 'stop' };

export interface ThreadProcessor {
  location: string;
  paused: boolean;
  until?: string;
  settled: boolean;
  counters: ProcessorCounters;
}

export type ThreadReport = { type: 'ready' } | { type: 'stopped' } | { type: 'log'; line: string } | { type: 'state'; id: number; processors: ThreadProcessor[]; metrics: MetricObjectWithValues<MetricValue<string>>[] };

// From source, the .ts beside this module; in the bundle (scripts/bundle.ts), its entry beside the chunk.
const ENTRY = new URL(import.meta.url.endsWith('.ts') ? './processor-thread.ts' : './processor-thread.mjs', import.meta.url);
/** How often the main thread asks each thread how its processors are (readiness, pauses). */
const POLL_MS = 1_000;

class ProcessorThread {
  private worker: Worker | undefined;
  private stopping = false;
  private nextId = 0;
  private readonly replies = new Map<number, (r: Extract<ThreadReport, { type: 'state' }>) => void>();
  /** Its last answer; undefined while it starts (or starts again). */
  last: ThreadProcessor[] | undefined;

  private readonly setup: ThreadSetup;
  private readonly logger: Logger;

  constructor(setup: ThreadSetup, logger: Logger) {
    this.setup = setup;
    this.logger = logger;
  }

  start(): Promise<void> {
    const worker = new Worker(ENTRY, { workerData: this.setup });
    this.worker = worker;
    this.last = undefined;
    return new Promise((resolve, reject) => {
      worker.on('message', (m: ThreadReport) => {
        if (m.type === 'ready') resolve();
        if (m.type === 'state') this.replies.get(m.id)?.(m);
        if (m.type === 'log') this.relay(m.line);
      });
      worker.once('error', (err: Error) => {
        this.logger.error('processor thread failed', { thread: this.setup.index, error: err });
        reject(err);
      });
      worker.once('exit', (code) => {
        // No answer will come: questions asked meanwhile get an empty one, and it is not settled.
        this.worker = undefined;
        this.last = undefined;
        for (const [, reply] of this.replies) reply({ type: 'state', id: -1, processors: [], metrics: [] });
        this.replies.clear();
        if (this.stopping) return;
        this.logger.warn('processor thread ended: starting it again', { thread: this.setup.index, code });
        setTimeout(() => {
          if (!this.stopping) void this.start().catch(() => undefined);
        }, 1_000).unref();
      });
    });
  }

  /** A thread's log line, written by the main thread's logger. */
  private relay(line: string): void {
    try {
      const { level, message, ...fields } = JSON.parse(line) as { level?: string; message?: string; [field: string]: unknown };
      this.logger.log({ ...fields, level: level ?? 'info', message: message ?? '' });
    } catch {
      this.logger.info(line);
    }
  }

  state(): Promise<Extract<ThreadReport, { type: 'state' }>> {
    const worker = this.worker;
    if (worker === undefined) return Promise.resolve({ type: 'state', id: -1, processors: [], metrics: [] });
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.replies.set(id, (r) => {
        this.replies.delete(id);
        if (r.id !== -1) this.last = r.processors;
        resolve(r);
      });
      worker.postMessage({ type: 'state', id } satisfies ThreadRequest);
    });
  }

  async terminate(): Promise<void> {
    await this.worker?.terminate();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const worker = this.worker;
    if (worker === undefined) return;
    const exited = new Promise((resolve) => worker.once('exit', resolve));
    worker.postMessage({ type: 'stop' } satisfies ThreadRequest);
    await exited;
  }
}

export class ProcessorThreads {
  private readonly threads: ProcessorThread[];
  private readonly timer: NodeJS.Timeout;

  private constructor(threads: ProcessorThread[]) {
    this.threads = threads;
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.timer.unref();
  }

  /** Starts `count` threads, each running a processor for every location of `setup.locations`. */
  static async start(count: number, setup: Omit<ThreadSetup, 'index'>, logger: Logger): Promise<ProcessorThreads> {
    const threads = Array.from({ length: count }, (_, index) => new ProcessorThread({ ...setup, index }, logger));
    await Promise.all(threads.map((t) => t.start()));
    const pool = new ProcessorThreads(threads);
    await pool.poll();
    return pool;
  }

  private async poll(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.state()));
  }

  /** Every thread answered, and every processor of each is settled (as of the last poll). */
  get settled(): boolean {
    return this.threads.every((t) => t.last !== undefined && t.last.every((p) => p.settled));
  }

  /** Per location: paused in any thread (they read the same control topic), and until when. */
  states(): { location: string; paused: boolean; until?: string }[] {
    const byLocation = new Map<string, { location: string; paused: boolean; until?: string }>();
    for (const p of this.threads.flatMap((t) => t.last ?? [])) {
      const known = byLocation.get(p.location);
      if (known === undefined || (!known.paused && p.paused)) byLocation.set(p.location, { location: p.location, paused: p.paused, ...(p.until !== undefined ? { until: p.until } : {}) });
    }
    return [...byLocation.values()];
  }

  /** Each thread's processors' counters, by location (a thread starting again counts from zero). */
  async counters(): Promise<Map<string, ProcessorCounters>[]> {
    return (await Promise.all(this.threads.map((t) => t.state()))).map((r) => new Map(r.processors.map((p) => [p.location, p.counters])));
  }

  /** Ends thread `index` as a crash would; it is started again a second later. */
  async terminate(index: number): Promise<void> {
    await this.threads[index]?.terminate();
  }

  /** The threads' metrics added to `own` (the main thread's), as one Prometheus text. */
  async metrics(own: MetricObjectWithValues<MetricValue<string>>[]): Promise<{ contentType: string; body: string }> {
    const theirs = (await Promise.all(this.threads.map((t) => t.state()))).map((r) => r.metrics);
    const registry = AggregatorRegistry.aggregate([own, ...theirs]);
    return { contentType: registry.contentType, body: await registry.metrics() };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.threads.map((t) => t.stop()));
  }
}
