import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { registerSecret } from '../log/redact.ts';
import { DirectS3 } from './direct.ts';
import { HttpAgent } from '../http/node-http.ts';

/**
 * Some S3-compatible servers reject the CRC checksums that recent SDKs send by default: `whenRequired`
 * sends and validates checksums only where the operation demands one.
 */
export type ChecksumMode = 'whenRequired' | 'whenSupported';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3EndpointOptions {
  /** Omit for AWS itself; an http(s) URL for any S3-compatible server. */
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  credentials: S3Credentials;
  checksumMode?: ChecksumMode;
  /** Keep-alive sockets per client: the cap on concurrent requests to this endpoint. */
  maxSockets?: number;
  /** `ca`: the PEM certificates to trust instead of the system's (a private CA). */
  tls?: { insecureSkipVerify?: boolean; ca?: string };
  requestTimeoutMs?: number;
  connectionTimeoutMs?: number;
  maxAttempts?: number;
}

const SILENT = { trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** The client's direct path for its hot object requests (direct.ts), where it has one. */
const DIRECT = Symbol('direct S3 path');

export function directOf(client: S3Client): DirectS3 | undefined {
  return (client as S3Client & { [DIRECT]?: DirectS3 })[DIRECT];
}

export function createS3Client(options: S3EndpointOptions): S3Client {
  registerSecret(options.credentials.secretAccessKey);
  registerSecret(options.credentials.sessionToken);
  const maxSockets = options.maxSockets ?? 50;
  const httpAgent = new HttpAgent({ keepAlive: true, maxSockets });
  const httpsAgent = new HttpsAgent({
    keepAlive: true,
    maxSockets,
    rejectUnauthorized: options.tls?.insecureSkipVerify !== true,
    ...(options.tls?.ca !== undefined ? { ca: options.tls.ca } : {}),
  });
  const connectionTimeoutMs = options.connectionTimeoutMs ?? 10_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
  const handler = new NodeHttpHandler({ httpAgent, httpsAgent, connectionTimeout: connectionTimeoutMs, requestTimeout: requestTimeoutMs });
  const checksum = (options.checksumMode ?? 'whenRequired') === 'whenRequired' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED';
  const client = new S3Client({
    region: options.region ?? 'us-east-1',
    ...(options.endpoint !== undefined ? { endpoint: options.endpoint } : {}),
    forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
    // A copy: the SDK annotates the object it is given (e.g. `$source`), which must not leak back to the caller.
    credentials: { ...options.credentials },
    requestChecksumCalculation: checksum,
    responseChecksumValidation: checksum,
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: handler,
    // The SDK would write some failures to the console; callers log them, with their context, instead.
    logger: SILENT,
  });
  // It would still build a redacted copy of every request and response for that silent logger: about
  // 7 % of the SDK's CPU time in a profile of small copies.
  client.middlewareStack.remove('loggerMiddleware');
  // Path-style endpoints only: AWS itself (virtual hosts, its endpoint rules) stays with the SDK.
  if (options.endpoint !== undefined && (options.forcePathStyle ?? true)) {
    const url = new URL(options.endpoint);
    const direct = new DirectS3({ url, region: options.region ?? 'us-east-1', credentials: { ...options.credentials }, agent: url.protocol === 'https:' ? httpsAgent : httpAgent, requestTimeoutMs, connectionTimeoutMs });
    // Configurable: `abortable`'s proxy answers it with a copy bound to its signal.
    Object.defineProperty(client, DIRECT, { value: direct, configurable: true });
  }
  return client;
}

/**
 * The same client with every request bound to `signal`: once it aborts, requests under way reject
 * (an AbortError) and new ones fail at once. The connection pool stays shared.
 */
export function abortable(client: S3Client, signal: AbortSignal): S3Client {
  const direct = directOf(client)?.withSignal(signal);
  return new Proxy(client, {
    get(target, prop, receiver) {
      if (prop === DIRECT) return direct;
      if (prop !== 'send') return Reflect.get(target, prop, receiver) as unknown;
      return (command: Parameters<S3Client['send']>[0], options?: Parameters<S3Client['send']>[1]) => target.send(command, { ...(typeof options === 'object' ? options : {}), abortSignal: signal });
    },
  });
}
