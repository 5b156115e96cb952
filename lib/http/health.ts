import { once } from 'node:events';
import type { IncomingMessage, RequestListener, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer } from './node-http.ts';

// What every worker process and the operator serve: /healthz, /readyz and /metrics. The status role
// serves them beside its API (workers/status/api.ts); the others on this server alone.

/** What every worker process serves: metrics and probes. */
export interface HealthContext {
  /** Prometheus exposition of the process's metrics, refreshed at each scrape. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** True once every role has started, false again while stopping. */
  ready(): boolean;
  /** What /readyz adds to its answer (e.g. the status partitions being restored). */
  readiness?(): Record<string, unknown>;
}

/**
 * The request's path and query; undefined for a target that is not a path (`*`, an absolute URL) or that
 * no URL parser takes (`//`): a thrown parse error would end the process (healthServer has no catch).
 */
export function requestUrl(req: IncomingMessage): URL | undefined {
  const target = req.url ?? '';
  if (!target.startsWith('/')) return undefined;
  try {
    return new URL(`http://localhost${target}`);
  } catch {
    return undefined;
  }
}

/** /healthz, /readyz and /metrics (GET and HEAD); false for any other path. */
export function healthRoute(ctx: HealthContext, req: IncomingMessage, url: URL, res: ServerResponse, send: (code: number, body: unknown) => void, fail: (err: unknown) => void): boolean {
  if (!['/healthz', '/readyz', '/metrics'].includes(url.pathname)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    send(405, { error: `${req.method ?? ''} ${url.pathname} is not served` });
    return true;
  }
  if (url.pathname === '/healthz') {
    send(200, { ok: true });
    return true;
  }
  if (url.pathname === '/readyz') {
    const ready = ctx.ready();
    send(ready ? 200 : 503, { ready, ...ctx.readiness?.() });
    return true;
  }
  ctx
    .metrics()
    .then(({ contentType, body }) => {
      res.writeHead(200, { 'content-type': contentType });
      res.end(body);
    })
    .catch(fail);
  return true;
}

/** The server of a worker role without the status API: metrics and probes, and what `rest` serves (the webhook receiver). */
export function healthServer(ctx: HealthContext, rest?: RequestListener): Server {
  return createServer((req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const url = requestUrl(req);
    if (url === undefined) send(400, { error: 'the request target must be a path' });
    else if (healthRoute(ctx, req, url, res, send, () => {
      send(500, { error: 'internal error' });
    })) return;
    else if (rest !== undefined) rest(req, res);
    else send(404, { error: `no such endpoint: ${url.pathname}` });
  });
}

/** Starts `server` on `host:port` (0: a free port) and gives its base URL once it listens. */
export async function listenOn(server: Server, port: number, host: string): Promise<string> {
  server.listen(port, host);
  await once(server, 'listening');
  const { address, port: bound } = server.address() as AddressInfo;
  return `http://${address}:${String(bound)}`;
}
