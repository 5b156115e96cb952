import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectTaggingCommand,
  ListPartsCommand,
  PutObjectTaggingCommand,
  type GetObjectCommandInput,
  type GetObjectCommandOutput,
  type S3Client,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import type { DestinationTraits } from '../../lib/s3/capabilities.ts';
import { unquote } from '../../lib/s3/etag.ts';
import { isNotFound } from '../../lib/s3/errors.ts';
import { getObject, headObject, putObject, uploadPart } from '../../lib/s3/objects.ts';
import { MAX_HOPS, REPLICA_PATH_META, REPLICA_SOURCE_META, REPLICA_TIME_META, REPLICA_VERSION_META, replicaPath } from '../../lib/s3/replica-marks.ts';
import type { ReplicationTask, TaskDestination } from '../../lib/queue/messages.ts';
import { historyThrough, type VersionEntry } from '../../lib/s3/history.ts';
import { currentState, replicaVersions, type Current } from './s3-state.ts';
import type { UploadLedger } from './uploads.ts';

export interface CopyContext {
  source: S3Client;
  destination: S3Client;
  /** Aborts the copy (its clients are bound to it): a multipart upload is then left to resume. */
  signal?: AbortSignal;
  /** The multipart uploads under way, for resuming them. */
  uploads?: UploadLedger;
  /**
   * What the destination's server was probed to do, asked for where a copy depends on it; unknown (the
   * probe under way, or failed), a 404 is not trusted to mean "never written": no copy waits for a probe.
   */
  traits?: () => DestinationTraits | undefined;
  /** The task's rule replicates replicas written by another rule (a chain). */
  replicateReplicas?: boolean;
  /** The largest object copied whole in one PUT when its ETag cannot be kept (default 5 GiB, what a PUT takes); larger ones go in byte ranges. */
  wholeMaxBytes?: number;
  /** The least size of those byte ranges (default 64 MiB). */
  rangeMinBytes?: number;
  /**
   * The source locations found to ignore partNumber (Ceph RGW 16), learned from the first multipart
   * object of each: their multipart objects are then copied whole or in byte ranges at once.
   */
  partsIgnored?: { has(location: string): boolean; add(location: string): void };
  /** Where the bytes read from the source pass, when the destination's bandwidth is limited (spec.limits). */
  throttle?: () => Transform;
}

/** A GET of the source, its body through the destination's bandwidth limit if it has one. */
export async function sourceGet(ctx: Pick<CopyContext, 'source' | 'throttle'>, input: GetObjectCommandInput): Promise<GetObjectCommandOutput> {
  const got = await getObject(ctx.source, input);
  const body = got.Body as Readable | undefined;
  if (ctx.throttle === undefined || body === undefined) return got;
  const throttled = ctx.throttle();
  body.on('error', (err) => throttled.destroy(err));
  // A copy that lets the throttled stream go (an error, a whole-object copy that stopped reading) lets the response go too.
  throttled.on('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  return { ...got, Body: body.pipe(throttled) as unknown as NonNullable<GetObjectCommandOutput['Body']> };
}

/** What a GET of the destination key would see now (see currentState). */
const destinationState = (ctx: CopyContext, d: TaskDestination, destKey: string): Promise<Current> => currentState(ctx.destination, d.bucket, destKey, ctx.traits?.()?.markersOnHead ?? false);

export interface Outcome {
  state: 'COMPLETED' | 'SKIPPED';
  /** Why nothing was copied, when nothing was. */
  reason?: string;
  bytes: number;
  replicaEtag?: string;
  /** Parts of a multipart copy found already uploaded (a copy cut short, resumed). */
  resumedParts?: number;
  /** How the replica was checked when its ETag cannot be the source's: the MD5 of the bytes read, or their count. */
  verifiedBy?: 'md5' | 'size';
}

export const done = (reason?: string): Outcome => ({ state: 'COMPLETED', bytes: 0, ...(reason !== undefined ? { reason } : {}) });
export const skipped = (reason: string): Outcome => ({ state: 'SKIPPED', reason, bytes: 0 });
/** A read of the source answered 404: the version is gone, nothing to copy; other errors are rethrown. */
export const goneOrThrow = (err: unknown): Outcome => {
  if (isNotFound(err)) return skipped('source version no longer exists');
  throw err;
};

/** A replica ETag that differs from the source's: the copy is not trusted and is retried. */
export class ReplicaMismatch extends Error {
  override name = 'ReplicaMismatch';
}

/**
 * A GET of one part answered with the whole object (no Content-Range, no parts count): the source
 * ignores partNumber (Ceph RGW 16), and its multipart objects are copied whole.
 */
export class PartNumberIgnored extends Error {
  override name = 'PartNumberIgnored';
}
export const wholeAnswer = (got: { ContentRange?: string | undefined; PartsCount?: number | undefined }): boolean => got.ContentRange === undefined && got.PartsCount === undefined;

/**
 * Whether the task's source does not serve a multipart version's parts by number: known of its location
 * already, or learned now from a first part's GET (`hinted`) that brought the whole object.
 */
export function ignoresParts(ctx: Pick<CopyContext, 'partsIgnored'>, task: ReplicationTask, got: GetObjectCommandOutput, hinted: boolean, parts: number): boolean {
  if (ctx.partsIgnored?.has(task.source.location) === true) return true;
  if (!(hinted && parts > 1 && wholeAnswer(got))) return false;
  ctx.partsIgnored?.add(task.source.location);
  return true;
}

export const superseding = (versionId: string): string => `superseded: newer source version ${versionId} is already replicated`;

/**
 * Why the destination already holds something newer than the task's source version (undefined when it
 * does not): an older version must never overwrite a newer replica, nor come back after a delete.
 * `history` is the source's, newest first, down to the task's version at `at`. A replica that records
 * its source version's Last-Modified is weighed by it, whether or not that version is still on the
 * source; a delete marker and a tie by the source's own version order.
 */
export function superseded(current: Current, history: VersionEntry[], at: number): string | undefined {
  const mine = history[at];
  if (mine === undefined) return 'source version no longer exists';
  if (current.kind === 'object' && current.replicaOf !== undefined) {
    if (current.sourceTime !== undefined && current.sourceTime !== mine.lastModified) return current.sourceTime > mine.lastModified ? superseding(current.replicaOf) : undefined;
    const theirs = history.findIndex((e) => e.versionId === current.replicaOf);
    if (theirs !== -1 && theirs < at) return superseding(current.replicaOf);
    // Written in the same instant, and theirs already collected from the source: only the source's
    // current version may replace it.
    if (theirs === -1 && current.sourceTime === mine.lastModified && !mine.isLatest) return superseding(current.replicaOf);
    return undefined;
  }
  if (current.kind === 'deleteMarker' && history.slice(0, at).some((e) => e.isDeleteMarker)) {
    return 'superseded: a newer delete marker is already replicated';
  }
  return undefined;
}

export async function sourceTags(ctx: Pick<CopyContext, 'source'>, task: ReplicationTask): Promise<{ Key: string; Value: string }[]> {
  const tagging = await ctx.source.send(
    new GetObjectTaggingCommand({ Bucket: task.source.bucket, Key: task.source.key, VersionId: task.source.versionId }),
  );
  return (tagging.TagSet ?? []).map((t) => ({ Key: t.Key ?? '', Value: t.Value ?? '' }));
}

function taggingHeader(tags: { Key: string; Value: string }[]): string | undefined {
  if (tags.length === 0) return undefined;
  return new URLSearchParams(tags.map((t): [string, string] => [t.Key, t.Value])).toString();
}

/** What a GET (or a HEAD) of the source version says, that the replica carries over. */
type SourceHeaders = Pick<GetObjectCommandOutput, 'Metadata' | 'ContentType' | 'CacheControl' | 'ContentDisposition' | 'ContentEncoding' | 'ContentLanguage' | 'ExpiresString' | 'StorageClass'>;

/** Content headers, user metadata (plus the replica marks), tags and storage class of the replica. */
export function replicaHeaders(task: ReplicationTask, d: TaskDestination, head: SourceHeaders, tags: { Key: string; Value: string }[], sourceTime: number, path: string[]) {
  const tagging = taggingHeader(tags);
  const storageClass = d.storageClass ?? head.StorageClass;
  const expiresAt = head.ExpiresString !== undefined ? new Date(head.ExpiresString) : undefined;
  const expires = expiresAt !== undefined && !Number.isNaN(expiresAt.getTime()) ? expiresAt : undefined;
  return {
    Bucket: d.bucket,
    Key: destinationKey(task, d),
    Metadata: {
      ...head.Metadata,
      [REPLICA_VERSION_META]: task.source.versionId,
      [REPLICA_SOURCE_META]: `${task.source.location}/${task.source.bucket}`,
      [REPLICA_PATH_META]: [...path, `${task.source.location}/${task.source.bucket}`].join(','),
      [REPLICA_TIME_META]: String(sourceTime),
    },
    ...(head.ContentType !== undefined ? { ContentType: head.ContentType } : {}),
    ...(head.CacheControl !== undefined ? { CacheControl: head.CacheControl } : {}),
    ...(head.ContentDisposition !== undefined ? { ContentDisposition: head.ContentDisposition } : {}),
    ...(head.ContentEncoding !== undefined ? { ContentEncoding: head.ContentEncoding } : {}),
    ...(head.ContentLanguage !== undefined ? { ContentLanguage: head.ContentLanguage } : {}),
    ...(expires !== undefined ? { Expires: expires } : {}),
    ...(storageClass !== undefined && storageClass !== 'STANDARD' ? { StorageClass: storageClass as StorageClass } : {}),
    // The rule's encryption at rest; else the destination bucket's default applies.
    ...(d.sse !== undefined ? { ServerSideEncryption: d.sse } : {}),
    ...(d.kmsKeyId !== undefined ? { SSEKMSKeyId: d.kmsKeyId } : {}),
    ...(tagging !== undefined ? { Tagging: tagging } : {}),
  };
}

/** copyObject's answer when the version's Last-Modified is not the stamp the journal gave (nothing copied). */
export const NOT_THE_STAMP = Symbol('not the stamp');

/** The source version opened for a copy (openSource). */
export interface OpenedSource {
  /** The GET: of the whole version or, where the journal says it is multipart, of its first part. */
  got: GetObjectCommandOutput;
  stream: Readable | undefined;
  /** The whole version's size. */
  size: number;
  tags: { Key: string; Value: string }[];
  /** The buckets a replica came through (empty for an original). */
  path: string[];
  multipartHint: boolean;
  src: { Bucket: string; Key: string; VersionId: string };
}

/**
 * Opens the task's version for a copy to `d`: one request whose headers tell the rest, a GET whose body
 * is the copy or, for a version the journal already says is multipart, a GET of its first part (whose
 * headers are the object's, its whole size in Content-Range). Tags are asked for only when it reports
 * some (x-amz-tagging-count). Answers an Outcome instead where nothing is to be copied (the version
 * gone, a replica the rule does not carry on), and NOT_THE_STAMP where `checkStamp` and the GET's
 * Last-Modified (whole seconds) disagrees with `sourceTime`. The caller destroys the stream.
 */
export async function openSource(ctx: Pick<CopyContext, 'source' | 'replicateReplicas' | 'partsIgnored' | 'throttle'>, task: ReplicationTask, d: TaskDestination, sourceTime: number, checkStamp: boolean): Promise<OpenedSource | Outcome | typeof NOT_THE_STAMP> {
  const src = { Bucket: task.source.bucket, Key: task.source.key, VersionId: task.source.versionId };
  // (A source known to ignore partNumber is asked for the whole version.)
  const multipartHint = task.etag !== undefined && /-\d+$/.test(task.etag) && ctx.partsIgnored?.has(task.source.location) !== true;
  const got = await sourceGet(ctx, multipartHint ? { ...src, PartNumber: 1 } : src).catch(goneOrThrow);
  if ('state' in got) return got;
  const stream = got.Body as Readable | undefined;
  const size = Number(/\/(\d+)$/.exec(got.ContentRange ?? '')?.[1] ?? got.ContentLength ?? 0);
  const early = (answer: Outcome | typeof NOT_THE_STAMP): Outcome | typeof NOT_THE_STAMP => {
    stream?.destroy();
    return answer;
  };
  const tags = (got.TagCount ?? 0) > 0 ? await sourceTags(ctx, task).catch((err: unknown) => {
          stream?.destroy();
          return goneOrThrow(err);
        }) : [];
  if (!Array.isArray(tags)) return tags;
  // A replica goes on along a chain where its rule asks for it, never back into a bucket it came through.
  const path = replicaPath(got.Metadata ?? {});
  if (path !== undefined) {
    if (ctx.replicateReplicas !== true) return early(skipped('the source object is itself a replica written by this engine (the rule does not replicate replicas)'));
    if (path.includes(d.id)) return early(skipped(`the source object is a replica that came through ${d.id}: copying it there would loop`));
    if (path.length === 0) return early(skipped('the source object is a replica of an unknown source'));
    if (path.length >= MAX_HOPS) return early(skipped(`the source object is a replica that went through ${String(MAX_HOPS)} buckets already`));
  }
  if (checkStamp && Math.floor((got.LastModified?.getTime() ?? -1000) / 1000) !== Math.floor(sourceTime / 1000)) return early(NOT_THE_STAMP);
  return { got, stream, size, tags, path: path ?? [], multipartHint, src };
}

/**
 * Copies the task's version, its replica stamped with `sourceTime`. `checkStamp`: only if the GET's
 * Last-Modified (whole seconds) agrees with it; else nothing is copied and NOT_THE_STAMP returned.
 * A small object costs a GET and a PUT, a multipart one its parts.
 */
async function copyObject(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, sourceTime: number, checkStamp = false): Promise<Outcome | typeof NOT_THE_STAMP> {
  const opened = await openSource(ctx, task, d, sourceTime, checkStamp);
  if (typeof opened === 'symbol' || 'state' in opened) return opened;
  const { got, stream, size, tags, path, multipartHint, src } = opened;
  try {
    const headers = replicaHeaders(task, d, got, tags, sourceTime, path);
    const sourceEtag = unquote(got.ETag);
    const parts = /-(\d+)$/.exec(sourceEtag);
    let replicaEtag: string;
    let resumedParts: number | undefined;
    // Encrypted at rest on the source (SSE-S3, SSE-KMS), its ETag is not the MD5 of its bytes, nor made of them.
    const encrypted = got.ServerSideEncryption !== undefined;
    // A version whose ETag no copy can reproduce: whole in one PUT (from `open`, a GET of it already
    // answered, or a new one), or in byte ranges past what one PUT takes.
    const unmatched = async (open?: Readable): Promise<Outcome> => {
      if (size <= (ctx.wholeMaxBytes ?? WHOLE_MAX_BYTES)) return copyWhole(ctx, headers, open ?? ((await sourceGet(ctx, src)).Body as Readable), size);
      open?.destroy();
      const copied = await copyParts(ctx, task, d, headers, { kind: 'ranges', size, partBytes: rangeBytes(size, ctx.rangeMinBytes) });
      const resumed = copied.resumed > 0 ? { resumedParts: copied.resumed } : {};
      if (copied.check === 'md5') return { state: 'COMPLETED', bytes: size, replicaEtag: copied.etag, verifiedBy: 'md5', ...resumed };
      return { ...(await checkedBySize(ctx, headers, { ETag: copied.etag, VersionId: copied.versionId }, size)), ...resumed };
    };
    if (parts === null && stream !== undefined && got.ContentLength === size) {
      // (A first part's GET of an object without parts is the whole object.)
      if (encrypted) return await unmatched(stream);
      const put = await putObject(ctx.destination, { ...headers, Body: size === 0 ? Buffer.alloc(0) : stream, ContentLength: size });
      replicaEtag = unquote(put.ETag);
      // A destination that encrypts (its bucket's default) answers with an ETag of its own.
      if (put.ServerSideEncryption !== undefined && replicaEtag !== sourceEtag) return await checkedBySize(ctx, headers, put, size);
    } else if (parts !== null && stream !== undefined && got.ContentLength === size && ignoresParts(ctx, task, got, multipartHint, Number(parts[1]))) {
      // The GET brought the whole object (asked for it, or for the first part of a source that ignores that): copied whole from it.
      return await unmatched(stream);
    } else if (parts !== null && encrypted) {
      stream?.destroy();
      return await unmatched();
    } else if (parts !== null) {
      // Part by part, keeping the source's parts (and so its ETag): the first part's GET is the first
      // part; a whole-object GET (no hint from the journal) is dropped after its headers.
      const first = multipartHint && stream !== undefined ? { stream, length: got.ContentLength ?? 0 } : undefined;
      if (first === undefined) stream?.destroy();
      let copied: Awaited<ReturnType<typeof copyParts>>;
      try {
        copied = await copyParts(ctx, task, d, headers, { kind: 'parts', count: Number(parts[1]), sourceEtag }, first);
      } catch (err) {
        if (!(err instanceof PartNumberIgnored)) throw err;
        ctx.partsIgnored?.add(task.source.location);
        return await unmatched();
      }
      replicaEtag = copied.etag;
      if (copied.resumed > 0) resumedParts = copied.resumed;
      // Encrypted there with ETags of its own (SSE-KMS): the parts are the source's, the size says the rest.
      if (copied.check === 'size') return { ...(await checkedBySize(ctx, headers, { ETag: copied.etag, VersionId: copied.versionId }, size)), ...(resumedParts !== undefined ? { resumedParts } : {}) };
    } else {
      // The hint was wrong (the journal's ETag is not this version's): copy it whole, as any other.
      return await copyObject(ctx, { ...task, etag: sourceEtag }, d, sourceTime, checkStamp);
    }
    // The same bytes in the same parts give the same ETag (MD5, or MD5 of part MD5s): a cheap end-to-end check.
    if (replicaEtag !== sourceEtag) throw new ReplicaMismatch(`replica ETag ${replicaEtag} differs from source ETag ${sourceEtag}`);
    return { state: 'COMPLETED', bytes: size, replicaEtag, ...(resumedParts !== undefined ? { resumedParts } : {}) };
  } finally {
    // Releases the source connection whatever happened to the write.
    stream?.destroy();
  }
}

/** Parts of one multipart copy under way at once. */
const PARTS_IN_FLIGHT = 2;
/** The largest object one PUT takes (S3's limit): larger ones the copy cuts into byte ranges. */
const WHOLE_MAX_BYTES = 5 * 1024 ** 3;
/** The byte ranges of such a copy: 64 MiB, more where 10 000 parts would not hold the object. */
export const rangeBytes = (size: number, least = 64 * 1024 ** 2): number => Math.max(least, Math.ceil(size / 10_000 / 1024 ** 2) * 1024 ** 2);

/**
 * How a multipart copy cuts the object: the source's own parts (read with partNumber; the replica's ETag
 * is then the source's), or byte ranges (each checked by the MD5 of the bytes read).
 */
type PartLayout = { kind: 'parts'; count: number; sourceEtag: string } | { kind: 'ranges'; size: number; partBytes: number };

/** A pass-through stream feeding what passes into `md5`. */
export const hashing = (md5: ReturnType<typeof createHash>): Transform =>
  new Transform({
    transform(chunk: Buffer, _encoding, done) {
      md5.update(chunk);
      done(null, chunk);
    },
  });

/**
 * A version whose ETag a copy cannot reproduce (a multipart object of a source that ignores partNumber,
 * an object encrypted at rest on the source) copied whole in one PUT (up to what a PUT takes: larger
 * ones go in byte ranges). The replica is checked by the MD5 of the bytes read, which a plain PUT's ETag
 * is (MinIO's under SSE-S3 too); where the destination encrypts with ETags of its own (SSE-KMS on AWS),
 * by its size.
 */
async function copyWhole(ctx: CopyContext, headers: ReturnType<typeof replicaHeaders>, stream: Readable, size: number): Promise<Outcome> {
  const md5 = createHash('md5');
  const body = hashing(md5);
  stream.on('error', (err) => body.destroy(err));
  let put: Awaited<ReturnType<typeof putObject>>;
  try {
    // An empty object is sent as an empty body: a stream of length 0 looks like an unknown length.
    put = await putObject(ctx.destination, { ...headers, Body: size === 0 ? Buffer.alloc(0) : stream.pipe(body), ContentLength: size });
  } finally {
    // Releases the source connection whatever happened to the write.
    stream.destroy();
  }
  const digest = md5.digest('hex');
  const replicaEtag = unquote(put.ETag);
  if (replicaEtag === digest) return { state: 'COMPLETED', bytes: size, replicaEtag, verifiedBy: 'md5' };
  if (put.ServerSideEncryption !== undefined || !/^[0-9a-f]{32}$/.test(replicaEtag)) return checkedBySize(ctx, headers, put, size);
  throw new ReplicaMismatch(`replica ETag ${replicaEtag} differs from the MD5 ${digest} of the bytes read`);
}

/** A replica whose ETag says nothing of its bytes (the destination encrypts): checked by its size. */
async function checkedBySize(ctx: CopyContext, headers: ReturnType<typeof replicaHeaders>, put: { ETag?: string | undefined; VersionId?: string | undefined }, size: number): Promise<Outcome> {
  const h = await headObject(ctx.destination, { Bucket: headers.Bucket, Key: headers.Key, ...(put.VersionId !== undefined ? { VersionId: put.VersionId } : {}) });
  if (h.ContentLength !== size) throw new ReplicaMismatch(`replica of ${String(h.ContentLength)} bytes, not the source's ${String(size)}`);
  return { state: 'COMPLETED', bytes: size, replicaEtag: unquote(put.ETag), verifiedBy: 'size' };
}

/** The ETag S3 gives a multipart object: the MD5 of its parts' MD5s, and the part count. */
export function multipartEtag(partEtags: string[]): string {
  const digests = Buffer.concat(partEtags.map((e) => Buffer.from(unquote(e), 'hex')));
  return `${createHash('md5').update(digests).digest('hex')}-${String(partEtags.length)}`;
}

/** The parts already in an upload, by number (ETag); undefined when the upload is gone. */
async function uploadedParts(client: S3Client, target: { Bucket: string; Key: string; UploadId: string }): Promise<Map<number, string> | undefined> {
  const parts = new Map<number, string>();
  let marker: string | undefined;
  try {
    do {
      const page = await client.send(new ListPartsCommand({ ...target, ...(marker !== undefined ? { PartNumberMarker: marker } : {}) }));
      for (const p of page.Parts ?? []) if (p.PartNumber !== undefined && p.ETag !== undefined) parts.set(p.PartNumber, p.ETag);
      marker = page.IsTruncated === true ? page.NextPartNumberMarker : undefined;
    } while (marker !== undefined);
  } catch (err) {
    if (isNotFound(err) || (err as { name?: string }).name === 'NoSuchUpload') return undefined;
    throw err;
  }
  return parts;
}

/**
 * A multipart copy with the source's own part boundaries, each part streamed, two at a time. The upload is
 * recorded in the ledger before its first part: a copy cut short resumes from the parts already there,
 * and is completed only if every part adds up to the source's ETag (a part that differs is never made
 * visible). An abort (the partition taken away) leaves the upload for the next owner; any other failure
 * aborts it.
 */
async function copyParts(
  ctx: CopyContext,
  task: ReplicationTask,
  d: TaskDestination,
  headers: ReturnType<typeof replicaHeaders>,
  layout: PartLayout,
  first?: { stream: Readable; length: number },
): Promise<{ etag: string; versionId?: string; resumed: number; check: 'etag' | 'md5' | 'size' }> {
  const count = layout.kind === 'parts' ? layout.count : Math.ceil(layout.size / layout.partBytes);
  const src = { Bucket: task.source.bucket, Key: task.source.key, VersionId: task.source.versionId };
  const place = { destination: d.id, key: headers.Key };
  // Encrypted there (the rule asks, or the upload or a part says so): ETags may be the server's own.
  const seen = { sealed: headers.ServerSideEncryption !== undefined };
  const previous = ctx.uploads?.find(place, task.source.versionId);
  let parts = previous !== undefined ? await uploadedParts(ctx.destination, { Bucket: headers.Bucket, Key: headers.Key, UploadId: previous.uploadId }) : undefined;
  let uploadId = parts !== undefined ? previous?.uploadId : undefined;
  if (uploadId === undefined) {
    if (previous !== undefined) await ctx.uploads?.forget(place);
    const created = await ctx.destination.send(new CreateMultipartUploadCommand(headers));
    uploadId = created.UploadId ?? '';
    if (created.ServerSideEncryption !== undefined) seen.sealed = true;
    await ctx.uploads?.record(place, { uploadId, sourceVersionId: task.source.versionId, initiated: new Date().toISOString() });
    parts = new Map();
  }
  const resumed = parts?.size ?? 0;
  const etags = parts ?? new Map<number, string>();
  const target = { Bucket: headers.Bucket, Key: headers.Key, UploadId: uploadId };
  // A first part already uploaded (a resumed copy) lets its GET go at once, rather than held open.
  if (etags.has(1)) first?.stream.destroy();
  const copyPart = async (n: number): Promise<void> => {
    const range = layout.kind === 'ranges' ? `bytes=${String((n - 1) * layout.partBytes)}-${String(Math.min(n * layout.partBytes, layout.size) - 1)}` : undefined;
    const fetched = n === 1 && first !== undefined ? undefined : await sourceGet(ctx, { ...src, ...(range !== undefined ? { Range: range } : { PartNumber: n }) });
    const part = fetched ?? { Body: first?.stream, ContentLength: first?.length };
    const stream = part.Body as Readable;
    // (The first part from the journal's hint was checked by copyObject.)
    if (fetched !== undefined && range === undefined && count > 1 && wholeAnswer(fetched)) {
      stream.destroy();
      throw new PartNumberIgnored(`the source answered part ${String(n)} with the whole object`);
    }
    // A byte range is checked by the MD5 of what was read, which the part's ETag is.
    const md5 = range !== undefined ? createHash('md5') : undefined;
    const body = md5 === undefined ? stream : stream.pipe(hashing(md5));
    stream.on('error', (err) => body.destroy(err));
    try {
      const put = await uploadPart(ctx.destination, { ...target, PartNumber: n, Body: body, ContentLength: part.ContentLength ?? 0 });
      const digest = md5?.digest('hex');
      // A destination that encrypts may give ETags of its own (SSE-KMS): the replica is then checked by its size.
      if (put.ServerSideEncryption !== undefined) seen.sealed = true;
      else if (digest !== undefined && unquote(put.ETag) !== digest) throw new ReplicaMismatch(`part ${String(n)}'s ETag ${unquote(put.ETag)} differs from the MD5 ${digest} of the bytes read`);
      etags.set(n, put.ETag ?? '');
    } finally {
      stream.destroy();
    }
  };
  try {
    // PARTS_IN_FLIGHT parts at a time, in order: the next part's GET overlaps the upload before it. A
    // failure stops the others from starting one more, and waits for those under way.
    const todo = Array.from({ length: count }, (_, i) => i + 1).filter((n) => !etags.has(n));
    let next = 0;
    let failed = false;
    const lanes = await Promise.allSettled(
      Array.from({ length: Math.min(PARTS_IN_FLIGHT, todo.length) }, async () => {
        for (let n = todo[next++]; n !== undefined && !failed; n = todo[next++]) {
          await copyPart(n).catch((err: unknown) => {
            failed = true;
            throw err;
          });
        }
      }),
    );
    const failure = lanes.find((l) => l.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
    const list = Array.from({ length: count }, (_, i) => ({ PartNumber: i + 1, ETag: etags.get(i + 1) ?? '' }));
    const expected = multipartEtag(list.map((p) => p.ETag));
    const kept = layout.kind === 'parts' && expected === layout.sourceEtag;
    if (layout.kind === 'parts' && !kept && !seen.sealed) throw new ReplicaMismatch(`the uploaded parts make ETag ${expected}, not the source's ${layout.sourceEtag}`);
    const complete = await ctx.destination.send(new CompleteMultipartUploadCommand({ ...target, MultipartUpload: { Parts: list } }));
    await ctx.uploads?.forget(place);
    // Ceph RGW 16 answers with an empty ETag: the replica's is read back.
    const etag = unquote(complete.ETag) || unquote((await headObject(ctx.destination, { Bucket: target.Bucket, Key: target.Key, ...(complete.VersionId !== undefined ? { VersionId: complete.VersionId } : {}) })).ETag);
    // Ranges resumed from an earlier attempt were checked then, not now: the size says the rest.
    const check = kept ? 'etag' : layout.kind === 'ranges' && !seen.sealed && resumed === 0 ? 'md5' : 'size';
    return { etag, ...(complete.VersionId !== undefined ? { versionId: complete.VersionId } : {}), resumed, check };
  } catch (err) {
    if (ctx.signal?.aborted !== true) {
      // Leave no half-written upload behind; if the abort fails too, the copy's own error matters more
      // (the ledger keeps the record, and the upload is aborted once old).
      await ctx.destination
        .send(new AbortMultipartUploadCommand(target))
        .then(() => ctx.uploads?.forget(place))
        .catch(() => undefined);
    }
    throw err;
  }
}

/** The version's Last-Modified to the ms where the journal told it (a scan's time is the listed one; tasks queued before modTime was recorded). */
export function journalStamp(task: ReplicationTask): number | undefined {
  const time = task.modTime ?? (task.origin === 'scan' ? Date.parse(task.eventTime) : undefined);
  return time !== undefined && Number.isFinite(time) && time > 0 ? time : undefined;
}

async function replicateObject(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, destKey: string, known?: Current): Promise<Outcome> {
  const current = known ?? (await destinationState(ctx, d, destKey));
  if (current.kind === 'object' && current.replicaOf === task.source.versionId) return done('already replicated');
  // Where the journal gave the version's Last-Modified (a listing; MinIO's notifications), it is the
  // order stamp, and the source's history is not listed unless the destination's current version has
  // no stamp, the same one, or is a delete marker: a new key costs its state (a HEAD, or in a backfill a
  // share of a listing page), the GET and the PUT. (A notification's event time is some milliseconds
  // after the write: never the stamp.)
  const mine = journalStamp(task);
  const replica = current.kind === 'object' && current.replicaOf !== undefined ? current : undefined;
  if (mine !== undefined && replica?.sourceTime !== undefined && replica.sourceTime > mine) return skipped(superseding(replica.replicaOf ?? ''));
  if (mine !== undefined && (current.kind === 'absent' || (replica?.sourceTime !== undefined && replica.sourceTime < mine))) {
    // Copied only if the version's own Last-Modified agrees with the stamp to the second: a stamp a
    // forged or mistaken journal message claims never puts an older version above a newer one.
    const outcome = await copyObject(ctx, task, d, mine, true);
    if (outcome !== NOT_THE_STAMP) return outcome;
  }
  const { history, at } = await historyThrough(ctx.source, task.source.bucket, task.source.key, task.source.versionId);
  const reason = superseded(current, history, at);
  if (reason !== undefined) return skipped(reason);
  return (await copyObject(ctx, task, d, history[at]?.lastModified ?? 0)) as Outcome;
}

/** Sets the source version's tags on its replica, current or not; a version not replicated yet is copied whole. */
async function replicateTags(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, destKey: string): Promise<Outcome> {
  const current = await destinationState(ctx, d, destKey);
  const replicas = current.kind === 'object' && current.replicaOf === task.source.versionId ? [current.versionId] : await replicaVersions(ctx.destination, d.bucket, destKey, task.source.versionId);
  if (replicas.length === 0) return replicateObject(ctx, task, d, destKey);
  const tags = await sourceTags(ctx, task).catch(goneOrThrow);
  if (!Array.isArray(tags)) return tags;
  for (const versionId of replicas) {
    await ctx.destination.send(new PutObjectTaggingCommand({ Bucket: d.bucket, Key: destKey, VersionId: versionId, Tagging: { TagSet: tags } }));
  }
  return done();
}

async function replicateDeleteMarker(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, destKey: string): Promise<Outcome> {
  const current = await destinationState(ctx, d, destKey);
  if (current.kind === 'deleteMarker') return done('already deleted');
  if (current.kind === 'object') {
    const { history, at } = await historyThrough(ctx.source, task.source.bucket, task.source.key, task.source.versionId);
    const reason = superseded(current, history, at);
    if (reason !== undefined) return skipped(reason === 'source version no longer exists' ? 'delete marker no longer exists on the source' : reason);
  }
  // On a key the destination does not hold (yet) too: the marker keeps an older version, copied late
  // (a retry, a scan), from coming back as current.
  await ctx.destination.send(new DeleteObjectCommand({ Bucket: d.bucket, Key: destKey }));
  return done();
}

/** Permanently deletes the replica versions of a source version that was permanently deleted (opt-in). */
async function replicateVersionDelete(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, destKey: string): Promise<Outcome> {
  const replicas = await replicaVersions(ctx.destination, d.bucket, destKey, task.source.versionId);
  for (const versionId of replicas) await ctx.destination.send(new DeleteObjectCommand({ Bucket: d.bucket, Key: destKey, VersionId: versionId }));
  return done(replicas.length === 0 ? 'no replica of this version' : undefined);
}

/** Where destination `d` keeps the task's key. */
export const destinationKey = (task: ReplicationTask, d: TaskDestination): string => `${d.keyPrefix ?? ''}${task.source.key}`;

/**
 * Makes destination `d` reflect the task's change. Idempotent: a repeat finds the work done. Throws S3
 * errors. `known`: the destination key's state, read since anything last wrote it (a prefetch), in place
 * of a HEAD.
 */
export function replicate(ctx: CopyContext, task: ReplicationTask, d: TaskDestination, known?: Current): Promise<Outcome> {
  const destKey = destinationKey(task, d);
  switch (task.kind) {
    case 'object':
      return replicateObject(ctx, task, d, destKey, known);
    case 'tags':
      return replicateTags(ctx, task, d, destKey);
    case 'deleteMarker':
      return replicateDeleteMarker(ctx, task, d, destKey);
    case 'versionDelete':
      return replicateVersionDelete(ctx, task, d, destKey);
  }
}
