import type { Destination } from '../config/schema.ts';

// What Azure Blob Storage accepts where S3 is wider: container names, metadata names, index tags.

/** Azure container names: 3–63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit. */
const CONTAINER = /^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/;

/** Why a rule's destination cannot be written to a blob container (undefined when it can). */
export function blobDestinationProblem(d: Pick<Destination, 'bucket' | 'storageClass' | 'serverSideEncryption'>): { path: string; message: string } | undefined {
  if (!CONTAINER.test(d.bucket)) return { path: 'bucket', message: `"${d.bucket}" is not an Azure container name (3–63 lowercase letters, digits and single hyphens; no dots)` };
  if (d.storageClass !== undefined) return { path: 'storageClass', message: 'a type: azure destination has no S3 storage classes: blobs take the account\'s default access tier' };
  if (d.serverSideEncryption !== undefined) return { path: 'serverSideEncryption', message: 'a type: azure destination is encrypted at rest by the account itself: leave serverSideEncryption out' };
  return undefined;
}

/**
 * A blob metadata name for an S3 user metadata name: Azure takes C# identifiers only, so each other
 * character becomes `_` and a leading digit gets one before it (`content-owner` → `content_owner`).
 */
export function blobMetadataName(name: string): string {
  const replaced = name.replace(/[^A-Za-z0-9_]/g, '_');
  return /^[0-9]/.test(replaced) ? `_${replaced}` : replaced;
}

/** Characters blob index tags allow in keys and values (S3 tags allow more). */
const TAG_TEXT = /^[A-Za-z0-9 +\-.:=_/]*$/;

/** Why a tag set cannot be blob index tags (undefined when it can). */
export function blobTagsProblem(tags: { Key: string; Value: string }[]): string | undefined {
  const bad = tags.find((t) => !TAG_TEXT.test(t.Key) || !TAG_TEXT.test(t.Value));
  return bad === undefined ? undefined : `tag "${bad.Key}" has characters blob index tags refuse (they take letters, digits, space and + - . : = _ /)`;
}
