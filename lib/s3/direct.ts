import type { ClientRequest, IncomingMessage } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { Readable } from 'node:stream';
import type { ServerSideEncryption, GetObjectCommandInput, GetObjectCommandOutput, HeadObjectCommandInput, HeadObjectCommandOutput, ListObjectVersionsCommandInput, ListObjectVersionsCommandOutput, PutObjectCommandInput, PutObjectCommandOutput, UploadPartCommandInput, UploadPartCommandOutput } from '@aws-sdk/client-s3';
import { parseVersionListing } from './listing-xml.ts';
import { encodeKeyPath, encodeRfc3986 as encode, SigV4 } from './sigv4.ts';
import { httpRequest, type HttpAgent } from '../http/node-http.ts';
import { pipeBody } from '../http/coalesced-pipe.ts';

// The copy's hot requests (GET, HEAD and PUT of one object, the upload of a part, a page of versions) on a path-style endpoint, sent without
// the SDK's middleware stack: signed by sigv4.ts (the SDK's signatures, for less garbage), over the same keep-alive agents, with
// answers and errors shaped as the SDK's (`$metadata`, `$response`, the error code as `name`). A profile
// of small copies put the SDK's per-request work (schema serde, endpoint rules, retry and checksum
// middleware) at about a third of the processor's CPU, where this path costs a few percent; every other
// request, and any input this path does not know, goes through the SDK. No retries here: the processor
// has its own, and one layer of them is enough.

export interface DirectEndpoint {
  /** The endpoint, path-style: `/<bucket>/<key>` under its path. */
  url: URL;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  agent: HttpAgent | HttpsAgent;
  requestTimeoutMs: number;
  connectionTimeoutMs: number;
}

/** An S3 error as the SDK shapes it: what `lib/s3/errors.ts` and the callers read. */
export class S3ResponseError extends Error {
  readonly $metadata: { httpStatusCode: number; requestId?: string };
  readonly $response: { statusCode: number; headers: Record<string, string | undefined> };
  readonly $fault: 'client' | 'server';
  constructor(code: string, message: string, res: IncomingMessage) {
    super(message);
    this.name = code;
    const status = res.statusCode ?? 0;
    const requestId = header(res, 'x-amz-request-id');
    this.$metadata = { httpStatusCode: status, ...(requestId !== undefined ? { requestId } : {}) };
    this.$response = { statusCode: status, headers: Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v])) };
    this.$fault = status >= 500 ? 'server' : 'client';
  }
}

/** What an answer without a body of its own (a HEAD) is called by its status, as the SDK names them. */
const STATUS_CODES: Record<number, string> = { 301: 'PermanentRedirect', 304: 'NotModified', 400: 'BadRequest', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 412: 'PreconditionFailed' };

function header(res: IncomingMessage, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
}

/** Reads an error answer's body (capped) and makes it the SDK's error: the code and message of its XML. */
async function failure(res: IncomingMessage, method: string): Promise<S3ResponseError> {
  let body = '';
  if (method !== 'HEAD') {
    for await (const chunk of res) {
      if (body.length < 16_384) body += (chunk as Buffer).toString('utf8');
    }
  } else res.resume();
  // S3 error documents are flat: <Error><Code>…</Code><Message>…</Message>…</Error>.
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1] ?? STATUS_CODES[res.statusCode ?? 0] ?? 'UnknownError';
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1] ?? code;
  return new S3ResponseError(code, message, res);
}

/** GET and HEAD answer fields (as the SDK names them) read as text, by the response header each comes from. */
const TEXT_FIELDS = [
  ['ETag', 'etag'],
  ['VersionId', 'x-amz-version-id'],
  ['ContentRange', 'content-range'],
  ['ContentType', 'content-type'],
  ['CacheControl', 'cache-control'],
  ['ContentDisposition', 'content-disposition'],
  ['ContentEncoding', 'content-encoding'],
  ['ContentLanguage', 'content-language'],
  ['ExpiresString', 'expires'],
  ['StorageClass', 'x-amz-storage-class'],
  ['ServerSideEncryption', 'x-amz-server-side-encryption'],
] as const;
/** …and those read as numbers. */
const NUMBER_FIELDS = [
  ['ContentLength', 'content-length'],
  ['TagCount', 'x-amz-tagging-count'],
  ['PartsCount', 'x-amz-mp-parts-count'],
] as const;

/** The SDK's GET and HEAD answer fields this engine reads, from the response headers. */
function objectHeaders(res: IncomingMessage) {
  const metadata: Record<string, string> = {};
  const out: Record<string, unknown> = { Metadata: metadata };
  // As the SDK: a field the answer does not carry is absent, not undefined.
  for (const [field, name] of TEXT_FIELDS) {
    const v = header(res, name);
    if (v !== undefined) out[field] = v;
  }
  for (const [field, name] of NUMBER_FIELDS) {
    const v = header(res, name);
    if (v !== undefined) out[field] = Number(v);
  }
  const lastModified = header(res, 'last-modified');
  if (lastModified !== undefined) out['LastModified'] = new Date(lastModified);
  if (header(res, 'x-amz-delete-marker') === 'true') out['DeleteMarker'] = true;
  for (const name in res.headers) {
    const value = res.headers[name];
    if (name.startsWith('x-amz-meta-') && value !== undefined) metadata[name.slice('x-amz-meta-'.length)] = Array.isArray(value) ? value.join(',') : value;
  }
  return out as Omit<HeadObjectCommandOutput, '$metadata'>;
}

const metadataOf = (res: IncomingMessage) => {
  const requestId = header(res, 'x-amz-request-id');
  return { httpStatusCode: res.statusCode ?? 0, ...(requestId !== undefined ? { requestId } : {}), attempts: 1, totalRetryDelay: 0 };
};

/** The PutObject input fields this path sends; any other field goes through the SDK. */
const PUT_FIELDS = new Set(['Bucket', 'Key', 'Body', 'ContentLength', 'Metadata', 'ContentType', 'CacheControl', 'ContentDisposition', 'ContentEncoding', 'ContentLanguage', 'Expires', 'StorageClass', 'Tagging']);
const GET_FIELDS = new Set(['Bucket', 'Key', 'VersionId', 'PartNumber']);
const PART_FIELDS = new Set(['Bucket', 'Key', 'UploadId', 'PartNumber', 'Body', 'ContentLength']);
/** ListObjectVersions input fields, by their query parameter. */
const LIST_QUERY = { Prefix: 'prefix', KeyMarker: 'key-marker', VersionIdMarker: 'version-id-marker', MaxKeys: 'max-keys' } as const;

/**
 * Requests under way per signal, destroyed together when it aborts. One listener per signal (a copy's),
 * where Node's `signal` option adds an EventTarget listener and an end-of-stream watcher to every
 * request: 3 % of the CPU of a run of small copies (`make bench --profile`).
 */
const underWay = new WeakMap<AbortSignal, Set<ClientRequest>>();

/** Node's AbortError, as its `signal` option gives. */
const abortError = (signal: AbortSignal): Error => Object.assign(new Error('The operation was aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });

/** Destroys `req` (its answer's body too, while it is read) with an AbortError once `signal` aborts. */
function bindAbort(signal: AbortSignal, req: ClientRequest): void {
  if (signal.aborted) {
    req.destroy(abortError(signal));
    return;
  }
  let requests = underWay.get(signal);
  if (requests === undefined) {
    const all = new Set<ClientRequest>();
    underWay.set(signal, (requests = all));
    signal.addEventListener('abort', () => {
      for (const r of all) r.destroy(abortError(signal));
      all.clear();
    }, { once: true });
  }
  requests.add(req);
  req.once('close', () => requests.delete(req));
}

export class DirectS3 {
  private readonly endpoint: DirectEndpoint;
  private readonly signer: SigV4;
  private readonly signal: AbortSignal | undefined;

  constructor(endpoint: DirectEndpoint, signer?: SigV4, signal?: AbortSignal) {
    this.endpoint = endpoint;
    this.signer = signer ?? new SigV4(endpoint.credentials, endpoint.region);
    this.signal = signal;
  }

  /** The same path with every request bound to `signal` (as `abortable` binds the SDK client's). */
  withSignal(signal: AbortSignal): DirectS3 {
    return new DirectS3(this.endpoint, this.signer, signal);
  }

  /** Whether this path sends `input` as the SDK would (no field it does not know, a body of known length). */
  static takesGet(input: GetObjectCommandInput | HeadObjectCommandInput): boolean {
    return Object.entries(input).every(([k, v]) => v === undefined || GET_FIELDS.has(k));
  }

  static takesPart(input: UploadPartCommandInput): boolean {
    const body = input.Body;
    const sized = body instanceof Uint8Array || (body instanceof Readable && input.ContentLength !== undefined);
    return sized && Object.entries(input).every(([k, v]) => v === undefined || PART_FIELDS.has(k));
  }

  static takesPut(input: PutObjectCommandInput): boolean {
    const body = input.Body;
    const sized = body === undefined || typeof body === 'string' || body instanceof Uint8Array || (body instanceof Readable && input.ContentLength !== undefined);
    return sized && Object.entries(input).every(([k, v]) => v === undefined || PUT_FIELDS.has(k));
  }

  static takesList(input: ListObjectVersionsCommandInput): boolean {
    return Object.entries(input).every(([k, v]) => v === undefined || k === 'Bucket' || k in LIST_QUERY);
  }

  async listVersions(input: ListObjectVersionsCommandInput): Promise<ListObjectVersionsCommandOutput> {
    const query: Record<string, string> = { versions: '' };
    for (const [field, name] of Object.entries(LIST_QUERY)) {
      const value = input[field as keyof typeof LIST_QUERY];
      if (value !== undefined) query[name] = String(value);
    }
    const res = await this.send('GET', { Bucket: input.Bucket }, {}, undefined, query);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    return { $metadata: metadataOf(res), ...parseVersionListing(Buffer.concat(chunks).toString('utf8')) };
  }

  async get(input: GetObjectCommandInput): Promise<GetObjectCommandOutput> {
    const res = await this.send('GET', input, {}, undefined);
    return { $metadata: metadataOf(res), ...objectHeaders(res), Body: res as unknown as NonNullable<GetObjectCommandOutput['Body']> };
  }

  async head(input: HeadObjectCommandInput): Promise<HeadObjectCommandOutput> {
    const res = await this.send('HEAD', input, {}, undefined);
    res.resume();
    return { $metadata: metadataOf(res), ...objectHeaders(res) };
  }

  async put(input: PutObjectCommandInput): Promise<PutObjectCommandOutput> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(input.Metadata ?? {})) headers[`x-amz-meta-${k}`] = v;
    const named: [string, string | undefined][] = [
      ['content-type', input.ContentType],
      ['cache-control', input.CacheControl],
      ['content-disposition', input.ContentDisposition],
      ['content-encoding', input.ContentEncoding],
      ['content-language', input.ContentLanguage],
      ['expires', input.Expires?.toUTCString()],
      ['x-amz-storage-class', input.StorageClass],
      ['x-amz-tagging', input.Tagging],
    ];
    for (const [k, v] of named) if (v !== undefined) headers[k] = v;
    const body = input.Body as Readable | Uint8Array | string | undefined;
    const length = input.ContentLength ?? (body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : (body as Uint8Array).byteLength);
    headers['content-length'] = String(length);
    const res = await this.send('PUT', { Bucket: input.Bucket, Key: input.Key }, headers, body ?? Buffer.alloc(0));
    res.resume();
    const etag = header(res, 'etag');
    const versionId = header(res, 'x-amz-version-id');
    const sse = header(res, 'x-amz-server-side-encryption');
    return { $metadata: metadataOf(res), ...(etag !== undefined ? { ETag: etag } : {}), ...(versionId !== undefined ? { VersionId: versionId } : {}), ...(sse !== undefined ? { ServerSideEncryption: sse as ServerSideEncryption } : {}) };
  }

  async uploadPart(input: UploadPartCommandInput): Promise<UploadPartCommandOutput> {
    const body = input.Body as Readable | Uint8Array | undefined;
    const length = input.ContentLength ?? (body instanceof Uint8Array ? body.byteLength : 0);
    const res = await this.send('PUT', input, { 'content-length': String(length) }, body ?? Buffer.alloc(0));
    res.resume();
    const etag = header(res, 'etag');
    const sse = header(res, 'x-amz-server-side-encryption');
    return { $metadata: metadataOf(res), ...(etag !== undefined ? { ETag: etag } : {}), ...(sse !== undefined ? { ServerSideEncryption: sse as ServerSideEncryption } : {}) };
  }

  /** One signed request; resolves with a 2xx answer (its body unread), rejects with the SDK-shaped error otherwise. */
  private async send(method: string, input: { Bucket?: string | undefined; Key?: string | undefined; VersionId?: string | undefined; PartNumber?: number | undefined; UploadId?: string | undefined }, extra: Record<string, string>, body: Readable | Uint8Array | string | undefined, query: Record<string, string> = {}): Promise<IncomingMessage> {
    const { url, agent } = this.endpoint;
    if (input.PartNumber !== undefined) query['partNumber'] = String(input.PartNumber);
    if (input.VersionId !== undefined) query['versionId'] = input.VersionId;
    if (input.UploadId !== undefined) query['uploadId'] = input.UploadId;
    const base = url.pathname.replace(/\/+$/, '');
    // A request of the bucket itself (a listing) has no key, nor a '/' after the bucket.
    const path = `${base}/${encode(input.Bucket ?? '')}${input.Key !== undefined ? `/${encodeKeyPath(input.Key)}` : ''}`;
    const headers = this.signer.sign({ method, path, query, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...extra } });
    const search = Object.keys(query)
      .sort()
      .map((k) => (query[k] === '' ? encode(k) : `${encode(k)}=${encode(query[k] ?? '')}`))
      .join('&');
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      const req = send({ host: url.hostname, port: url.port, path: search === '' ? path : `${path}?${search}`, method, headers, agent }, resolve);
      req.on('error', reject);
      if (this.signal !== undefined) bindAbort(this.signal, req);
      const timeout = (what: string): Error => Object.assign(new Error(`${what} timed out`), { name: 'TimeoutError' });
      req.setTimeout(this.endpoint.requestTimeoutMs, () => req.destroy(timeout('request')));
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => req.destroy(timeout('connection')), this.endpoint.connectionTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      if (body instanceof Readable) {
        body.on('error', (err) => req.destroy(err));
        // Its chunks are freed once sent: a streamed body here is an answer read for this request alone.
        pipeBody(body, req, Number(extra['content-length'] ?? 0), true);
      } else req.end(body);
    });
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    throw await failure(res, method);
  }
}
