import { redactString } from '../log/redact.ts';

// Which S3 failures are worth retrying. Three classes, because they call for different waits:
// - unavailable: the endpoint cannot be reached at all; nothing is wrong with the object, so wait for it
//   as long as it takes (the backlog stays queued, as S3 keeps such objects PENDING);
// - transient: the endpoint answered but failed this request (5xx, throttling); retry a bounded number
//   of times with backoff;
// - permanent: retrying cannot help (access denied, missing bucket, bad request); fail fast with the reason.

export type ErrorClass = 'unavailable' | 'transient' | 'permanent';

/** An S3 SDK error, or an Azure SDK one (a RestError: `statusCode`, and `code` from x-ms-error-code). */
interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  statusCode?: number;
  cause?: unknown;
}

/** What a destination refuses by its nature, before any request (a blob index tag S3 allows): no retry helps. */
export class Refused extends Error {
  override name = 'Refused';
}

const statusOf = (e: SdkError | null): number | undefined => e?.$metadata?.httpStatusCode ?? e?.statusCode;

// A server still starting (MinIO says XMinioServerNotInitialized) answers, but is not there yet either.
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE', 'ECONNABORTED', 'TimeoutError', 'RequestTimeout', 'XMinioServerNotInitialized']);
const PERMANENT = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'NoSuchBucket',
  'InvalidBucketName',
  'InvalidArgument',
  'InvalidRequest',
  'InvalidStorageClass',
  'EntityTooLarge',
  'KeyTooLongError',
  'MetadataTooLarge',
  'MethodNotAllowed',
  'NotImplemented',
  'AuthorizationHeaderMalformed',
  'InvalidTag',
  'MalformedXML',
  'ContainerNotFound',
  'AuthenticationFailed',
  'AuthorizationFailure',
  'AuthorizationPermissionMismatch',
]);
/** Conditions this engine sets on a write, unmet because another writer came first: read again, retry. */
const RACED = new Set(['ConditionNotMet', 'BlobAlreadyExists', 'PreconditionFailed']);

function codeOf(err: unknown): string {
  const e = err as SdkError | null;
  return e?.code ?? e?.name ?? 'Error';
}

export function classify(err: unknown): ErrorClass {
  if (err instanceof Refused) return 'permanent';
  const e = err as SdkError | null;
  const status = statusOf(e);
  const codes = [codeOf(err), codeOf(e?.cause)];
  if (codes.some((c) => UNREACHABLE.has(c))) return 'unavailable';
  if (status === undefined) {
    // No HTTP answer at all: a socket-level failure.
    return /socket hang up|connect|network|timed? ?out/i.test(e?.message ?? '') ? 'unavailable' : 'transient';
  }
  if (codes.some((c) => PERMANENT.has(c))) return 'permanent';
  if (codes.some((c) => RACED.has(c))) return 'transient';
  if (status === 408 || status === 429 || status >= 500) return 'transient';
  return status >= 400 ? 'permanent' : 'transient';
}

/** The object or version does not exist (a missing bucket is not that: it is a permanent error). */
/**
 * The delete marker a 404 answer names (`x-amz-delete-marker: true`, with its version id), read from the
 * error's raw response; undefined when it names none (a key never written, or a server that does not say).
 */
export function deleteMarkerOf(err: unknown): { versionId: string } | undefined {
  const headers = (err as { $response?: { headers?: Record<string, string | undefined> } } | null)?.$response?.headers ?? {};
  return headers['x-amz-delete-marker'] === 'true' ? { versionId: headers['x-amz-version-id'] ?? 'null' } : undefined;
}

export function isNotFound(err: unknown): boolean {
  const code = codeOf(err);
  if (code === 'NoSuchBucket' || code === 'ContainerNotFound') return false;
  return statusOf(err as SdkError | null) === 404 || ['NoSuchKey', 'NoSuchVersion', 'NotFound', 'BlobNotFound'].includes(code);
}

/** A short reason for a status or a log line: the error code and message, never request details. */
export function reasonOf(err: unknown): string {
  const e = err as SdkError | null;
  const code = codeOf(err);
  const status = statusOf(e);
  const message = (e?.message ?? '').split('\n')[0]?.slice(0, 300) ?? '';
  return redactString(`${code}${status !== undefined ? ` (HTTP ${status})` : ''}${message !== '' && message !== code ? `: ${message}` : ''}`);
}
