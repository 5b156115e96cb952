import { closeSync, existsSync, fsync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { QueueMessage } from './queue.ts';

// The log of one partition of the embedded queue: in memory, or on disk as JSON-lines segment files of
// bounded size named by their first offset. On disk, appends are written at once and made durable by a
// group commit: one fsync, off the event loop, covers every append made since the previous one started
// (at least SYNC_GAP_MS before); a record is read (and its send resolves) only once durable. Records are read back from the files through a sparse index,
// so memory stays bounded whatever the backlog; a torn or corrupt tail is cut back to the last whole
// record, and unreadable lines inside a segment are skipped, each reported, never a refusal to open.

export interface Stored {
  /** The offset; absent in logs written before retention existed, where it is the line number. */
  o?: number;
  k: string | null;
  v: string | null; // base64
  h: Record<string, string>;
  t: number;
}

export interface PartitionLog {
  /** The offset the next record gets. */
  readonly next: number;
  /** The offset of the oldest record kept (next when none is). */
  first(): number;
  /** Appends records, giving them offsets; on disk, durable once flushed() resolves. */
  append(records: Omit<Stored, 'o'>[]): QueueMessage[];
  /** Resolves once every record appended so far is durable (fsynced); rejects if the disk failed it. */
  flushed(): Promise<void>;
  /** The offset after the last durable record: what a reader can see (Kafka's high watermark). */
  highWatermark(): number;
  /** Up to `max` durable records at or after offset `from`, in offset order, below `before` (default: all). */
  read(from: number, max: number, before?: number): QueueMessage[];
  /** Drops records below `floor` (on disk: whole segments, never the one appended to); returns how many went. */
  dropBelow(floor: number): number;
  /** Keeps the newest record of each key (and every record without one); returns how many went. */
  compact(): number;
  /** Offsets below this are not handed out again (a log cut short, past which a group has committed). */
  skipTo(offset: number): void;
  close(): void;
}

export function toMessage(topic: string, partition: number, offset: number, s: Stored): QueueMessage {
  return { topic, partition, offset: String(offset), key: s.k, value: s.v === null ? null : Buffer.from(s.v, 'base64'), headers: s.h, timestamp: s.t };
}

function stored(m: QueueMessage): Stored {
  return { o: Number(m.offset), k: m.key, v: m.value === null ? null : m.value.toString('base64'), h: m.headers, t: m.timestamp };
}

/** Records a compaction keeps: the newest per key, and those without a key. */
function newestPerKey(messages: QueueMessage[], newest: Map<string, number>): QueueMessage[] {
  return messages.filter((m) => m.key === null || newest.get(m.key) === Number(m.offset));
}

/** The index of the first message at or after `offset`. */
function indexAt(messages: QueueMessage[], offset: number): number {
  let [lo, hi] = [0, messages.length];
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (Number(messages[mid]?.offset) < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class MemoryLog implements PartitionLog {
  next = 0;
  private messages: QueueMessage[] = [];
  private readonly topic: string;
  private readonly partition: number;

  constructor(topic: string, partition: number) {
    this.topic = topic;
    this.partition = partition;
  }

  first(): number {
    return Number(this.messages[0]?.offset ?? this.next);
  }

  append(records: Omit<Stored, 'o'>[]): QueueMessage[] {
    const added = records.map((r) => toMessage(this.topic, this.partition, this.next++, r));
    this.messages.push(...added);
    return added;
  }

  flushed(): Promise<void> {
    return Promise.resolve();
  }

  highWatermark(): number {
    return this.next;
  }

  read(from: number, max: number, before = this.next): QueueMessage[] {
    const start = indexAt(this.messages, from);
    return this.messages.slice(start, start + max).filter((m) => Number(m.offset) < before);
  }

  dropBelow(floor: number): number {
    const last = this.messages.at(-1);
    const keep = this.messages.filter((m) => Number(m.offset) >= floor || m === last);
    const gone = this.messages.length - keep.length;
    this.messages = keep;
    return gone;
  }

  compact(): number {
    const newest = new Map<string, number>();
    for (const m of this.messages) if (m.key !== null) newest.set(m.key, Number(m.offset));
    const keep = newestPerKey(this.messages, newest);
    const gone = this.messages.length - keep.length;
    this.messages = keep;
    return gone;
  }

  skipTo(offset: number): void {
    this.next = Math.max(this.next, offset);
  }

  close(): void {
    // nothing held
  }
}

const SEGMENT_BYTES = 64 * 1024 * 1024;
/** One index entry (offset → byte position) per this many records of a segment. */
const INDEX_EVERY = 1000;
/** The newest records, kept in memory as well: consumers that keep up never read the files. */
const TAIL = 2000;
const CHUNK = 1024 * 1024;
const NAME_DIGITS = 20;

interface Segment {
  base: number;
  file: string;
  bytes: number;
  records: number;
  /** The offset of its first record, and the one after its last (both its base when empty). */
  first: number;
  next: number;
  /** [offset, byte position of its line], every INDEX_EVERY records. */
  index: [number, number][];
}

/** A line as written; failing that, what follows the last NUL byte (a zero-filled block before it). */
function parseLine(line: string): Stored | undefined {
  for (const text of [line, line.slice(line.lastIndexOf('\0') + 1)]) {
    try {
      const s = JSON.parse(text) as unknown;
      if (typeof s === 'object' && s !== null && 't' in s && 'v' in s) return s as Stored;
    } catch {
      // unreadable as it is
    }
    if (!line.includes('\0')) break;
  }
  return undefined;
}

/** Each complete line of a file from byte `from`, with its position, `chunk` bytes read at a time. */
function* lines(file: string, from = 0): Generator<{ line: string; pos: number; end: number }> {
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(CHUNK);
    let carry = Buffer.alloc(0);
    let carryPos = from;
    let pos = from;
    for (;;) {
      const n = readSync(fd, buffer, 0, CHUNK, pos);
      if (n === 0) break;
      pos += n;
      const data = carry.length > 0 ? Buffer.concat([carry, buffer.subarray(0, n)]) : buffer.subarray(0, n);
      let start = 0;
      for (let nl = data.indexOf(10, start); nl !== -1; nl = data.indexOf(10, start)) {
        yield { line: data.toString('utf8', start, nl), pos: carryPos + start, end: carryPos + nl + 1 };
        start = nl + 1;
      }
      carry = Buffer.from(data.subarray(start));
      carryPos += start;
    }
  } finally {
    closeSync(fd);
  }
}

function fsyncFolder(folder: string): void {
  const fd = openSync(folder, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The least time between the starts of two fsyncs of one log: what a record may wait for company. A
 * record sent after a quiet spell is synced at once; only back-to-back syncs are spaced. 20 ms rather
 * than 10: 6 % less CPU per object over a backfill of small objects (the median of 10 alternating runs;
 * lower in 13 of 16 pairs), each fsync's hand-off to the thread pool costing the event loop about 30 µs.
 */
const SYNC_GAP_MS = 20;

export class FileLog implements PartitionLog {
  next = 0;
  /** Records below this offset are on disk for good; the others wait for the fsync under way or the next. */
  private durable = 0;
  private syncing: number | undefined;
  private scheduled = false;
  /** When the last fsync started (performance.now()). */
  private syncStarted = -Infinity;
  /** Descriptors of full segments, closed once the fsync under way on them ends. */
  private readonly retired = new Set<number>();
  private waiters: { upTo: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  /** An fsync failed: the kernel may have dropped the pages it could not write, so nothing more is acknowledged. */
  private broken: Error | undefined;
  private segments: Segment[] = [];
  private tail: QueueMessage[] = [];
  private fd: number | undefined;
  private readonly topic: string;
  private readonly partition: number;
  private readonly folder: string;
  private readonly segmentBytes: number;

  /**
   * Opens (or creates) the log in `folder`. `legacy` is the single-file log of earlier versions, taken
   * over as the first segment. Whatever had to be cut or skipped is told to `report`.
   */
  constructor(topic: string, partition: number, folder: string, report: (what: string) => void, options: { legacy?: string; segmentBytes?: number } = {}) {
    this.topic = topic;
    this.partition = partition;
    this.folder = folder;
    this.segmentBytes = options.segmentBytes ?? SEGMENT_BYTES;
    mkdirSync(folder, { recursive: true });
    if (options.legacy !== undefined && existsSync(options.legacy)) {
      renameSync(options.legacy, this.segmentFile(0));
      fsyncFolder(folder);
    }
    const bases = readdirSync(folder)
      .filter((f) => /^\d+\.log$/.test(f))
      .map((f) => Number(f.slice(0, -4)))
      .sort((a, b) => a - b);
    for (const base of bases) this.segments.push(this.load(base, report));
    const last = this.segments.at(-1);
    this.next = last?.next ?? 0;
    this.durable = this.next;
    if (last !== undefined) this.tail = this.readSegment(last, Math.max(last.base, last.next - TAIL), TAIL, last.next);
  }

  private segmentFile(base: number): string {
    return join(this.folder, `${String(base).padStart(NAME_DIGITS, '0')}.log`);
  }

  /** Reads a segment through, indexing it; a torn or unreadable tail is cut off, skipped lines reported. */
  private load(base: number, report: (what: string) => void): Segment {
    const file = this.segmentFile(base);
    const seg: Segment = { base, file, bytes: 0, records: 0, first: base, next: base, index: [] };
    let goodEnd = 0;
    let skipped = 0;
    let line = 0;
    for (const l of lines(file)) {
      const s = parseLine(l.line);
      if (s === undefined) {
        skipped++;
        continue;
      }
      const offset = s.o ?? base + line;
      line++;
      if (seg.records % INDEX_EVERY === 0) seg.index.push([offset, l.pos]);
      if (seg.records === 0) seg.first = offset;
      seg.records++;
      seg.next = offset + 1;
      goodEnd = l.end;
    }
    const size = statSync(file).size;
    if (size > goodEnd) {
      const fd = openSync(file, 'r+');
      try {
        ftruncateSync(fd, goodEnd);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      report(`${file}: cut ${String(size - goodEnd)} bytes after the last whole record (a write a crash interrupted)`);
    }
    // Lines cut at the end were counted as skipped too when they ended with a newline.
    if (skipped > 0) report(`${file}: skipped ${String(skipped)} unreadable lines (a damaged block); the records around them are kept`);
    seg.bytes = goodEnd;
    return seg;
  }

  first(): number {
    return this.segments.find((s) => s.records > 0)?.first ?? this.next;
  }

  private active(): { seg: Segment; fd: number } {
    let seg = this.segments.at(-1);
    if (seg === undefined || seg.bytes >= this.segmentBytes) {
      this.settle();
      seg = { base: this.next, file: this.segmentFile(this.next), bytes: 0, records: 0, first: this.next, next: this.next, index: [] };
      closeSync(openSync(seg.file, 'a'));
      fsyncFolder(this.folder);
      this.segments.push(seg);
    }
    this.fd ??= openSync(seg.file, 'a');
    return { seg, fd: this.fd };
  }

  append(records: Omit<Stored, 'o'>[]): QueueMessage[] {
    if (this.broken !== undefined) throw this.broken;
    if (records.length === 0) return [];
    const { seg, fd } = this.active();
    const added: QueueMessage[] = [];
    const parts: string[] = [];
    let pos = seg.bytes;
    for (const r of records) {
      const s: Stored = { o: this.next, ...r };
      const text = `${JSON.stringify(s)}\n`;
      if (seg.records % INDEX_EVERY === 0) seg.index.push([this.next, pos]);
      if (seg.records === 0) seg.first = this.next;
      seg.records++;
      pos += Buffer.byteLength(text);
      parts.push(text);
      added.push(toMessage(this.topic, this.partition, this.next, s));
      this.next++;
    }
    writeSync(fd, parts.join(''));
    seg.bytes = pos;
    seg.next = this.next;
    this.tail.push(...added);
    // Cut back to TAIL once it holds twice as many: a cut at every append copied the whole tail each time.
    if (this.tail.length > 2 * TAIL) this.tail = this.tail.slice(-TAIL);
    return added;
  }

  highWatermark(): number {
    return this.durable;
  }

  flushed(): Promise<void> {
    if (this.broken !== undefined) return Promise.reject(this.broken);
    if (this.durable >= this.next) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ upTo: this.next, resolve, reject });
      this.schedule();
    });
  }

  /**
   * The next fsync after this turn of the event loop, and no sooner than SYNC_GAP_MS after the previous
   * one started: the sends of that time share it. Without the gap a fast disk took one per turn, more
   * than one per record over a run of small copies, and their thread hand-offs cost about a third of
   * the process's CPU (`make bench`: 1.4 → 1.0 ms per object, fsyncs 6 400 → 2 800 for 4 000 objects).
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    const run = (): void => {
      this.scheduled = false;
      this.sync();
    };
    const wait = this.syncStarted + SYNC_GAP_MS - performance.now();
    if (wait > 0) setTimeout(run, wait);
    else setImmediate(run);
  }

  /** One fsync at a time, off the event loop, covering every write made before it started (group commit). */
  private sync(): void {
    const fd = this.fd;
    if (this.syncing !== undefined || fd === undefined || this.durable >= this.next) return;
    const upTo = this.next;
    this.syncing = fd;
    this.syncStarted = performance.now();
    fsync(fd, (err) => {
      this.syncing = undefined;
      if (this.retired.delete(fd)) closeSync(fd);
      if (err !== null) {
        this.broken = new Error(`fsync of ${this.folder} failed: ${err.message}`, { cause: err });
        for (const w of this.waiters.splice(0)) w.reject(this.broken);
        return;
      }
      this.durable = Math.max(this.durable, upTo);
      this.wake();
      if (this.waiters.length > 0) this.schedule();
    });
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => w.upTo <= this.durable);
    this.waiters = this.waiters.filter((w) => w.upTo > this.durable);
    for (const w of ready) w.resolve();
  }

  /**
   * Before the segment's descriptor is let go (a full segment, a rewrite, close): its writes made durable
   * here, and the descriptor closed, or once the fsync under way on it ends.
   */
  private settle(): void {
    const fd = this.fd;
    if (fd === undefined) return;
    this.fd = undefined;
    if (this.durable < this.next && this.broken === undefined) {
      fsyncSync(fd);
      this.durable = this.next;
      this.wake();
    }
    if (this.syncing === fd) this.retired.add(fd);
    else closeSync(fd);
  }

  read(from: number, max: number, before = this.durable): QueueMessage[] {
    before = Math.min(before, this.durable);
    const cached = this.tail[0];
    if (cached !== undefined && Number(cached.offset) <= from) {
      const start = indexAt(this.tail, from);
      return this.tail.slice(start, start + max).filter((m) => Number(m.offset) < before);
    }
    const out: QueueMessage[] = [];
    for (const seg of this.segments) {
      if (seg.next <= from || seg.records === 0) continue;
      if (seg.base >= before || out.length >= max) break;
      out.push(...this.readSegment(seg, from, max - out.length, before));
    }
    return out;
  }

  private readSegment(seg: Segment, from: number, max: number, before: number): QueueMessage[] {
    const out: QueueMessage[] = [];
    let start = 0;
    let counted = 0;
    for (const [offset, pos] of seg.index) {
      if (offset > from) break;
      start = pos;
      counted = offset;
    }
    let line = 0;
    for (const l of lines(seg.file, start)) {
      const s = parseLine(l.line);
      if (s === undefined) continue;
      const offset = s.o ?? counted + line;
      line++;
      if (offset >= before || out.length >= max) break;
      if (offset >= from) out.push(toMessage(this.topic, this.partition, offset, s));
    }
    return out;
  }

  dropBelow(floor: number): number {
    let gone = 0;
    // Whole segments below the floor go; the one appended to stays (it carries the next offset).
    while (this.segments.length > 1 && (this.segments[0]?.next ?? Infinity) <= floor) {
      const seg = this.segments.shift();
      if (seg === undefined) break;
      rmSync(seg.file, { force: true });
      gone += seg.records;
    }
    if (gone > 0) fsyncFolder(this.folder);
    return gone;
  }

  compact(): number {
    // A compacted topic holds a bounded set of keys: its records are read whole to find the newest.
    const contents = this.segments.map((seg) => this.readSegment(seg, seg.base, Infinity, seg.next));
    const newest = new Map<string, number>();
    for (const m of contents.flat()) if (m.key !== null) newest.set(m.key, Number(m.offset));
    const kept = contents.map((messages) => newestPerKey(messages, newest));
    const total = contents.reduce((n, c) => n + c.length, 0);
    const gone = total - kept.reduce((n, c) => n + c.length, 0);
    // Rewriting costs the log's size: only when a good share of it goes.
    if (gone === 0 || (gone < 1000 && gone * 4 < total)) return 0;
    this.settle();
    this.segments.forEach((seg, i) => {
      const keep = kept[i] ?? [];
      if (keep.length === seg.records) return;
      const lines = keep.map((m) => `${JSON.stringify(stored(m))}\n`);
      const tmp = `${seg.file}.tmp`;
      const fd = openSync(tmp, 'w');
      try {
        writeSync(fd, lines.join(''));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, seg.file);
      seg.records = keep.length;
      seg.first = Number(keep[0]?.offset ?? seg.next);
      seg.index = [];
      let pos = 0;
      lines.forEach((text, j) => {
        if (j % INDEX_EVERY === 0) seg.index.push([Number(keep[j]?.offset), pos]);
        pos += Buffer.byteLength(text);
      });
      seg.bytes = pos;
    });
    fsyncFolder(this.folder);
    this.tail = newestPerKey(this.tail, newest);
    return gone;
  }

  skipTo(offset: number): void {
    if (offset <= this.next) return;
    this.settle();
    this.next = offset;
    this.durable = offset;
    // The next append opens a segment named by this offset: offsets stay unique across a restart.
    const last = this.segments.at(-1);
    if (last !== undefined) last.bytes = Math.max(last.bytes, this.segmentBytes);
    this.tail = [];
  }

  close(): void {
    this.settle();
  }
}
