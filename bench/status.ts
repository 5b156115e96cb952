import { fork } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { logTail } from '../e2e/harness/process.ts';
import type { Logger } from '../lib/log/logger.ts';
import { kafkaQueue } from '../lib/queue/kafka.ts';
import type { Queue } from '../lib/queue/queue.ts';
import { installationTopics, queueNames } from '../lib/queue/messages.ts';
import { objectStatusTopic } from './baseline-status.ts';
import type { ChildJob, ChildReport } from './status-child.ts';
import { EVENTS_PER_VERSION, eventRecords, finalRecord, produce, type ProduceOptions } from './status-workload.ts';
import { peakRss } from './process.ts';

// `make bench-status`: the status store (node:sqlite + changelog, workers/status) against the in-memory
// status processor it replaced (bench/baseline-status.ts), on the same Kafka broker, each contender in a
// child process of its own. Every figure comes from a run that was checked complete (every version
// COMPLETED, by the contender's own summary and by a sample of lookups); anything else is refused.

export interface StatusBenchOptions {
  brokers: string[];
  logger: Logger;
  /** Versions of the full-size runs (new store's fold and restarts, baseline's restart). */
  versions: number;
  /** Versions of the fold workload both contenders run (the baseline folds too slowly for the full size). */
  foldVersions: number;
  partitions: number;
  /** Where store files and child logs go. */
  dir: string;
  produce: ProduceOptions;
  /** A fold that changes nothing for this long is given up and refused. */
  stallMs: number;
  /** A child that has not reported by then is killed and refused. */
  childTimeoutMs: number;
  /** Progress lines. */
  onPhase?: (line: string) => void;
}

export interface Fold {
  versions: number;
  events: number;
  seconds: number;
  peakRssBytes: number;
}

export type Restart = { versions: number; seconds: number; peakRssBytes: number; restoredRecords?: number } | { versions: number; failed: string; seconds: number; peakRssBytes: number; versionsRead: number };

export interface Produced {
  what: string;
  records: number;
  seconds: number;
}

export interface StatusBenchResult {
  versions: number;
  foldVersions: number;
  partitions: number;
  produce: ProduceOptions;
  produced: Produced[];
  /** foldSmall is fold, and restartSmall absent, when both sizes are the same. */
  fresh: { foldSmall: Fold; restartSmall?: Restart; fold: Fold; restartIntact: Restart; restartRestore: Restart };
  baseline: { foldSmall: Fold; restart: Restart };
}

const CHILD = new URL('./status-child.ts', import.meta.url).pathname;
const NAME = { new: 'new store', old: 'old store' } as const;

interface ChildOutcome {
  report?: ChildReport;
  /** Highest VmHWM seen: sampled by the parent every 100 ms, and the child's own last reading. */
  peakRssBytes: number;
  exit: string;
  log: string;
  /** Wall time from spawn to exit. */
  wallSeconds: number;
}

/** Runs one contender in a child process; its VmHWM is sampled meanwhile, so that a crash still has one. */
function runChild(job: ChildJob, logFile: string, timeoutMs: number): Promise<ChildOutcome> {
  const fd = openSync(logFile, 'a');
  return new Promise((resolve, reject) => {
    const spawned = performance.now();
    const child = fork(CHILD, [JSON.stringify(job)], { stdio: ['ignore', fd, fd, 'ipc'] });
    closeSync(fd);
    let report: ChildReport | undefined;
    let peak = 0;
    let timedOut = false;
    const sample = setInterval(() => (peak = Math.max(peak, peakRss(child.pid))), 100);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('message', (m) => (report = m as ChildReport));
    child.once('error', (err) => {
      clearInterval(sample);
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearInterval(sample);
      clearTimeout(timer);
      const exit = timedOut ? `killed after ${String(timeoutMs / 1000)} s without a report` : signal !== null ? `killed by ${signal}` : `exit code ${String(code)}`;
      resolve({ ...(report !== undefined ? { report } : {}), peakRssBytes: Math.max(peak, report?.peakRssBytes ?? 0), exit, log: logTail(logFile, 15), wallSeconds: (performance.now() - spawned) / 1000 });
    });
  });
}

const refuse = (what: string, why: string, o: ChildOutcome): Error => new Error(`${what}: ${why}; its figures are not reported (${o.exit})\n${o.log}`);

/** Refuses a report whose versions are not all COMPLETED (by count and by the sample). */
function checkComplete(what: string, versions: number, o: ChildOutcome): ChildReport {
  const r = o.report;
  if (r === undefined) throw refuse(what, 'no report', o);
  if (r.startError !== undefined) throw refuse(what, `did not start: ${r.startError}`, o);
  const { COMPLETED, PENDING, FAILED } = r.summary;
  if (COMPLETED !== versions || PENDING + FAILED > 0 || r.sampledCompleted !== r.sampled) {
    throw refuse(what, `${String(COMPLETED)} of ${String(versions)} versions COMPLETED (${String(PENDING)} PENDING, ${String(FAILED)} FAILED; ${String(r.sampledCompleted)} of ${String(r.sampled)} sampled lookups COMPLETED)`, o);
  }
  return r;
}

type Store = ChildJob['store'];

export interface Setting {
  options: StatusBenchOptions;
  store: Store;
  prefix: string;
  versions: number;
}

const storeFile = (s: Setting): string => join(s.options.dir, `${s.prefix}.db`);

/**
 * Folds the `versions` already in the status topic; refused unless every version ends COMPLETED. `leave`:
 * the child closes cleanly, for a later run on the same group (see ChildJob).
 */
export async function measureFold(s: Setting, leave: boolean): Promise<Fold> {
  const what = `${NAME[s.store]} folding ${String(s.versions)} versions`;
  const job: ChildJob = { store: s.store, mode: 'fold', brokers: s.options.brokers, prefix: s.prefix, storeFile: storeFile(s), versions: s.versions, stallMs: s.options.stallMs, leave };
  const o = await runChild(job, join(s.options.dir, `${s.prefix}-fold.log`), s.options.childTimeoutMs);
  const r = checkComplete(what, s.versions, o);
  if (r.foldMs === undefined) throw refuse(what, 'stalled', o);
  const fold = { versions: s.versions, events: s.versions * EVENTS_PER_VERSION, seconds: r.foldMs / 1000, peakRssBytes: o.peakRssBytes };
  s.options.onPhase?.(`  ${what}: ${rate(fold)} events/s (${fold.seconds.toFixed(2)} s), peak RSS ${mib(fold.peakRssBytes)} [process ${o.wallSeconds.toFixed(1)} s]`);
  return fold;
}

/**
 * Starts a contender on state already there and times it to ready. The baseline's failure to start (its
 * readToEnd timeout, or running out of heap) is its result; anything short of every version is refused.
 */
export async function measureRestart(s: Setting, label: string, leave: boolean): Promise<Restart> {
  const what = `${NAME[s.store]} ${label}, ${String(s.versions)} versions`;
  const job: ChildJob = { store: s.store, mode: 'restart', brokers: s.options.brokers, prefix: s.prefix, storeFile: storeFile(s), versions: s.versions, stallMs: s.options.stallMs, leave };
  const o = await runChild(job, join(s.options.dir, `${s.prefix}-${label.replace(/\W+/g, '-')}.log`), s.options.childTimeoutMs);
  let restart: Restart;
  const heap = /heap out of memory/i.exec(o.log);
  if (s.store === 'old' && o.report?.startError !== undefined) {
    const { summary } = o.report;
    restart = { versions: s.versions, failed: o.report.startError, seconds: o.report.readyMs / 1000, peakRssBytes: o.peakRssBytes, versionsRead: summary.COMPLETED + summary.PENDING + summary.FAILED + summary.SKIPPED };
  } else if (s.store === 'old' && o.report === undefined && heap !== null) {
    restart = { versions: s.versions, failed: `crashed: JavaScript ${heap[0]} (${o.exit})`, seconds: Number.NaN, peakRssBytes: o.peakRssBytes, versionsRead: Number.NaN };
  } else {
    const r = checkComplete(what, s.versions, o);
    restart = { versions: s.versions, seconds: r.readyMs / 1000, peakRssBytes: o.peakRssBytes, ...(r.restoredRecords !== undefined ? { restoredRecords: r.restoredRecords } : {}) };
  }
  s.options.onPhase?.(`  ${what}: ${'failed' in restart ? `did not start: ${restart.failed}` : `ready after ${restart.seconds.toFixed(2)} s`}, peak RSS ${mib(restart.peakRssBytes)} [process ${o.wallSeconds.toFixed(1)} s]`);
  return restart;
}

/** A fresh installation's topics for `store` under `prefix`. */
export async function createTopics(queue: Queue, store: Store, prefix: string, partitions: number): Promise<void> {
  const names = queueNames(prefix);
  const specs =
    store === 'new'
      ? installationTopics(names, partitions, [])
      : [{ topic: names.status, partitions }, { topic: names.gc, partitions }, { topic: objectStatusTopic(prefix), partitions, config: { 'cleanup.policy': 'compact' } }];
  const admin = await queue.admin();
  try {
    await admin.ensureTopics(specs);
  } finally {
    await admin.close();
  }
}

export async function runStatusBench(options: StatusBenchOptions): Promise<StatusBenchResult> {
  const queue = kafkaQueue({ brokers: options.brokers, clientId: 'bench-status', logger: options.logger });
  const run = Date.now().toString(36);
  const produced: Produced[] = [];
  const setting = (store: Store, name: string, versions: number): Setting => ({ options, store, prefix: `bs-${run}-${name}`, versions });
  const send = async (what: string, s: Setting, topic: string, recordsOf: typeof eventRecords): Promise<void> => {
    await createTopics(queue, s.store, s.prefix, options.partitions);
    const started = performance.now();
    const records = await produce(queue, topic, s.versions, recordsOf, options.produce);
    const p = { what, records, seconds: (performance.now() - started) / 1000 };
    produced.push(p);
    options.onPhase?.(`  produced ${what}: ${String(records)} records in ${p.seconds.toFixed(1)} s`);
  };
  const foldVersions = Math.min(options.foldVersions, options.versions);
  const intact = 'restart, local copy intact';

  options.onPhase?.(`Both contenders fold the same ${String(foldVersions)} versions:`);
  const oldSmall = setting('old', 'old-fold', foldVersions);
  await send(`the old store's fold workload (${String(foldVersions)} versions)`, oldSmall, queueNames(oldSmall.prefix).status, eventRecords);
  const baselineFold = await measureFold(oldSmall, false);
  let small: { fold: Fold; restart: Restart } | undefined;
  if (foldVersions < options.versions) {
    const newSmall = setting('new', 'new-fold', foldVersions);
    await send(`the new store's fold workload (${String(foldVersions)} versions)`, newSmall, queueNames(newSmall.prefix).status, eventRecords);
    small = { fold: await measureFold(newSmall, true), restart: await measureRestart(newSmall, intact, false) };
  }

  options.onPhase?.(`The new store at ${String(options.versions)} versions:`);
  const full = setting('new', 'new-full', options.versions);
  await send(`the new store's full workload (${String(options.versions)} versions)`, full, queueNames(full.prefix).status, eventRecords);
  const fold = await measureFold(full, true);
  const restartIntact = await measureRestart(full, intact, true);
  for (const f of [storeFile(full), `${storeFile(full)}-wal`, `${storeFile(full)}-shm`]) if (existsSync(f)) rmSync(f);
  const restartRestore = await measureRestart(full, 'restart, local copy deleted', false);

  options.onPhase?.(`The old store at ${String(options.versions)} versions (its compacted topic pre-populated):`);
  const oldFull = setting('old', 'old-full', options.versions);
  await send(`the old store's ${objectStatusTopic('<prefix>')} (${String(options.versions)} final records)`, oldFull, objectStatusTopic(oldFull.prefix), (i) => [finalRecord(i)]);
  const restart = await measureRestart(oldFull, 'restart', false);

  return {
    versions: options.versions,
    foldVersions,
    partitions: options.partitions,
    produce: options.produce,
    produced,
    fresh: { foldSmall: small?.fold ?? fold, ...(small !== undefined ? { restartSmall: small.restart } : {}), fold, restartIntact, restartRestore },
    baseline: { foldSmall: baselineFold, restart },
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(0)} MiB`;
}

const count = (n: number): string => n.toLocaleString('en-US');
const rate = (f: Fold): string => count(Math.round(f.events / f.seconds));

function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('   ').trimEnd());
}

const ratio = (x: number, y: number): string => `×${(x / y).toFixed(2)}`;

function restartCell(r: Restart): string {
  return 'failed' in r ? 'did not start (see below)' : `${r.seconds.toFixed(2)} s`;
}

function restartRatio(n: Restart, o: Restart): string {
  if ('failed' in n) return '';
  if ('failed' in o) return Number.isNaN(o.seconds) ? '—' : `< ${ratio(n.seconds, o.seconds)}`;
  return ratio(n.seconds, o.seconds);
}

/** The report: each figure side by side, the ratios new/old, and what each figure is. */
export function formatStatusReport(r: StatusBenchResult, cpus: number): string {
  const { fresh: n, baseline: o } = r;
  const N = count(r.versions);
  const M = count(r.foldVersions);
  const two = n.restartSmall !== undefined;
  const failed = 'failed' in o.restart;
  const newPeak = Math.max(n.fold.peakRssBytes, n.restartIntact.peakRssBytes, n.restartRestore.peakRssBytes);
  const rows = [
    ['', 'new store', 'old store (baseline)', 'new/old'],
    [`fold throughput, ${M} versions (events/s)`, rate(n.foldSmall), rate(o.foldSmall), ratio(n.foldSmall.events / n.foldSmall.seconds, o.foldSmall.events / o.foldSmall.seconds)],
    ...(two ? [[`fold throughput, ${N} versions (events/s)`, rate(n.fold), '', '']] : []),
    [`peak RSS folding ${M} versions`, mib(n.foldSmall.peakRssBytes), mib(o.foldSmall.peakRssBytes), ratio(n.foldSmall.peakRssBytes, o.foldSmall.peakRssBytes)],
    [`peak RSS holding ${N} versions`, mib(newPeak), `${failed ? '≥ ' : ''}${mib(o.restart.peakRssBytes)}`, `${failed ? '≤ ' : ''}${ratio(newPeak, o.restart.peakRssBytes)}`],
    [`restart to ready, ${N} versions, local copy intact`, restartCell(n.restartIntact), restartCell(o.restart), restartRatio(n.restartIntact, o.restart)],
    [`restart to ready, ${N} versions, local copy deleted`, restartCell(n.restartRestore), restartCell(o.restart), restartRatio(n.restartRestore, o.restart)],
    ...(n.restartSmall !== undefined ? [[`restart to ready, ${M} versions, local copy intact`, restartCell(n.restartSmall), '', '']] : []),
  ];
  const out = [
    `make bench-status: ${N} object versions, ${String(r.partitions)} partitions, one Kafka broker on loopback, ${String(cpus)} CPUs`,
    `Per version: one \`queued\` event (2 destinations) and one COMPLETED \`result\` per destination (${String(EVENTS_PER_VERSION)} status events), keyed location/bucket/key.`,
    '',
    ...table(rows).map((l) => `  ${l}`),
    '',
  ];
  if ('failed' in o.restart) {
    const read = Number.isNaN(o.restart.versionsRead) ? '' : `, ${count(o.restart.versionsRead)} of ${N} versions read`;
    const after = Number.isNaN(o.restart.seconds) ? '' : ` after ${o.restart.seconds.toFixed(1)} s`;
    out.push(`  The old store did not start at ${N} versions${after}${read}: ${o.restart.failed}`, '');
  }
  const restored = (x: Restart): string => ('failed' in x || x.restoredRecords === undefined ? '?' : count(x.restoredRecords));
  out.push(
    'What each figure is:',
    `- fold throughput: status events folded per second, ${String(EVENTS_PER_VERSION)} × versions / the seconds from the contender being ready`,
    '  until its own summary() counted every version COMPLETED (polled every 50 ms); every event was in the status topic',
    `  before it started. The old store folds ${M} versions only (one produce per event: far too slow for ${N}).`,
    `  Times: old store ${o.foldSmall.seconds.toFixed(2)} s for ${M}; new store ${n.foldSmall.seconds.toFixed(2)} s for ${M}${two ? `, ${n.fold.seconds.toFixed(1)} s for ${N}` : ''}.`,
    "- peak RSS: the kernel's VmHWM (/proc/<pid>/status) of the contender's own Node process, from its start to its",
    '  report, sampled by the parent every 100 ms and read by the process itself when it reports.',
    `  Holding ${N} versions: new store, the highest of its fold (${mib(n.fold.peakRssBytes)}), its restart with the local copy`,
    `  (${mib(n.restartIntact.peakRssBytes)}) and its restore from the changelog (${mib(n.restartRestore.peakRssBytes)}); old store, its restart on its compacted topic`,
    `  pre-populated with the ${N} final records it would have written (its Map then holds every version; folding`,
    '  them would hold the same Map and more).',
    "- restart to ready: from the process's start (performance.timeOrigin: module loading included) until ready: new",
    '  store, whenReady() (partitions assigned and caught up from the changelog); old store, start() resolved (it reads',
    "  the whole of <prefix>-object-status first, within readToEnd's 120 s). The previous process had closed cleanly.",
    '  The old store has no local copy: both new-store rows are compared with its one restart.',
    `  Changelog records the new store read: ${restored(n.restartIntact)} with its local copy intact, ${restored(n.restartRestore)} with it deleted.`,
    "- Every run was checked: the contender's summary() counted every version COMPLETED, none PENDING or FAILED, and 50",
    '  sampled lookups answered COMPLETED on both destinations; a run short of that is refused, never reported.',
    '',
    `Produced by the parent process (${String(r.produce.inFlight)} sends in flight, ${String(r.produce.batchVersions)} versions per send; in no figure above):`,
    ...r.produced.map((p) => `  ${p.what}: ${count(p.records)} records in ${p.seconds.toFixed(1)} s (${count(Math.round(p.records / p.seconds))} records/s)`),
  );
  return out.join('\n');
}
