// The ceiling of `make bench`: the least a copier can do per object, a GET streamed into a PUT, `N` in
// flight, over keep-alive connections, requests signed by hand (SigV4, unsigned payload: plain http on
// loopback). No checks, no retries, no status: what the servers allow, not a product. Run as its own
// process by bench/contenders.ts, with the job in BENCH_COPY (JSON).
// With `parts`, a multipart object is copied part by part instead (each part's GET streamed into an
// UploadPart, two parts in flight per object): the least a copier can do that keeps the source's part
// layout, and so its ETag, as backbeat does.
import { createHash, createHmac } from 'node:crypto';
import { Agent, request, type IncomingMessage } from 'node:http';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';

interface Endpoint {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}
const job = JSON.parse(process.env['BENCH_COPY'] ?? '{}') as { source: Endpoint; destination: Endpoint; concurrency: number; parts?: boolean };

const hmac = (key: Buffer | string, text: string): Buffer => createHmac('sha256', key).update(text).digest();
const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
/** RFC 3986 encoding of each path segment, as SigV4 wants it. */
const encode = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const encodePath = (key: string): string => key.split('/').map(encode).join('/');

/** A request's path (with its query, if any) and signed headers. */
function signed(e: Endpoint, method: string, key: string, extra: Record<string, string>, query: Record<string, string> = {}): { path: string; headers: Record<string, string> } {
  const host = new URL(e.endpoint).host;
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const path = `/${e.bucket}/${encodePath(key)}`;
  const search = Object.keys(query)
    .sort()
    .map((k) => `${encode(k)}=${encode(query[k] ?? '')}`)
    .join('&');
  const headers: Record<string, string> = { host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'x-amz-date': amzDate, ...extra };
  const names = Object.keys(headers).map((h) => h.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  const canonical = [method, path, search, ...names.map((n) => `${n}:${String(lower[n]).trim()}`), '', names.join(';'), 'UNSIGNED-PAYLOAD'].join('\n');
  const scope = `${day}/${e.region}/s3/aws4_request`;
  const key4 = hmac(hmac(hmac(hmac(`AWS4${e.secretAccessKey}`, day), e.region), 's3'), 'aws4_request');
  const signature = createHmac('sha256', key4).update(['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n')).digest('hex');
  headers['authorization'] = `AWS4-HMAC-SHA256 Credential=${e.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return { path: search === '' ? path : `${path}?${search}`, headers };
}

const agents = { source: new Agent({ keepAlive: true, maxSockets: job.concurrency }), destination: new Agent({ keepAlive: true, maxSockets: job.concurrency }) };

function get(key: string, part?: number): Promise<IncomingMessage> {
  const { path, headers } = signed(job.source, 'GET', key, {}, part !== undefined ? { partNumber: String(part) } : {});
  const url = new URL(job.source.endpoint);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: 'GET', headers, agent: agents.source }, (res) => {
      if (res.statusCode === 200 || (part !== undefined && res.statusCode === 206)) resolve(res);
      else reject(new Error(`GET ${key}: HTTP ${String(res.statusCode)}`));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A PUT of `body` (the object, or with `query` a part of an upload); resolves with the ETag. */
function put(key: string, body: IncomingMessage, query: Record<string, string> = {}): Promise<string> {
  const length = body.headers['content-length'] ?? '0';
  const { path, headers } = signed(job.destination, 'PUT', key, { 'content-length': length }, query);
  const url = new URL(job.destination.endpoint);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: 'PUT', headers, agent: agents.destination }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(String(res.headers.etag)) : reject(new Error(`PUT ${key}: HTTP ${String(res.statusCode)}`))));
    });
    req.on('error', reject);
    body.pipe(req);
  });
}

const lister = new S3Client({ endpoint: job.source.endpoint, region: job.source.region, forcePathStyle: true, credentials: job.source });
const uploads = new S3Client({ endpoint: job.destination.endpoint, region: job.destination.region, forcePathStyle: true, credentials: job.destination });

/** Part by part, from the part count its first part's GET reports; a single-part object as one PUT. */
async function copyParts(key: string): Promise<void> {
  const first = await get(key, 1);
  const count = Number(first.headers['x-amz-mp-parts-count'] ?? '1');
  if (count <= 1) {
    await put(key, first);
    return;
  }
  const target = { Bucket: job.destination.bucket, Key: key };
  const { UploadId: uploadId = '' } = await uploads.send(new CreateMultipartUploadCommand(target));
  const etags: string[] = [];
  let next = 1;
  await Promise.all(
    [0, 1].map(async () => {
      for (let n = next++; n <= count; n = next++) etags[n - 1] = await put(key, n === 1 ? first : await get(key, n), { partNumber: String(n), uploadId });
    }),
  );
  await uploads.send(new CompleteMultipartUploadCommand({ ...target, UploadId: uploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ PartNumber: i + 1, ETag })) } }));
}
const keys: string[] = [];
let token: string | undefined;
do {
  const page = await lister.send(new ListObjectsV2Command({ Bucket: job.source.bucket, ...(token !== undefined ? { ContinuationToken: token } : {}) }));
  keys.push(...(page.Contents ?? []).map((o) => o.Key ?? ''));
  token = page.NextContinuationToken;
} while (token !== undefined);

let next = 0;
await Promise.all(
  Array.from({ length: job.concurrency }, async () => {
    while (next < keys.length) {
      const key = keys[next++] ?? '';
      if (job.parts === true) await copyParts(key);
      else await put(key, await get(key));
    }
  }),
);
agents.source.destroy();
agents.destination.destroy();
