import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { Logger } from '../../lib/log/logger.ts';
import { Type, type Static } from '@sinclair/typebox';
import { Count, Figures, figuresKey, objectKey, versionKey } from '../../lib/queue/messages.ts';
import { type DestinationStatus, goneAt, type ObjectState, ObjectStateSchema, type ObjectStatus } from './fold.ts';

// The status processor's state, on local disk in SQLite (Node's built-in node:sqlite: no native build,
// memory flat in the number of versions, one transaction per folded batch). Rows belong to a partition of
// the status topic; each partition records the changelog offset its rows reflect, so that a replica
// given the partition catches up from there (Kafka Streams' state store model). The running totals
// (figures, states) are kept per partition in the same transaction as the rows they count.

/**
 * One failed destination of a version, one failed later change of it, or a GC refusal (kind `gc`, its
 * destination the source bucket the copy stays in), as `backbeat failed list` shows it.
 */
export type FailedEntry = { object: ObjectStatus['object']; kind: ObjectStatus['kind'] | 'gc'; destination: string } & DestinationStatus;

/** Where a page of failed entries ends: the next page starts after it. */
export interface FailedCursor {
  at: string;
  vk: string;
  id: string;
}

export interface FailedQuery {
  /** A destination id (`location/bucket`) or a location (every bucket of it). */
  destination?: string;
  after?: FailedCursor;
  limit: number;
}

type Counts = Omit<Figures, 'at'>;

/**
 * What a partition's versions add up to: per source bucket and destination, and per state. Gone versions
 * (collected by the GC) stay counted as what they last were; so the totals travel in the changelog with
 * the rows, rather than being recounted from rows that are no longer there.
 */
export const PartitionTotals = Type.Object({
  figures: Type.Record(Type.String(), Type.Omit(Figures, ['at'])),
  states: Type.Record(ObjectStateSchema, Count),
});
export type PartitionTotals = Static<typeof PartitionTotals>;

const SCHEMA = 6;
/** The changelog key of a partition's totals: no version key starts with a NUL. */
export const TOTALS_KEY = '\0totals';

export const emptyTotals = (): PartitionTotals => ({ figures: {}, states: { PENDING: 0, COMPLETED: 0, FAILED: 0, SKIPPED: 0 } });

/** Moves `totals` from counting `before` to counting `after` (either may be absent). */
export function recount(totals: PartitionTotals, before: ObjectStatus | undefined, after: ObjectStatus | undefined): void {
  for (const [status, sign] of [[before, -1], [after, 1]] as const) {
    if (status === undefined) continue;
    totals.states[status.state] += sign;
    const source = `${status.object.location}/${status.object.bucket}`;
    for (const [destination, d] of Object.entries(status.destinations)) {
      const key = figuresKey(source, destination);
      const c = (totals.figures[key] ??= { source, destination, replicated: 0, pending: 0, failed: 0 });
      if (d.state === 'COMPLETED') c.replicated += sign;
      else if (d.state === 'PENDING') c.pending += sign;
      else if (d.state === 'FAILED') c.failed += sign;
    }
  }
}

export function failuresOf(status: ObjectStatus): (FailedEntry & { id: string })[] {
  const out: (FailedEntry & { id: string })[] = [];
  // Every failed destination, whatever the others do: one still pending does not hide another's failure.
  for (const [destination, d] of Object.entries(status.destinations)) {
    if (d.state === 'FAILED') out.push({ id: `${status.kind} ${destination}`, object: status.object, kind: status.kind, destination, ...d });
  }
  for (const [id, f] of Object.entries(status.followUps ?? {})) if (f.state === 'FAILED') out.push({ ...f, id, object: status.object });
  const { gc } = status;
  if (gc?.state === 'REFUSED') {
    const destination = `${status.object.location}/${status.object.bucket}`;
    out.push({ id: `gc ${destination}`, object: status.object, kind: 'gc', destination, state: 'FAILED', ...(gc.reason !== undefined ? { reason: gc.reason } : {}), attempts: gc.attempts ?? 1, firstFailureAt: gc.firstAt ?? gc.at, lastFailureAt: gc.at, bytes: 0, updatedAt: gc.at });
  }
  return out;
}

export class StatusStore {
  private readonly db: DatabaseSync;
  private readonly totals = new Map<number, PartitionTotals>();
  private readonly q: Record<'get' | 'put' | 'del' | 'byObject' | 'delFailures' | 'putFailure' | 'putTotals' | 'position' | 'setPosition' | 'collected', StatementSync>;

  /**
   * Opens the store in `file` (in memory without one). A file that cannot be read is removed, and one an
   * older layout wrote is emptied: the state is then rebuilt from the changelog, of which it is a copy.
   */
  static open(file: string | undefined, logger: Logger): StatusStore {
    if (file === undefined) return new StatusStore(new DatabaseSync(':memory:'));
    mkdirSync(dirname(file), { recursive: true });
    try {
      return new StatusStore(new DatabaseSync(file));
    } catch (err) {
      logger.warn('status store unreadable: rebuilding it from the changelog', { file, error: (err as Error).message });
      for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) rmSync(f);
      return new StatusStore(new DatabaseSync(file));
    }
  }

  private constructor(db: DatabaseSync) {
    this.db = db;
    db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32000;');
    db.exec('CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)');
    const version = (db.prepare("SELECT value FROM meta WHERE name = 'schema'").get() as { value: string } | undefined)?.value;
    if (version !== undefined && Number(version) !== SCHEMA) {
      db.exec('DROP TABLE IF EXISTS versions; DROP TABLE IF EXISTS failures; DROP TABLE IF EXISTS totals; DROP TABLE IF EXISTS positions;');
    }
    db.exec(`
      CREATE TABLE IF NOT EXISTS versions (vk TEXT PRIMARY KEY, partition INTEGER NOT NULL, body TEXT NOT NULL, collected TEXT) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS versions_collected ON versions (partition, collected) WHERE collected IS NOT NULL;
      CREATE TABLE IF NOT EXISTS failures (vk TEXT NOT NULL, id TEXT NOT NULL, partition INTEGER NOT NULL, at TEXT NOT NULL, destination TEXT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (vk, id)) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS failures_order ON failures (at, vk, id);
      CREATE TABLE IF NOT EXISTS totals (partition INTEGER PRIMARY KEY, body TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS positions (partition INTEGER PRIMARY KEY, next TEXT NOT NULL, at INTEGER NOT NULL);
    `);
    db.prepare("INSERT OR REPLACE INTO meta VALUES ('schema', ?)").run(String(SCHEMA));
    this.q = {
      get: db.prepare('SELECT body FROM versions WHERE vk = ?'),
      put: db.prepare('INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?)'),
      collected: db.prepare('SELECT vk, body FROM versions WHERE partition = ? AND collected IS NOT NULL AND collected < ? LIMIT ?'),
      del: db.prepare('DELETE FROM versions WHERE vk = ?'),
      byObject: db.prepare('SELECT partition, body FROM versions WHERE vk >= ? AND vk < ?'),
      delFailures: db.prepare('DELETE FROM failures WHERE vk = ?'),
      putFailure: db.prepare('INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)'),
      putTotals: db.prepare('INSERT OR REPLACE INTO totals VALUES (?, ?)'),
      position: db.prepare('SELECT next, at FROM positions WHERE partition = ?'),
      setPosition: db.prepare('INSERT OR REPLACE INTO positions VALUES (?, ?, ?)'),
    };
    for (const row of db.prepare('SELECT partition, body FROM totals').all() as { partition: number; body: string }[]) {
      this.totals.set(row.partition, JSON.parse(row.body) as PartitionTotals);
    }
  }

  get(vk: string): ObjectStatus | undefined {
    const row = this.q.get.get(vk) as { body: string } | undefined;
    return row === undefined ? undefined : (JSON.parse(row.body) as ObjectStatus);
  }

  /** Every version of an object held for one of `partitions`, newest first. */
  versionsOf(location: string, bucket: string, key: string, partitions: ReadonlySet<number>): ObjectStatus[] {
    // The version keys of an object share a prefix (versionKey): a range of the primary key, with no
    // index of its own to keep up. A key that itself contains the prefix's tail falls in the range too.
    const ok = objectKey({ location, bucket, key });
    const prefix = versionKey({ location, bucket, key, versionId: '' });
    return (this.q.byObject.all(prefix, `${prefix.slice(0, -1)}>`) as { partition: number; body: string }[])
      .filter((r) => partitions.has(r.partition))
      .map((r) => JSON.parse(r.body) as ObjectStatus)
      .filter((s) => objectKey(s.object) === ok)
      .sort((a, b) => b.eventTime.localeCompare(a.eventTime));
  }

  /** The changelog offset the rows of `partition` reflect, and when it was reached; undefined when none are held. */
  position(partition: number): { next: string; at: number } | undefined {
    return this.q.position.get(partition) as { next: string; at: number } | undefined;
  }

  /** Versions of `partition` gone (see goneAt) before `before`, an ISO time: at most `limit` of them. */
  collectedBefore(partition: number, before: string, limit: number): [string, ObjectStatus][] {
    return (this.q.collected.all(partition, before, limit) as { vk: string; body: string }[]).map((r) => [r.vk, JSON.parse(r.body) as ObjectStatus]);
  }

  /** A copy of a partition's totals, to count a batch's changes into. */
  totalsOf(partition: number): PartitionTotals {
    return structuredClone(this.totals.get(partition) ?? emptyTotals());
  }

  /**
   * Applies, in one transaction, new states of versions of one partition (null: the version is gone),
   * the partition's totals after them and the changelog offset they bring it to.
   */
  apply(partition: number, changes: Iterable<[string, ObjectStatus | null]>, after: { totals?: PartitionTotals; next?: string }): void {
    // In key order: neighbouring rows share B-tree pages, fewer pages are read and written.
    const sorted = [...changes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.db.exec('BEGIN');
    try {
      for (const [vk, status] of sorted) {
        this.q.delFailures.run(vk);
        if (status === null) {
          this.q.del.run(vk);
          continue;
        }
        this.q.put.run(vk, partition, JSON.stringify(status), goneAt(status) ?? null);
        for (const f of failuresOf(status)) {
          const { id, ...entry } = f;
          this.q.putFailure.run(vk, id, partition, f.lastFailureAt ?? f.updatedAt, f.destination, JSON.stringify(entry));
        }
      }
      if (after.totals !== undefined) this.q.putTotals.run(partition, JSON.stringify(after.totals));
      if (after.next !== undefined) this.q.setPosition.run(partition, after.next, Date.now());
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
    if (after.totals !== undefined) this.totals.set(partition, structuredClone(after.totals));
  }

  /** Forgets everything held for `partition`, to restore it from the changelog's beginning. */
  reset(partition: number): void {
    this.db.exec('BEGIN');
    try {
      for (const table of ['versions', 'failures', 'totals', 'positions']) this.db.prepare(`DELETE FROM ${table} WHERE partition = ?`).run(partition);
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
    this.totals.delete(partition);
  }

  /** Failed entries of `partitions`, oldest failure first, one page after `query.after`. */
  failed(partitions: ReadonlySet<number>, query: FailedQuery): { entries: FailedEntry[]; next?: FailedCursor } {
    if (partitions.size === 0) return { entries: [] };
    const where = [`partition IN (${[...partitions].map(Number).join(',')})`];
    const args: string[] = [];
    if (query.destination !== undefined) {
      where.push('(destination = ? OR substr(destination, 1, ?) = ?)');
      args.push(query.destination, String(query.destination.length + 1), `${query.destination}/`);
    }
    if (query.after !== undefined) {
      where.push('(at, vk, id) > (?, ?, ?)');
      args.push(query.after.at, query.after.vk, query.after.id);
    }
    const rows = this.db.prepare(`SELECT vk, id, at, entry FROM failures WHERE ${where.join(' AND ')} ORDER BY at, vk, id LIMIT ?`).all(...args, query.limit) as { vk: string; id: string; at: string; entry: string }[];
    const last = rows.at(-1);
    return {
      entries: rows.map((r) => JSON.parse(r.entry) as FailedEntry),
      ...(last !== undefined && rows.length === query.limit ? { next: { at: last.at, vk: last.vk, id: last.id } } : {}),
    };
  }

  /** Replicated, pending and failed versions per source bucket and destination (figuresKey), over `partitions`. */
  figures(partitions: Iterable<number>): Map<string, Counts> {
    const out = new Map<string, Counts>();
    for (const p of partitions) {
      for (const [key, c] of Object.entries(this.totals.get(p)?.figures ?? {})) {
        const t = out.get(key) ?? { source: c.source, destination: c.destination, replicated: 0, pending: 0, failed: 0 };
        t.replicated += c.replicated;
        t.pending += c.pending;
        t.failed += c.failed;
        out.set(key, t);
      }
    }
    return out;
  }

  /** How many versions of `partitions` are in each state. */
  summary(partitions: Iterable<number>): Record<ObjectState, number> {
    const out = emptyTotals().states;
    for (const p of partitions) {
      const s = this.totals.get(p)?.states;
      if (s !== undefined) for (const k of Object.keys(out) as ObjectState[]) out[k] += s[k];
    }
    return out;
  }

  close(): void {
    this.db.close();
  }
}
