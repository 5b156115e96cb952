import type { OutgoingRecord, Queue } from '../lib/queue/queue.ts';
import { encode, objectKey, versionKey, type ObjectRef, type StatusEvent, type TaskDestination } from '../lib/queue/messages.ts';
import { fold, type ObjectStatus } from '../workers/status/fold.ts';

// The synthetic workload of `make bench-status`: object version i, and the status events the pipeline
// writes for it (the populator's `queued` for two destinations, then each processor's COMPLETED result),
// keyed location/bucket/key as in the pipeline. Deterministic, so that a child process can look up any
// version the parent produced.

const SOURCE = { location: 'site-a', bucket: 'photos' };
export const DESTINATIONS: TaskDestination[] = [
  { id: 'site-b/photos', location: 'site-b', bucket: 'photos', rule: 'photos-dr' },
  { id: 'archive/photos-cold', location: 'archive', bucket: 'photos-cold', storageClass: 'GLACIER', rule: 'photos-dr' },
];
export const EVENTS_PER_VERSION = 1 + DESTINATIONS.length;
const EPOCH = Date.parse('2025-01-01T00:00:00Z');
const SIZE = 2_345_678;

export function versionRef(i: number): ObjectRef {
  // A UUID-shaped version id, as MinIO gives.
  return { ...SOURCE, key: `albums/${String(i % 1000).padStart(3, '0')}/IMG_${String(i).padStart(8, '0')}.jpg`, versionId: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}` };
}

export function eventsOf(i: number): StatusEvent[] {
  const object = versionRef(i);
  const at = (ms: number): string => new Date(EPOCH + i * 10 + ms).toISOString();
  return [
    { type: 'queued', object, kind: 'object', eventTime: at(0), size: SIZE, destinations: DESTINATIONS.map((d) => d.id), targets: DESTINATIONS, at: at(5) },
    ...DESTINATIONS.map((d, n): StatusEvent => ({ type: 'result', object, kind: 'object', destination: d.id, state: 'COMPLETED', attempts: 1, bytes: SIZE, replicaEtag: `"${i.toString(16).padStart(32, '0')}-3"`, at: at(1_000 + n) })),
  ];
}

/** The status records of version i, as the status topic holds them. */
export const eventRecords = (i: number): OutgoingRecord[] => eventsOf(i).map((e) => ({ key: objectKey(e.object), value: encode(e) }));

/** The last status the baseline writes for version i to its compacted topic (keyed by version). */
export function finalRecord(i: number): OutgoingRecord {
  let status: ObjectStatus | undefined;
  for (const e of eventsOf(i)) status = fold(status, e);
  if (status === undefined) throw new Error('no events');
  return { key: versionKey(status.object), value: encode(status) };
}

/** `count` version numbers spread over 0..versions-1, for spot checks. */
export function sampleOf(versions: number, count = 50): number[] {
  const n = Math.min(count, versions);
  return Array.from({ length: n }, (_, k) => Math.floor((k * versions) / n));
}

export interface ProduceOptions {
  /** Versions per send: all records of a version go in one send, so each key's order holds. */
  batchVersions: number;
  /** Sends in flight, each on a producer of its own (the product's producer has one request in flight). */
  inFlight: number;
}

/** Sends the records of versions 0..versions-1 to `topic`; resolves with the number of records sent. */
export async function produce(queue: Queue, topic: string, versions: number, recordsOf: (i: number) => OutgoingRecord[], options: ProduceOptions): Promise<number> {
  let next = 0;
  let sent = 0;
  const lane = async (): Promise<void> => {
    const producer = await queue.producer();
    try {
      for (let from = next; from < versions; from = next) {
        next = Math.min(versions, from + options.batchVersions);
        const records: OutgoingRecord[] = [];
        for (let i = from; i < next; i++) records.push(...recordsOf(i));
        await producer.send(topic, records);
        sent += records.length;
      }
    } finally {
      await producer.close();
    }
  };
  await Promise.all(Array.from({ length: options.inFlight }, lane));
  return sent;
}
