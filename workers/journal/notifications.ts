import { unquote } from '../../lib/s3/etag.ts';
import { isTimestamp, MAX_TEXT } from '../../lib/queue/messages.ts';
import { type ChangeKind, type ChangeRecord } from '../../lib/journal/change.ts';
import { replicaPath } from '../../lib/s3/replica-marks.ts';

// S3 event notifications (AWS event schema 2.x, as MinIO and Ceph RGW publish them) → change records.

export class MalformedEvent extends Error {
  override name = 'MalformedEvent';
}

interface EventRecord {
  eventName?: unknown;
  eventTime?: unknown;
  eventSource?: unknown;
  s3?: {
    bucket?: { name?: unknown };
    object?: { key?: unknown; size?: unknown; eTag?: unknown; versionId?: unknown; userMetadata?: unknown; metadata?: unknown; sequencer?: unknown };
  };
}

/**
 * The version's Last-Modified (ms) that a MinIO event's sequencer carries (the hex of its ModTime in
 * ns, which listings give to the ms). Elsewhere a sequencer only orders events (AWS, Ceph): none then;
 * nor when it does not read as a time shortly before the event's.
 */
function modTimeOf(r: EventRecord, eventTime: string): number | undefined {
  const sequencer = r.s3?.object?.sequencer;
  if (r.eventSource !== 'minio:s3' || typeof sequencer !== 'string' || !/^[0-9A-F]{1,16}$/i.test(sequencer)) return undefined;
  const ms = Number(BigInt(`0x${sequencer}`) / 1_000_000n);
  const event = Date.parse(eventTime);
  return ms <= event && ms > event - 3_600_000 ? ms : undefined;
}

/** Keys in event records are URL-encoded, with '+' for a space (a literal '+' arrives as %2B). */
export function decodeEventKey(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw new MalformedEvent(`object key ${JSON.stringify(raw)} is not valid URL encoding`);
  }
}

function kindOf(eventName: string): ChangeKind | undefined {
  const name = eventName.replace(/^s3:/, '');
  if (name === 'ObjectCreated:PutTagging' || name === 'ObjectCreated:DeleteTagging') return 'tags';
  if (name.startsWith('ObjectCreated:')) return 'object';
  if (name === 'ObjectRemoved:DeleteMarkerCreated') return 'deleteMarker';
  if (name === 'ObjectRemoved:Delete') return 'versionDelete';
  // Reads, restores, transitions, replication and scanner events change nothing to replicate.
  return undefined;
}

/** The version's user metadata, keys lower-case without x-amz-meta-: a map (MinIO's userMetadata) or Ceph RGW's list of {key, val}. */
function userMetadata(object: { userMetadata?: unknown; metadata?: unknown }): Record<string, string> {
  const pairs: unknown[][] = Array.isArray(object.metadata)
    ? object.metadata.map((m: unknown) => (m !== null && typeof m === 'object' ? [(m as { key?: unknown }).key, (m as { val?: unknown }).val] : []))
    : object.userMetadata !== null && typeof object.userMetadata === 'object'
      ? Object.entries(object.userMetadata)
      : [];
  return Object.fromEntries(pairs.flatMap(([k, v]) => (typeof k === 'string' && typeof v === 'string' ? [[k.toLowerCase().replace(/^x-amz-meta-/, ''), v]] : [])));
}

/** An optional text field: undefined when absent or empty, refused when not a string or too long for a task. */
function text(value: unknown, where: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new MalformedEvent(`${where} is not a string`);
  if (value.length > MAX_TEXT) throw new MalformedEvent(`${where} is longer than ${String(MAX_TEXT)} characters`);
  return value;
}

/**
 * Parses one journal message of a source location. Returns the changes it carries (none for events that
 * change nothing), or throws MalformedEvent saying what is wrong.
 */
export function parseNotification(location: string, value: Buffer | null): ChangeRecord[] {
  if (value === null || value.length === 0) throw new MalformedEvent('empty message');
  let body: unknown;
  try {
    body = JSON.parse(value.toString('utf8'));
  } catch (err) {
    throw new MalformedEvent(`not JSON: ${(err as Error).message}`);
  }
  const records = (body as { Records?: unknown } | null)?.Records;
  if (!Array.isArray(records)) {
    // AWS sends an s3:TestEvent when a configuration is set: no Records, nothing to do.
    if ((body as { Event?: unknown } | null)?.Event === 's3:TestEvent') return [];
    throw new MalformedEvent('no "Records" array');
  }
  return records.flatMap((raw: unknown, i): ChangeRecord[] => {
    const where = `Records[${i}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new MalformedEvent(`${where} is not an object`);
    const r = raw as EventRecord;
    if (typeof r.eventName !== 'string') throw new MalformedEvent(`${where}.eventName is missing`);
    const object = r.s3?.object;
    const bucket = text(r.s3?.bucket?.name, `${where}.s3.bucket.name`);
    if (bucket === undefined) throw new MalformedEvent(`${where}.s3.bucket.name is missing`);
    if (typeof object?.key !== 'string' || object.key === '') throw new MalformedEvent(`${where}.s3.object.key is missing`);
    // Ceph RGW sends keys as they are; AWS and MinIO URL-encode them.
    const ceph = r.eventSource === 'ceph:s3';
    const key = ceph ? object.key : decodeEventKey(object.key);
    if (Buffer.byteLength(key) > MAX_TEXT) throw new MalformedEvent(`${where}.s3.object.key is longer than S3 allows (${String(MAX_TEXT)} bytes)`);
    const versionId = text(object.versionId, `${where}.s3.object.versionId`);
    const kind = kindOf(r.eventName);
    if (kind === undefined) return [];
    const eventTime = typeof r.eventTime === 'string' && isTimestamp(r.eventTime) ? r.eventTime : undefined;
    if (eventTime === undefined) throw new MalformedEvent(`${where}.eventTime is missing or not an RFC 3339 time`);
    if (object.size !== undefined && !(Number.isSafeInteger(object.size) && (object.size as number) >= 0)) throw new MalformedEvent(`${where}.s3.object.size is not a byte count`);
    const eTag = text(object.eTag, `${where}.s3.object.eTag`);
    const etag = eTag === undefined ? '' : unquote(eTag);
    const modTime = modTimeOf(r, eventTime);
    const path = replicaPath(userMetadata(object));
    return [
      {
        location,
        bucket,
        key,
        // Ceph RGW's DeleteMarkerCreated names no version: the populator looks the marker up.
        versionId: versionId ?? (ceph && kind === 'deleteMarker' ? '' : 'null'),
        kind,
        ...(typeof object.size === 'number' ? { size: object.size } : {}),
        ...(etag !== '' ? { etag } : {}),
        eventTime,
        ...(modTime !== undefined ? { modTime } : {}),
        ...(path !== undefined ? { replicaPath: path } : {}),
        origin: 'notification',
      },
    ];
  });
}
