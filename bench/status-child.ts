import { readFileSync } from 'node:fs';
import { createLogger } from '../lib/log/logger.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import { queueNames } from '../lib/queue/messages.ts';
import type { ObjectState, ObjectStatus } from '../workers/status/fold.ts';
import { StatusProcessor } from '../workers/status/status.ts';
import { StatusProcessor as BaselineStatusProcessor, objectStatusTopic } from './baseline-status.ts';
import { sampleOf, versionRef } from './status-workload.ts';

// One contender of `make bench-status` in a process of its own (so that its peak RSS is its own): starts
// the status processor, times it to ready, optionally until it has folded every version, checks a sample
// of versions, closes it when asked, and sends the parent a report over the IPC channel. Logs go to stdout.

export interface ChildJob {
  store: 'new' | 'old';
  /** fold: wait until `versions` versions are COMPLETED; restart: only until ready. */
  mode: 'fold' | 'restart';
  brokers: string[];
  prefix: string;
  /** The new store's SQLite file. */
  storeFile: string;
  versions: number;
  /** A fold that changes nothing for this long is given up (and refused by the parent). */
  stallMs: number;
  /**
   * Close cleanly (leave the group) before exiting, as a pod stopped by Kubernetes does: a later run on the
   * same group would otherwise wait for this member's session to expire. Otherwise exit once reported
   * (kafkajs closes each consumer only after its fetch long-poll ends, about 5 s).
   */
  leave: boolean;
}

export interface ChildReport {
  /** From the process's start (performance.timeOrigin) until ready, or until start() failed. */
  readyMs: number;
  /** Why the contender did not become ready (the baseline's readToEnd timeout). */
  startError?: string;
  /** From ready until every version was COMPLETED; absent when the fold stalled first. */
  foldMs?: number;
  summary: Record<ObjectState, number>;
  /** Sampled versions, and how many of them were COMPLETED on both destinations. */
  sampled: number;
  sampledCompleted: number;
  /** Changelog records read by the new store's restore. */
  restoredRecords?: number;
  /** VmHWM when reporting, in bytes. */
  peakRssBytes: number;
}

interface Contender {
  /** Resolves once ready to fold and answer. */
  start(): Promise<void>;
  summary(): Record<ObjectState, number>;
  lookup(location: string, bucket: string, key: string, versionId: string): ObjectStatus[];
  restoredRecords(): number | undefined;
  close(): Promise<void>;
}

function contender(job: ChildJob): Contender {
  const logger = createLogger({ component: `bench-status-${job.store}` });
  const queue = kafkaQueue({ brokers: job.brokers, clientId: `bench-status-${job.store}`, logger });
  const names = queueNames(job.prefix);
  if (job.store === 'old') {
    const p = new BaselineStatusProcessor({ queue, logger, names, objectStatus: objectStatusTopic(job.prefix) });
    return { start: () => p.start(), summary: () => p.summary(), lookup: (...a) => p.lookup(...a), restoredRecords: () => undefined, close: () => p.close() };
  }
  const p = new StatusProcessor({ queue, logger, names, storeFile: job.storeFile });
  return {
    start: async () => {
      await p.start();
      await p.whenReady();
    },
    summary: () => p.summary(),
    lookup: (...a) => p.lookup(...a),
    restoredRecords: () => p.restoredRecords,
    close: () => p.close(),
  };
}

function vmHwm(): number {
  const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  return kib === undefined ? 0 : Number(kib) * 1024;
}

/** Milliseconds from `from` until `versions` are COMPLETED; undefined once nothing changed for `stallMs`. */
async function folded(c: Contender, versions: number, stallMs: number): Promise<number | undefined> {
  const from = performance.now();
  let seen = '';
  let changed = from;
  for (;;) {
    const s = c.summary();
    if (s.COMPLETED >= versions) return performance.now() - from;
    const now = JSON.stringify(s);
    if (now !== seen) [seen, changed] = [now, performance.now()];
    else if (performance.now() - changed > stallMs) return undefined;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function run(job: ChildJob): Promise<ChildReport> {
  const c = contender(job);
  try {
    await c.start();
  } catch (err) {
    const summary = c.summary();
    return { readyMs: performance.now(), startError: (err as Error).message, summary, sampled: 0, sampledCompleted: 0, peakRssBytes: vmHwm() };
  }
  const readyMs = performance.now();
  const foldMs = job.mode === 'fold' ? await folded(c, job.versions, job.stallMs) : undefined;
  const sample = sampleOf(job.versions).map(versionRef);
  const sampledCompleted = sample.filter((o) => {
    const s = c.lookup(o.location, o.bucket, o.key, o.versionId)[0];
    return s?.state === 'COMPLETED' && Object.values(s.destinations).every((d) => d.state === 'COMPLETED');
  }).length;
  const summary = c.summary();
  const restoredRecords = c.restoredRecords();
  if (job.leave) await c.close();
  return { readyMs, ...(foldMs !== undefined ? { foldMs } : {}), summary, sampled: sample.length, sampledCompleted, ...(restoredRecords !== undefined ? { restoredRecords } : {}), peakRssBytes: vmHwm() };
}

// A parent gone (interrupted, crashed) leaves nobody to report to.
process.once('disconnect', () => process.exit(1));
const report = await run(JSON.parse(process.argv[2] ?? '') as ChildJob);
process.send?.(report, () => process.exit(0));
