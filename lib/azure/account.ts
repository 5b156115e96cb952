import { Agent as HttpsAgent } from 'node:https';
import { createRequire } from 'node:module';
import type { BlobServiceClient, StoragePipelineOptions } from '@azure/storage-blob';
import { registerSecret } from '../log/redact.ts';
import { HttpAgent } from '../http/node-http.ts';

// The Azure SDK (about 150 ms of module loading) is loaded on the first account, not by every process
// that could have one: synchronously, so that making a client stays synchronous as an S3 client's is.
let sdk: typeof import('@azure/storage-blob') | undefined;
const azure = (): typeof import('@azure/storage-blob') => (sdk ??= createRequire(import.meta.url)('@azure/storage-blob') as typeof import('@azure/storage-blob'));

/** An account key, or a SAS token (its query string, with or without the leading `?`). */
export type AzureCredentials = { accountKey: string } | { sasToken: string };

/** One Azure Blob Storage account, as a destination writes to it. */
export interface BlobAccount {
  readonly kind: 'azure';
  name: string;
  /** The blob service URL, without credentials (a SAS token is kept out of it). */
  url: string;
  service: BlobServiceClient;
}

export interface BlobAccountOptions {
  accountName: string;
  /** Default: https://<accountName>.blob.core.windows.net. Azurite: http://host:port/<accountName>. */
  endpoint?: string;
  credentials: AzureCredentials;
  /** Keep-alive sockets: the cap on concurrent requests to the account. */
  maxSockets?: number;
  tls?: { insecureSkipVerify?: boolean; ca?: string };
  /** Per request (the SDK's own retries are off: the processor retries whole copies). */
  requestTimeoutMs?: number;
}

export const isBlobAccount = (x: unknown): x is BlobAccount => (x as BlobAccount | null)?.kind === 'azure';

export function createBlobAccount(o: BlobAccountOptions): BlobAccount {
  const { AnonymousCredential, BlobServiceClient, newPipeline, StorageSharedKeyCredential } = azure();
  const url = (o.endpoint ?? `https://${o.accountName}.blob.core.windows.net`).replace(/\/+$/, '');
  const maxSockets = o.maxSockets ?? 50;
  const agent = url.startsWith('https:')
    ? new HttpsAgent({ keepAlive: true, maxSockets, rejectUnauthorized: o.tls?.insecureSkipVerify !== true, ...(o.tls?.ca !== undefined ? { ca: o.tls.ca } : {}) })
    : new HttpAgent({ keepAlive: true, maxSockets });
  let credential: InstanceType<typeof StorageSharedKeyCredential> | InstanceType<typeof AnonymousCredential>;
  let serviceUrl = url;
  if ('accountKey' in o.credentials) {
    registerSecret(o.credentials.accountKey);
    credential = new StorageSharedKeyCredential(o.accountName, o.credentials.accountKey);
  } else {
    const sas = o.credentials.sasToken.replace(/^\?/, '');
    registerSecret(sas);
    // Its signature alone too: an error may quote the URL's sig parameter, URL-encoded or not.
    const sig = new URLSearchParams(sas).get('sig') ?? undefined;
    registerSecret(sig);
    registerSecret(sig !== undefined ? encodeURIComponent(sig) : undefined);
    credential = new AnonymousCredential();
    serviceUrl = `${url}?${sas}`;
  }
  // `agent` is not in the type, yet the pipeline hands its options to @azure/core-rest-pipeline, whose
  // agent policy puts every request on this account's sockets (the default pool has no private CA, no cap).
  const options: StoragePipelineOptions & { agent: HttpAgent } = { agent, retryOptions: { maxTries: 1, tryTimeoutInMs: o.requestTimeoutMs ?? 120_000 } };
  const pipeline = newPipeline(credential, options);
  return { kind: 'azure', name: o.accountName, url, service: new BlobServiceClient(serviceUrl, pipeline) };
}
