import type { S3Client } from '@aws-sdk/client-s3';
import type { BlobHTTPHeaders, BlobRequestConditions, BlockBlobClient } from '@azure/storage-blob';
import { createHash, randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { BlobAccount } from '../../lib/azure/account.ts';
import { blobMetadataName, blobTagsProblem } from '../../lib/azure/names.ts';
import { unquote } from '../../lib/s3/etag.ts';
import { isNotFound, Refused } from '../../lib/s3/errors.ts';
import { historyThrough } from '../../lib/s3/history.ts';
import { headObject } from '../../lib/s3/objects.ts';
import { REPLICA_TIME_META, REPLICA_VERSION_META } from '../../lib/s3/replica-marks.ts';
import type { ReplicationTask, TaskDestination } from '../../lib/queue/messages.ts';
import {
  destinationKey,
  done,
  hashing,
  ignoresParts,
  journalStamp,
  multipartEtag,
  PartNumberIgnored,
  sourceGet,
  NOT_THE_STAMP,
  openSource,
  rangeBytes,
  replicaHeaders,
  ReplicaMismatch,
  goneOrThrow,
  skipped,
  sourceTags,
  superseded,
  superseding,
  wholeAnswer,
  type CopyContext,
  type Outcome,
} from './replicate.ts';

// Replication into an Azure Blob Storage container: each source version becomes the blob's current
// content, with its content headers, its user metadata (names made C# identifiers, plus the replica
// marks) and its tags as blob index tags. A blob has no delete marker: a replicated marker deletes the
// blob, and the order of versions is then kept by the source's history (see replicateObject).

export interface BlobCopyContext {
  source: S3Client;
  account: BlobAccount;
  signal?: AbortSignal;
  replicateReplicas?: boolean;
  /** The task's rule replicates delete markers: a missing blob may be one that a marker deleted. */
  replicateDeleteMarkers?: boolean;
  /** The largest object written in one Put Blob (default 256 MiB); larger ones are staged in blocks. */
  wholeMaxBytes?: number;
  /** The least size of the blocks a single-part object is staged in (default 64 MiB). */
  rangeMinBytes?: number;
  partsIgnored?: NonNullable<CopyContext['partsIgnored']>;
  throttle?: NonNullable<CopyContext['throttle']>;
}

const SINGLE_PUT_MAX_BYTES = 256 * 1024 ** 2;

/** What the blob holds now: nothing, or some content (a replica's marks, when it is one). */
type BlobState = { kind: 'absent' } | { kind: 'object'; etag: string; replicaOf: string | undefined; sourceTime?: number };

const VERSION_NAME = blobMetadataName(REPLICA_VERSION_META);
const TIME_NAME = blobMetadataName(REPLICA_TIME_META);

const abortOf = (ctx: BlobCopyContext): { abortSignal?: AbortSignal } => (ctx.signal !== undefined ? { abortSignal: ctx.signal } : {});

/** The blob's state: one Get Blob Properties. */
export async function blobState(blob: BlockBlobClient, signal?: AbortSignal): Promise<BlobState> {
  try {
    const p = await blob.getProperties(signal !== undefined ? { abortSignal: signal } : {});
    const meta = p.metadata ?? {};
    const time = Number(meta[TIME_NAME]);
    return { kind: 'object', etag: p.etag ?? '', replicaOf: meta[VERSION_NAME], ...(Number.isFinite(time) && time > 0 ? { sourceTime: time } : {}) };
  } catch (err) {
    if (isNotFound(err)) return { kind: 'absent' };
    throw err;
  }
}

/** A write only if the blob is still what was read: another writer in between makes it fail (412 or 409), and the task is retried. */
const unchanged = (state: BlobState): BlobRequestConditions => (state.kind === 'absent' ? { ifNoneMatch: '*' } : { ifMatch: state.etag });

const hex = (md5: Uint8Array | undefined): string | undefined => (md5 !== undefined ? Buffer.from(md5).toString('hex') : undefined);

/** S3 tags as blob index tags; refused (before anything is written) where Azure cannot hold them. */
function indexTags(tags: { Key: string; Value: string }[]): Record<string, string> {
  const problem = blobTagsProblem(tags);
  if (problem !== undefined) throw new Refused(problem);
  return Object.fromEntries(tags.map((t) => [t.Key, t.Value]));
}

/** What the blob is written with: content headers, metadata (with the replica marks) and index tags. */
function blobHeaders(task: ReplicationTask, d: TaskDestination, opened: Parameters<typeof replicaHeaders>[2], tags: { Key: string; Value: string }[], sourceTime: number, path: string[]) {
  const indexed = indexTags(tags);
  const s3 = replicaHeaders(task, d, opened, [], sourceTime, path);
  const metadata = Object.fromEntries(Object.entries(s3.Metadata).map(([k, v]) => [blobMetadataName(k), v]));
  const http: BlobHTTPHeaders = {
    ...(s3.ContentType !== undefined ? { blobContentType: s3.ContentType } : {}),
    ...(s3.CacheControl !== undefined ? { blobCacheControl: s3.CacheControl } : {}),
    ...(s3.ContentDisposition !== undefined ? { blobContentDisposition: s3.ContentDisposition } : {}),
    ...(s3.ContentEncoding !== undefined ? { blobContentEncoding: s3.ContentEncoding } : {}),
    ...(s3.ContentLanguage !== undefined ? { blobContentLanguage: s3.ContentLanguage } : {}),
  };
  return { http, metadata, tags: indexed };
}

/**
 * Copies the task's version into the blob, read as `state`. Small single-part versions go in one Put
 * Blob; multipart ones as blocks of the source's part sizes, others past `wholeMaxBytes` as blocks of
 * byte ranges, committed at once. Every byte is checked by MD5: the service's digest of what it took
 * (a Put Blob's, each block's) against the digest of what was read, and that digest against the
 * source's ETag where the ETag is made of MD5s (not encrypted at rest).
 */
async function copyToBlob(ctx: BlobCopyContext, task: ReplicationTask, d: TaskDestination, blob: BlockBlobClient, state: BlobState, sourceTime: number, checkStamp: boolean): Promise<Outcome | typeof NOT_THE_STAMP> {
  const opened = await openSource(ctx, task, d, sourceTime, checkStamp);
  if (typeof opened === 'symbol' || 'state' in opened) return opened;
  const { got, stream, size, multipartHint, src } = opened;
  try {
    const written = blobHeaders(task, d, got, opened.tags, sourceTime, opened.path);
    const sourceEtag = unquote(got.ETag);
    const parts = /-(\d+)$/.exec(sourceEtag);
    // Encrypted at rest on the source (SSE-S3, SSE-KMS), its ETag is not made of the MD5s of its bytes.
    const etagIsMd5 = got.ServerSideEncryption === undefined;
    // A multipart version goes whole (one Put Blob, or byte ranges) where its source does not serve parts by number.
    const partsServed = parts !== null && !ignoresParts(ctx, task, got, multipartHint, Number(parts[1]));
    if (!partsServed && stream !== undefined && got.ContentLength === size && size <= (ctx.wholeMaxBytes ?? SINGLE_PUT_MAX_BYTES)) {
      const md5 = createHash('md5');
      const body = size === 0 ? Buffer.alloc(0) : stream.pipe(hashing(md5));
      if (!Buffer.isBuffer(body)) stream.on('error', (err) => body.destroy(err));
      const put = await blob.upload(body, size, { blobHTTPHeaders: written.http, metadata: written.metadata, tags: written.tags, conditions: unchanged(state), ...abortOf(ctx) });
      const digest = md5.digest('hex');
      const stored = hex(put.contentMD5) ?? hex((await blob.getProperties(abortOf(ctx))).contentMD5);
      if (stored !== digest) throw new ReplicaMismatch(`the blob's MD5 ${String(stored)} differs from the MD5 ${digest} of the bytes read`);
      if (parts === null && etagIsMd5 && digest !== sourceEtag) throw new ReplicaMismatch(`the bytes read (MD5 ${digest}) are not the source's (ETag ${sourceEtag})`);
      return { state: 'COMPLETED', bytes: size, replicaEtag: put.etag ?? '', verifiedBy: 'md5' };
    }
    // Blocks: the source's parts where it has some and serves them by number, else byte ranges.
    const first = partsServed && multipartHint && stream !== undefined ? { stream, length: got.ContentLength ?? 0 } : undefined;
    if (first === undefined) stream?.destroy();
    const ranges = { kind: 'ranges' as const, partBytes: rangeBytes(size, ctx.rangeMinBytes) };
    const layout = partsServed ? { kind: 'parts' as const, count: Number(parts[1]) } : ranges;
    try {
      return await stageBlocks(ctx, blob, state, src, size, layout, first, written, etagIsMd5 && layout.kind === 'parts' ? sourceEtag : undefined);
    } catch (err) {
      if (!(err instanceof PartNumberIgnored)) throw err;
      ctx.partsIgnored?.add(task.source.location);
      return await stageBlocks(ctx, blob, state, src, size, ranges, undefined, written, undefined);
    }
  } finally {
    stream?.destroy();
  }
}

/**
 * Stages the version as blocks, one after the other (so that one MD5 of the whole blob is computed on
 * the way, and stored as its Content-MD5), and commits them with the blob's headers. Each block's MD5 as
 * the service computed it must be the MD5 of the bytes read; `sourceEtag`, where given, must be the
 * multipart ETag those block MD5s make. Uncommitted blocks left by a failed copy are dropped by the
 * service (and named anew by the next attempt).
 */
async function stageBlocks(
  ctx: BlobCopyContext,
  blob: BlockBlobClient,
  state: BlobState,
  src: { Bucket: string; Key: string; VersionId: string },
  size: number,
  layout: { kind: 'parts'; count: number } | { kind: 'ranges'; partBytes: number },
  first: { stream: Readable; length: number } | undefined,
  written: ReturnType<typeof blobHeaders>,
  sourceEtag: string | undefined,
): Promise<Outcome> {
  const count = layout.kind === 'parts' ? layout.count : Math.max(1, Math.ceil(size / layout.partBytes));
  // Block ids are of one length within a blob; this copy's own, so that no other writer's blocks mix in.
  const copy = randomUUID();
  const ids = Array.from({ length: count }, (_, i) => Buffer.from(`${copy}-${String(i + 1).padStart(5, '0')}`).toString('base64'));
  const whole = createHash('md5');
  const digests: string[] = [];
  for (let n = 1; n <= count; n++) {
    let part: { stream: Readable; length: number };
    if (n === 1 && first !== undefined) {
      part = first;
    } else {
      const range = layout.kind === 'ranges' ? `bytes=${String((n - 1) * layout.partBytes)}-${String(Math.min(n * layout.partBytes, size) - 1)}` : undefined;
      const fetched = await sourceGet(ctx, { ...src, ...(range !== undefined ? { Range: range } : { PartNumber: n }) });
      if (range === undefined && count > 1 && wholeAnswer(fetched)) {
        (fetched.Body as Readable | undefined)?.destroy();
        throw new PartNumberIgnored(`the source answered part ${String(n)} with the whole object`);
      }
      part = { stream: fetched.Body as Readable, length: fetched.ContentLength ?? 0 };
    }
    const md5 = createHash('md5');
    const body = part.stream.pipe(hashing(md5)).pipe(hashing(whole));
    part.stream.on('error', (err) => body.destroy(err));
    try {
      const staged = await blob.stageBlock(ids[n - 1] ?? '', part.length === 0 ? Buffer.alloc(0) : body, part.length, abortOf(ctx));
      const digest = md5.digest('hex');
      const stored = hex(staged.contentMD5);
      if (stored !== undefined && stored !== digest) throw new ReplicaMismatch(`block ${String(n)}'s MD5 ${stored} differs from the MD5 ${digest} of the bytes read`);
      digests.push(digest);
    } finally {
      part.stream.destroy();
    }
  }
  if (sourceEtag !== undefined && multipartEtag(digests) !== sourceEtag) throw new ReplicaMismatch(`the bytes read make ETag ${multipartEtag(digests)}, not the source's ${sourceEtag}`);
  const committed = await blob.commitBlockList(ids, {
    blobHTTPHeaders: { ...written.http, blobContentMD5: whole.digest() },
    metadata: written.metadata,
    tags: written.tags,
    conditions: unchanged(state),
    ...abortOf(ctx),
  });
  return { state: 'COMPLETED', bytes: size, replicaEtag: committed.etag ?? '', verifiedBy: 'md5' };
}

const blobOf = (ctx: BlobCopyContext, d: TaskDestination, key: string): BlockBlobClient => ctx.account.service.getContainerClient(d.bucket).getBlockBlobClient(key);

/** A blob's state as replicate.ts weighs a destination's (`superseded`): the blob's ETag stands for a version id. */
const asCurrent = (state: BlobState & { kind: 'object' }) => ({ kind: 'object' as const, versionId: state.etag, replicaOf: state.replicaOf, ...(state.sourceTime !== undefined ? { sourceTime: state.sourceTime } : {}) });

async function replicateObject(ctx: BlobCopyContext, task: ReplicationTask, d: TaskDestination, blob: BlockBlobClient): Promise<Outcome> {
  const state = await blobState(blob, ctx.signal);
  if (state.kind === 'object' && state.replicaOf === task.source.versionId) return done('already replicated');
  const mine = journalStamp(task);
  const replica = state.kind === 'object' && state.replicaOf !== undefined ? state : undefined;
  if (mine !== undefined && replica?.sourceTime !== undefined && replica.sourceTime > mine) return skipped(superseding(replica.replicaOf ?? ''));
  // No blob is a new key only where no delete marker could have deleted it: else the source's history
  // tells whether a newer marker did (an older version replayed after it must not come back).
  const fresh = state.kind === 'absent' && ctx.replicateDeleteMarkers !== true;
  if (mine !== undefined && (fresh || (replica?.sourceTime !== undefined && replica.sourceTime < mine))) {
    const outcome = await copyToBlob(ctx, task, d, blob, state, mine, true);
    if (outcome !== NOT_THE_STAMP) return outcome;
  }
  const { history, at } = await historyThrough(ctx.source, task.source.bucket, task.source.key, task.source.versionId);
  const reason =
    state.kind === 'object'
      ? superseded(asCurrent(state), history, at)
      : history[at] === undefined
        ? 'source version no longer exists'
        : ctx.replicateDeleteMarkers === true && history.slice(0, at).some((e) => e.isDeleteMarker)
          ? 'superseded: a newer delete marker deleted the blob'
          : undefined;
  if (reason !== undefined) return skipped(reason);
  return (await copyToBlob(ctx, task, d, blob, state, history[at]?.lastModified ?? 0, false)) as Outcome;
}

/** Sets the source version's tags as the blob's index tags when the blob holds that version; else copies the version. */
async function replicateTags(ctx: BlobCopyContext, task: ReplicationTask, d: TaskDestination, blob: BlockBlobClient): Promise<Outcome> {
  const state = await blobState(blob, ctx.signal);
  if (state.kind !== 'object' || state.replicaOf !== task.source.versionId) return replicateObject(ctx, task, d, blob);
  const tags = await sourceTags(ctx, task).catch(goneOrThrow);
  if (!Array.isArray(tags)) return tags;
  await blob.setTags(indexTags(tags), { conditions: { ifMatch: state.etag }, ...abortOf(ctx) });
  return done();
}

/** Deletes the blob, unless it holds a version newer than the marker. */
async function replicateDeleteMarker(ctx: BlobCopyContext, task: ReplicationTask, blob: BlockBlobClient): Promise<Outcome> {
  const state = await blobState(blob, ctx.signal);
  if (state.kind === 'absent') return done('already deleted');
  const { history, at } = await historyThrough(ctx.source, task.source.bucket, task.source.key, task.source.versionId);
  const reason = superseded(asCurrent(state), history, at);
  if (reason !== undefined) return skipped(reason === 'source version no longer exists' ? 'delete marker no longer exists on the source' : reason);
  await blob.delete({ conditions: { ifMatch: state.etag }, ...abortOf(ctx) });
  return done();
}

/**
 * A source version permanently deleted (opt-in): where the blob holds it, the blob is given the source's
 * current version instead, or deleted when the source has none. A blob keeps no older version to remove.
 */
async function replicateVersionDelete(ctx: BlobCopyContext, task: ReplicationTask, d: TaskDestination, blob: BlockBlobClient): Promise<Outcome> {
  const state = await blobState(blob, ctx.signal);
  if (state.kind !== 'object' || state.replicaOf !== task.source.versionId) return done('the blob does not hold this version');
  let current: Awaited<ReturnType<typeof headObject>> | undefined;
  try {
    current = await headObject(ctx.source, { Bucket: task.source.bucket, Key: task.source.key });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (current?.VersionId === undefined) {
    await blob.delete({ conditions: { ifMatch: state.etag }, ...abortOf(ctx) });
    return done();
  }
  // Copied whatever the blob's marks say of order: the version they name is gone from the source.
  const next: ReplicationTask = { ...task, kind: 'object', source: { ...task.source, versionId: current.VersionId }, ...(current.ETag !== undefined ? { etag: unquote(current.ETag) } : {}) };
  const { history, at } = await historyThrough(ctx.source, next.source.bucket, next.source.key, current.VersionId);
  const outcome = (await copyToBlob(ctx, next, d, blob, state, history[at]?.lastModified ?? 0, false)) as Outcome;
  return outcome.state === 'COMPLETED' ? { ...outcome, reason: `the blob now holds the source's current version ${current.VersionId}` } : outcome;
}

/** Makes blob destination `d` reflect the task's change. Idempotent, as replicate() is for S3. */
export function replicateToBlob(ctx: BlobCopyContext, task: ReplicationTask, d: TaskDestination): Promise<Outcome> {
  const blob = blobOf(ctx, d, destinationKey(task, d));
  switch (task.kind) {
    case 'object':
      return replicateObject(ctx, task, d, blob);
    case 'tags':
      return replicateTags(ctx, task, d, blob);
    case 'deleteMarker':
      return replicateDeleteMarker(ctx, task, blob);
    case 'versionDelete':
      return replicateVersionDelete(ctx, task, d, blob);
  }
}
