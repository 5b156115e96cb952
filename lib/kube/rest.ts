import type { IncomingMessage, RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { HttpAgent, httpRequest } from '../http/node-http.ts';

// A small JSON client for the Kubernetes REST API, authenticated from a KubeConfig. The generated
// clients hide patch content types and date handling; the operator needs exact control of both, and of
// the watch stream (to notice a silent stall), so it speaks REST directly.

export class KubeError extends Error {
  override name = 'KubeError';
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.code = code;
    this.reason = reason;
  }
}

export type Json = Record<string, unknown>;

export interface KubeObject extends Json {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; generation?: number; resourceVersion?: string; deletionTimestamp?: string; finalizers?: string[]; labels?: Record<string, string>; annotations?: Record<string, string>; ownerReferences?: Json[]; creationTimestamp?: string };
}

export interface KubeRest {
  get<T = KubeObject>(path: string): Promise<T>;
  /** The object, or undefined when it does not exist. */
  find<T = KubeObject>(path: string): Promise<T | undefined>;
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- callers name the collection's item type
  list<T = KubeObject>(path: string): Promise<{ items: T[]; resourceVersion: string }>;
  create<T = KubeObject>(path: string, body: unknown): Promise<T>;
  replace<T = KubeObject>(path: string, body: unknown): Promise<T>;
  /** A JSON merge patch (RFC 7386). */
  patch<T = KubeObject>(path: string, body: unknown): Promise<T>;
  /**
   * Server-side apply as `fieldManager`, taking over fields another manager set: no resourceVersion, so
   * a controller's concurrent status update (a Deployment mid-rollout) causes no conflict.
   */
  apply<T = KubeObject>(path: string, body: unknown, fieldManager: string): Promise<T>;
  delete(path: string): Promise<void>;
  /** Opens a watch stream; each line is one event. */
  stream(path: string): Promise<IncomingMessage>;
}

export function kubeRest(config: KubeConfig): KubeRest {
  const cluster = config.getCurrentCluster();
  if (cluster === null) throw new Error('no current cluster in the kubeconfig');
  const base = new URL(cluster.server);
  // Connections are kept and reused: a TLS handshake per call cost the operator and the API server more
  // CPU than the calls themselves when thousands of rules were written at once. client-node's own agent
  // (set by applyToHTTPSOptions) has no keep-alive, so ours replaces it, except through a proxy; the TLS
  // settings travel in each call's options, and Node pools connections by them.
  const agent = base.protocol === 'https:' ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
  const proxied = cluster.proxyUrl !== undefined;

  /** `timeoutMs`: how long the connection may stay silent (0 for a watch, whose stall the watcher detects). */
  async function open(method: string, path: string, body?: unknown, contentType = 'application/json', timeoutMs = 15_000): Promise<IncomingMessage> {
    const options: RequestOptions & { headers: Record<string, string> } = {
      method,
      hostname: base.hostname,
      port: base.port,
      path: `${base.pathname.replace(/\/$/, '')}${path}`,
      headers: { accept: 'application/json' },
    };
    await config.applyToHTTPSOptions(options);
    if (!proxied) options.agent = agent;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) options.headers['content-type'] = contentType;
    const send = base.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(options, resolve);
      req.on('error', reject);
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () => {
          req.destroy(new Error(`${method} ${path}: no answer within ${String(timeoutMs)} ms`));
        });
      }
      req.end(payload);
    });
  }

  async function call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const res = await open(method, path, body, contentType);
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const code = res.statusCode ?? 0;
    if (code >= 200 && code < 300) return (text === '' ? {} : JSON.parse(text)) as T;
    let status: { reason?: string; message?: string } = {};
    try {
      status = JSON.parse(text) as typeof status;
    } catch {
      // not a Status object
    }
    throw new KubeError(code, status.reason ?? 'Unknown', `${method} ${path}: ${String(code)} ${status.message ?? text.slice(0, 200)}`);
  }

  return {
    get: (path) => call('GET', path),
    async find(path) {
      try {
        return await call('GET', path);
      } catch (err) {
        if (err instanceof KubeError && err.code === 404) return undefined;
        throw err;
      }
    },
    async list(path) {
      const answer = await call<{ items: never[]; metadata: { resourceVersion: string } }>('GET', path);
      return { items: answer.items, resourceVersion: answer.metadata.resourceVersion };
    },
    create: (path, body) => call('POST', path, body),
    replace: (path, body) => call('PUT', path, body),
    patch: (path, body) => call('PATCH', path, body, 'application/merge-patch+json'),
    // JSON is YAML: the apply body needs no YAML encoder.
    apply: (path, body, fieldManager) => call('PATCH', `${path}?fieldManager=${encodeURIComponent(fieldManager)}&force=true`, body, 'application/apply-patch+yaml'),
    async delete(path) {
      try {
        await call('DELETE', path);
      } catch (err) {
        if (!(err instanceof KubeError && err.code === 404)) throw err;
      }
    },
    async stream(path) {
      const res = await open('GET', path, undefined, undefined, 0);
      if (res.statusCode !== 200) {
        res.resume();
        throw new KubeError(res.statusCode ?? 0, 'WatchFailed', `watch ${path}: HTTP ${String(res.statusCode)}`);
      }
      return res;
    },
  };
}
