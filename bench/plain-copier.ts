// The ceiling of `make bench`: the least a copier can do per object, a GET streamed into a PUT, `N` in
// flight, over keep-alive connections, requests signed by backbeat's SigV4 signer (unsigned payload:
// plain http on loopback). No checks, no retries, no status: what the servers allow, not a product.
// Run as its own process by bench/contenders.ts, with the job in BENCH_COPY (JSON).
// With `parts`, a multipart object is copied part by part instead (each part's GET streamed into an
// UploadPart, two parts in flight per object): the least a copier can do that keeps the source's part
// layout, and so its ETag, as backbeat does.
import { Agent, request, type IncomingMessage } from 'node:http';
import { encodeKeyPath, encodeRfc3986, SigV4 } from '../lib/s3/sigv4.ts';
import { pipeBody } from '../lib/http/coalesced-pipe.ts';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';

interface Endpoint {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  bucket: string;
}
const job = JSON.parse(process.env['BENCH_COPY'] ?? '{}') as { source: Endpoint; destination: Endpoint; concurrency: number; parts?: boolean };

// backbeat's own signer, which derives the day's key once (four HMACs a request otherwise).
const signers = new Map<Endpoint, { signer: SigV4; host: string }>();
/** A request's path (with its query, if any) and signed headers. */
function signed(e: Endpoint, method: string, key: string, extra: Record<string, string>, query: Record<string, string> = {}): { path: string; headers: Record<string, string> } {
  let s = signers.get(e);
  if (s === undefined) signers.set(e, (s = { signer: new SigV4(e, e.region), host: new URL(e.endpoint).host }));
  const path = `/${e.bucket}/${encodeKeyPath(key)}`;
  const headers = s.signer.sign({ method, path, query, headers: { host: s.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...extra } });
  const search = Object.keys(query)
    .map((k) => `${encodeRfc3986(k)}=${encodeRfc3986(query[k] ?? '')}`)
    .join('&');
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
    // Written as backbeat writes a body: a large one a megabyte at a time.
    pipeBody(body, req, Number(length), true);
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
