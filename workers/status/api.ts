import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { redactString } from '../../lib/log/redact.ts';
import type { PauseState } from '../messages.ts';
import type { FailedEntry, StatusProcessor } from './status.ts';

export interface DestinationControls {
  /** Records a pause state durably; processors of that location follow it. */
  set(state: PauseState): Promise<void>;
  /** The pause state of every destination location, as the processors apply it. */
  states(): { location: string; paused: boolean; until?: string }[];
}

/** What every worker process serves: metrics and probes. */
export interface HealthContext {
  /** Prometheus exposition of the process's metrics, refreshed at each scrape. */
  metrics(): Promise<{ contentType: string; body: string }>;
  /** True once every role has started, false again while stopping. */
  ready(): boolean;
}

export interface ApiContext extends HealthContext {
  status: StatusProcessor;
  /** Destination ids (`location/bucket`) of the configuration: selectors are checked against them. */
  destinations: string[];
  controls: DestinationControls;
  /** Queues the existing objects of a rule; undefined when no such rule exists. */
  backfill(rule: string): Promise<number> | undefined;
  rules: string[];
}

class BadRequest extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

async function jsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  if (chunks.length === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new BadRequest(400, 'the request body must be a JSON object');
}

/** A destination selector: a destination id (`location/bucket`) or a location (all its buckets). */
function destinationFilter(ctx: ApiContext, selector: string): (id: string) => boolean {
  const matches = (id: string): boolean => id === selector || id.startsWith(`${selector}/`);
  if (!ctx.destinations.some(matches)) {
    throw new BadRequest(404, `unknown destination "${selector}" (known: ${ctx.destinations.join(', ') || 'none'})`);
  }
  return matches;
}

function pauseRequest(ctx: ApiContext, location: string, action: string, body: Record<string, unknown>): PauseState {
  const locations = [...new Set(ctx.destinations.map((d) => d.split('/')[0] ?? ''))];
  if (!locations.includes(location)) throw new BadRequest(404, `unknown destination location "${location}" (known: ${locations.join(', ') || 'none'})`);
  const at = new Date().toISOString();
  if (action === 'resume') return { location, paused: false, at };
  const { until } = body;
  if (until === undefined) return { location, paused: true, at };
  if (typeof until !== 'string' || Number.isNaN(Date.parse(until))) throw new BadRequest(400, `"until" must be a time (ISO 8601), got ${JSON.stringify(until)}`);
  if (Date.parse(until) <= Date.now()) throw new BadRequest(400, `"until" must be in the future, got ${until}`);
  return { location, paused: true, until: new Date(until).toISOString(), at };
}

/** The failed entries a retry request selects: { all: true } | { destination } | { object, versionId? }. */
function selectFailed(ctx: ApiContext, body: Record<string, unknown>): FailedEntry[] {
  const { all, destination, object, versionId } = body;
  const given = [all === true, typeof destination === 'string', typeof object === 'string'].filter(Boolean).length;
  if (given !== 1) throw new BadRequest(400, 'select exactly one of: all, a destination, an object');
  if (typeof destination === 'string') return ctx.status.failed(destinationFilter(ctx, destination));
  if (typeof object === 'string') {
    const m = /^([^/]+)\/([^/]+)\/(.+)$/s.exec(object);
    if (m === null) throw new BadRequest(400, `an object is <location>/<bucket>/<key>, got "${object}"`);
    const [, location, bucket, key] = m;
    const selected = ctx.status
      .failed()
      .filter((e) => e.object.location === location && e.object.bucket === bucket && e.object.key === key && (typeof versionId !== 'string' || e.object.versionId === versionId));
    if (selected.length === 0) throw new BadRequest(404, `no failed replication for ${object}${typeof versionId === 'string' ? ` version ${versionId}` : ''}`);
    return selected;
  }
  return ctx.status.failed();
}

/**
 * HTTP API of the status processor (what the CLI asks):
 *   GET  /v1/objects/<location>/<bucket>/<key>[?versionId=V]  → { versions: ObjectStatus[] } or 404
 *   GET  /v1/failed[?destination=D]                           → { failed: FailedEntry[] }
 *   POST /v1/failed/retry  { all: true } | { destination } | { object, versionId? }  → { retried: n }
 *   GET  /v1/destinations                                     → pause state of each destination location
 *   POST /v1/destinations/<location>/pause  { until? }  and  /resume
 *   POST /v1/rules/<rule>/backfill                            → { queued: n } object versions
 *   GET  /v1/summary                                          → object versions per state
 *   GET  /metrics                                             → Prometheus metrics
 *   GET  /healthz                                             → 200 while the process serves
 *   GET  /readyz                                              → 200 once every role runs, 503 while stopping
 */
export function statusServer(ctx: ApiContext): Server {
  return createServer((req, res) => {
    try {
      route(ctx, req, res);
    } catch (err) {
      // e.g. a malformed percent-encoding: the request is bad, the process goes on.
      res.writeHead(err instanceof URIError ? 400 : 500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: err instanceof URIError ? 'malformed URL encoding' : 'internal error' }));
    }
  });
}

function route(ctx: ApiContext, req: IncomingMessage, res: ServerResponse): void {
  const { status } = ctx;
  const send = (code: number, body: unknown): void => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const url = new URL(req.url ?? '/', 'http://localhost');
  const fail = (err: unknown): void => {
    if (err instanceof BadRequest) send(err.code, { error: err.message });
    else send(500, { error: err instanceof Error ? redactString(err.message) : 'internal error' });
  };
  const control = /^\/v1\/destinations\/([^/]+)\/(pause|resume)$/.exec(url.pathname);
  if (req.method === 'POST' && control !== null) {
    jsonBody(req)
      .then(async (body) => {
        const state = pauseRequest(ctx, decodeURIComponent(control[1] ?? ''), control[2] ?? '', body);
        await ctx.controls.set(state);
        send(200, state);
      })
      .catch(fail);
    return;
  }
  const backfill = /^\/v1\/rules\/([^/]+)\/backfill$/.exec(url.pathname);
  if (req.method === 'POST' && backfill !== null) {
    const rule = decodeURIComponent(backfill[1] ?? '');
    const queued = ctx.backfill(rule);
    if (queued === undefined) {
      send(404, { error: `unknown rule "${rule}" (known: ${ctx.rules.join(', ') || 'none'})` });
      return;
    }
    queued.then((n) => {
      send(200, { rule, queued: n });
    }, fail);
    return;
  }
  if (req.method === 'POST' && url.pathname === '/v1/failed/retry') {
    jsonBody(req)
      .then((body) => status.retry(selectFailed(ctx, body)))
      .then((retried) => {
        send(200, { retried });
      })
      .catch(fail);
    return;
  }
  if (req.method !== 'GET') {
    send(405, { error: `${req.method ?? ''} ${url.pathname} is not served` });
    return;
  }
  if (url.pathname === '/v1/destinations') {
    send(200, { destinations: ctx.controls.states() });
    return;
  }
  if (url.pathname === '/v1/failed') {
    try {
      const d = url.searchParams.get('destination');
      send(200, { failed: status.failed(d === null ? undefined : destinationFilter(ctx, d)) });
    } catch (err) {
      fail(err);
    }
    return;
  }
  if (healthRoute(ctx, url, res, send, fail)) return;
  if (url.pathname === '/v1/summary') {
    send(200, status.summary());
    return;
  }
  const prefix = '/v1/objects/';
  if (url.pathname.startsWith(prefix)) {
    // Segments are percent-encoded by the client, so keys with '/', '%', '+' or spaces arrive intact.
    const [location, bucket, ...rest] = url.pathname.slice(prefix.length).split('/');
    if (location === undefined || bucket === undefined || rest.length === 0) {
      send(400, { error: 'expected /v1/objects/<location>/<bucket>/<key>' });
      return;
    }
    const key = rest.map(decodeURIComponent).join('/');
    const versionId = url.searchParams.get('versionId') ?? undefined;
    const versions = status.lookup(decodeURIComponent(location), decodeURIComponent(bucket), key, versionId);
    if (versions.length === 0) send(404, { error: `no replication status for ${location}/${bucket}/${key}${versionId !== undefined ? ` version ${versionId}` : ''}` });
    else send(200, { versions });
    return;
  }
  send(404, { error: `no such endpoint: ${url.pathname}` });
}

/** /healthz, /readyz and /metrics; false for any other path. */
function healthRoute(ctx: HealthContext, url: URL, res: ServerResponse, send: (code: number, body: unknown) => void, fail: (err: unknown) => void): boolean {
  if (url.pathname === '/healthz') {
    send(200, { ok: true });
    return true;
  }
  if (url.pathname === '/readyz') {
    const ready = ctx.ready();
    send(ready ? 200 : 503, { ready });
    return true;
  }
  if (url.pathname === '/metrics') {
    ctx
      .metrics()
      .then(({ contentType, body }) => {
        res.writeHead(200, { 'content-type': contentType });
        res.end(body);
      })
      .catch(fail);
    return true;
  }
  return false;
}

/** The server of a worker role without the status API: metrics and probes only. */
export function healthServer(ctx: HealthContext): Server {
  return createServer((req, res) => {
    const send = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (!healthRoute(ctx, url, res, send, () => {
      send(500, { error: 'internal error' });
    })) send(404, { error: `no such endpoint: ${url.pathname}` });
  });
}
